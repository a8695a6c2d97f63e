//! Region state: one owner, one published snapshot.
//!
//! The state owner ([`owner`]) is a task that alone holds the rise/fall
//! machines, the drains, the other nodes' health votes and the loaded data.
//! Probe loops send it their rounds, a shared store the other nodes' news;
//! drains, undrains and reloads are commands sent through a [`Handle`] and
//! answered once the change is persisted; drains end by themselves inside the
//! owner. After each batch it persists once ([`store`]) and publishes one
//! immutable [`Snapshot`] with a single swap. Queries, the API and metrics read
//! snapshots through a [`Reader`]; nothing else stores shared state.

pub mod audit;
pub mod drain;
pub mod file;
mod owner;
pub mod pg;
pub mod regions;
pub mod store;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use arc_swap::{ArcSwap, Guard};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

pub use crate::clock::{Clock, now, system_clock};
use crate::{
    config::{Config, ConfigError},
    dns::{Data, LoadError},
    health::{ProbeStats, Report, probe::Kind},
    route::RegionView,
};
pub use drain::{DrainRecord, Drains};
pub use owner::start;
pub use regions::{RegionStatus, Regions};

/// Commands and probe reports waiting for the owner, at most.
const QUEUE: usize = 256;

/// What queries, the API and reports read: one load's data and the region
/// view built for it, published together.
pub struct Snapshot {
    /// The loaded config, zones and maps; `data.generation` numbers the load.
    pub data: Arc<Data>,
    /// Which regions may answer (health by the nodes' votes × drains), by `data`'s region indices.
    pub view: RegionView,
    /// Each region's health and drain, same indices.
    pub regions: Vec<RegionStatus>,
}

impl Snapshot {
    /// A snapshot of `data` with `regions`' state at `now` (what the owner
    /// publishes, and what `mgnt lookup` builds from the state file).
    pub fn of(data: Arc<Data>, regions: &Regions, now: u64) -> Self {
        let (view, regions) = regions.view(&data.config, now);
        Self {
            data,
            view,
            regions,
        }
    }
}

/// Reads the current snapshot without waiting (RCU: readers never lock).
#[derive(Clone)]
pub struct Reader(Arc<ArcSwap<Snapshot>>);

impl Reader {
    pub(crate) fn new(first: Snapshot) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(first)))
    }

    /// The current snapshot, for a short read (a query, a UDP batch).
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.0.load()
    }

    /// The current snapshot, to keep.
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    fn publish(&self, snapshot: Snapshot) {
        self.0.store(Arc::new(snapshot));
    }
}

/// Why a command was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("no region `{0}`")]
    NoRegion(String),
    #[error("`{region}` is the last serving region of {}", geo_names.join(", "))]
    LastServing {
        region: String,
        geo_names: Vec<String>,
    },
    #[error("not applied: cannot persist the region state: {0}")]
    Persist(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("the state owner has stopped")]
    Stopped,
}

/// What a successful reload loaded.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    pub generation: u64,
    pub zones: usize,
    pub geo_names: usize,
    pub regions: usize,
    pub geoip_build_epoch: u64,
    /// The new config hash, which the other nodes compare with theirs.
    pub config_hash: crate::config::hash::ConfigHash,
    /// Settings that differ from what the server started with and only take
    /// effect after a restart.
    pub needs_restart: Vec<String>,
}

/// An operator's drain request.
#[derive(Debug, Clone)]
pub struct DrainRequest {
    pub reason: String,
    /// Seconds since 1970.
    pub until: Option<u64>,
    pub force: bool,
    /// The API token's name.
    pub by: String,
}

type Reply<T> = oneshot::Sender<Result<T, StateError>>;

/// What the owner is asked to do.
enum Command {
    Drain {
        region: String,
        request: DrainRequest,
        reply: Reply<DrainRecord>,
    },
    Undrain {
        region: String,
        by: String,
        reply: Reply<Option<DrainRecord>>,
    },
    Reload {
        loaded: Result<Box<Data>, LoadError>,
        by: String,
        reply: Reply<ReloadReport>,
    },
    /// An action taken outside the state (a reboot), for the audit log.
    Record {
        entry: audit::Entry,
        reply: Reply<()>,
    },
}

/// What the owner's queue holds: commands and probe reports, in arrival order.
enum Input {
    Command(Command),
    Report(Report),
}

impl From<Report> for Input {
    fn from(r: Report) -> Self {
        Self::Report(r)
    }
}

/// Counters of the owner, for metrics.
#[derive(Default)]
pub struct Counters {
    /// The generation of the loaded data.
    pub generation: AtomicU64,
    pub publishes: AtomicU64,
    pub persist_failures: AtomicU64,
    /// Times a geo name entered fail-open (every region down or drained).
    pub fail_open_events: AtomicU64,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    pub transitions: AtomicU64,
    /// Probe outcomes and RTTs per (region, kind).
    pub probes: Mutex<BTreeMap<(String, Kind), ProbeStats>>,
}

/// A check a reloaded config must pass besides loading, from outside the
/// state (the tunnel store's pool, say); its error refuses the reload.
pub type ReloadCheck = Arc<dyn Fn(&Config) -> Result<(), String> + Send + Sync>;

/// Sends commands to the owner and reads what it publishes.
#[derive(Clone)]
pub struct Handle {
    reader: Reader,
    inputs: mpsc::Sender<Input>,
    counters: Arc<Counters>,
    config_path: PathBuf,
    check: Option<ReloadCheck>,
}

impl Handle {
    /// Every later reload must also pass `check`.
    pub fn with_reload_check(mut self, check: ReloadCheck) -> Self {
        self.check = Some(check);
        self
    }

    pub fn reader(&self) -> Reader {
        self.reader.clone()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.reader.load_full()
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Commands and probe reports waiting for the owner.
    pub fn queue_depth(&self) -> usize {
        self.inputs.max_capacity() - self.inputs.capacity()
    }

    /// Drains `region`; answered once the drain is persisted.
    pub async fn drain(
        &self,
        region: &str,
        request: DrainRequest,
    ) -> Result<DrainRecord, StateError> {
        let region = region.to_owned();
        self.ask(|reply| Command::Drain {
            region,
            request,
            reply,
        })
        .await
    }

    /// Ends `region`'s drain; the drain it ended, if any.
    pub async fn undrain(&self, region: &str, by: &str) -> Result<Option<DrainRecord>, StateError> {
        let (region, by) = (region.to_owned(), by.to_owned());
        self.ask(|reply| Command::Undrain { region, by, reply })
            .await
    }

    /// Re-reads the config, zones and GeoIP database and has the owner swap
    /// them in; on any error the previous data keeps serving.
    pub async fn reload(&self, by: &str) -> Result<ReloadReport, StateError> {
        let (path, check) = (self.config_path.clone(), self.check.clone());
        let loaded =
            tokio::task::spawn_blocking(move || load_checked(&path, check.as_ref()).map(Box::new))
                .await
                .unwrap_or_else(|e| {
                    Err(LoadError::Config(ConfigError::Parse {
                        file: self.config_path.clone(),
                        message: format!("reload task failed: {e}"),
                    }))
                });
        let by = by.to_owned();
        self.ask(|reply| Command::Reload { loaded, by, reply })
            .await
    }

    /// Writes `entry` to the audit log with the owner's next batch (the
    /// log's one writer); answered once it is persisted.
    pub async fn record(&self, entry: audit::Entry) -> Result<(), StateError> {
        self.ask(|reply| Command::Record { entry, reply }).await
    }

    async fn ask<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, StateError> {
        let (reply, answer) = oneshot::channel();
        self.inputs
            .send(Input::Command(command(reply)))
            .await
            .map_err(|_| StateError::Stopped)?;
        answer.await.map_err(|_| StateError::Stopped)?
    }
}

/// Loads `path`'s config and everything it names.
pub fn load(path: &std::path::Path) -> Result<Data, LoadError> {
    Data::load(Config::load(path)?)
}

/// [`load`] for serving: a config that `check` refuses is refused before
/// anything else is read, and the cookie secrets are read (the current one
/// created when missing).
pub fn load_checked(
    path: &std::path::Path,
    check: Option<&ReloadCheck>,
) -> Result<Data, LoadError> {
    let config = Config::load(path)?;
    if let Some(check) = check {
        check(&config).map_err(LoadError::Refused)?;
    }
    let mut data = Data::load(config)?;
    data.load_cookies(true)?;
    Ok(data)
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
