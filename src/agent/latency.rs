//! Latency from the agent: where it runs, tunnel addresses route. Every
//! `latency_interval` each live tunnel gets `latency_pings` pings; the round
//! goes to the control plane as a report.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use futures_util::StreamExt;
use tokio::{
    sync::watch,
    time::{MissedTickBehavior, interval},
};
use tracing::warn;

use super::outbox::Outbox;
use crate::{clock::now, health::probe::Pingers, vpnlog::report::Report};

/// Tunnels pinged at once.
const CONCURRENT: usize = 256;
/// How long one ping waits.
const TIMEOUT: Duration = Duration::from_secs(1);

/// Pings the live tunnels (tunnel username and address, as the management
/// session publishes them) for as long as the agent runs; `rounds` counts
/// the rounds reported.
pub async fn run(
    every: Duration,
    pings: u16,
    targets: watch::Receiver<Vec<(String, IpAddr)>>,
    outbox: Outbox,
    rounds: Arc<AtomicU64>,
) {
    let pingers = Arc::new(Pingers::open());
    for why in pingers.unavailable() {
        warn!(problem = %why, "no ICMP socket: tunnel latency is not measured");
    }
    let mut round = interval(every);
    round.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        round.tick().await;
        let now_live = targets.borrow().clone();
        futures_util::stream::iter(now_live)
            .for_each_concurrent(CONCURRENT, |(user, address)| {
                let (pingers, outbox, rounds) = (&pingers, &outbox, &rounds);
                async move {
                    let time = now();
                    let mut rtts_us = Vec::with_capacity(usize::from(pings));
                    for _ in 0..pings {
                        if let Ok(rtt) = pingers.ping(address, TIMEOUT).await {
                            rtts_us.push(u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX));
                        }
                    }
                    outbox.report(Report::Latency {
                        time,
                        user,
                        address,
                        sent: pings,
                        rtts_us,
                    });
                    rounds.fetch_add(1, Relaxed);
                }
            })
            .await;
    }
}
