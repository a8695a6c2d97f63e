//! `mgnt agent`'s configuration: an `[agent]` table in its own file.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
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
    /// Where `GET /metrics` is served (loopback only); none without it.
    pub metrics: Option<SocketAddr>,
    /// How long the management interface may stay silent before the
    /// connection is made again; it is asked something every third of it.
    pub management_timeout: Duration,
}

/// OpenVPN answers a probe at once; 45 s leaves room for a busy server.
pub const DEFAULT_MANAGEMENT_TIMEOUT: Duration = Duration::from_secs(45);
/// A probe each second at the least.
const MIN_MANAGEMENT_TIMEOUT: Duration = Duration::from_secs(3);

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
    metrics: Option<String>,
    management_timeout: Option<String>,
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
            metrics: a
                .metrics
                .as_deref()
                .map(metrics)
                .transpose()
                .map_err(|r| invalid("metrics", r))?,
            management_timeout: a
                .management_timeout
                .as_deref()
                .map(management_timeout)
                .transpose()
                .map_err(|r| invalid("management_timeout", r))?
                .unwrap_or(DEFAULT_MANAGEMENT_TIMEOUT),
        })
    }

    /// How often the management interface is asked something.
    pub fn probe_every(&self) -> Duration {
        self.management_timeout / 3
    }
}

/// The metrics listener's address: loopback only, since the agent has no
/// TLS server and an API off loopback needs TLS.
fn metrics(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text
        .parse()
        .map_err(|_| format!("`{text}` is not an address:port"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "`{text}` is not a loopback address: the agent serves no TLS, and an API off loopback needs it (scrape through a local proxy or a tunnel)"
        ));
    }
    Ok(addr)
}

fn management_timeout(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d >= MIN_MANAGEMENT_TIMEOUT => Ok(d),
        _ => Err(format!(
            "`{text}` must be a duration of {}s or more (`45s`, `2m`)",
            MIN_MANAGEMENT_TIMEOUT.as_secs()
        )),
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

    const BASE: &str = "[agent]\nmanagement = \"127.0.0.1:7505\"\ncontrol = \"https://cp.example\"\ntoken_file = \"t\"\n";

    #[test]
    fn metrics_are_off_by_default_and_served_on_loopback_only() {
        assert_eq!(parse(BASE).unwrap().metrics, None);
        for ok in ["127.0.0.1:9105", "[::1]:9105", "127.0.0.2:9105"] {
            let c = parse(&format!("{BASE}metrics = \"{ok}\"\n")).unwrap();
            assert_eq!(c.metrics, Some(ok.parse().unwrap()));
        }
        for bad in [
            "0.0.0.0:9105",
            "[::]:9105",
            "192.0.2.1:9105",
            "localhost:9105",
            "9105",
        ] {
            let err = parse(&format!("{BASE}metrics = \"{bad}\"\n")).unwrap_err();
            assert!(
                matches!(err, AgentConfigError::Invalid { key: "metrics", .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains("agent.metrics"), "{err}");
        }
    }

    #[test]
    fn the_management_timeout_sets_the_probe_interval() {
        let c = parse(BASE).unwrap();
        assert_eq!(c.management_timeout, Duration::from_secs(45));
        assert_eq!(c.probe_every(), Duration::from_secs(15));
        let c = parse(&format!("{BASE}management_timeout = \"3s\"\n")).unwrap();
        assert_eq!(c.probe_every(), Duration::from_secs(1));
        for bad in ["2s", "0s", "soon", "500ms"] {
            let err = parse(&format!("{BASE}management_timeout = \"{bad}\"\n")).unwrap_err();
            assert!(
                matches!(
                    err,
                    AgentConfigError::Invalid {
                        key: "management_timeout",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
    }
}
