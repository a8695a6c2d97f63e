//! Reports on their way to the control plane: sent in batches; while the
//! control plane is away they wait in memory (at most `buffer_max`, the
//! oldest dropped and counted beyond that) and in a spool file in
//! `cache_dir`, so an agent restart loses none of them. The task is the
//! buffer's one owner; the management session hands reports over a channel.

use std::{
    collections::VecDeque,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use tokio::{
    sync::mpsc,
    time::{Instant, interval},
};
use tracing::{info, warn};

use super::sync::Control;
use crate::vpnlog::report::{Batch, MAX_BATCH, Report};

const SPOOL: &str = "reports.jsonl";
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where the management session puts its reports.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Report>,
    /// Reports dropped (buffer full) and not yet told to the control plane.
    dropped: Arc<AtomicU64>,
    pub counters: Arc<OutboxCounters>,
}

impl Outbox {
    pub fn report(&self, report: Report) {
        if self.tx.try_send(report).is_err() {
            self.dropped.fetch_add(1, Relaxed);
            self.counters.dropped.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
impl Outbox {
    /// An outbox whose reports arrive on the returned channel.
    pub fn detached() -> (Self, mpsc::Receiver<Report>) {
        let (tx, rx) = mpsc::channel(4096);
        let outbox = Outbox {
            tx,
            dropped: Arc::default(),
            counters: Arc::default(),
        };
        (outbox, rx)
    }
}

/// What the outbox holds and did, for metrics.
#[derive(Default)]
pub struct OutboxCounters {
    /// Reports waiting in memory.
    pub buffered: AtomicU64,
    /// Of those, how many are in the spool file.
    pub spooled: AtomicU64,
    /// Reports dropped since the start because `buffer_max` (or the
    /// hand-over channel) was full.
    pub dropped: AtomicU64,
    /// Reports the control plane took.
    pub sent: AtomicU64,
}

impl OutboxCounters {
    fn observe(&self, buffer: &Buffer) {
        self.buffered.store(buffer.reports.len() as u64, Relaxed);
        self.spooled.store(buffer.spooled as u64, Relaxed);
    }
}

/// The buffer and its spool file.
struct Buffer {
    reports: VecDeque<Report>,
    /// How many of the oldest reports are in the spool file already.
    spooled: usize,
    max: usize,
    file: PathBuf,
}

impl Buffer {
    /// Loads what a previous run spooled (the newest `max`).
    fn load(dir: &Path, max: usize) -> Self {
        let file = dir.join(SPOOL);
        let mut reports: VecDeque<Report> = std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        while reports.len() > max {
            reports.pop_front();
        }
        if !reports.is_empty() {
            info!(
                reports = reports.len(),
                "reports kept from before a restart"
            );
        }
        Self {
            spooled: reports.len(),
            reports,
            max,
            file,
        }
    }

    /// Adds a report; `true` if the oldest had to go.
    fn push(&mut self, report: Report) -> bool {
        let full = self.reports.len() >= self.max;
        if full {
            self.reports.pop_front();
            self.spooled = self.spooled.saturating_sub(1);
        }
        self.reports.push_back(report);
        full
    }

    /// Appends what is not in the spool file yet (the control plane is away).
    fn spool(&mut self) -> std::io::Result<()> {
        if self.spooled >= self.reports.len() {
            return Ok(());
        }
        let mut text = String::new();
        for r in self.reports.iter().skip(self.spooled) {
            text.push_str(&serde_json::to_string(r).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        if let Some(dir) = self.file.parent() {
            crate::durable::private_dir(dir)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)?;
        f.write_all(text.as_bytes())?;
        f.sync_data()?;
        self.spooled = self.reports.len();
        Ok(())
    }

    /// The first `n` reports reached the control plane.
    fn sent(&mut self, n: usize) -> std::io::Result<()> {
        let had_spool = self.spooled > 0;
        self.reports.drain(..n.min(self.reports.len()));
        self.spooled = self.spooled.saturating_sub(n);
        if !had_spool {
            return Ok(());
        }
        if self.spooled == 0 {
            match std::fs::remove_file(&self.file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => return Ok(()),
            }
        }
        // What was sent leaves the spool, so a restart sends nothing twice.
        let mut text = String::new();
        for r in self.reports.iter().take(self.spooled) {
            text.push_str(&serde_json::to_string(r).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        crate::durable::write_atomic(&self.file, text.as_bytes())
    }
}

/// The outbox and the task that empties it.
pub fn start(control: Arc<Control>, dir: &Path, max: usize) -> Outbox {
    let (tx, rx) = mpsc::channel(4096);
    let dropped = Arc::new(AtomicU64::new(0));
    let counters = Arc::new(OutboxCounters::default());
    let buffer = Buffer::load(dir, max);
    counters.observe(&buffer);
    tokio::spawn(run(control, buffer, rx, dropped.clone(), counters.clone()));
    Outbox {
        tx,
        dropped,
        counters,
    }
}

async fn run(
    control: Arc<Control>,
    mut buffer: Buffer,
    mut rx: mpsc::Receiver<Report>,
    dropped: Arc<AtomicU64>,
    counters: Arc<OutboxCounters>,
) {
    let mut tick = interval(Duration::from_secs(1));
    let mut backoff = Duration::from_secs(1);
    let mut next_try = Instant::now();
    let mut failing = String::new();
    loop {
        tokio::select! {
            got = rx.recv() => match got {
                Some(r) => if buffer.push(r) {
                    dropped.fetch_add(1, Relaxed);
                    counters.dropped.fetch_add(1, Relaxed);
                },
                None => return,
            },
            _ = tick.tick() => {
                if buffer.reports.is_empty() || Instant::now() < next_try {
                    continue;
                }
                let sent = send(&control, &mut buffer, &dropped, &counters.sent).await;
                match sent {
                    Ok(()) => {
                        if !failing.is_empty() {
                            info!("reports reach the control plane again");
                            failing.clear();
                        }
                        backoff = Duration::from_secs(1);
                    }
                    Err(e) => {
                        if let Err(io) = buffer.spool() {
                            warn!(file = %buffer.file.display(), error = %io, "spooling reports");
                        }
                        if e != failing {
                            warn!(problem = %e, waiting = buffer.reports.len(), "reports wait for the control plane");
                            failing = e;
                        }
                        next_try = Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
        counters.observe(&buffer);
    }
}

/// Sends everything buffered, batch by batch.
async fn send(
    control: &Arc<Control>,
    buffer: &mut Buffer,
    dropped: &AtomicU64,
    sent: &AtomicU64,
) -> Result<(), String> {
    while !buffer.reports.is_empty() {
        let batch = Batch {
            reports: buffer.reports.iter().take(MAX_BATCH).cloned().collect(),
            dropped: dropped.swap(0, Relaxed),
        };
        let (n, told) = (batch.reports.len(), batch.dropped);
        let c = control.clone();
        let posted = tokio::task::spawn_blocking(move || c.post_reports(&batch))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(e) = posted {
            dropped.fetch_add(told, Relaxed);
            return Err(e);
        }
        sent.fetch_add(n as u64, Relaxed);
        if let Err(e) = buffer.sent(n) {
            // Per batch sent: a backlog is sent in many.
            crate::throttled!(
                warn,
                "updating the report spool",
                file = %buffer.file.display(),
                error = %e
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(i: u64) -> Report {
        Report::Bytes {
            peer: "169.254.1.2:1".parse().unwrap(),
            received: i,
            sent: i,
        }
    }

    #[test]
    fn the_buffer_is_bounded_and_its_spool_survives_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Buffer::load(dir.path(), 3);
        for i in 0..4 {
            b.push(report(i));
        }
        assert_eq!(b.reports.len(), 3, "the oldest went");
        b.spool().unwrap();
        b.push(report(4));
        b.spool().unwrap();
        // A restart finds the newest three.
        let again = Buffer::load(dir.path(), 3);
        assert_eq!(
            again.reports,
            VecDeque::from(vec![report(2), report(3), report(4)])
        );
        // Two of them sent: the spool keeps only the third.
        let mut again = again;
        again.sent(2).unwrap();
        let after = Buffer::load(dir.path(), 3);
        assert_eq!(after.reports, VecDeque::from(vec![report(4)]));
        let mut after = after;
        after.sent(1).unwrap();
        assert!(!dir.path().join(SPOOL).exists());
    }
}
