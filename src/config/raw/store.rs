//! `[store]`: PostgreSQL behind the stores, shared by every node.

use std::{path::PathBuf, str::FromStr};

use serde::Deserialize;

use super::{Ctx, duration};
use crate::config::{ConfigError, StoreConfig, StorePassword, StoreTls};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    url: String,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    tls: Option<String>,
    ca_file: Option<PathBuf>,
    pool_size: Option<usize>,
    reread_interval: Option<String>,
}

impl RawStore {
    pub(super) fn validate(&self, cx: &Ctx) -> Result<StoreConfig, ConfigError> {
        let parsed = tokio_postgres::Config::from_str(&self.url)
            .map_err(|e| cx.err("store.url", format!("not a PostgreSQL URL: {e}")))?;
        if parsed.get_password().is_some() {
            return Err(cx.err(
                "store.url",
                "holds a password: move it to password_file or password_env (a URL is logged and shown)",
            ));
        }
        if parsed.get_user().is_none() {
            return Err(cx.err("store.url", "names no user (postgres://USER@HOST/DB)"));
        }
        if parsed.get_dbname().is_none() {
            return Err(cx.err("store.url", "names no database (postgres://USER@HOST/DB)"));
        }
        let password = match (&self.password_file, &self.password_env) {
            (Some(_), Some(_)) => {
                return Err(cx.err(
                    "store.password_env",
                    "give password_file or password_env, not both",
                ));
            }
            (Some(f), None) => Some(StorePassword::File(cx.path(f))),
            (None, Some(v)) => Some(StorePassword::Env(v.clone())),
            (None, None) => None,
        };
        let local = local_only(&parsed);
        let tls = match self.tls.as_deref() {
            None if local => StoreTls::Disable,
            None | Some("require") => {
                let ca = self.ca_file.as_ref().ok_or_else(|| {
                    cx.err(
                        "store.ca_file",
                        "TLS is required off loopback: give the CA that signed the server's certificate",
                    )
                })?;
                StoreTls::Require { ca: cx.path(ca) }
            }
            Some("disable") if local => StoreTls::Disable,
            Some("disable") => {
                return Err(cx.err(
                    "store.tls",
                    "`disable` only for a server on loopback or a Unix socket: the password and every record would cross in clear",
                ));
            }
            Some(other) => {
                return Err(cx.err(
                    "store.tls",
                    format!("`{other}` is neither `require` nor `disable`"),
                ));
            }
        };
        let pool_size = self.pool_size.unwrap_or(8);
        if !(1..=256).contains(&pool_size) {
            return Err(cx.err("store.pool_size", "must be 1 to 256"));
        }
        let reread = self.reread_interval.as_deref().unwrap_or("30s");
        Ok(StoreConfig {
            url: self.url.clone(),
            password,
            tls,
            pool_size,
            reread_interval: duration(cx, "store.reread_interval", reread)?,
        })
    }
}

/// Whether every host the URL names is on this machine.
fn local_only(config: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    let hosts = config.get_hosts();
    !hosts.is_empty()
        && hosts.iter().all(|h| match h {
            Host::Unix(_) => true,
            Host::Tcp(name) => {
                name == "localhost"
                    || name
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml: &str) -> Result<StoreConfig, String> {
        let raw: RawStore = toml::from_str(toml).map_err(|e| e.to_string())?;
        let file = std::path::Path::new("/etc/mgnt/mgnt.toml");
        raw.validate(&Ctx { file }).map_err(|e| e.to_string())
    }

    #[test]
    fn a_local_url_needs_no_tls_and_a_remote_one_needs_its_ca() {
        let c =
            check("url = \"postgres://mgnt@127.0.0.1:5432/mgnt\"\npassword_file = \"pw\"").unwrap();
        assert_eq!(c.tls, StoreTls::Disable);
        assert_eq!(c.password, Some(StorePassword::File("/etc/mgnt/pw".into())));
        assert_eq!((c.pool_size, c.reread_interval.as_secs()), (8, 30));
        let e = check("url = \"postgres://mgnt@db.example/mgnt\"").unwrap_err();
        assert!(e.contains("store.ca_file"), "{e}");
        let c = check("url = \"postgres://mgnt@db.example/mgnt\"\nca_file = \"ca.pem\"").unwrap();
        assert_eq!(
            c.tls,
            StoreTls::Require {
                ca: "/etc/mgnt/ca.pem".into()
            }
        );
        let e = check("url = \"postgres://mgnt@db.example/mgnt\"\ntls = \"disable\"").unwrap_err();
        assert!(e.contains("in clear"), "{e}");
    }

    #[test]
    fn a_password_in_the_url_and_other_mistakes_are_refused() {
        for (toml, needle) in [
            (
                "url = \"postgres://mgnt:secret@127.0.0.1/mgnt\"",
                "holds a password",
            ),
            ("url = \"postgres://127.0.0.1/mgnt\"", "names no user"),
            ("url = \"postgres://mgnt@127.0.0.1\"", "names no database"),
            ("url = \"mysql://x\"", "not a PostgreSQL URL"),
            (
                "url = \"postgres://mgnt@127.0.0.1/mgnt\"\npassword_file = \"a\"\npassword_env = \"B\"",
                "not both",
            ),
            (
                "url = \"postgres://mgnt@127.0.0.1/mgnt\"\ntls = \"maybe\"",
                "neither",
            ),
            (
                "url = \"postgres://mgnt@127.0.0.1/mgnt\"\npool_size = 0",
                "1 to 256",
            ),
        ] {
            let e = check(toml).unwrap_err();
            assert!(e.contains(needle), "{toml}: {e}");
        }
    }
}
