//! The state owner: the one task that changes region state.
//!
//! It takes whatever commands and probe reports are queued as one batch,
//! applies them in order to the values it alone holds (the loaded data, the
//! machines and drains in [`Regions`]), expires drains whose time has come,
//! persists once, publishes one snapshot, and only then answers. If persisting
//! fails, the batch's operator changes are undone and refused, while its probe
//! rounds are still published: health must keep flowing when a disk is full.
//!
//! With a shared store, other nodes' drains and health votes arrive as
//! messages too; the owner adopts them and publishes when the view changed.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{error, field::display, info, warn};

use super::{
    Clock, Counters, DrainRecord, DrainRequest, Handle, Input, QUEUE, Reader, ReloadReport,
    Snapshot, StateError, audit,
    regions::{Refusal, Regions},
    store::{Shared, StateStore},
};
use crate::{
    config::{Config, restart},
    dns::{Data, LoadError},
    health::{
        Scheduler,
        machine::{Machine, Thresholds, Transition},
        probe::Round,
        quorum::{Rule, Votes},
    },
};
use batch::{Answer, Applied, Outcome, Request, answer, keep_refusals, split};

/// Most commands and reports applied between two saves.
const MAX_BATCH: usize = 256;

/// Starts the owner of `data`'s region state: restores what `store` saved,
/// publishes the first snapshot, starts the probe loops when `probing`, and
/// returns the handle and the task (which runs as long as the runtime).
pub async fn start(
    mut data: Data,
    config_path: PathBuf,
    store: Box<dyn StateStore>,
    probing: bool,
    clock: Clock,
) -> (Handle, JoinHandle<()>) {
    let saved = store.load().await;
    let regions = Regions::restore(&data.config, saved.as_ref());
    data.generation = 1;
    let data = Arc::new(data);
    let reader = Reader::new(Snapshot::of(data.clone(), &regions, clock()));
    let (inputs, queue) = mpsc::channel(QUEUE);
    let counters = Arc::new(Counters::default());
    counters
        .generation
        .store(1, std::sync::atomic::Ordering::Relaxed);
    let mut owner = Owner {
        started: data.config.clone(),
        data,
        loads: 1,
        regions,
        store,
        reader: reader.clone(),
        scheduler: probing.then(|| Scheduler::new(inputs.clone())),
        clock,
        counters: counters.clone(),
        fail_open: BTreeMap::new(),
        persist_failing: false,
        shared: None,
        votes: None,
    };
    owner.shared = owner.store.shared();
    owner.votes = owner.store.votes();
    owner.restart_probes();
    owner.track_fail_open(&owner.reader.load_full());
    let task = tokio::spawn(owner.run(queue));
    let handle = Handle {
        reader,
        inputs,
        counters,
        config_path,
        check: None,
    };
    (handle, task)
}

struct Owner {
    data: Arc<Data>,
    /// Loads so far, never reused (a reverted reload's number included).
    loads: u64,
    regions: Regions,
    /// The config the process started with: what `needs_restart` compares to.
    started: Config,
    store: Box<dyn StateStore>,
    reader: Reader,
    scheduler: Option<Scheduler<Input>>,
    clock: Clock,
    counters: Arc<Counters>,
    /// Whether each geo name (by name) had no serving region at the last publish.
    fail_open: BTreeMap<String, bool>,
    /// Persisting failed last time (logged once until it works again).
    persist_failing: bool,
    /// Drains as the other nodes leave them (a shared store only).
    shared: Option<mpsc::Receiver<Shared>>,
    /// The other nodes' health votes (a shared store only).
    votes: Option<mpsc::Receiver<Votes>>,
}

impl Owner {
    async fn run(mut self, mut queue: mpsc::Receiver<Input>) {
        loop {
            let now = (self.clock)();
            let after = |at: u64| Duration::from_secs(at.saturating_sub(now));
            let wake = self.regions.next_expiry().map(after);
            let rule = Rule::of(&self.data.config.health);
            let recount = self.regions.next_vote_expiry(rule, now).map(after);
            let mut batch = Vec::new();
            tokio::select! {
                biased;
                input = queue.recv() => match input {
                    Some(input) => batch.push(input),
                    None => return,
                },
                Some(drains) = next(&mut self.shared) => {
                    self.adopt(drains, (self.clock)());
                    continue;
                }
                Some(votes) = next(&mut self.votes) => {
                    self.regions.adopt_votes(votes);
                    self.republish((self.clock)());
                    continue;
                }
                () = sleep_or_forever(wake) => {}
                // A vote stopped counting: nothing to persist, maybe a new view.
                () = sleep_or_forever(recount) => {
                    self.republish((self.clock)());
                    continue;
                }
            }
            // Everything already queued joins the batch: one save, one publish.
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(input) => batch.push(input),
                    Err(_) => break,
                }
            }
            self.process(batch).await;
        }
    }

    /// Applies one batch, persists, publishes, answers.
    async fn process(&mut self, batch: Vec<Input>) {
        let now = (self.clock)();
        let (mut requests, answers): (Vec<Request>, Vec<Answer>) =
            batch.into_iter().map(split).unzip();
        let before = (self.data.clone(), self.regions.clone());
        let mut applied = self.apply(&mut requests, true, now);
        let audit = std::mem::take(&mut applied.audit);
        let saved = self.store.save(self.regions.saved(), audit).await;
        let persisted = match saved {
            Ok(()) => {
                if std::mem::take(&mut self.persist_failing) {
                    info!("region state is persisted again");
                }
                Ok(())
            }
            Err(e) => {
                Counters::bump(&self.counters.persist_failures);
                if !std::mem::replace(&mut self.persist_failing, true) {
                    error!(error = %e, "cannot persist region state; health is still published, operator changes are refused");
                }
                if applied.outcomes.iter().any(Outcome::changed) {
                    (self.data, self.regions) = before;
                    let first = std::mem::take(&mut applied.outcomes);
                    applied = self.apply(&mut requests, false, now);
                    keep_refusals(&mut applied.outcomes, first);
                }
                Err(e.to_string())
            }
        };
        if applied.reloaded && persisted.is_ok() {
            let data = &self.data;
            let needs_restart = applied.outcomes.iter().rev().find_map(|o| match o {
                Outcome::Reload(Ok(r)) if !r.needs_restart.is_empty() => {
                    Some(r.needs_restart.join(", "))
                }
                _ => None,
            });
            info!(generation = data.generation, config_hash = %data.config_hash, needs_restart, "reloaded");
            self.restart_probes();
        }
        self.publish(&requests, &applied, now);
        answer(answers, applied.outcomes, &persisted, &self.counters);
    }

    /// One pass over the batch; `operator` false skips drains, undrains
    /// and reloads (a batch that could not be persisted is applied again so).
    fn apply(&mut self, requests: &mut [Request], operator: bool, now: u64) -> Applied {
        let mut applied = Applied::default();
        for request in requests.iter_mut() {
            let outcome = match request {
                Request::Report {
                    generation,
                    region,
                    round,
                } => Outcome::Report(self.observe(*generation, region, round, &mut applied)),
                _ if !operator => Outcome::NotPersisted,
                Request::Drain { region, request } => {
                    Outcome::Drain(self.drain(region, request, now, &mut applied.audit))
                }
                Request::Undrain { region, by } => {
                    Outcome::Undrain(self.undrain(region, by, now, &mut applied.audit))
                }
                Request::Reload { loaded, by } => match loaded.take() {
                    Some(loaded) => {
                        let result = self.reload(loaded, by, now, &mut applied.audit);
                        applied.reloaded |= result.is_ok();
                        Outcome::Reload(result)
                    }
                    None => Outcome::NotPersisted,
                },
                Request::Record(entry) => match entry.take() {
                    Some(entry) => {
                        applied.audit.push(entry);
                        Outcome::Recorded
                    }
                    None => Outcome::NotPersisted,
                },
            };
            applied.outcomes.push(outcome);
        }
        for (region, d) in self.regions.expire(now) {
            info!(%region, reason = %d.reason, by = %d.by, "drain ended by its `until` time");
            let mut entry =
                audit::Entry::new(now, "mgnt", "drain-ended", "ended at its until time");
            (entry.region, entry.reason, entry.until) = (Some(region), Some(d.reason), d.until);
            applied.audit.push(entry);
        }
        applied
    }

    fn observe(
        &mut self,
        generation: u64,
        region: &str,
        round: &Round,
        applied: &mut Applied,
    ) -> Option<Machine> {
        if generation != self.data.generation {
            return None; // from a loop of a configuration reloaded away
        }
        let health = &self.data.config.health;
        let thresholds = Thresholds {
            fall: health.fall,
            rise: health.rise,
        };
        let (machine, transition) = self.regions.observe(region, round.clone(), thresholds)?;
        if let Some(t) = transition {
            applied
                .transitions
                .push((region.to_owned(), t, round.clone()));
        }
        Some(machine)
    }

    fn drain(
        &mut self,
        region: &str,
        request: &DrainRequest,
        now: u64,
        audit: &mut Vec<audit::Entry>,
    ) -> Result<DrainRecord, StateError> {
        let record = DrainRecord {
            reason: request.reason.clone(),
            by: request.by.clone(),
            since: now,
            until: request.until,
        };
        let result = self
            .regions
            .drain(&self.data.config, region, record.clone(), request.force);
        let outcome = match &result {
            Ok(()) => "drained",
            Err(Refusal::NoRegion) => "refused: no such region",
            Err(Refusal::LastServing(_)) => "refused: last serving region",
        };
        let mut entry = audit::Entry::new(now, &request.by, "drain", outcome);
        entry.region = Some(region.to_owned());
        entry.reason = Some(request.reason.clone());
        (entry.until, entry.force) = (request.until, request.force);
        audit.push(entry);
        match result {
            Ok(()) => {
                let until = request.until.map(|t| display(crate::clock::rfc3339(t)));
                info!(%region, by = %request.by, reason = %request.reason, until, "region drained");
                Ok(record)
            }
            Err(Refusal::NoRegion) => Err(StateError::NoRegion(region.to_owned())),
            Err(Refusal::LastServing(geo_names)) => Err(StateError::LastServing {
                region: region.to_owned(),
                geo_names,
            }),
        }
    }

    fn undrain(
        &mut self,
        region: &str,
        by: &str,
        now: u64,
        audit: &mut Vec<audit::Entry>,
    ) -> Result<Option<DrainRecord>, StateError> {
        if self.data.config.region_index(region).is_none() {
            return Err(StateError::NoRegion(region.to_owned()));
        }
        let was = self.regions.undrain(region);
        let outcome = if was.is_some() {
            "undrained"
        } else {
            "was not drained"
        };
        let mut entry = audit::Entry::new(now, by, "undrain", outcome);
        entry.region = Some(region.to_owned());
        audit.push(entry);
        info!(%region, %by, "region undrained");
        Ok(was)
    }

    fn reload(
        &mut self,
        loaded: Result<Box<Data>, LoadError>,
        by: &str,
        now: u64,
        audit: &mut Vec<audit::Entry>,
    ) -> Result<ReloadReport, StateError> {
        let mut data = match loaded {
            Ok(d) => d,
            Err(e) => {
                error!(by, error = %e, "reload refused; the previous data keeps serving");
                audit.push(audit::Entry::new(now, by, "reload", format!("failed: {e}")));
                return Err(StateError::Load(e));
            }
        };
        let needs_restart = restart::changes(&self.started, &data.config);
        // What runs as it started (listeners, stores, the node's claimed
        // name…) is published as it runs, so no reader acts on a value
        // nothing applied.
        restart::keep_running(&mut data.config, &self.started);
        self.loads += 1;
        data.generation = self.loads;
        data.inherit_counters(&self.data);
        self.regions.reconfigure(&data.config);
        let report = ReloadReport {
            generation: data.generation,
            zones: data.zones.zones.len(),
            geo_names: data.geo.len(),
            regions: data.config.regions.len(),
            geoip_build_epoch: data.maps.db().build_epoch(),
            config_hash: data.config_hash.clone(),
            needs_restart,
        };
        for key in &report.needs_restart {
            warn!(
                key,
                "differs from the running configuration; takes effect after a restart"
            );
        }
        self.data = Arc::from(data);
        let mut entry = audit::Entry::new(now, by, "reload", "reloaded");
        entry.config_hash = Some(report.config_hash.to_string());
        entry.needs_restart.clone_from(&report.needs_restart);
        audit.push(entry);
        Ok(report)
    }

    /// Takes the drains another node changed, and answers by them.
    fn adopt(&mut self, shared: Shared, now: u64) {
        // Read before our own last save committed: its news come again.
        if shared.version < self.store.saved_version() {
            return;
        }
        if self.regions.adopt_drains(shared.drains) {
            info!("drains changed on another node");
            self.publish(&[], &Applied::default(), now);
        }
    }

    /// Publishes the current state if what readers see of it changed (the
    /// other nodes' votes changed, or one stopped counting).
    fn republish(&mut self, now: u64) {
        let current = self.reader.load_full();
        let (view, regions) = self.regions.view(&self.data.config, now);
        if !Arc::ptr_eq(&current.data, &self.data)
            || view != current.view
            || regions != current.regions
        {
            self.publish(&[], &Applied::default(), now);
        }
    }

    /// Publishes the snapshot of the current state, logs what changed.
    fn publish(&mut self, requests: &[Request], applied: &Applied, now: u64) {
        for (request, outcome) in requests.iter().zip(&applied.outcomes) {
            if let (Request::Report { region, round, .. }, Outcome::Report(Some(_))) =
                (request, outcome)
            {
                self.record_probes(region, round);
            }
        }
        for (region, t, round) in &applied.transitions {
            log_transition(region, *t, round);
            Counters::bump(&self.counters.transitions);
        }
        let snapshot = Snapshot::of(self.data.clone(), &self.regions, now);
        log_vote_changes(&self.reader.load(), &snapshot);
        self.track_fail_open(&snapshot);
        self.reader.publish(snapshot);
        Counters::bump(&self.counters.publishes);
        self.counters
            .generation
            .store(self.data.generation, std::sync::atomic::Ordering::Relaxed);
    }

    fn record_probes(&self, region: &str, round: &Round) {
        let mut probes = self
            .counters
            .probes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for r in &round.results {
            let stats = probes.entry((region.to_owned(), r.kind)).or_default();
            if r.ok {
                stats.ok += 1;
            } else {
                stats.failed += 1;
            }
            if let Some(ms) = r.rtt_ms {
                stats.rtt.observe(ms / 1000.0);
            }
        }
    }

    /// Logs (and counts) each geo name entering or leaving fail-open.
    fn track_fail_open(&mut self, snapshot: &Snapshot) {
        for geo in &snapshot.data.config.geo {
            let all_out = geo.regions.iter().all(|&r| !snapshot.view.serving(r));
            let name = geo.name.to_string();
            let was = self
                .fail_open
                .insert(name.clone(), all_out)
                .unwrap_or(false);
            if all_out && !was {
                Counters::bump(&self.counters.fail_open_events);
                error!(name, "no region is serving; failing open to the nearest");
            } else if !all_out && was {
                info!(name, "a region is serving again; fail-open over");
            }
        }
    }

    fn restart_probes(&mut self) {
        let (regions, data) = (&self.regions, &self.data);
        if let Some(s) = &mut self.scheduler {
            s.restart(data.generation, &data.config, |r| regions.machine(r));
        }
    }
}

fn log_transition(region: &str, t: Transition, round: &Round) {
    let reason = round
        .results
        .iter()
        .map(|r| match &r.error {
            Some(e) => format!("{} {}: {e}", r.kind.name(), r.target),
            None => format!("{} {}: ok", r.kind.name(), r.target),
        })
        .collect::<Vec<_>>()
        .join("; ");
    let rtt_ms = round
        .results
        .iter()
        .filter_map(|r| r.rtt_ms)
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))));
    // No RTT when no target answered: the field is left out.
    let (from, to) = (t.from.name(), t.to.name());
    warn!(region, from, to, %reason, rtt_ms, "region health changed");
}

/// Logs each region whose votes took it out of the answers or brought it
/// back, when other nodes vote (alone, the machine's transition says it).
fn log_vote_changes(before: &Snapshot, after: &Snapshot) {
    for status in &after.regions {
        let Some(votes) = &status.votes else {
            continue;
        };
        let was = before
            .regions
            .iter()
            .find(|b| b.name == status.name)
            .and_then(|b| b.votes.as_ref());
        let Some(was) = was else {
            continue;
        };
        if was.out() == votes.out() || (was.counted < 2 && votes.counted < 2) {
            continue;
        }
        let (region, down, counted, quorum) =
            (&status.name, votes.down, votes.counted, votes.quorum);
        let nodes = votes.down_nodes.join(", ");
        if votes.out() {
            warn!(%region, down, counted, quorum, %nodes, "region out by the nodes' votes");
        } else {
            info!(%region, down, counted, quorum, %nodes, "region back by the nodes' votes");
        }
    }
}

/// The next message of a shared store's channel, or never without one (or
/// once it stopped sending).
async fn next<T>(channel: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match channel {
        Some(rx) => match rx.recv().await {
            Some(m) => Some(m),
            None => {
                *channel = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

async fn sleep_or_forever(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

mod batch;
#[cfg(test)]
mod tests;
