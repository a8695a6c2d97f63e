//! Syslog listeners (UDP and TCP) → parser → session tracker → batched writes.
//!
//! Every received line is counted as parsed or unparsed; unparsed lines are
//! stored raw. The writer thread takes everything queued into one transaction,
//! so storage keeps up by batching rather than by dropping. The queue to the
//! writer is bounded (`queue_capacity`): when it is full, UDP lines are
//! dropped and counted, TCP senders wait (their reads stop, so the kernel's
//! window and then the sender hold back) and agents are told to send again.

use std::{
    collections::{BTreeMap, HashMap},
    io,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
        mpsc,
    },
    time::Duration,
};

use serde::Serialize;
use tokio::{
    io::AsyncReadExt,
    net::{TcpListener, UdpSocket},
};
use tracing::{debug, error, warn};

use super::{
    framing::next_frame,
    parse::{Event, parse},
    sessions::{Record, Session, Tracker},
    store::{Item, Latency, LogStore, Origin},
    syslog::event_time,
};
use crate::{clock::now, config::VpnlogConfig};

/// Most items written in one transaction.
const BATCH: usize = 10_000;
/// Most servers remembered as having an agent.
const MAX_AGENTS: usize = 65_536;

/// What one regional server has told us.
struct Server {
    tracker: Tracker,
    unparsed: u64,
}

impl Server {
    fn new(stale_after: u32) -> Self {
        Self {
            tracker: Tracker::new(stale_after),
            unparsed: 0,
        }
    }
}

/// Live figures of one region, for metrics and the summary.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RegionLive {
    pub connected_sessions: u64,
    /// Distinct tunnels among them.
    pub connected_tunnels: u64,
    pub auth_failures: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub unparsed_lines: u64,
}

pub struct Ingest {
    pub received: AtomicU64,
    /// Lines from senders in no `[[vpnlog.servers]] addresses`.
    pub unknown_sender: AtomicU64,
    /// Syslog TCP connections closed at once (caps) or for silence.
    pub tcp_refused: AtomicU64,
    pub tcp_idle: AtomicU64,
    pub parsed: AtomicU64,
    pub unparsed: AtomicU64,
    pub written: AtomicU64,
    /// Items handed to the writer; all are stored when `written` reaches it.
    pub queued: AtomicU64,
    /// Lines dropped because the queue was full (UDP only).
    pub dropped: AtomicU64,
    /// Most items waiting for the writer (a line may add a few over it).
    capacity: u64,
    /// Complete client lists a session may miss before it closes.
    stale_after: u32,
    /// Woken by the writer after each batch, for senders waiting for room.
    progress: tokio::sync::Notify,
    /// The syslog UDP socket's inode, for the kernel's drop count.
    udp_inode: std::sync::OnceLock<u64>,
    /// By syslog host (`None`: lines without one).
    servers: Mutex<HashMap<Option<String>, Server>>,
    /// Syslog host → region, from `[[vpnlog.servers]]`.
    regions: HashMap<String, String>,
    /// Sender addresses → server, from `[[vpnlog.servers]] addresses`.
    senders: Vec<(ipnet::IpNet, String)>,
    /// Servers whose agents report (by their tokens' names, so bounded by
    /// the agent token file).
    agents: Mutex<std::collections::HashSet<String>>,
    tx: mpsc::Sender<Item>,
}

impl Ingest {
    /// Starts the writer; sessions left open by the last run are resumed.
    pub fn start(config: &VpnlogConfig, store: Arc<dyn LogStore>) -> Arc<Self> {
        let (tx, rx) = mpsc::channel::<Item>();
        let mut servers: HashMap<Option<String>, Server> = HashMap::new();
        let stale_after = config.stale_after;
        match store.open_sessions() {
            Ok(open) => {
                for (origin, session) in open {
                    servers
                        .entry(origin.host)
                        .or_insert_with(|| Server::new(stale_after))
                        .tracker
                        .resume(session);
                }
            }
            Err(e) => warn!(error = %e, "reading the sessions left open failed"),
        }
        let ingest = Arc::new(Self {
            received: AtomicU64::new(0),
            unknown_sender: AtomicU64::new(0),
            tcp_refused: AtomicU64::new(0),
            tcp_idle: AtomicU64::new(0),
            senders: config
                .servers
                .iter()
                .flat_map(|s| s.addresses.iter().map(|a| (*a, s.host.clone())))
                .collect(),
            parsed: AtomicU64::new(0),
            unparsed: AtomicU64::new(0),
            written: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            capacity: config.queue_capacity as u64,
            stale_after,
            progress: tokio::sync::Notify::new(),
            udp_inode: std::sync::OnceLock::new(),
            servers: Mutex::new(servers),
            regions: config
                .servers
                .iter()
                .map(|s| (s.host.clone(), s.region.clone()))
                .collect(),
            agents: Mutex::default(),
            tx,
        });
        let counter = ingest.clone();
        std::thread::Builder::new()
            .name("vpnlog writer".into())
            .spawn(move || writer(&rx, &*store, &counter))
            .expect("spawning the log writer");
        ingest
    }

    fn queue(&self, item: Item) {
        self.queued.fetch_add(1, Relaxed);
        let _ = self.tx.send(item);
    }

    /// Items handed to the writer and not yet written.
    pub fn pending(&self) -> u64 {
        let written = self.written.load(Relaxed);
        self.queued.load(Relaxed).saturating_sub(written)
    }

    /// `queue_capacity`.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether the writer's queue is at its capacity.
    pub fn full(&self) -> bool {
        self.pending() >= self.capacity
    }

    /// Datagrams the kernel dropped at the syslog UDP socket (its receive
    /// buffer was full), when Linux says.
    pub fn udp_kernel_drops(&self) -> Option<u64> {
        super::udp::kernel_drops(*self.udp_inode.get()?)
    }

    /// Waits until the writer's queue has room.
    pub async fn room(&self) {
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            // Registered before the check, so a batch written in between
            // still wakes us.
            progress.as_mut().enable();
            if !self.full() {
                return;
            }
            progress.await;
        }
    }

    /// One UDP datagram (one or more lines) from `source`: dropped and
    /// counted when the queue is full, since UDP cannot be held back.
    pub fn datagram(&self, bytes: &[u8], source: IpAddr) {
        let text = String::from_utf8_lossy(bytes);
        let lines = text.lines().filter(|l| !l.is_empty());
        if self.full() {
            let n = lines.count() as u64;
            self.received.fetch_add(n, Relaxed);
            self.dropped.fetch_add(n, Relaxed);
            return;
        }
        for l in lines {
            self.line_from(l, source);
        }
    }

    fn origin(&self, host: Option<&str>) -> Origin {
        Origin {
            host: host.map(str::to_owned),
            region: host.and_then(|h| self.regions.get(h).cloned()),
        }
    }

    fn servers(&self) -> std::sync::MutexGuard<'_, HashMap<Option<String>, Server>> {
        self.servers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the tracker of `host` and queues what it completed (under
    /// the lock, so records of one session reach storage in order).
    pub fn track<R: IntoIterator<Item = Record>>(
        &self,
        host: Option<&str>,
        f: impl FnOnce(&mut Tracker) -> R,
    ) {
        let origin = self.origin(host);
        let time = now();
        let mut servers = self.servers();
        let server = servers
            .entry(origin.host.clone())
            .or_insert_with(|| Server::new(self.stale_after));
        for record in f(&mut server.tracker) {
            self.queue(Item::Record {
                record,
                origin: origin.clone(),
                time,
            });
        }
    }

    /// The configured server a syslog sender is, by its address.
    fn sender(&self, source: IpAddr) -> Option<&str> {
        let source = match source {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(source, IpAddr::V4),
            v4 => v4,
        };
        self.senders
            .iter()
            .find(|(net, _)| net.contains(&source))
            .map(|(_, host)| host.as_str())
    }

    /// Handles one log line from `source`: its server is the one whose
    /// `addresses` hold `source` (the HOSTNAME it writes is not believed);
    /// from anyone else it is dropped and counted.
    pub fn line_from(&self, raw: &str, source: IpAddr) {
        self.received.fetch_add(1, Relaxed);
        let Some(host) = self.sender(source) else {
            self.unknown_sender.fetch_add(1, Relaxed);
            return;
        };
        let line = parse(raw);
        let host = Some(host);
        if let Event::Unknown(_) = line.event {
            self.unparsed.fetch_add(1, Relaxed);
            let origin = self.origin(host);
            self.servers()
                .entry(origin.host.clone())
                .or_insert_with(|| Server::new(self.stale_after))
                .unparsed += 1;
            self.queue(Item::Unparsed {
                time: now(),
                origin,
                raw: raw.chars().take(2048).collect(),
            });
            return;
        }
        self.parsed.fetch_add(1, Relaxed);
        let time = event_time(line.time, now());
        self.track(host, |t| t.feed(&line, time));
    }

    /// Queues one latency measurement.
    pub fn latency(&self, latency: Latency, origin: Origin) {
        self.queue(Item::Latency(latency, origin));
    }

    /// Queues a measurement an agent made beside server `host`; from now on
    /// that server's tunnels are measured by its agent, not from here.
    pub fn agent_latency(&self, host: &str, latency: Latency) {
        self.mark_agent(host);
        let origin = self.origin(Some(host));
        self.latency(latency, origin);
    }

    /// Notes that `host` has an agent (it measures its own tunnels).
    pub fn mark_agent(&self, host: &str) {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if !agents.contains(host) && agents.len() < MAX_AGENTS {
            agents.insert(host.to_owned());
        }
    }

    /// Whether `host` has an agent.
    pub fn has_agent(&self, host: Option<&str>) -> bool {
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        host.is_some_and(|h| agents.contains(h))
    }

    /// Every open session with its server.
    pub fn connected(&self) -> Vec<(Origin, Session)> {
        let servers = self.servers();
        let mut all = Vec::new();
        for (host, server) in servers.iter() {
            let origin = self.origin(host.as_deref());
            all.extend(
                server
                    .tracker
                    .sessions()
                    .map(|s| (origin.clone(), s.clone())),
            );
        }
        all
    }

    /// Live figures per region (`""` for servers not in `[[vpnlog.servers]]`).
    pub fn regions(&self) -> BTreeMap<String, RegionLive> {
        let servers = self.servers();
        let mut by_region: BTreeMap<String, (RegionLive, std::collections::HashSet<String>)> =
            BTreeMap::new();
        for (host, server) in servers.iter() {
            let region = self.origin(host.as_deref()).region.unwrap_or_default();
            let (live, tunnels) = by_region.entry(region).or_default();
            let t = &server.tracker;
            live.connected_sessions += t.open_sessions() as u64;
            tunnels.extend(t.sessions().map(|s| {
                s.tunnel
                    .map_or_else(|| s.common_name.clone(), |u| u.to_string())
            }));
            live.auth_failures += t.auth_failures;
            live.bytes_in += t.bytes.0;
            live.bytes_out += t.bytes.1;
            live.unparsed_lines += server.unparsed;
        }
        by_region
            .into_iter()
            .map(|(region, (mut live, tunnels))| {
                live.connected_tunnels = tunnels.len() as u64;
                (region, live)
            })
            .collect()
    }
}

fn writer(rx: &mpsc::Receiver<Item>, store: &dyn LogStore, ingest: &Ingest) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let items = batch.len();
        until_done(
            || store.write(&batch),
            |e, wait| {
                error!(error = %e, items, retry_in = %humantime::format_duration(wait), "writing log records failed; the batch is kept and written again");
                std::thread::sleep(wait);
            },
        );
        ingest.written.fetch_add(items as u64, Relaxed);
        ingest.progress.notify_waiters();
        batch.clear();
    }
}

/// Runs `attempt` until it succeeds; after each failure `failed` is told the
/// error and how long to wait (1 s doubling to 30 s). A batch is all or
/// nothing, so trying it again never stores anything twice, and nothing
/// received is dropped because one write failed.
fn until_done<E>(mut attempt: impl FnMut() -> Result<(), E>, mut failed: impl FnMut(E, Duration)) {
    let mut wait = Duration::from_secs(1);
    while let Err(e) = attempt() {
        failed(e, wait);
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// Binds the syslog listeners (UDP and TCP on one address) and serves them.
/// TCP connections are capped in all and per source; a silent one is closed.
pub async fn listen(config: &VpnlogConfig, ingest: Arc<Ingest>) -> io::Result<SocketAddr> {
    let addr = config.listen;
    // With port 0 the kernel picks a UDP port that TCP may already use: retry.
    let attempts = if addr.port() == 0 { 16 } else { 1 };
    let mut bound = None;
    for _ in 0..attempts {
        let (udp, inode) = super::udp::bind(addr, config.udp_receive_buffer)?;
        let udp = UdpSocket::from_std(udp)?;
        let port = udp.local_addr()?;
        match TcpListener::bind(port).await {
            Ok(tcp) => {
                if let Some(inode) = inode {
                    let _ = ingest.udp_inode.set(inode);
                }
                bound = Some((udp, tcp, port));
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
            Err(e) => return Err(e),
        }
    }
    let (udp, tcp, addr) = bound.ok_or_else(|| io::Error::from(io::ErrorKind::AddrInUse))?;
    let i = ingest.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        loop {
            let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                continue;
            };
            i.datagram(&buf[..n], from.ip());
        }
    });
    let total = Arc::new(tokio::sync::Semaphore::new(config.tcp_max_connections));
    let sources = Arc::new(crate::edge::sources::Sources::default());
    let (per_source, idle) = (config.tcp_max_per_source, config.tcp_idle_timeout);
    tokio::spawn(async move {
        loop {
            let (stream, peer) = crate::edge::accept::next(&tcp, |error| {
                crate::throttled!(warn, "syslog tcp accept failed", %error);
            })
            .await;
            let (Ok(permit), Some(slot)) = (
                total.clone().try_acquire_owned(),
                sources.take(peer.ip(), per_source),
            ) else {
                ingest.tcp_refused.fetch_add(1, Relaxed);
                continue; // dropping the stream closes it
            };
            let i = ingest.clone();
            tokio::spawn(async move {
                let _held = (permit, slot);
                if let Err(e) = tcp_stream(stream, peer.ip(), idle, &i).await {
                    debug!(%peer, error = %e, "syslog connection ended");
                }
            });
        }
    });
    Ok(addr)
}

async fn tcp_stream(
    mut stream: tokio::net::TcpStream,
    source: IpAddr,
    idle: Duration,
    ingest: &Ingest,
) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let Ok(read) = tokio::time::timeout(idle, stream.read(&mut chunk)).await else {
            ingest.tcp_idle.fetch_add(1, Relaxed);
            return Ok(());
        };
        let n = read?;
        if n == 0 {
            if !buf.is_empty() {
                ingest.line_from(&String::from_utf8_lossy(&buf), source);
            }
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        // Backpressure: nothing more is read until the writer has room.
        ingest.room().await;
        let mut used = 0;
        while let Some((msg, len)) = next_frame(&buf[used..]) {
            if !msg.is_empty() {
                ingest.line_from(&String::from_utf8_lossy(msg), source);
            }
            used += len;
        }
        buf.drain(..used);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_is_tried_again_with_growing_waits_until_it_succeeds() {
        let mut tries = 0;
        let mut waits = Vec::new();
        until_done(
            || {
                tries += 1;
                if tries < 7 { Err("disk full") } else { Ok(()) }
            },
            |e, wait| {
                assert_eq!(e, "disk full");
                waits.push(wait.as_secs());
            },
        );
        assert_eq!(tries, 7);
        assert_eq!(waits, [1, 2, 4, 8, 16, 30]);
    }
}
