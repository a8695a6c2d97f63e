//! One RouterOS API connection per router, shared by all of its viewers.
//!
//! Each router with viewers has one task, the only owner of its connection:
//! viewers join and leave through its queue. It opens the connection on the
//! first viewer, runs one `monitor-traffic` per interface set and one log
//! stream, and fans every sample out to the viewers that want it; a viewer
//! whose queue is full skips the sample (counted), so a slow page never holds
//! the router up. A stream nobody wants any more is cancelled at once; when
//! the last viewer leaves, the connection lingers (`[live] linger`, so a
//! reloaded page finds it) and is then cancelled and closed. A connection
//! that ends is opened again with backoff while viewers remain, and they are
//! told meanwhile.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::{
    api::{Attrs, Client, Command, Interfaces},
    lock,
    message::Message,
};

mod router;

pub(super) use router::RENEW_EVERY;

use router::{Key, Router};

/// Messages a viewer may have waiting before it skips samples.
pub const VIEWER_QUEUE: usize = 64;

/// Opens a router's API, logged in: a direct connection on one machine, or
/// one relayed by the agent that holds the router's tunnel.
pub trait Connector: Send + Sync + 'static {
    fn open(&self, site: Uuid) -> BoxFuture<'static, Result<Client, String>>;

    /// Claims (or keeps) `site`'s connection for this node before it is
    /// opened, and while it is held: with several nodes, one holds it.
    fn claim(&self, _site: Uuid) -> BoxFuture<'static, Claim> {
        Box::pin(std::future::ready(Claim::Ours))
    }

    /// Gives the claim up (the connection is closed).
    fn release(&self, _site: Uuid) {}

    /// The node whose claim on `site` stands, if not this one: its viewers
    /// are relayed from there.
    fn elsewhere(&self, _site: Uuid) -> BoxFuture<'static, Option<Elsewhere>> {
        Box::pin(std::future::ready(None))
    }
}

/// What claiming a router's connection gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Ours,
    Elsewhere(Elsewhere),
    /// The claim could not be checked (the database away): not connected.
    Unknown(String),
}

/// Another node holding a router's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elsewhere {
    pub node: String,
    /// Where that node's API is reached.
    pub api_url: String,
}

/// `[live]`'s limits, as the hub applies them (changed on reload).
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_viewers_per_router: usize,
    pub max_streams_per_user: usize,
    pub linger: Duration,
}

/// What one viewer watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub interfaces: Option<Interfaces>,
    pub log: bool,
}

impl Want {
    fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        let traffic = self.interfaces.as_ref().map(|i| Key::Traffic(i.clone()));
        traffic.into_iter().chain(self.log.then_some(Key::Log))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("nothing to watch: name interfaces or ask for the log")]
    Nothing,
    #[error("`{user}` already holds {max} live views ([live] max_streams_per_user)")]
    TooManyStreams { user: String, max: usize },
}

/// Counts for the metrics page.
#[derive(Debug, Default)]
pub struct Metrics {
    pub routers: AtomicI64,
    pub viewers: AtomicI64,
    pub streams: AtomicI64,
    /// Samples a full viewer queue (or a busy router task) skipped.
    pub skipped: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Viewers refused by `max_viewers_per_router`.
    pub refused_viewers: AtomicU64,
}

/// A viewer's end: its messages; dropping it leaves.
pub struct View {
    pub messages: mpsc::Receiver<Message>,
    _leave: Leave,
}

pub struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    connector: Arc<dyn Connector>,
    limits: Mutex<Limits>,
    /// Each router's task queue. Sent to under this lock, and a task
    /// removes itself under it only with its queue empty, so no join is lost.
    routers: Mutex<HashMap<Uuid, mpsc::UnboundedSender<ToRouter>>>,
    /// Live views per token name.
    users: Mutex<HashMap<String, usize>>,
    next_viewer: AtomicU64,
    metrics: Metrics,
}

enum ToRouter {
    Join {
        id: u64,
        want: Want,
        to: mpsc::Sender<Message>,
    },
    Leave {
        id: u64,
    },
    /// A one-shot command on the router's connection (opened for it if
    /// need be, and lingering after it like after a viewer).
    Call {
        command: Command,
        reply: oneshot::Sender<Result<Vec<Attrs>, String>>,
    },
}

impl Hub {
    pub fn new(connector: Arc<dyn Connector>, limits: Limits) -> Self {
        Self {
            shared: Arc::new(Shared {
                connector,
                limits: Mutex::new(limits),
                routers: Mutex::new(HashMap::new()),
                users: Mutex::new(HashMap::new()),
                next_viewer: AtomicU64::new(1),
                metrics: Metrics::default(),
            }),
        }
    }

    /// New limits (a reload): for the next viewer and the next linger.
    pub fn set_limits(&self, limits: Limits) {
        *lock(&self.shared.limits) = limits;
    }

    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Runs one one-shot command (`/system/resource/print`, say) on `site`'s
    /// router, on its shared connection.
    pub async fn call(&self, site: Uuid, command: Command) -> Result<Vec<Attrs>, String> {
        let (reply, answer) = oneshot::channel();
        self.shared.send(site, ToRouter::Call { command, reply });
        answer
            .await
            .unwrap_or_else(|_| Err("the router's connection went away".to_owned()))
    }

    /// Reboots `site`'s router over its shared connection; done once the
    /// command is sent (see [`Client::reboot`]). Its viewers see the
    /// connection go and come back.
    ///
    /// [`Client::reboot`]: super::api::Client::reboot
    pub async fn reboot(&self, site: Uuid) -> Result<(), String> {
        self.call(site, Command::Reboot).await.map(drop)
    }

    /// The node holding `site`'s connection, when another holds it.
    pub async fn elsewhere(&self, site: Uuid) -> Option<Elsewhere> {
        self.shared.connector.elsewhere(site).await
    }

    /// Starts watching `site` for `user` (a token's name).
    pub fn view(&self, site: Uuid, user: &str, want: Want) -> Result<View, Refused> {
        if want.interfaces.is_none() && !want.log {
            return Err(Refused::Nothing);
        }
        let max = lock(&self.shared.limits).max_streams_per_user;
        {
            let mut users = lock(&self.shared.users);
            let held = users.entry(user.to_owned()).or_default();
            if *held >= max {
                return Err(Refused::TooManyStreams {
                    user: user.to_owned(),
                    max,
                });
            }
            *held += 1;
        }
        let id = self.shared.next_viewer.fetch_add(1, Relaxed);
        let (to, messages) = mpsc::channel(VIEWER_QUEUE);
        self.shared.send(site, ToRouter::Join { id, want, to });
        Ok(View {
            messages,
            _leave: Leave {
                shared: self.shared.clone(),
                site,
                id,
                user: user.to_owned(),
            },
        })
    }
}

impl Shared {
    /// Sends to `site`'s task, starting one if there is none.
    fn send(self: &Arc<Self>, site: Uuid, message: ToRouter) {
        let mut routers = lock(&self.routers);
        if let Some(queue) = routers.get(&site)
            && !queue.is_closed()
        {
            let _ = queue.send(message);
            return;
        }
        if matches!(message, ToRouter::Leave { .. }) {
            return;
        }
        let (queue, inbox) = mpsc::unbounded_channel();
        let _ = queue.send(message);
        routers.insert(site, queue.clone());
        tokio::spawn(Router::new(site, self.clone(), queue, inbox).run());
    }
}

/// Leaves on drop.
struct Leave {
    shared: Arc<Shared>,
    site: Uuid,
    id: u64,
    user: String,
}

impl Drop for Leave {
    fn drop(&mut self) {
        if let Some(held) = lock(&self.shared.users).get_mut(&self.user) {
            *held = held.saturating_sub(1);
        }
        self.shared.send(self.site, ToRouter::Leave { id: self.id });
    }
}
