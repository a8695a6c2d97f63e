//! `[routers]`: the router endpoint, where each site's router pulls its jobs.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::{Ctx, duration};
use crate::config::{ConfigError, RoutersConfig};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRouters {
    listen: Option<String>,
    public_url: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    poll_interval: Option<String>,
    job_expiry: Option<String>,
    min_poll_gap: Option<String>,
    bootstrap_expiry: Option<String>,
    max_connections: Option<usize>,
    max_connections_per_source: Option<usize>,
}

impl RawRouters {
    pub(super) fn validate(&self, cx: &Ctx, provision: bool) -> Result<RoutersConfig, ConfigError> {
        if !provision {
            return Err(cx.err(
                "routers",
                "needs [provision]: routers pull the jobs it makes",
            ));
        }
        let text = self
            .listen
            .as_deref()
            .unwrap_or(crate::config::DEFAULT_ROUTERS_LISTEN);
        let listen: SocketAddr = text
            .parse()
            .map_err(|_| cx.err("routers.listen", format!("`{text}` is not an address:port")))?;
        let tls = super::tls_pair(
            cx,
            "routers",
            listen,
            (&self.tls_cert, &self.tls_key),
            "router tokens",
        )?;
        let public_url = match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None if tls.is_none() => format!("http://{listen}"),
            None => {
                return Err(cx.err(
                    "routers.public_url",
                    "required: the https:// address routers fetch from",
                ));
            }
        };
        let secure = public_url.starts_with("https://") && public_url.len() > "https://".len();
        let loopback_http = tls.is_none() && public_url.starts_with("http://");
        if !(secure || loopback_http) {
            return Err(cx.err(
                "routers.public_url",
                format!("`{public_url}` must be an https:// URL (http:// only while `listen` is loopback without TLS)"),
            ));
        }
        let or = |key: &str, v: &Option<String>, default: Duration| match v {
            None => Ok(default),
            Some(v) => duration(cx, &format!("routers.{key}"), v),
        };
        let poll_interval = or(
            "poll_interval",
            &self.poll_interval,
            Duration::from_secs(300),
        )?;
        if poll_interval < Duration::from_secs(10) {
            return Err(cx.err("routers.poll_interval", "must be 10s or more"));
        }
        let positive =
            |key: &str, v, default| super::positive(cx, &format!("routers.{key}"), v, default);
        Ok(RoutersConfig {
            listen,
            public_url,
            tls,
            poll_interval,
            job_expiry: or(
                "job_expiry",
                &self.job_expiry,
                crate::config::DEFAULT_ROTATION_GRACE,
            )?,
            min_poll_gap: or("min_poll_gap", &self.min_poll_gap, Duration::from_secs(5))?,
            bootstrap_expiry: or(
                "bootstrap_expiry",
                &self.bootstrap_expiry,
                Duration::from_secs(3600),
            )?,
            max_connections: positive("max_connections", self.max_connections, 1024)?,
            max_connections_per_source: positive(
                "max_connections_per_source",
                self.max_connections_per_source,
                8,
            )?,
        })
    }
}
