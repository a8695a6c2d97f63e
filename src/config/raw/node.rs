//! `[node]`: this node's name, and where the other nodes reach its API.

use std::{net::IpAddr, path::PathBuf};

use serde::Deserialize;

use super::Ctx;
use crate::config::{ConfigError, NodeConfig};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    name: Option<String>,
    api_url: Option<String>,
    api_ca_file: Option<PathBuf>,
}

impl RawNode {
    pub(super) fn validate(&self, cx: &Ctx) -> Result<NodeConfig, ConfigError> {
        let name = match &self.name {
            Some(n) => n.clone(),
            None => host_name().ok_or_else(|| {
                cx.err(
                    "node.name",
                    "the host name cannot be read (/proc/sys/kernel/hostname): set node.name",
                )
            })?,
        };
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        if name.is_empty() || name.len() > 63 || !name.chars().all(ok) {
            return Err(cx.err(
                "node.name",
                format!(
                    "`{}` must be 1 to 63 letters, digits, `.`, `-` or `_`{}",
                    name.escape_default(),
                    if self.name.is_none() {
                        " (it is the host name: set node.name)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        let api_url = match &self.api_url {
            Some(url) => Some(api_url(url).map_err(|why| cx.err("node.api_url", why))?),
            None => None,
        };
        Ok(NodeConfig {
            name,
            api_url,
            api_ca_file: self.api_ca_file.as_deref().map(|f| cx.path(f)),
        })
    }
}

/// `scheme://host[:port]`, no path: https, or http to a loopback host.
fn api_url(text: &str) -> Result<String, String> {
    let url = text.trim_end_matches('/');
    let (secure, rest) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) => (false, rest),
        _ => {
            return Err(format!(
                "`{text}` is not a URL like \"https://node1.example.com:8053\""
            ));
        }
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
    if rest.is_empty() || !rest.chars().all(valid) {
        return Err(format!(
            "`{text}` must be scheme://host[:port], without a path"
        ));
    }
    let host = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && port.parse::<u16>().is_ok() => host,
        _ => rest,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !secure && !loopback {
        return Err(format!(
            "`{text}` must be https:// (http:// only to a loopback address): other nodes send live-view tickets to it"
        ));
    }
    Ok(url.to_owned())
}

/// This machine's host name, as the kernel has it.
fn host_name() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    Some(text.trim().to_owned()).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::api_url;

    #[test]
    fn api_urls_are_https_or_loopback_http_without_a_path() {
        assert_eq!(
            api_url("https://node1.example.com:8053/").unwrap(),
            "https://node1.example.com:8053"
        );
        assert_eq!(
            api_url("http://127.0.0.1:8053").unwrap(),
            "http://127.0.0.1:8053"
        );
        assert_eq!(api_url("http://[::1]:8053").unwrap(), "http://[::1]:8053");
        assert_eq!(api_url("http://localhost").unwrap(), "http://localhost");
        for bad in [
            "node1.example.com:8053",
            "http://node1.example.com:8053",
            "http://10.0.0.1:8053",
            "https://node1.example.com/api",
            "https://",
            "ftp://node1",
        ] {
            assert!(api_url(bad).is_err(), "{bad}");
        }
    }
}
