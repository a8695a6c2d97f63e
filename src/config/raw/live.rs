//! `[live]`: the read-only live view of a router (traffic, log, resource,
//! reboot) through its RouterOS API.

use std::time::Duration;

use serde::Deserialize;

use super::{Ctx, duration};
use crate::config::{ConfigError, LiveConfig};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLive {
    api_port: Option<u16>,
    ticket_ttl: Option<String>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    max_viewers_per_router: Option<usize>,
    max_streams_per_user: Option<usize>,
    linger: Option<String>,
    reboot_timeout: Option<String>,
    reboot_min_gap: Option<String>,
}

impl RawLive {
    pub(super) fn validate(&self, cx: &Ctx, provision: bool) -> Result<LiveConfig, ConfigError> {
        if !provision {
            return Err(cx.err(
                "live",
                "needs [provision]: its jobs make the routers' live-view user",
            ));
        }
        let d = LiveConfig::default();
        let or = |key: &str, v: &Option<String>, default: Duration| match v {
            None => Ok(default),
            Some(v) => duration(cx, &format!("live.{key}"), v),
        };
        let ticket_ttl = or("ticket_ttl", &self.ticket_ttl, d.ticket_ttl)?;
        if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&ticket_ttl) {
            return Err(cx.err(
                "live.ticket_ttl",
                "must be 1s to 5m: a ticket is redeemed by the page that asked for it",
            ));
        }
        let api_port = match self.api_port {
            Some(0) => return Err(cx.err("live.api_port", "must be a port, 1-65535")),
            p => p.unwrap_or(d.api_port),
        };
        let allowed_origins = self
            .allowed_origins
            .iter()
            .enumerate()
            .map(|(i, o)| {
                origin(o).map_err(|why| cx.err(format!("live.allowed_origins[{i}]"), why))
            })
            .collect::<Result<_, _>>()?;
        let positive =
            |key: &str, v, default| super::positive(cx, &format!("live.{key}"), v, default);
        Ok(LiveConfig {
            api_port,
            ticket_ttl,
            allowed_origins,
            max_viewers_per_router: positive(
                "max_viewers_per_router",
                self.max_viewers_per_router,
                d.max_viewers_per_router,
            )?,
            max_streams_per_user: positive(
                "max_streams_per_user",
                self.max_streams_per_user,
                d.max_streams_per_user,
            )?,
            linger: or("linger", &self.linger, d.linger)?,
            reboot_timeout: or("reboot_timeout", &self.reboot_timeout, d.reboot_timeout)?,
            reboot_min_gap: or("reboot_min_gap", &self.reboot_min_gap, d.reboot_min_gap)?,
        })
    }
}

/// A browser origin as an `Origin` header carries it: `scheme://host[:port]`,
/// lower-case, no path (so a comparison is exact).
fn origin(text: &str) -> Result<String, String> {
    let lower = text.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or_else(|| format!("`{text}` is not an origin like \"https://portal.example.com\""))?;
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
    if rest.is_empty() || !rest.chars().all(valid) {
        return Err(format!(
            "`{text}` is not an origin: scheme://host[:port], without a path or a trailing slash"
        ));
    }
    Ok(lower)
}

#[cfg(test)]
mod tests {
    use super::origin;

    #[test]
    fn origins_are_exact_scheme_host_and_port() {
        assert_eq!(
            origin("https://Portal.Example.com").unwrap(),
            "https://portal.example.com"
        );
        assert_eq!(origin("http://[::1]:8080").unwrap(), "http://[::1]:8080");
        for bad in [
            "portal.example.com",
            "https://",
            "https://portal.example.com/",
            "https://portal.example.com/app",
            "ftp://portal.example.com",
            "https://a b",
            "*",
        ] {
            assert!(origin(bad).is_err(), "{bad}");
        }
    }
}
