//! A router's task: the only owner of its API connection, its streams and
//! its viewers (see the parent module).

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use uuid::Uuid;

use super::{Shared, ToRouter, Want, lock};

mod lease;

use crate::{
    clock,
    live::{
        api::{Attrs, Client, Command, Interfaces, Subscription},
        message::Message,
    },
};
pub(in crate::live) use lease::RENEW_EVERY;

/// Samples waiting for the router's task before a stream skips them.
const SAMPLE_QUEUE: usize = 1024;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A stream on the router: a traffic monitor of one interface set, or the log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Key {
    Traffic(Interfaces),
    Log,
}

impl Key {
    fn command(&self) -> Command {
        match self {
            Key::Traffic(interfaces) => Command::MonitorTraffic {
                interfaces: interfaces.clone(),
                once: false,
            },
            Key::Log => Command::LogFollow,
        }
    }

    fn message(&self, attrs: &Attrs) -> Option<Message> {
        match self {
            Key::Traffic(_) => Message::traffic(attrs, clock::now()),
            Key::Log => Message::log(attrs, clock::now()),
        }
    }
}

/// What a stream's pump tells the router's task; `connection` is the
/// connection it ran on, so news from an older one is ignored.
enum Event {
    Item(u64, Key, Attrs),
    Ended(u64, Key, String),
}

struct Viewer {
    want: Want,
    to: mpsc::Sender<Message>,
}

pub(super) struct Router {
    site: Uuid,
    shared: Arc<Shared>,
    queue: mpsc::UnboundedSender<ToRouter>,
    inbox: mpsc::UnboundedReceiver<ToRouter>,
    viewers: HashMap<u64, Viewer>,
    client: Option<Client>,
    /// Counts connections, so a pump's news names the one it ran on.
    connection: u64,
    /// Each running stream's stop (dropping it cancels the stream).
    streams: HashMap<Key, oneshot::Sender<()>>,
    /// What this router added to the streams gauge.
    counted_streams: i64,
    events: mpsc::Sender<Event>,
    events_in: mpsc::Receiver<Event>,
    reconnect_at: Option<Instant>,
    backoff: Duration,
    idle_since: Option<Instant>,
    /// Whether this node's claim on the connection stands (see `lease`).
    claimed: bool,
    renew_at: Option<Instant>,
}

impl Router {
    pub(super) fn new(
        site: Uuid,
        shared: Arc<Shared>,
        queue: mpsc::UnboundedSender<ToRouter>,
        inbox: mpsc::UnboundedReceiver<ToRouter>,
    ) -> Self {
        let (events, events_in) = mpsc::channel(SAMPLE_QUEUE);
        Self {
            site,
            shared,
            queue,
            inbox,
            viewers: HashMap::new(),
            client: None,
            connection: 0,
            streams: HashMap::new(),
            counted_streams: 0,
            events,
            events_in,
            reconnect_at: None,
            backoff: FIRST_BACKOFF,
            idle_since: None,
            claimed: false,
            renew_at: None,
        }
    }

    pub(super) async fn run(mut self) {
        self.shared.metrics.routers.fetch_add(1, Relaxed);
        loop {
            let linger = lock(&self.shared.limits).linger;
            let idle_until = self.idle_since.map(|t| t + linger);
            let reconnect = self.reconnect_at.filter(|_| !self.viewers.is_empty());
            let renew = self.renew_at;
            tokio::select! {
                message = self.inbox.recv() => match message {
                    Some(ToRouter::Join { id, want, to }) => self.join(id, want, to).await,
                    Some(ToRouter::Leave { id }) => self.leave(id),
                    Some(ToRouter::Call { command, reply }) => self.call(command, reply).await,
                    None => break,
                },
                Some(event) = self.events_in.recv() => self.event(event).await,
                () = sleep_until(reconnect), if reconnect.is_some() => {
                    if self.claimed || self.claim().await {
                        let _ = self.connect().await;
                    }
                }
                () = sleep_until(renew), if renew.is_some() => self.renew().await,
                () = sleep_until(idle_until), if idle_until.is_some() => {
                    if self.retire() {
                        break;
                    }
                }
            }
        }
        self.streams.clear();
        self.metrics_streams();
        self.release();
        self.shared.metrics.routers.fetch_sub(1, Relaxed);
    }

    async fn join(&mut self, id: u64, want: Want, to: mpsc::Sender<Message>) {
        let max = lock(&self.shared.limits).max_viewers_per_router;
        if self.viewers.len() >= max {
            self.shared.metrics.refused_viewers.fetch_add(1, Relaxed);
            let _ = to.try_send(Message::error(
                "too_many_viewers",
                format!("{max} viewers already watch this router ([live] max_viewers_per_router)"),
            ));
            return;
        }
        self.shared.metrics.viewers.fetch_add(1, Relaxed);
        self.viewers.insert(id, Viewer { want, to });
        self.idle_since = None;
        if !self.claimed && !self.claim().await {
            return;
        }
        if self.client.is_none() && self.reconnect_at.is_none() {
            let _ = self.connect().await;
        } else {
            self.start_streams().await;
        }
    }

    /// Answers off the task (a slow router must not hold viewers up).
    async fn call(&mut self, command: Command, reply: oneshot::Sender<Result<Vec<Attrs>, String>>) {
        if self.viewers.is_empty() && self.idle_since.is_none() {
            self.idle_since = Some(Instant::now());
        }
        // A connection that ended with no stream on it has no pump to say
        // so (a reboot, with nobody watching): open a new one.
        if self.streams.is_empty() && self.client.as_ref().is_some_and(Client::ended) {
            self.client = None;
        }
        let opened = match self.client.clone() {
            Some(client) => Ok(client),
            None => self
                .connect()
                .await
                .and_then(|()| self.client.clone().ok_or_else(String::new)),
        };
        let client = match opened {
            Ok(client) => client,
            Err(why) => {
                let _ = reply.send(Err(why));
                return;
            }
        };
        tokio::spawn(async move {
            let answer = match command {
                // Fire and forget: its answer, if any, is that it was sent.
                Command::Reboot => client.reboot().await.map(|()| Vec::new()),
                _ => client.call(&command).await,
            };
            let _ = reply.send(answer.map_err(|e| e.to_string()));
        });
    }

    fn leave(&mut self, id: u64) {
        if self.viewers.remove(&id).is_none() {
            return;
        }
        self.shared.metrics.viewers.fetch_sub(1, Relaxed);
        if self.viewers.is_empty() {
            // Everything lingers for a page that comes back.
            self.idle_since = Some(Instant::now());
            return;
        }
        let wanted = self.wanted();
        self.streams.retain(|key, _| wanted.contains(key));
        self.metrics_streams();
    }

    /// Leaves the hub if still idle; `false` when a join came meanwhile.
    fn retire(&mut self) -> bool {
        let mut routers = lock(&self.shared.routers);
        if !self.inbox.is_empty() {
            return false;
        }
        if routers
            .get(&self.site)
            .is_some_and(|q| q.same_channel(&self.queue))
        {
            routers.remove(&self.site);
        }
        true
    }

    fn wanted(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = Vec::new();
        for key in self.viewers.values().flat_map(|v| v.want.keys()) {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys
    }

    /// Opens the connection and starts what viewers want; the reason when
    /// it cannot (viewers are told too).
    async fn connect(&mut self) -> Result<(), String> {
        self.reconnect_at = None;
        self.shared.metrics.connects.fetch_add(1, Relaxed);
        match self.shared.connector.open(self.site).await {
            Ok(client) => {
                self.client = Some(client);
                self.connection += 1;
                self.backoff = FIRST_BACKOFF;
                self.start_streams().await;
                Ok(())
            }
            Err(why) => {
                self.shared.metrics.connect_failures.fetch_add(1, Relaxed);
                self.down("router_unreachable", why.clone());
                Err(why)
            }
        }
    }

    /// The connection is gone: viewers are told, and it is opened again.
    fn down(&mut self, code: &'static str, why: String) {
        self.client = None;
        self.streams.clear();
        self.metrics_streams();
        self.broadcast(|_| true, &Message::error(code, why));
        self.reconnect_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    async fn start_streams(&mut self) {
        let Some(client) = self.client.clone() else {
            return;
        };
        for key in self.wanted() {
            if self.streams.contains_key(&key) {
                continue;
            }
            match client.subscribe(&key.command()).await {
                Ok(subscription) => {
                    let (stop, stopped) = oneshot::channel();
                    self.streams.insert(key.clone(), stop);
                    let pump = Pump {
                        connection: self.connection,
                        key,
                        events: self.events.clone(),
                        shared: self.shared.clone(),
                    };
                    tokio::spawn(pump.run(subscription, stopped));
                }
                Err(e) => {
                    let message = Message::error("router_refused", e.to_string());
                    self.broadcast(|w| w.keys().any(|k| k == key), &message);
                }
            }
        }
        self.metrics_streams();
    }

    async fn event(&mut self, event: Event) {
        match event {
            Event::Item(connection, key, attrs) if connection == self.connection => {
                if let Some(message) = key.message(&attrs) {
                    self.broadcast(|w| w.keys().any(|k| k == key), &message);
                }
            }
            Event::Ended(connection, key, why)
                if connection == self.connection && self.streams.remove(&key).is_some() =>
            {
                self.down("router_unreachable", why);
            }
            _ => {}
        }
    }

    /// Sends `message` to every viewer `wants`; a full queue skips it.
    fn broadcast(&self, wants: impl Fn(&Want) -> bool, message: &Message) {
        for viewer in self.viewers.values().filter(|v| wants(&v.want)) {
            if viewer.to.try_send(message.clone()).is_err() {
                self.shared.metrics.skipped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Brings the streams gauge to this router's count.
    fn metrics_streams(&mut self) {
        let now = self.streams.len() as i64;
        self.shared
            .metrics
            .streams
            .fetch_add(now - self.counted_streams, Relaxed);
        self.counted_streams = now;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads one stream into the router's task.
struct Pump {
    connection: u64,
    key: Key,
    events: mpsc::Sender<Event>,
    shared: Arc<Shared>,
}

impl Pump {
    /// Until stopped (then the stream is cancelled on the router) or ended.
    async fn run(self, mut subscription: Subscription, mut stop: oneshot::Receiver<()>) {
        let why = loop {
            tokio::select! {
                _ = &mut stop => {
                    let _ = subscription.cancel().await;
                    return;
                }
                item = subscription.next() => match item {
                    Some(Ok(attrs)) => {
                        let item = Event::Item(self.connection, self.key.clone(), attrs);
                        // The task is behind: skip, as a full viewer would.
                        if self.events.try_send(item).is_err() {
                            self.shared.metrics.skipped.fetch_add(1, Relaxed);
                        }
                    }
                    Some(Err(e)) => break e.to_string(),
                    None => break "the router ended the stream".to_owned(),
                }
            }
        };
        let ended = Event::Ended(self.connection, self.key, why);
        let _ = self.events.send(ended).await;
    }
}
