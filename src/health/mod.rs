//! Health checks: probe every region, keep rise/fall state, publish who serves.
//!
//! Each probed region has its own loop (probe round → [`machine::Machine`] →
//! sleep `interval` or `recheck`, plus jitter so regions are not probed in
//! lock-step). Loops send their results to one writer task, the only code that
//! builds a new [`HealthTable`]; it hands the table to [`Shared::publish`], which
//! combines it with the drains into the view queries read lock-free.

pub mod machine;
pub mod probe;

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{
    config::{Config, HealthConfig, ProbeSpec},
    metrics::Histogram,
    route::RegionState,
    state::{RegionView, Shared, file::StateFile},
};
use machine::{Machine, Thresholds, Transition};
use probe::{Pingers, Round};

/// One region's health as last seen.
#[derive(Debug, Clone, Serialize)]
pub struct RegionHealth {
    pub name: String,
    /// False: no probe targets configured; always serving.
    pub probed: bool,
    pub machine: Machine,
    /// Seconds since 1970 of the last transition.
    pub since: Option<u64>,
    pub last: Option<Round>,
}

/// Every region's health, indexed like the config's regions.
#[derive(Debug, Clone, Serialize)]
pub struct HealthTable {
    pub regions: Vec<RegionHealth>,
}

impl HealthTable {
    /// The table at start: the state file's last-known state where it has one,
    /// up-but-unconfirmed elsewhere.
    pub fn initial(config: &Config, saved: Option<&StateFile>) -> Self {
        let regions = config
            .regions
            .iter()
            .map(|r| {
                let old = saved.and_then(|s| s.regions.get(&r.name));
                let probed = r.probe.is_some();
                RegionHealth {
                    name: r.name.clone(),
                    probed,
                    machine: match old {
                        Some(o) if probed => Machine::restored(o.status),
                        _ => Machine::unconfirmed(),
                    },
                    since: old.and_then(|o| o.since),
                    last: old.and_then(|o| o.last.clone()),
                }
            })
            .collect();
        Self { regions }
    }

    /// The same regions re-indexed for `config`, keeping each one's state by name.
    pub fn reindex(&self, config: &Config) -> Self {
        let regions = config
            .regions
            .iter()
            .map(|r| {
                let probed = r.probe.is_some();
                match self.regions.iter().find(|o| o.name == r.name) {
                    Some(old) => RegionHealth {
                        probed,
                        ..old.clone()
                    },
                    None => RegionHealth {
                        name: r.name.clone(),
                        probed,
                        machine: Machine::unconfirmed(),
                        since: None,
                        last: None,
                    },
                }
            })
            .collect();
        Self { regions }
    }

    /// Which regions may answer.
    pub fn view(&self) -> RegionView {
        RegionView {
            states: self
                .regions
                .iter()
                .map(|r| RegionState {
                    serving: !r.probed || r.machine.serving(),
                })
                .collect(),
        }
    }
}

/// The running health checks: probe loops for the current config and the writer.
pub struct Health {
    shared: Arc<Shared>,
    pingers: Arc<Pingers>,
    tx: mpsc::Sender<Update>,
    loops: Mutex<Loops>,
    pub transitions: AtomicU64,
    /// Probe outcomes and RTTs per (region, kind), for metrics.
    pub probes: Mutex<BTreeMap<(String, probe::Kind), ProbeStats>>,
}

/// Counters of one region's probes of one kind.
#[derive(Default)]
pub struct ProbeStats {
    pub ok: u64,
    pub failed: u64,
    pub rtt_ms: Histogram,
}

/// The probe loops of one config generation.
#[derive(Default)]
struct Loops {
    generation: u64,
    tasks: Vec<tokio::task::AbortHandle>,
}

/// A probe loop's report to the writer.
struct Update {
    generation: u64,
    region: usize,
    machine: Machine,
    round: Round,
    transition: Option<Transition>,
}

impl Health {
    /// Starts probing every region of `config` that has targets.
    pub fn start(config: &Config, shared: Arc<Shared>) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(64);
        let health = Arc::new(Self {
            shared,
            pingers: Arc::new(Pingers::open()),
            tx,
            loops: Mutex::new(Loops::default()),
            transitions: AtomicU64::new(0),
            probes: Mutex::new(BTreeMap::new()),
        });
        tokio::spawn(writer(health.clone(), rx));
        health.restart(config);
        health
    }

    /// Replaces the probe loops with those of `config` (after a reload); each
    /// region keeps its state by name, and new regions start unconfirmed.
    pub fn restart(&self, config: &Config) {
        let table = self.shared.health.load().reindex(config);
        self.shared.health.store(Arc::new(table.clone()));
        let mut loops = self.loops.lock().unwrap_or_else(|p| p.into_inner());
        loops.tasks.drain(..).for_each(|t| t.abort());
        loops.generation += 1;
        let probed: Vec<(usize, ProbeSpec)> = config
            .regions
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.probe.clone().map(|p| (i, p)))
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
            let machine = table.regions[region].machine;
            let generation = loops.generation;
            let task = tokio::spawn(probe_loop(
                (generation, region),
                probe,
                machine,
                config.health.clone(),
                self.tx.clone(),
            ));
            loops.tasks.push(task.abort_handle());
        }
    }
}

/// Random delay in `[0, max]`, spreading regions' probes apart.
fn jitter(max: Duration) -> Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::random_range(0..=ms))
}

/// Probes one region until the writer goes away; `probe` runs one round.
async fn probe_loop<F, Fut>(
    (generation, region): (u64, usize),
    mut probe: F,
    mut machine: Machine,
    cfg: HealthConfig,
    tx: mpsc::Sender<Update>,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Round>,
{
    let thresholds = Thresholds {
        fall: cfg.fall,
        rise: cfg.rise,
    };
    // Unconfirmed regions are probed at once; restored ones after a short spread.
    if machine.confirmed {
        tokio::time::sleep(jitter(cfg.interval / 10)).await;
    }
    loop {
        let round = probe().await;
        let transition = machine.observe(round.ok, thresholds);
        let update = Update {
            generation,
            region,
            machine,
            round,
            transition,
        };
        if tx.send(update).await.is_err() {
            return;
        }
        let delay = machine.next_delay(cfg.interval, cfg.recheck);
        tokio::time::sleep(delay + jitter(delay / 10)).await;
    }
}

impl Health {
    fn record(&self, region: &str, round: &Round) {
        let mut probes = self.probes.lock().unwrap_or_else(|p| p.into_inner());
        for r in &round.results {
            let stats = probes.entry((region.to_owned(), r.kind)).or_default();
            if r.ok {
                stats.ok += 1;
            } else {
                stats.failed += 1;
            }
            if let Some(ms) = r.rtt_ms {
                stats.rtt_ms.observe(ms);
            }
        }
    }
}

/// The only code that changes the health table: applies updates in order and publishes.
async fn writer(health: Arc<Health>, mut rx: mpsc::Receiver<Update>) {
    while let Some(u) = rx.recv().await {
        let current = health.loops.lock().map_or(0, |l| l.generation);
        if u.generation != current {
            continue; // from a loop of a config that was reloaded away
        }
        let mut table = HealthTable::clone(&health.shared.health.load());
        let Some(entry) = table.regions.get_mut(u.region) else {
            continue;
        };
        entry.machine = u.machine;
        if let Some(t) = u.transition {
            entry.since = Some(u.round.at);
            log_transition(&entry.name, t, &u.round);
            health.transitions.fetch_add(1, Ordering::Relaxed);
        }
        health.record(&entry.name, &u.round);
        entry.last = Some(u.round);
        health.shared.health.store(Arc::new(table));
        // Persisting after every round keeps "last probe" current for `mgnt lookup`.
        let _ = health.shared.publish().await;
    }
}

fn log_transition(region: &str, t: Transition, round: &Round) {
    let reason = round
        .results
        .iter()
        .map(|r| match &r.error {
            Some(e) => format!("{:?} {}: {e}", r.kind, r.target),
            None => format!("{:?} {}: ok", r.kind, r.target),
        })
        .collect::<Vec<_>>()
        .join("; ");
    let rtt_ms = round
        .results
        .iter()
        .filter_map(|r| r.rtt_ms)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))));
    warn!(region, from = ?t.from, to = ?t.to, %reason, ?rtt_ms, "region health changed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn cfg() -> HealthConfig {
        HealthConfig {
            interval: Duration::from_secs(300),
            timeout: Duration::from_secs(5),
            recheck: Duration::from_secs(10),
            fall: 2,
            rise: 2,
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

    /// Runs the loop on a scripted series of verdicts under tokio's paused
    /// clock; returns (seconds since start, update) for each round.
    async fn run(start: Machine, script: Vec<bool>) -> Vec<(f64, Update)> {
        let n = script.len();
        let mut verdicts = script.into_iter();
        let probe = move || {
            let ok = verdicts.next().unwrap_or(true);
            async move { round(ok) }
        };
        let (tx, mut rx) = mpsc::channel(64);
        let t0 = Instant::now();
        let task = tokio::spawn(probe_loop((1, 0), probe, start, cfg(), tx));
        let mut out = Vec::new();
        while out.len() < n {
            let u = rx.recv().await.unwrap();
            out.push((t0.elapsed().as_secs_f64(), u));
        }
        task.abort();
        out
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
