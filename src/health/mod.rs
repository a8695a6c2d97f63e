//! Health checks: probe every region and report each round.
//!
//! Each probed region has its own loop (probe round → report → sleep
//! `interval` or `recheck`, plus jitter so regions are not probed in
//! lock-step). Loops only report what they saw; the rise/fall machines belong
//! to the state owner ([`crate::state`]), which answers each report with the
//! region's machine so the loop knows whether a streak needs rechecking.

pub mod machine;
pub mod probe;
pub mod quorum;

use std::{future::Future, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::{
    config::{Config, HealthConfig},
    metrics::Histogram,
};
use machine::Machine;
use probe::{Pingers, Round};

/// One region's health as last seen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegionHealth {
    /// False: no probe targets configured; always serving.
    pub probed: bool,
    pub machine: Machine,
    /// Seconds since 1970 of the last transition.
    pub since: Option<u64>,
    pub last: Option<Round>,
}

impl RegionHealth {
    /// A region with no history: up but unconfirmed (probed at once).
    pub fn fresh(probed: bool) -> Self {
        Self {
            probed,
            machine: Machine::unconfirmed(),
            since: None,
            last: None,
        }
    }
}

/// A probe loop's round, sent to the state owner. The owner answers with the
/// region's machine after applying it; a dropped answer (a reload replaced
/// this loop's configuration) ends the loop.
#[derive(Debug)]
pub struct Report {
    /// The configuration generation the loop was started for.
    pub generation: u64,
    pub region: String,
    pub round: Round,
    pub reply: oneshot::Sender<Machine>,
}

/// Counters of one region's probes of one kind.
#[derive(Default)]
pub struct ProbeStats {
    pub ok: u64,
    pub failed: u64,
    /// Round-trip times of passing probes, in seconds.
    pub rtt: Histogram,
}

/// The probe loops of the current configuration. Their reports go into the
/// owner's queue as `T` (one queue, so rounds and commands keep their order).
pub struct Scheduler<T> {
    pingers: Arc<Pingers>,
    reports: mpsc::Sender<T>,
    loops: Vec<tokio::task::AbortHandle>,
}

impl<T: From<Report> + Send + 'static> Scheduler<T> {
    /// Opens the ICMP sockets; loops will report to `reports`.
    pub fn new(reports: mpsc::Sender<T>) -> Self {
        Self {
            pingers: Arc::new(Pingers::open()),
            reports,
            loops: Vec::new(),
        }
    }

    /// Replaces the probe loops with those of `config` (generation
    /// `generation`); each starts from the machine `machine_of` gives its region.
    pub fn restart(
        &mut self,
        generation: u64,
        config: &Config,
        machine_of: impl Fn(&str) -> Machine,
    ) {
        self.loops.drain(..).for_each(|t| t.abort());
        let probed: Vec<_> = config
            .regions
            .iter()
            .filter_map(|r| Some((r.name.clone(), r.probe.clone()?)))
            .collect();
        if probed.is_empty() {
            info!("no region has probe targets; every region is served unprobed");
        }
        if probed.iter().any(|(_, p)| !p.icmp.is_empty()) {
            for reason in self.pingers.unavailable() {
                warn!(%reason, "ICMP probes cannot run; they count as failed where required");
            }
        }
        for (region, spec) in probed {
            let pingers = self.pingers.clone();
            let timeout = config.health.timeout;
            let probe = move || {
                let (spec, pingers) = (spec.clone(), pingers.clone());
                async move { probe::round(&spec, timeout, &pingers).await }
            };
            let machine = machine_of(&region);
            let task = tokio::spawn(probe_loop(
                (generation, region),
                probe,
                machine,
                config.health.clone(),
                self.reports.clone(),
            ));
            self.loops.push(task.abort_handle());
        }
    }
}

impl<T> Drop for Scheduler<T> {
    fn drop(&mut self) {
        self.loops.iter().for_each(|t| t.abort());
    }
}

/// Random delay in `[0, max]`, spreading regions' probes apart.
fn jitter(max: Duration) -> Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::random_range(0..=ms))
}

/// Probes one region until its reports are no longer answered; `probe` runs
/// one round. `machine` is the region's state when the loop starts.
async fn probe_loop<F, Fut, T>(
    (generation, region): (u64, String),
    mut probe: F,
    machine: Machine,
    cfg: HealthConfig,
    reports: mpsc::Sender<T>,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Round>,
    T: From<Report>,
{
    // Unconfirmed regions are probed at once; restored ones after a short spread.
    if machine.confirmed {
        tokio::time::sleep(jitter(cfg.interval / 10)).await;
    }
    loop {
        let round = probe().await;
        let (reply, answer) = oneshot::channel();
        let report = Report {
            generation,
            region: region.clone(),
            round,
            reply,
        };
        if reports.send(report.into()).await.is_err() {
            return;
        }
        let Ok(machine) = answer.await else {
            return;
        };
        let delay = machine.next_delay(cfg.interval, cfg.recheck);
        tokio::time::sleep(delay + jitter(delay / 10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use machine::{Thresholds, Transition};
    use tokio::time::Instant;

    fn cfg() -> HealthConfig {
        HealthConfig {
            interval: Duration::from_secs(300),
            timeout: Duration::from_secs(5),
            recheck: Duration::from_secs(10),
            fall: 2,
            rise: 2,
            quorum: None,
            state_file: "unused".into(),
        }
    }

    fn round(ok: bool) -> Round {
        Round {
            at: 0,
            ok,
            results: vec![],
        }
    }

    /// What the owner did with one report.
    struct Seen {
        transition: Option<Transition>,
    }

    /// Runs the loop on a scripted series of verdicts under tokio's paused
    /// clock, answering its reports as the owner does; returns (seconds since
    /// start, what the round did) for each round.
    async fn run(start: Machine, script: Vec<bool>) -> Vec<(f64, Seen)> {
        let n = script.len();
        let mut verdicts = script.into_iter();
        let probe = move || {
            let ok = verdicts.next().unwrap_or(true);
            async move { round(ok) }
        };
        let (tx, mut rx) = mpsc::channel::<Report>(64);
        let t0 = Instant::now();
        let task = tokio::spawn(probe_loop((1, "r".into()), probe, start, cfg(), tx));
        let mut machine = start;
        let thresholds = Thresholds { fall: 2, rise: 2 };
        let mut out = Vec::new();
        while out.len() < n {
            let report = rx.recv().await.unwrap();
            let transition = machine.observe(report.round.ok, thresholds);
            report.reply.send(machine).unwrap();
            out.push((t0.elapsed().as_secs_f64(), Seen { transition }));
        }
        task.abort();
        out
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_report_ends_the_loop() {
        let (tx, mut rx) = mpsc::channel::<Report>(1);
        let probe = || async { round(true) };
        let task = tokio::spawn(probe_loop(
            (1, "r".into()),
            probe,
            Machine::unconfirmed(),
            cfg(),
            tx,
        ));
        drop(rx.recv().await.unwrap());
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn probes_every_interval_with_jitter_while_healthy() {
        let got = run(Machine::unconfirmed(), vec![true; 4]).await;
        assert_eq!(got[0].0, 0.0, "a region with no history is probed at once");
        for w in got.windows(2) {
            let gap = w[1].0 - w[0].0;
            assert!((300.0..=330.0).contains(&gap), "gap {gap}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_is_confirmed_within_interval_plus_fall_rechecks() {
        // Healthy, then the region dies just after a round.
        let got = run(Machine::unconfirmed(), vec![true, false, false, true, true]).await;
        let down = got.iter().find(|(_, u)| u.transition.is_some()).unwrap();
        assert_eq!(down.1.transition.unwrap().to, machine::Status::Down);
        // interval (≤ 330 s with jitter) + one recheck (≤ 11 s): well under fall × interval.
        assert!(down.0 <= 330.0 + 11.0, "down after {} s", down.0);
        assert!(got[2].0 - got[1].0 <= 11.0, "the confirmation is a recheck");
        // Recovery: the next interval round succeeds, one recheck confirms it.
        let up = got
            .iter()
            .rev()
            .find(|(_, u)| u.transition.is_some())
            .unwrap();
        assert_eq!(up.1.transition.unwrap().to, machine::Status::Up);
        assert!(got[4].0 - got[3].0 <= 11.0);
    }

    #[tokio::test(start_paused = true)]
    async fn restored_regions_wait_a_short_spread_before_the_first_probe() {
        let got = run(Machine::restored(machine::Status::Down), vec![false]).await;
        assert!(
            got[0].0 <= 30.0,
            "first probe within interval/10: {}",
            got[0].0
        );
    }
}
