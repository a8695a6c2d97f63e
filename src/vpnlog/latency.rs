//! ICMP latency to every connected tunnel: each round pings each tunnel
//! address a few times and records RTT and loss.

use std::{net::IpAddr, sync::Arc, time::Duration};

use futures_util::StreamExt;
use tokio::time::{MissedTickBehavior, interval};

use super::{
    ingest::Ingest,
    store::{Latency, Rtt},
};
use crate::{clock::now, config::VpnlogConfig, health::probe::Pingers};

/// Tunnels pinged at once.
const CONCURRENT: usize = 256;

/// Pings every connected tunnel each `latency_interval`, for as long as the service runs.
pub async fn pinger(config: VpnlogConfig, ingest: Arc<Ingest>, pingers: Arc<Pingers>) {
    let mut round = interval(config.latency_interval);
    round.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        round.tick().await;
        // Tunnels of a server with an agent are measured by that agent,
        // where their addresses route.
        let targets: Vec<_> = ingest
            .connected()
            .into_iter()
            .filter(|(o, _)| !ingest.has_agent(o.host.as_deref()))
            .filter_map(|(o, s)| Some((o, s.virtual_addr?, s)))
            .collect();
        futures_util::stream::iter(targets)
            .for_each_concurrent(CONCURRENT, |(origin, addr, session)| {
                let (ingest, pingers) = (&ingest, &pingers);
                let (pings, timeout) = (config.latency_pings, config.latency_timeout);
                async move {
                    let time = now();
                    let mut rtts = Vec::with_capacity(usize::from(pings));
                    for _ in 0..pings {
                        if let Ok(rtt) = pingers.ping(addr, timeout).await {
                            rtts.push(rtt);
                        }
                    }
                    let latency = measurement(time, &session.common_name, addr, pings, &rtts);
                    ingest.latency(
                        Latency {
                            tunnel: session.tunnel,
                            ..latency
                        },
                        origin,
                    );
                }
            })
            .await;
    }
}

/// One round's record from the answered pings' round-trip times.
pub fn measurement(time: u64, name: &str, addr: IpAddr, sent: u16, rtts: &[Duration]) -> Latency {
    let ms: Vec<f64> = rtts.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    let rtt_ms = (!ms.is_empty()).then(|| Rtt {
        min: ms.iter().copied().fold(f64::INFINITY, f64::min),
        avg: ms.iter().sum::<f64>() / ms.len() as f64,
        max: ms.iter().copied().fold(0.0, f64::max),
    });
    Latency {
        time,
        tunnel: None,
        common_name: name.to_owned(),
        addr,
        sent: u32::from(sent),
        received: ms.len() as u32,
        rtt_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtt_summary_and_loss() {
        let addr: IpAddr = "100.64.0.2".parse().unwrap();
        let l = measurement(
            5,
            "r",
            addr,
            3,
            &[Duration::from_millis(2), Duration::from_millis(4)],
        );
        assert_eq!((l.sent, l.received), (3, 2));
        assert_eq!(
            l.rtt_ms,
            Some(Rtt {
                min: 2.0,
                avg: 3.0,
                max: 4.0
            })
        );
        let lost = measurement(5, "r", addr, 3, &[]);
        assert_eq!((lost.received, lost.rtt_ms), (0, None));
    }
}
