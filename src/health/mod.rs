//! Health checks: probe every region, keep rise/fall state, publish who serves.
//!
//! Each probed region has its own loop (probe round → [`machine::Machine`] →
//! sleep `interval` or `recheck`, plus jitter so regions are not probed in
//! lock-step). Loops send their results to one writer task, the only code that
//! builds a new [`HealthTable`] and [`RegionView`]: it swaps them in (queries read
//! them lock-free), persists the table, and reports fail-open transitions.

pub mod machine;
pub mod probe;
pub mod store;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::{
    config::{Config, HealthConfig, ProbeSpec},
    dns::answer::Responder,
    route::RegionState,
    state::RegionView,
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
    pub fn initial(config: &Config, saved: Option<&store::StateFile>) -> Self {
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

    /// Loads the table a running server would start from (for `mgnt lookup`).
    pub fn from_state_file(config: &Config) -> Self {
        Self::initial(config, store::load(&config.health.state_file).as_ref())
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

/// The running health checks.
pub struct Health {
    pub table: ArcSwap<HealthTable>,
    /// Times a geo name entered fail-open (every region down).
    pub fail_open_events: AtomicU64,
    pub transitions: AtomicU64,
}

/// A probe loop's report to the writer.
struct Update {
    region: usize,
    machine: Machine,
    round: Round,
    transition: Option<Transition>,
}

/// Loads the last-known state, publishes it, and starts probing.
pub fn start(config: &Config, responder: Arc<Responder>) -> Arc<Health> {
    let table = HealthTable::initial(config, store::load(&config.health.state_file).as_ref());
    responder.view.store(Arc::new(table.view()));
    let health = Arc::new(Health {
        table: ArcSwap::from_pointee(table.clone()),
        fail_open_events: AtomicU64::new(0),
        transitions: AtomicU64::new(0),
    });
    let probed: Vec<(usize, ProbeSpec)> = config
        .regions
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.probe.clone().map(|p| (i, p)))
        .collect();
    if probed.is_empty() {
        info!("no region has probe targets; every region is served unprobed");
        return health;
    }
    let pingers = Arc::new(Pingers::open());
    let needs_icmp = probed.iter().any(|(_, p)| !p.icmp.is_empty());
    for reason in pingers.unavailable().iter().filter(|_| needs_icmp) {
        warn!(%reason, "ICMP probes cannot run; they count as failed where required");
    }
    let (tx, rx) = mpsc::channel(64);
    for (region, spec) in probed {
        let machine = table.regions[region].machine;
        let cfg = config.health.clone();
        let pingers = pingers.clone();
        let timeout = cfg.timeout;
        let probe = move || {
            let (spec, pingers) = (spec.clone(), pingers.clone());
            async move { probe::round(&spec, timeout, &pingers).await }
        };
        tokio::spawn(probe_loop(region, probe, machine, cfg, tx.clone()));
    }
    let writer = Writer {
        health: health.clone(),
        responder,
        state_file: config.health.state_file.clone(),
        fail_open: vec![false; config.geo.len()],
    };
    tokio::spawn(writer.run(rx));
    health
}

/// Random delay in `[0, max]`, spreading regions' probes apart.
fn jitter(max: Duration) -> Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::random_range(0..=ms))
}

/// Probes one region until the writer goes away; `probe` runs one round.
async fn probe_loop<F, Fut>(
    region: usize,
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

struct Writer {
    health: Arc<Health>,
    responder: Arc<Responder>,
    state_file: std::path::PathBuf,
    /// Per geo name: was every region down at the last change?
    fail_open: Vec<bool>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Update>) {
        while let Some(update) = rx.recv().await {
            let table = Arc::new(self.apply(update));
            if let Err(error) = self.persist(table.clone()).await {
                error!(file = %self.state_file.display(), %error, "cannot write the health state file");
            }
        }
    }

    fn apply(&mut self, u: Update) -> HealthTable {
        let mut table = HealthTable::clone(&self.health.table.load());
        let entry = &mut table.regions[u.region];
        entry.machine = u.machine;
        if let Some(t) = u.transition {
            entry.since = Some(u.round.at);
            log_transition(&entry.name, t, &u.round);
            self.health.transitions.fetch_add(1, Ordering::Relaxed);
        }
        entry.last = Some(u.round);
        let changed = u.transition.is_some();
        self.health.table.store(Arc::new(table.clone()));
        if changed {
            let view = table.view();
            self.report_fail_open(&view);
            self.responder.view.store(Arc::new(view));
        }
        table
    }

    /// When a geo name has no serving region we still answer (the nearest), and
    /// say so once per transition rather than once per query.
    fn report_fail_open(&mut self, view: &RegionView) {
        let data = self.responder.data.load();
        for (i, geo) in data.geo.iter().enumerate() {
            let all_down = geo.spec.regions.iter().all(|&r| !view.states[r].serving);
            let Some(was) = self.fail_open.get_mut(i) else {
                continue;
            };
            if all_down && !*was {
                self.health.fail_open_events.fetch_add(1, Ordering::Relaxed);
                error!(name = %geo.spec.name, "every region is down; failing open to the nearest");
            } else if !all_down && *was {
                info!(name = %geo.spec.name, "a region is serving again; fail-open over");
            }
            *was = all_down;
        }
    }

    async fn persist(&self, table: Arc<HealthTable>) -> std::io::Result<()> {
        let path = self.state_file.clone();
        tokio::task::spawn_blocking(move || store::save(&path, &table))
            .await
            .map_err(std::io::Error::other)?
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
        let task = tokio::spawn(probe_loop(0, probe, start, cfg(), tx));
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
