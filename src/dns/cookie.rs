//! DNS Cookies ([RFC 7873]) with interoperable server cookies ([RFC 9018]).
//!
//! A resolver that sends a client cookie gets back a server cookie made from
//! it, its address, the time and a secret; a later query carrying that pair
//! proves the resolver really sits at its source address (a spoofer never sees
//! the answer). The construction is RFC 9018's (SipHash-2-4 over client
//! cookie, version, reserved bytes, timestamp and client address), so every
//! node holding the same secret file accepts the cookies of every other, and a
//! previous secret is still accepted while a new one is rolled out.
//!
//! What a valid cookie buys: exemption from response rate limiting and from
//! `truncate_without_cookie` (see [`super::guard`]). Queries without one are
//! answered as before; BADCOOKIE is sent only where an answer would otherwise
//! be withheld (RFC 7873 §5.2.3 leaves that choice to the server).
//!
//! [RFC 7873]: https://www.rfc-editor.org/rfc/rfc7873
//! [RFC 9018]: https://www.rfc-editor.org/rfc/rfc9018

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use siphasher::sip::SipHasher24;

/// The EDNS option code of COOKIE.
pub const CODE: u16 = 10;
/// Length of the secret: SipHash-2-4's 128-bit key.
pub const SECRET_BYTES: usize = 16;
/// Length of the server cookies made here (RFC 9018 §4).
pub const SERVER_BYTES: usize = 16;
/// RFC 9018's version 1.
const VERSION: u8 = 1;
/// RFC 9018 §4.3: a cookie more than an hour old, or more than five minutes
/// ahead of our clock, is invalid …
const MAX_AGE: u32 = 3600;
const MAX_AHEAD: u32 = 300;
/// … and one more than half an hour old is replaced by a fresh one.
const RENEW_AFTER: u32 = 1800;

/// The COOKIE option of a query, as RFC 7873 §4 lays it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received<'a> {
    pub client: [u8; 8],
    /// The server cookie sent back, if any (8 to 32 bytes, any maker's).
    pub server: Option<&'a [u8]>,
}

/// A COOKIE option whose length fits neither form: FORMERR (RFC 7873 §5.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("COOKIE option of {0} bytes (8, or 16 to 40)")]
pub struct Malformed(pub usize);

impl<'a> Received<'a> {
    /// Reads a COOKIE option's value.
    pub fn parse(value: &'a [u8]) -> Result<Self, Malformed> {
        let client = match value.len() {
            8 | 16..=40 => value[..8].try_into().map_err(|_| Malformed(value.len()))?,
            n => return Err(Malformed(n)),
        };
        let server = (value.len() > 8).then(|| &value[8..]);
        Ok(Self { client, server })
    }
}

/// What a query's cookie proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A client cookie alone: a first contact, or a client that forgot.
    ClientOnly,
    /// A server cookie that is not ours, expired, or made for another address.
    Invalid,
    /// Made by us (or a node sharing the secret) for this client.
    Valid,
}

/// The current secret, and the previous one during a rotation.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets {
    current: [u8; SECRET_BYTES],
    previous: Option<[u8; SECRET_BYTES]>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

/// The answer's cookie and what the query's proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub status: Status,
    /// The option value to send: the client cookie and our server cookie.
    pub reply: [u8; 8 + SERVER_BYTES],
}

impl Secrets {
    pub fn new(current: [u8; SECRET_BYTES], previous: Option<[u8; SECRET_BYTES]>) -> Self {
        Self { current, previous }
    }

    /// Judges `received` from `ip` at `now` (seconds since the epoch, mod
    /// 2³²) and makes the cookie to send back: the received one when it is
    /// ours, valid under the current secret and less than half an hour old
    /// (so a resolver's cookie stays put), else a fresh one.
    pub fn judge(&self, received: &Received, ip: IpAddr, now: u32) -> Verdict {
        let mut reply = [0u8; 8 + SERVER_BYTES];
        reply[..8].copy_from_slice(&received.client);
        let Some(server) = received.server else {
            reply[8..].copy_from_slice(&make(&self.current, &received.client, ip, now));
            return Verdict {
                status: Status::ClientOnly,
                reply,
            };
        };
        let made_with = self.made_with(&received.client, server, ip, now);
        let status = if made_with.is_some() {
            Status::Valid
        } else {
            Status::Invalid
        };
        let age = server
            .get(4..8)
            .map_or(u32::MAX, |t| now.wrapping_sub(be32(t)));
        if made_with == Some(Secret::Current) && age < RENEW_AFTER {
            reply[8..].copy_from_slice(server);
        } else {
            reply[8..].copy_from_slice(&make(&self.current, &received.client, ip, now));
        }
        Verdict { status, reply }
    }

    /// Which secret made `server` for this client, if one did and it has not expired.
    fn made_with(&self, client: &[u8; 8], server: &[u8], ip: IpAddr, now: u32) -> Option<Secret> {
        if server.len() != SERVER_BYTES || server[0] != VERSION {
            return None;
        }
        let stamp = be32(&server[4..8]);
        let age = now.wrapping_sub(stamp);
        let ahead = stamp.wrapping_sub(now);
        if age > MAX_AGE && ahead > MAX_AHEAD {
            return None;
        }
        let matches = |secret: &[u8; SECRET_BYTES]| {
            let want = hash(secret, client, &server[..8], ip);
            // Compared whole, so the time taken tells nothing of which byte differs.
            want.iter()
                .zip(&server[8..])
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
        };
        if matches(&self.current) {
            Some(Secret::Current)
        } else if self.previous.as_ref().is_some_and(matches) {
            Some(Secret::Previous)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Secret {
    Current,
    Previous,
}

/// A fresh server cookie: version, three reserved bytes, timestamp, hash.
fn make(secret: &[u8; SECRET_BYTES], client: &[u8; 8], ip: IpAddr, now: u32) -> [u8; 16] {
    let mut cookie = [0u8; SERVER_BYTES];
    cookie[0] = VERSION;
    cookie[4..8].copy_from_slice(&now.to_be_bytes());
    let h = hash(secret, client, &cookie[..8], ip);
    cookie[8..].copy_from_slice(&h);
    cookie
}

/// RFC 9018 §4.4: SipHash-2-4 of client cookie | version | reserved |
/// timestamp | client address, in the reference implementation's byte order.
fn hash(secret: &[u8; SECRET_BYTES], client: &[u8; 8], head: &[u8], ip: IpAddr) -> [u8; 8] {
    let mut input = [0u8; 8 + 8 + 16];
    input[..8].copy_from_slice(client);
    input[8..16].copy_from_slice(head);
    let len = match crate::geo::canonical(ip) {
        IpAddr::V4(v4) => {
            input[16..20].copy_from_slice(&v4.octets());
            20
        }
        IpAddr::V6(v6) => {
            input[16..32].copy_from_slice(&v6.octets());
            32
        }
    };
    SipHasher24::new_with_key(secret)
        .hash(&input[..len])
        .to_le_bytes()
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Seconds since the epoch, as RFC 9018's timestamps count them (mod 2³²).
pub fn now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// Why a secret file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not {} hex digits (make one with `openssl rand -hex 16`)", file.display(), SECRET_BYTES * 2)]
    Format { file: PathBuf },
    #[error("{}: no random bytes from the system", file.display())]
    Random { file: PathBuf },
}

/// Reads a secret file (32 hex digits); `create` makes a random one (mode
/// 0600) when it is missing. A file others may read is tightened to 0600.
pub fn read_secret(file: &Path, create: bool) -> Result<[u8; SECRET_BYTES], SecretError> {
    use crate::durable::SecretFileError;
    let file = file.to_owned();
    crate::durable::hex_secret(&file, create).map_err(|e| match e {
        SecretFileError::Io(source) => SecretError::Io { file, source },
        SecretFileError::Format => SecretError::Format { file },
        SecretFileError::Random => SecretError::Random { file },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn secret(s: &str) -> [u8; SECRET_BYTES] {
        hex(s).try_into().unwrap()
    }

    fn secrets(current: &str, previous: Option<&str>) -> Secrets {
        Secrets::new(secret(current), previous.map(secret))
    }

    const SECRET: &str = "e5e973e5a6b2a43f48e7dc849e37bfcf";

    #[test]
    fn server_cookies_match_the_vectors_of_rfc_9018_appendix_a() {
        let s = secrets(SECRET, None);
        let ip = |a: &str| a.parse::<IpAddr>().unwrap();
        // A.1: a first query, client cookie only.
        let q = hex("2464c4abcf10c957");
        let v = s.judge(
            &Received::parse(&q).unwrap(),
            ip("198.51.100.100"),
            1559731985,
        );
        assert_eq!(v.status, Status::ClientOnly);
        assert_eq!(
            v.reply.to_vec(),
            hex("2464c4abcf10c957010000005cf79f111f8130c3eee29480")
        );
        // A.2: forty minutes later the cookie is valid but renewed.
        let q = hex("2464c4abcf10c957010000005cf79f111f8130c3eee29480");
        let v = s.judge(
            &Received::parse(&q).unwrap(),
            ip("198.51.100.100"),
            1559734385,
        );
        assert_eq!(v.status, Status::Valid);
        assert_eq!(
            v.reply.to_vec(),
            hex("2464c4abcf10c957010000005cf7a871d4a564a1442aca77")
        );
        // A.3: another client.
        let q = hex("fc93fc62807ddb86");
        let v = s.judge(
            &Received::parse(&q).unwrap(),
            ip("203.0.113.203"),
            1559734700,
        );
        assert_eq!(
            v.reply[8..].to_vec(),
            hex("010000005cf7a9acf73a7810aca2381e")
        );
    }

    #[test]
    fn a_young_cookie_is_echoed_and_an_old_one_renewed() {
        let s = secrets(SECRET, None);
        let ip: IpAddr = "2001:db8::53".parse().unwrap();
        let first = s.judge(&Received::parse(&[7; 8]).unwrap(), ip, 1_000_000);
        let again = |at| s.judge(&Received::parse(&first.reply).unwrap(), ip, at);
        assert_eq!(again(1_000_000 + 1799).reply, first.reply, "kept");
        assert_eq!(again(1_000_000 + 1799).status, Status::Valid);
        let renewed = again(1_000_000 + 1800);
        assert_eq!(renewed.status, Status::Valid);
        assert_ne!(renewed.reply, first.reply);
        assert_eq!(again(1_000_000 + 3601).status, Status::Invalid, "expired");
        assert_eq!(
            again(1_000_000 - 300).status,
            Status::Valid,
            "our clock behind"
        );
        assert_eq!(
            again(1_000_000 - 301).status,
            Status::Invalid,
            "too far ahead"
        );
    }

    #[test]
    fn a_cookie_is_bound_to_its_client_address_and_cookie() {
        let s = secrets(SECRET, None);
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "198.51.100.2".parse().unwrap();
        let got = s.judge(&Received::parse(&[1; 8]).unwrap(), a, 50).reply;
        assert_eq!(
            s.judge(&Received::parse(&got).unwrap(), a, 60).status,
            Status::Valid
        );
        assert_eq!(
            s.judge(&Received::parse(&got).unwrap(), b, 60).status,
            Status::Invalid
        );
        let mut other = got;
        other[0] ^= 1;
        let v = s.judge(&Received::parse(&other).unwrap(), a, 60);
        assert_eq!(v.status, Status::Invalid, "another client cookie");
        assert_eq!(
            v.reply[..8],
            other[..8],
            "a fresh cookie for the new client cookie"
        );
        let mapped: IpAddr = "::ffff:198.51.100.1".parse().unwrap();
        let v = s.judge(&Received::parse(&got).unwrap(), mapped, 60);
        assert_eq!(
            v.status,
            Status::Valid,
            "an IPv4-mapped source is its IPv4 address"
        );
    }

    #[test]
    fn a_rotation_accepts_the_previous_secret_and_reissues_under_the_new() {
        let old = secrets(SECRET, None);
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let issued = old.judge(&Received::parse(&[3; 8]).unwrap(), ip, 100).reply;
        let rotated = secrets("445536bcd2513298075a5d379663c962", Some(SECRET));
        let v = rotated.judge(&Received::parse(&issued).unwrap(), ip, 110);
        assert_eq!(v.status, Status::Valid);
        assert_ne!(v.reply, issued, "renewed under the current secret");
        let again = rotated.judge(&Received::parse(&v.reply).unwrap(), ip, 120);
        assert_eq!(again.reply, v.reply);
        let done = secrets("445536bcd2513298075a5d379663c962", None);
        let v = done.judge(&Received::parse(&issued).unwrap(), ip, 130);
        assert_eq!(v.status, Status::Invalid, "the old secret retired");
    }

    #[test]
    fn lengths_other_than_8_or_16_to_40_are_malformed_and_foreign_cookies_invalid() {
        for n in [0, 1, 7, 9, 15, 41, 64] {
            assert_eq!(Received::parse(&vec![0; n]), Err(Malformed(n)));
        }
        let s = secrets(SECRET, None);
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        for n in [16, 24, 40] {
            let value = vec![1; n];
            let r = Received::parse(&value).unwrap();
            assert_eq!(s.judge(&r, ip, 5).status, Status::Invalid, "{n} bytes");
        }
    }

    #[test]
    fn secret_files_are_created_private_read_back_and_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state/cookie.secret");
        assert!(matches!(
            read_secret(&file, false),
            Err(SecretError::Io { .. })
        ));
        let made = read_secret(&file, true).unwrap();
        assert_eq!(read_secret(&file, false).unwrap(), made);
        let mode = |f: &Path| std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        std::fs::write(&file, format!("{SECRET}\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_secret(&file, true).unwrap().to_vec(), hex(SECRET));
        assert_eq!(mode(&file), 0o600, "tightened");
        std::fs::write(&file, "abc\n").unwrap();
        let err = read_secret(&file, true).unwrap_err().to_string();
        assert!(err.contains("32 hex digits"), "{err}");
    }
}
