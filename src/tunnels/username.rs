//! The tunnel's OpenVPN username: its UUID in 26 base32 characters.
//!
//! RouterOS limits the ovpn-client `user` to 27 characters, so the 36-character
//! UUID does not fit; its 16 bytes in unpadded RFC 4648 base32 do. Lower case
//! is written, either case is read (operators copy names by hand), and the
//! spare low bits of the last character must be zero, so each UUID has exactly
//! one username and vice versa.

use std::sync::LazyLock;

use data_encoding::{Encoding, Specification};
use uuid::Uuid;

/// Length of every username.
pub const USERNAME_LEN: usize = 26;

static BASE32: LazyLock<Encoding> = LazyLock::new(|| {
    let mut spec = Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.translate.from.push_str("ABCDEFGHIJKLMNOPQRSTUVWXYZ");
    spec.translate.to.push_str("abcdefghijklmnopqrstuvwxyz");
    spec.check_trailing_bits = true;
    spec.encoding().expect("a valid base32 specification")
});

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("`{0}` is neither a UUID nor a {USERNAME_LEN}-character tunnel username")]
    Unrecognised(String),
}

/// The username a router uses for tunnel `uuid`.
pub fn username(uuid: &Uuid) -> String {
    BASE32.encode(uuid.as_bytes())
}

/// Reads a username or a UUID (as OpenVPN logs show either) back to the tunnel's UUID.
pub fn tunnel_of(name: &str) -> Result<Uuid, NameError> {
    let name = name.trim();
    let from_base32 = (name.len() == USERNAME_LEN)
        .then(|| BASE32.decode(name.as_bytes()).ok())
        .flatten()
        .and_then(|bytes| <[u8; 16]>::try_from(bytes.as_slice()).ok());
    if let Some(b) = from_base32 {
        return Ok(Uuid::from_bytes(b));
    }
    Uuid::try_parse(name).map_err(|_| NameError::Unrecognised(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_fit_routeros_and_round_trip() {
        for _ in 0..1000 {
            let id = Uuid::new_v4();
            let name = username(&id);
            assert_eq!(name.len(), USERNAME_LEN);
            assert!(name.len() <= 27, "RouterOS `user` limit");
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
            );
            assert_eq!(tunnel_of(&name), Ok(id));
            assert_eq!(tunnel_of(&name.to_uppercase()), Ok(id), "case-insensitive");
            assert_eq!(tunnel_of(&id.to_string()), Ok(id), "UUID form too");
        }
    }

    #[test]
    fn known_vector() {
        let id = Uuid::parse_str("00000000-0000-4000-8000-000000000001").unwrap();
        assert_eq!(username(&id), "aaaaaaaaabaabaaaaaaaaaaaae");
    }

    #[test]
    fn rejects_non_canonical_and_foreign_names() {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
        let mut name = username(&Uuid::new_v4()).into_bytes();
        // The last character carries 3 data bits and 2 spare bits that must be 0.
        let v = ALPHABET.iter().position(|&c| c == name[25]).unwrap();
        assert_eq!(v & 3, 0);
        name[25] = ALPHABET[v | 1];
        let flipped = String::from_utf8(name).unwrap();
        assert!(tunnel_of(&flipped).is_err(), "{flipped}");
        for bad in [
            "",
            "router1",
            "aaaaaaaaaaaaaaaaaaaaaaaaa1",
            "aaaaaaaaaaaaaaaaaaaaaaaaab",
            &"a".repeat(27),
        ] {
            assert!(tunnel_of(bad).is_err(), "{bad}");
        }
    }
}
