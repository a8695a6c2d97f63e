//! `mgnt agent`'s configuration: an `[agent]` table in its own file.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    #[error("{file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("{file}: agent.{key}: {reason}")]
    Invalid {
        file: PathBuf,
        key: &'static str,
        reason: String,
    },
}

/// What the agent was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// OpenVPN's `--management` address (started with `--management-client-auth`).
    pub management: SocketAddr,
    pub management_password_file: Option<PathBuf>,
    /// The control plane's URLs, tried in turn.
    pub control: Vec<String>,
    /// This agent's token (`NAME:TOKEN` on the control plane).
    pub token_file: PathBuf,
    /// Where the credential cache is kept across restarts.
    pub cache_dir: PathBuf,
    /// CA certificates for an `https://` control plane (else the public roots).
    pub ca_file: Option<PathBuf>,
    /// Whether the agent installs its nftables rules.
    pub firewall: bool,
    /// Most reports kept while the control plane is away.
    pub buffer_max: usize,
    /// How often each live tunnel is pinged, and how many times.
    pub latency_interval: std::time::Duration,
    pub latency_pings: u16,
    /// The OpenVPN server's config, checked at start (client-to-client,
    /// management-client-auth).
    pub openvpn_config: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    agent: RawAgent,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Urls {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    management: String,
    management_password_file: Option<PathBuf>,
    control: Urls,
    token_file: PathBuf,
    cache_dir: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    firewall: Option<bool>,
    openvpn_config: Option<PathBuf>,
    buffer_max: Option<usize>,
    latency_interval: Option<String>,
    latency_pings: Option<u16>,
}

impl AgentConfig {
    pub fn load(file: &Path) -> Result<Self, AgentConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| AgentConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        Self::parse(&text, file)
    }

    pub fn parse(text: &str, file: &Path) -> Result<Self, AgentConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| AgentConfigError::Parse {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
        let a = raw.agent;
        let invalid = |key, reason: String| AgentConfigError::Invalid {
            file: file.to_owned(),
            key,
            reason,
        };
        let management = a.management.parse().map_err(|_| {
            invalid(
                "management",
                format!("`{}` is not an address:port", a.management),
            )
        })?;
        let control = match a.control {
            Urls::One(u) => vec![u],
            Urls::Many(v) => v,
        };
        if control.is_empty() {
            return Err(invalid("control", "names no URL".into()));
        }
        for url in &control {
            let plain = url.strip_prefix("http://");
            let loopback = plain.is_some_and(|rest| {
                let host = rest.split('/').next().unwrap_or("");
                let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
            if !(url.starts_with("https://") || loopback) {
                return Err(invalid(
                    "control",
                    format!(
                        "`{url}` must be https:// (http:// only to a loopback address): the token and the credentials must not cross a network in clear"
                    ),
                ));
            }
        }
        let dir = file.parent().unwrap_or(Path::new("."));
        let path = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                dir.join(p)
            }
        };
        Ok(Self {
            management,
            management_password_file: a.management_password_file.as_deref().map(path),
            control: control
                .into_iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .collect(),
            token_file: path(&a.token_file),
            cache_dir: path(a.cache_dir.as_deref().unwrap_or(Path::new("agent-cache"))),
            ca_file: a.ca_file.as_deref().map(path),
            firewall: a.firewall.unwrap_or(true),
            latency_interval: match a.latency_interval.as_deref().map(humantime::parse_duration) {
                None => std::time::Duration::from_secs(60),
                Some(Ok(d)) if d >= std::time::Duration::from_secs(1) => d,
                Some(_) => {
                    return Err(invalid(
                        "latency_interval",
                        "must be a duration of 1s or more (`60s`, `5m`)".into(),
                    ));
                }
            },
            latency_pings: match a.latency_pings {
                Some(0) => return Err(invalid("latency_pings", "must be at least 1".into())),
                v => v.unwrap_or(3),
            },
            buffer_max: match a.buffer_max {
                Some(0) => return Err(invalid("buffer_max", "must be at least 1".into())),
                v => v.unwrap_or(100_000),
            },
            openvpn_config: a.openvpn_config.as_deref().map(path),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, AgentConfigError> {
        AgentConfig::parse(text, Path::new("/etc/mgnt/agent.toml"))
    }

    #[test]
    fn a_config_with_one_or_several_control_urls() {
        let c = parse(
            "[agent]\nmanagement = \"127.0.0.1:7505\"\ncontrol = \"http://127.0.0.1:8053/\"\ntoken_file = \"agent.token\"\n",
        )
        .unwrap();
        assert_eq!(c.control, ["http://127.0.0.1:8053"]);
        assert_eq!(c.token_file, Path::new("/etc/mgnt/agent.token"));
        assert_eq!(c.cache_dir, Path::new("/etc/mgnt/agent-cache"));
        let c = parse(
            "[agent]\nmanagement = \"127.0.0.1:7505\"\ncontrol = [\"https://a.example\", \"https://b.example\"]\ntoken_file = \"/t\"\ncache_dir = \"/var/lib/mgnt/agent\"\n",
        )
        .unwrap();
        assert_eq!(c.control.len(), 2);
    }

    #[test]
    fn clear_text_off_loopback_and_bad_values_are_refused() {
        let base = "[agent]\nmanagement = \"127.0.0.1:7505\"\ntoken_file = \"t\"\n";
        for (control, key) in [
            ("\"http://cp.example:8053\"", "control"),
            ("\"http://10.0.0.1:8053\"", "control"),
            ("[]", "control"),
        ] {
            let err = parse(&format!("{base}control = {control}\n")).unwrap_err();
            assert!(
                matches!(err, AgentConfigError::Invalid { key: k, .. } if k == key),
                "{err}"
            );
        }
        assert!(parse(&format!("{base}control = \"http://[::1]:8053\"\n")).is_ok());
        let err = parse(
            "[agent]\nmanagement = \"nowhere\"\ncontrol = \"https://x\"\ntoken_file = \"t\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("agent.management"), "{err}");
        assert!(matches!(
            parse("[agent]\nmanagment = 1\n"),
            Err(AgentConfigError::Parse { .. })
        ));
    }
}
