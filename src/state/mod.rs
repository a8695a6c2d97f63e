//! What queries read about regions, and the one place it is recomputed.
//!
//! Health checks and drains each keep their own table; [`Shared::publish`]
//! combines them into a [`RegionView`], swaps it into the responder (queries
//! never wait), and persists both tables to the state file in one atomic write.
//! Every writer goes through the single publisher task, so views and files are
//! never built from a mix of old and new tables.

pub mod drain;
pub mod file;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info};

use crate::{dns::answer::Responder, health::HealthTable, route::RegionState};
pub use drain::{DrainRecord, Drains};

/// Serving state per region, indexed like [`crate::config::Config::regions`].
#[derive(Debug, Clone, Default)]
pub struct RegionView {
    pub states: Vec<RegionState>,
}

impl RegionView {
    /// Every region serving: the state before any health information exists.
    pub fn all_serving(regions: usize) -> Self {
        Self {
            states: vec![RegionState::default(); regions],
        }
    }
}

/// Seconds since 1970.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A region serves when its health allows and no active drain names it.
pub fn compose(health: &HealthTable, drains: &Drains, now: u64) -> RegionView {
    let mut view = health.view();
    for (state, region) in view.states.iter_mut().zip(&health.regions) {
        if drains.is_drained(&region.name, now) {
            state.serving = false;
        }
    }
    view
}

/// The geo names (indices) that would have no serving region left in `view`.
pub fn stranded(geo_regions: &[&[usize]], view: &RegionView) -> Vec<usize> {
    geo_regions
        .iter()
        .enumerate()
        .filter(|(_, regions)| regions.iter().all(|&r| !view.states[r].serving))
        .map(|(i, _)| i)
        .collect()
}

type Ack = oneshot::Sender<std::io::Result<()>>;

/// The shared region state of a running server.
pub struct Shared {
    pub responder: Arc<Responder>,
    pub health: ArcSwap<HealthTable>,
    pub drains: ArcSwap<Drains>,
    state_file: PathBuf,
    /// Times a geo name entered fail-open (every region down or drained).
    pub fail_open_events: AtomicU64,
    requests: mpsc::Sender<Ack>,
}

impl Shared {
    /// Publishes the initial view and starts the publisher task.
    pub fn start(
        responder: Arc<Responder>,
        health: HealthTable,
        drains: Drains,
        state_file: PathBuf,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(64);
        let shared = Arc::new(Self {
            responder,
            health: ArcSwap::from_pointee(health),
            drains: ArcSwap::from_pointee(drains),
            state_file,
            fail_open_events: AtomicU64::new(0),
            requests: tx,
        });
        shared.recompute(&mut Vec::new());
        tokio::spawn(publisher(shared.clone(), rx));
        shared
    }

    /// Recomputes the view from the current tables and persists them; returns
    /// once the state file is on disk (or failed to be written).
    pub async fn publish(&self) -> std::io::Result<()> {
        let (ack, done) = oneshot::channel();
        self.requests
            .send(ack)
            .await
            .map_err(|_| std::io::Error::other("state publisher stopped"))?;
        done.await
            .map_err(|_| std::io::Error::other("state publisher stopped"))?
    }

    /// The view for the current tables, expiring drains first; tracks fail-open per geo name.
    fn recompute(&self, fail_open: &mut Vec<bool>) {
        let now = now();
        let mut drains = Drains::clone(&self.drains.load());
        let expired = drains.expire(now);
        if !expired.is_empty() {
            info!(regions = ?expired, "drain ended by its `until` time");
            self.drains.store(Arc::new(drains.clone()));
        }
        let view = compose(&self.health.load(), &drains, now);
        let data = self.responder.data.load();
        fail_open.resize(data.geo.len(), false);
        for (i, geo) in data.geo.iter().enumerate() {
            let all_out = geo
                .spec
                .regions
                .iter()
                .all(|&r| !view.states.get(r).is_none_or(|s| s.serving));
            if all_out && !fail_open[i] {
                self.fail_open_events.fetch_add(1, Ordering::Relaxed);
                error!(name = %geo.spec.name, "no region is serving; failing open to the nearest");
            } else if !all_out && fail_open[i] {
                info!(name = %geo.spec.name, "a region is serving again; fail-open over");
            }
            fail_open[i] = all_out;
        }
        self.responder.view.store(Arc::new(view));
    }

    fn save(&self) -> std::io::Result<()> {
        file::save(&self.state_file, &self.health.load(), &self.drains.load())
    }
}

async fn publisher(shared: Arc<Shared>, mut rx: mpsc::Receiver<Ack>) {
    let mut fail_open = Vec::new();
    loop {
        let wake = shared
            .drains
            .load()
            .next_expiry(now())
            .map(|at| Duration::from_secs(at.saturating_sub(now())));
        let mut acks = Vec::new();
        tokio::select! {
            ack = rx.recv() => match ack {
                Some(a) => acks.push(a),
                None => return,
            },
            () = sleep_or_forever(wake) => {}
        }
        // Coalesce everything already queued into one recompute and one write.
        while let Ok(a) = rx.try_recv() {
            acks.push(a);
        }
        shared.recompute(&mut fail_open);
        let s = shared.clone();
        let result = tokio::task::spawn_blocking(move || s.save())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(error) = &result {
            error!(file = %shared.state_file.display(), %error, "cannot write the state file");
        }
        for ack in acks {
            let _ = ack.send(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| std::io::Error::new(e.kind(), e.to_string())),
            );
        }
    }
}

async fn sleep_or_forever(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the
/// new one: a temp file in the same directory, fsync, rename, fsync the directory.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
    }

    #[test]
    fn stranded_names_the_geo_names_left_without_a_region() {
        let view = RegionView {
            states: vec![
                RegionState { serving: false },
                RegionState { serving: true },
                RegionState { serving: false },
            ],
        };
        let a: &[usize] = &[0, 1];
        let b: &[usize] = &[0, 2];
        assert_eq!(stranded(&[a, b], &view), [1]);
    }
}
