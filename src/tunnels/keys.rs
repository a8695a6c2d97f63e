//! The secret key file and what is derived from it: keyed digests of random
//! secrets, and sealing for the few secrets that must be shown again.
//!
//! Tunnel secrets and router tokens are random (at least 240 bits), so a
//! slow password hash buys nothing: a keyed HMAC-SHA-256 digest cannot be
//! brute-forced without the key, is checked in microseconds, and costs no
//! memory per check (argon2 took 19 MiB and tens of milliseconds, and 200
//! concurrent creations took a server to 3.4 GB). A pending job must still
//! show its tunnel secret to the router that fetches it: that copy is sealed
//! (ChaCha20-Poly1305, bound to the job) with a second key derived from the
//! same file, never stored in plaintext. Both keys come from the file through
//! HKDF-SHA-256 with their own labels, so neither is the other.
//!
//! The password of a router's read-only live-view user is not stored at all:
//! it is an HMAC, under a third key from the file, of the site and the job
//! that installed it. Whoever holds the key file can compute it, exactly as
//! whoever holds it could open a sealed secret; every job rotates it.

use std::path::{Path, PathBuf};

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD, HEXLOWER_PERMISSIVE};
use ring::{
    aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey},
    hkdf, hmac,
    rand::{SecureRandom, SystemRandom},
};

const DIGEST: &str = "hmac-sha256:";
const SEALED: &str = "sealed-v1:";
const KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: not a key: expected {} hex digits on one line", KEY_BYTES * 2)]
    Format { file: PathBuf },
    #[error("the system random generator failed")]
    Random,
}

/// The keys derived from the secret key file.
pub struct Keys {
    digests: Digests,
    seals: LessSafeKey,
    live: hmac::Key,
    random: SystemRandom,
}

/// How a presented secret compares with a stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Match,
    /// It matches an argon2 hash from an older version: store a digest now.
    MatchLegacy,
    NoMatch,
}

impl Keys {
    /// Reads the key file, creating it (mode 0600, 256 random bits) when missing.
    pub fn load_or_create(file: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            file: file.to_owned(),
            source,
        };
        use crate::durable::SecretFileError;
        let key: [u8; KEY_BYTES] = crate::durable::hex_secret(file, true).map_err(|e| match e {
            SecretFileError::Io(source) => io(source),
            SecretFileError::Format => KeyError::Format {
                file: file.to_owned(),
            },
            SecretFileError::Random => KeyError::Random,
        })?;
        Ok(Self::from_bytes(&key, SystemRandom::new()))
    }

    fn from_bytes(ikm: &[u8], random: SystemRandom) -> Self {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"mgnt secret key file").extract(ikm);
        let mut digest_key = [0u8; DIGEST_KEY_BYTES];
        prk.expand(&[b"secret digests v1"], hmac::HMAC_SHA256)
            .and_then(|okm| okm.fill(&mut digest_key))
            .expect("HKDF output of one hash length");
        let digests = Digests::new(digest_key);
        let seals = prk
            .expand(&[b"sealed secrets v1"], &CHACHA20_POLY1305)
            .map(UnboundKey::from)
            .map(LessSafeKey::new)
            .expect("HKDF output of one key length");
        let live = prk
            .expand(&[b"live view passwords v1"], hmac::HMAC_SHA256)
            .map(hmac::Key::from)
            .expect("HKDF output of one hash length");
        Self {
            digests,
            seals,
            live,
            random,
        }
    }

    /// A new random secret: 30 bytes (240 bits) as 48 lower-case base32
    /// characters, which RouterOS accepts as a password and in a header.
    pub fn new_secret(&self) -> Result<String, KeyError> {
        let mut bytes = [0u8; 30];
        self.random.fill(&mut bytes).map_err(|_| KeyError::Random)?;
        Ok(BASE32_NOPAD.encode(&bytes).to_ascii_lowercase())
    }

    /// The live-view user's password on `site`'s router as installed by
    /// `job`: 240 bits as 48 lower-case base32 characters, like a secret.
    pub fn live_password(&self, site: uuid::Uuid, job: uuid::Uuid) -> String {
        let mut data = [0u8; 32];
        data[..16].copy_from_slice(site.as_bytes());
        data[16..].copy_from_slice(job.as_bytes());
        let tag = hmac::sign(&self.live, &data);
        BASE32_NOPAD
            .encode(&tag.as_ref()[..30])
            .to_ascii_lowercase()
    }

    /// The stored form of a random secret.
    pub fn digest(&self, secret: &str) -> String {
        self.digests.digest(secret)
    }

    /// Compares `secret` with a stored digest (or an older argon2 hash) in
    /// constant time.
    pub fn check(&self, secret: &str, stored: &str) -> Check {
        self.digests.check(secret, stored)
    }

    /// The digest key alone, for agents that check logins themselves.
    pub fn digests(&self) -> &Digests {
        &self.digests
    }

    /// Seals `plaintext` for storage, bound to `context` (a job's id): it
    /// opens only with the same key and the same context.
    pub fn seal(&self, plaintext: &str, context: &str) -> Result<String, KeyError> {
        let mut nonce = [0u8; aead::NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| KeyError::Random)?;
        let mut data = plaintext.as_bytes().to_vec();
        self.seals
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .map_err(|_| KeyError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("{SEALED}{}", BASE64URL_NOPAD.encode(&out)))
    }

    /// Opens what [`Self::seal`] made for `context`; `None` if it does not
    /// open (another key, another context, or damaged).
    pub fn open(&self, sealed: &str, context: &str) -> Option<String> {
        let bytes = BASE64URL_NOPAD
            .decode(sealed.strip_prefix(SEALED)?.as_bytes())
            .ok()?;
        if bytes.len() < aead::NONCE_LEN {
            return None;
        }
        let (nonce, data) = bytes.split_at(aead::NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = data.to_vec();
        let plain = self
            .seals
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut data)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }

    /// Whether `stored` is already sealed (older versions kept plaintext).
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(SEALED)
    }
}

/// Length of the digest key.
const DIGEST_KEY_BYTES: usize = 32;

/// The key stored secrets are digested under. Agents get it (never the
/// sealing key) to check logins where the OpenVPN server runs: with it and
/// the digests, a 240-bit random secret is still beyond any search.
#[derive(Clone)]
pub struct Digests {
    bytes: [u8; DIGEST_KEY_BYTES],
    key: hmac::Key,
}

impl std::fmt::Debug for Digests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digests(…)")
    }
}

impl Digests {
    fn new(bytes: [u8; DIGEST_KEY_BYTES]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            bytes,
        }
    }

    /// The key as hex, to hand to an agent.
    pub fn to_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.bytes)
    }

    /// The key an agent was handed.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = HEXLOWER_PERMISSIVE.decode(text.trim().as_bytes()).ok()?;
        Some(Self::new(bytes.try_into().ok()?))
    }

    pub fn digest(&self, secret: &str) -> String {
        let tag = hmac::sign(&self.key, secret.as_bytes());
        format!("{DIGEST}{}", BASE64URL_NOPAD.encode(tag.as_ref()))
    }

    /// Compares `secret` with a stored digest (or an older argon2 hash) in
    /// constant time.
    pub fn check(&self, secret: &str, stored: &str) -> Check {
        if let Some(tag) = stored.strip_prefix(DIGEST) {
            let Ok(tag) = BASE64URL_NOPAD.decode(tag.as_bytes()) else {
                return Check::NoMatch;
            };
            return match hmac::verify(&self.key, secret.as_bytes(), &tag) {
                Ok(()) => Check::Match,
                Err(_) => Check::NoMatch,
            };
        }
        use argon2::{PasswordHash, PasswordVerifier};
        let legacy = PasswordHash::new(stored).is_ok_and(|hash| {
            argon2::Argon2::default()
                .verify_password(secret.as_bytes(), &hash)
                .is_ok()
        });
        if legacy {
            Check::MatchLegacy
        } else {
            Check::NoMatch
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn keys(dir: &Path) -> Keys {
        Keys::load_or_create(&dir.join("secret.key")).unwrap()
    }

    #[test]
    fn live_passwords_are_per_site_and_job_and_need_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (a, again) = (keys(dir.path()), keys(dir.path()));
        let (site, job) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let password = a.live_password(site, job);
        assert_eq!(password.len(), 48);
        assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(again.live_password(site, job), password, "same key");
        assert_ne!(a.live_password(site, uuid::Uuid::new_v4()), password);
        assert_ne!(a.live_password(uuid::Uuid::new_v4(), job), password);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(keys(other.path()).live_password(site, job), password);
        assert_ne!(a.digest(&password), password);
    }

    #[test]
    fn the_key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let a = keys(dir.path());
        let mode = std::fs::metadata(dir.path().join("secret.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = keys(dir.path());
        let secret = a.new_secret().unwrap();
        assert_eq!(secret.len(), 48);
        assert_eq!(
            b.check(&secret, &a.digest(&secret)),
            Check::Match,
            "same key"
        );
        let other = tempfile::tempdir().unwrap();
        assert_eq!(
            keys(other.path()).check(&secret, &a.digest(&secret)),
            Check::NoMatch
        );
    }

    #[test]
    fn bad_key_files_are_refused_with_the_reason_and_loose_ones_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret.key");
        std::fs::write(&file, "abc\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            Keys::load_or_create(&file),
            Err(KeyError::Format { .. })
        ));
        std::fs::write(&file, format!("{}\n", "ab".repeat(32))).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        Keys::load_or_create(&file).unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a key others could read is made private");
    }

    #[test]
    fn an_exported_digest_key_checks_what_the_store_digested() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys(dir.path());
        let secret = k.new_secret().unwrap();
        let agent = Digests::from_hex(&k.digests().to_hex()).unwrap();
        assert_eq!(agent.check(&secret, &k.digest(&secret)), Check::Match);
        assert_eq!(agent.check("other", &k.digest(&secret)), Check::NoMatch);
        assert!(Digests::from_hex("abcd").is_none());
    }

    #[test]
    fn digests_match_only_their_secret() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys(dir.path());
        let d = k.digest("s3cret");
        assert!(d.starts_with(DIGEST));
        assert_eq!(k.check("s3cret", &d), Check::Match);
        assert_eq!(k.check("s3cret!", &d), Check::NoMatch);
        assert_eq!(k.check("s3cret", "hmac-sha256:!!"), Check::NoMatch);
        assert_eq!(k.check("s3cret", ""), Check::NoMatch);
    }

    #[test]
    fn argon2_hashes_of_older_versions_still_match() {
        use argon2::PasswordHasher;
        let dir = tempfile::tempdir().unwrap();
        let k = keys(dir.path());
        let old = argon2::Argon2::default()
            .hash_password(b"legacy")
            .unwrap()
            .to_string();
        assert_eq!(k.check("legacy", &old), Check::MatchLegacy);
        assert_eq!(k.check("other", &old), Check::NoMatch);
    }

    #[test]
    fn sealed_secrets_open_only_in_their_context() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys(dir.path());
        let sealed = k.seal("tunnel secret", "job-1").unwrap();
        assert!(Keys::is_sealed(&sealed));
        assert!(!sealed.contains("tunnel secret"));
        assert_eq!(k.open(&sealed, "job-1").as_deref(), Some("tunnel secret"));
        assert_eq!(k.open(&sealed, "job-2"), None);
        assert_ne!(
            sealed,
            k.seal("tunnel secret", "job-1").unwrap(),
            "fresh nonce"
        );
        let mut damaged = sealed.clone();
        damaged.pop();
        assert_eq!(k.open(&damaged, "job-1"), None);
    }
}
