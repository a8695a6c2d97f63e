//! Syslog listeners (UDP and TCP) → parser → session tracker → batched writes.
//!
//! Every received line is counted as parsed or unparsed; unparsed lines are
//! stored raw. The writer thread takes everything queued into one transaction,
//! so storage keeps up by batching rather than by dropping.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
        mpsc,
    },
};

use tokio::{
    io::AsyncReadExt,
    net::{TcpListener, UdpSocket},
};
use tracing::{debug, error};

use super::{
    framing::next_frame,
    parse::{Event, parse},
    sessions::Tracker,
    store::{Item, LogStore, Origin},
};
use crate::{config::VpnlogConfig, state::now};

/// Most items written in one transaction.
const BATCH: usize = 10_000;

pub struct Ingest {
    pub received: AtomicU64,
    pub parsed: AtomicU64,
    pub unparsed: AtomicU64,
    pub written: AtomicU64,
    trackers: Mutex<HashMap<Option<String>, Tracker>>,
    /// Syslog host → region, from `[[vpnlog.servers]]`.
    regions: HashMap<String, String>,
    tx: mpsc::Sender<Item>,
}

impl Ingest {
    pub fn start(config: &VpnlogConfig, store: Arc<LogStore>) -> Arc<Self> {
        let (tx, rx) = mpsc::channel::<Item>();
        let ingest = Arc::new(Self {
            received: AtomicU64::new(0),
            parsed: AtomicU64::new(0),
            unparsed: AtomicU64::new(0),
            written: AtomicU64::new(0),
            trackers: Mutex::new(HashMap::new()),
            regions: config.servers.iter().cloned().collect(),
            tx,
        });
        let counter = ingest.clone();
        std::thread::Builder::new()
            .name("vpnlog writer".into())
            .spawn(move || writer(&rx, &store, &counter.written))
            .expect("spawning the log writer");
        ingest
    }

    /// Handles one log line (a syslog message or a bare OpenVPN line).
    pub fn line(&self, raw: &str) {
        self.received.fetch_add(1, Relaxed);
        let line = parse(raw);
        let origin = Origin {
            host: line.host.map(str::to_owned),
            region: line.host.and_then(|h| self.regions.get(h).cloned()),
        };
        let time = now();
        if let Event::Unknown(_) = line.event {
            self.unparsed.fetch_add(1, Relaxed);
            let _ = self.tx.send(Item::Unparsed {
                time,
                origin,
                raw: raw.chars().take(2048).collect(),
            });
            return;
        }
        self.parsed.fetch_add(1, Relaxed);
        let record = {
            let mut trackers = self.trackers.lock().unwrap_or_else(|p| p.into_inner());
            trackers
                .entry(origin.host.clone())
                .or_default()
                .feed(&line, time)
        };
        if let Some(r) = record {
            let _ = self.tx.send(Item::Record(r, origin));
        }
    }
}

fn writer(rx: &mpsc::Receiver<Item>, store: &LogStore, written: &AtomicU64) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        match store.write(&batch) {
            Ok(()) => {
                written.fetch_add(batch.len() as u64, Relaxed);
            }
            Err(e) => error!(error = %e, items = batch.len(), "writing log records failed"),
        }
        batch.clear();
    }
}

/// Binds the syslog listeners (UDP and TCP on one address) and serves them.
pub async fn listen(addr: SocketAddr, ingest: Arc<Ingest>) -> io::Result<SocketAddr> {
    // With port 0 the kernel picks a UDP port that TCP may already use: retry.
    let attempts = if addr.port() == 0 { 16 } else { 1 };
    let mut bound = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(addr).await?;
        let port = udp.local_addr()?;
        match TcpListener::bind(port).await {
            Ok(tcp) => {
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
            let Ok((n, _)) = udp.recv_from(&mut buf).await else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]);
            for l in text.lines().filter(|l| !l.is_empty()) {
                i.line(l);
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = tcp.accept().await else {
                continue;
            };
            let i = ingest.clone();
            tokio::spawn(async move {
                if let Err(e) = tcp_stream(stream, &i).await {
                    debug!(%peer, error = %e, "syslog connection ended");
                }
            });
        }
    });
    Ok(addr)
}

async fn tcp_stream(mut stream: tokio::net::TcpStream, ingest: &Ingest) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            if !buf.is_empty() {
                ingest.line(&String::from_utf8_lossy(&buf));
            }
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut used = 0;
        while let Some((msg, len)) = next_frame(&buf[used..]) {
            if !msg.is_empty() {
                ingest.line(&String::from_utf8_lossy(msg));
            }
            used += len;
        }
        buf.drain(..used);
    }
}
