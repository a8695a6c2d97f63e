//! Probes report `(target, ok, rtt)`; they know nothing of thresholds.

use std::{
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant, SystemTime},
};

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use surge_ping::{Client, ICMP, PingIdentifier, PingSequence};
use tokio::net::TcpStream;

use crate::config::{ProbeSpec, Require};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Tcp,
    Icmp,
}

impl Kind {
    /// As the state file and the API spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Icmp => "icmp",
        }
    }
}

/// One target's result in a round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetResult {
    pub kind: Kind,
    pub target: String,
    pub ok: bool,
    pub rtt_ms: Option<f64>,
    pub error: Option<String>,
}

/// All targets of a region probed once, and the verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// Seconds since 1970 when the round started.
    pub at: u64,
    pub ok: bool,
    pub results: Vec<TargetResult>,
}

/// The region rule: each required kind needs `min_targets` passing targets.
pub fn verdict(spec: &ProbeSpec, results: &[TargetResult]) -> bool {
    let passing = |kind| results.iter().filter(|r| r.kind == kind && r.ok).count();
    let tcp = passing(Kind::Tcp) >= spec.min_targets;
    let icmp = passing(Kind::Icmp) >= spec.min_targets;
    match spec.require {
        Require::Tcp => tcp,
        Require::Icmp => icmp,
        Require::All => tcp && icmp,
    }
}

/// ICMP sockets for both families; `None` where the kernel refused us one.
pub struct Pingers {
    v4: Result<Client, String>,
    v6: Result<Client, String>,
    sequence: AtomicU16,
}

impl Pingers {
    /// Opens unprivileged (datagram) ICMP sockets where the kernel allows, raw ones otherwise.
    pub fn open() -> Self {
        let open = |kind| {
            let config = surge_ping::Config::builder().kind(kind).build();
            Client::new(&config).map_err(|e| e.to_string())
        };
        Self {
            v4: open(ICMP::V4),
            v6: open(ICMP::V6),
            sequence: AtomicU16::new(0),
        }
    }

    /// Why ICMP cannot be used, per family, for one warning at start.
    pub fn unavailable(&self) -> Vec<String> {
        [("IPv4", &self.v4), ("IPv6", &self.v6)]
            .into_iter()
            .filter_map(|(f, c)| c.as_ref().err().map(|e| format!("{f}: {e}")))
            .collect()
    }

    pub(crate) async fn ping(&self, ip: IpAddr, timeout: Duration) -> Result<Duration, String> {
        let client = match ip {
            IpAddr::V4(_) => &self.v4,
            IpAddr::V6(_) => &self.v6,
        };
        let client = client
            .as_ref()
            .map_err(|e| format!("ICMP unavailable: {e}"))?;
        let mut pinger = client.pinger(ip, PingIdentifier(rand::random())).await;
        pinger.timeout(timeout);
        let seq = PingSequence(self.sequence.fetch_add(1, Ordering::Relaxed));
        let (_, rtt) = pinger
            .ping(seq, b"mgnt health probe")
            .await
            .map_err(|e| e.to_string())?;
        Ok(rtt)
    }
}

/// A TCP probe passes when the connection is established within `timeout`.
async fn tcp(addr: SocketAddr, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(_stream)) => Ok(start.elapsed()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no connection within {timeout:?}")),
    }
}

fn result(kind: Kind, target: String, r: Result<Duration, String>) -> TargetResult {
    match r {
        Ok(rtt) => TargetResult {
            kind,
            target,
            ok: true,
            rtt_ms: Some(rtt.as_secs_f64() * 1000.0),
            error: None,
        },
        Err(e) => TargetResult {
            kind,
            target,
            ok: false,
            rtt_ms: None,
            error: Some(e),
        },
    }
}

/// Probes every target of `spec` concurrently.
pub async fn round(spec: &ProbeSpec, timeout: Duration, pingers: &Pingers) -> Round {
    let at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let tcp_probes = spec
        .tcp
        .iter()
        .map(|&a| async move { result(Kind::Tcp, a.to_string(), tcp(a, timeout).await) });
    let icmp_probes = spec.icmp.iter().map(|&ip| async move {
        result(Kind::Icmp, ip.to_string(), pingers.ping(ip, timeout).await)
    });
    let (mut results, icmp) = tokio::join!(join_all(tcp_probes), join_all(icmp_probes));
    results.extend(icmp);
    Round {
        at,
        ok: verdict(spec, &results),
        results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_names_are_the_stored_ones() {
        for k in [Kind::Tcp, Kind::Icmp] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.name());
        }
    }

    fn r(kind: Kind, ok: bool) -> TargetResult {
        result(
            kind,
            "t".into(),
            if ok {
                Ok(Duration::from_millis(1))
            } else {
                Err("x".into())
            },
        )
    }

    fn spec(require: Require, min_targets: usize) -> ProbeSpec {
        ProbeSpec {
            tcp: vec![],
            icmp: vec![],
            require,
            min_targets,
        }
    }

    #[test]
    fn verdict_follows_require_and_min_targets() {
        let results = [
            r(Kind::Tcp, true),
            r(Kind::Tcp, false),
            r(Kind::Icmp, false),
        ];
        assert!(verdict(&spec(Require::Tcp, 1), &results));
        assert!(!verdict(&spec(Require::Tcp, 2), &results), "2 of 2 needed");
        assert!(!verdict(&spec(Require::Icmp, 1), &results));
        assert!(!verdict(&spec(Require::All, 1), &results));
        let both = [r(Kind::Tcp, true), r(Kind::Icmp, true)];
        assert!(verdict(&spec(Require::All, 1), &both));
    }

    #[tokio::test]
    async fn tcp_probe_passes_on_a_listener_and_fails_when_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(tcp(addr, Duration::from_secs(1)).await.is_ok());
        drop(listener);
        assert!(tcp(addr, Duration::from_secs(1)).await.is_err());
    }
}
