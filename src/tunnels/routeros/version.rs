//! RouterOS releases and what each accepts in the commands our scripts use:
//! one table, each row with its source, so a script never carries an argument
//! its router would refuse (a refused line stops an `/import` half-way).
//!
//! | What                                   | From  | Source |
//! |----------------------------------------|-------|--------|
//! | oldest release scripts are made for    | 6.48  | `/tool fetch` `http-header-field`, `http-method`, `http-data`, `check-certificate` and `output=none` in MikroTik's Fetch manual for v6; 6.48 is the first of the last long-term v6 line |
//! | `auth=sha256`, `auth=sha512` (ovpn)    | 7.8   | RouterOS 7.8 changelog (SHA-2 HMAC for OpenVPN); 6.x and 7.0–7.7 offer md5 and sha1 only |
//! | cipher values `aes256-cbc`, `-gcm`     | 7.8   | RouterOS 7.8 changelog (OpenVPN cipher names with mode); before: `aes256` |
//! | `verify-server-certificate` (ovpn)     | 7.1   | MikroTik's OpenVPN manual (v7) lists it for the client; the v6 manual (`Manual:Interface/OVPN`) has no such property, so v6 cannot verify the server |
//! | `protocol` (ovpn)                      | never | tcp is every release's default (v6 has TCP only; community.routeros `_api_data` default `tcp`); the argument is only proven from 7.9 dumps, so it is left out |
//! | `/user group add name policy`, `/user add name group password address` | every release | MikroTik's User manual (v7) and Router AAA manual (v6); `read`, `api` and `reboot` are policies of both |
//! | `comment` on `/ppp profile`            | 7.15  | community.routeros `_api_data` (versioned field) — so profiles are found by name, never by comment |

/// A RouterOS release, as far as the scripts depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    #[error("`{0}` is not a RouterOS version like 6, 7, 6.49.7 or 7.16")]
    Version(String),
    #[error("RouterOS {0} is older than {1}, the oldest release the scripts are made for")]
    TooOld(Version, Version),
    #[error("RouterOS {0} offers only md5 and sha1 for OpenVPN auth, not `{1}` (SHA-2 from 7.8)")]
    Auth(Version, String),
    #[error("`{0}` is not an OpenVPN auth digest RouterOS offers")]
    UnknownAuth(String),
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

const fn v(major: u8, minor: u8) -> Version {
    Version { major, minor }
}

impl Version {
    /// The newest release of each major line, for `?version=6` and `?version=7`.
    pub const LATEST_6: Self = v(6, 49);
    pub const LATEST_7: Self = v(7, 99);
    /// The oldest releases scripts are rendered for.
    pub const OLDEST_6: Self = v(6, 48);
    pub const OLDEST_7: Self = v(7, 1);

    /// The versions scripts are made for, and where they differ: what a
    /// command asking for a version says when it was given none.
    pub fn choices() -> String {
        format!(
            "the router's RouterOS version is needed (--version, as `/system resource print` shows it): scripts are made for {}–{}.x (`6` means {}) and {} or later (`7` means the newest); they differ from {} (the server's certificate verified) and {} (SHA-2 auth, cipher names with their mode)",
            Self::OLDEST_6,
            Self::LATEST_6,
            Self::LATEST_6,
            Self::OLDEST_7,
            Self::OLDEST_7,
            v(7, 8),
        )
    }

    /// Parses `7`, `7.16`, `7.16.2` or RouterOS's own `7.16.2 (stable)`.
    pub fn parse(s: &str) -> Result<Self, ScriptError> {
        let err = || ScriptError::Version(s.to_owned());
        let number = s.trim();
        let number = number
            .split_once(' ')
            .filter(|(_, channel)| channel.starts_with('(') && channel.ends_with(')'))
            .map_or(number, |(n, _)| n);
        let mut parts = number.split('.');
        let major: u8 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(err)?;
        let minor = match parts.next() {
            None => None,
            // Release candidates and betas (`7.17rc3`) count as their release.
            Some(p) => Some(leading_number(p).ok_or_else(err)?),
        };
        // A patch level is allowed and irrelevant; anything more is not a version.
        if let Some(p) = parts.next() {
            leading_number(p).ok_or_else(err)?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        match (major, minor) {
            (6, None) => Ok(Self::LATEST_6),
            (7, None) => Ok(Self::LATEST_7),
            (6 | 7, Some(minor)) => Ok(v(major, minor)),
            _ => Err(err()),
        }
    }

    /// The version if scripts are made for it.
    pub fn supported(self) -> Result<Self, ScriptError> {
        let oldest = if self.major == 6 {
            Self::OLDEST_6
        } else {
            Self::OLDEST_7
        };
        if self < oldest {
            return Err(ScriptError::TooOld(self, oldest));
        }
        Ok(self)
    }

    /// SHA-2 data-channel HMACs (`auth=sha256|sha512`).
    pub fn has_sha2_auth(self) -> bool {
        self >= v(7, 8)
    }

    /// OpenVPN cipher names carry their mode (`aes256-cbc`).
    pub fn has_cipher_modes(self) -> bool {
        self >= v(7, 8)
    }

    /// The ovpn client can verify the server's certificate.
    pub fn has_verify_server_certificate(self) -> bool {
        self.major >= 7
    }

    /// The digests `/interface ovpn-client` offers.
    pub fn auths(self) -> &'static [&'static str] {
        if self.has_sha2_auth() {
            &["md5", "sha1", "sha256", "sha512", "null"]
        } else {
            &["md5", "sha1", "null"]
        }
    }

    /// The cipher values `/interface ovpn-client` offers.
    pub fn ciphers(self) -> &'static [&'static str] {
        if self.has_cipher_modes() {
            &[
                "null",
                "aes128-cbc",
                "aes192-cbc",
                "aes256-cbc",
                "aes128-gcm",
                "aes192-gcm",
                "aes256-gcm",
                "blowfish128",
            ]
        } else {
            &["null", "aes128", "aes192", "aes256", "blowfish128"]
        }
    }

    /// AES-256-CBC, the one cipher both RouterOS and the server agree on.
    pub fn aes256_cbc(self) -> &'static str {
        if self.has_cipher_modes() {
            "aes256-cbc"
        } else {
            "aes256"
        }
    }

    /// Checks that `auth` is a digest this release offers.
    pub fn check_auth(self, auth: &str) -> Result<(), ScriptError> {
        let all = v(7, 8).auths();
        if !all.contains(&auth) {
            return Err(ScriptError::UnknownAuth(auth.to_owned()));
        }
        if !self.auths().contains(&auth) {
            return Err(ScriptError::Auth(self, auth.to_owned()));
        }
        Ok(())
    }
}

fn leading_number(s: &str) -> Option<u8> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let rest = &s[end..];
    if !(rest.is_empty() || rest.starts_with("rc") || rest.starts_with("beta")) {
        return None;
    }
    s[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_default_to_the_latest() {
        assert_eq!(Version::parse("6").unwrap(), Version::LATEST_6);
        assert_eq!(Version::parse("7").unwrap(), Version::LATEST_7);
        assert_eq!(Version::parse("7.16.2").unwrap(), v(7, 16));
        assert_eq!(Version::parse("7.16.2 (stable)").unwrap(), v(7, 16));
        assert_eq!(Version::parse("6.49.7 (long-term)").unwrap(), v(6, 49));
        assert_eq!(Version::parse("7.17rc3 (testing)").unwrap(), v(7, 17));
        for bad in [
            "",
            "5.26",
            "8",
            "7.x",
            "7.1.2.3",
            "latest",
            "7.16 stable",
            "7.1x",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn old_releases_are_refused() {
        assert!(matches!(
            v(6, 47).supported(),
            Err(ScriptError::TooOld(_, o)) if o == Version::OLDEST_6
        ));
        assert!(v(6, 48).supported().is_ok());
        assert!(v(7, 0).supported().is_err());
        assert!(v(7, 1).supported().is_ok());
    }

    #[test]
    fn sha2_only_from_7_8() {
        for (version, ok) in [(v(6, 49), false), (v(7, 7), false), (v(7, 8), true)] {
            assert_eq!(version.check_auth("sha256").is_ok(), ok, "{version}");
            assert!(version.check_auth("sha1").is_ok());
        }
        assert!(matches!(
            v(7, 7).check_auth("sha256"),
            Err(ScriptError::Auth(..))
        ));
        assert!(matches!(
            v(7, 16).check_auth("whirlpool"),
            Err(ScriptError::UnknownAuth(_))
        ));
        assert_eq!(v(7, 7).aes256_cbc(), "aes256");
        assert_eq!(v(7, 8).aes256_cbc(), "aes256-cbc");
        assert!(!v(6, 49).has_verify_server_certificate());
        assert!(v(7, 1).has_verify_server_certificate());
    }
}
