//! The sources besides syslog: each OpenVPN server's management interface
//! and status file, polled on `[vpnlog] poll_interval`.
//!
//! A management connection that fails, ends or stays silent (see
//! [`silence_limit`]) is made again with backoff
//! ([`crate::management::keep`]), and counted per server in [`Watchers`].

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, UNIX_EPOCH},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    time::{MissedTickBehavior, interval},
};
use tracing::{debug, info, warn};

use super::{
    ingest::Ingest,
    management::{MAX_STATUS, Notice, Reader},
    status::parse_status,
};
use crate::{
    clock::now,
    config::LogServer,
    management::{Lines, ManagementError, Reconnects, Watchdog},
};

/// The agent's default `management_timeout`: a floor, so that a short
/// `poll_interval` does not take a busy server for a silent one.
const MIN_SILENCE: Duration = Duration::from_secs(45);

/// How long a watched interface may stay silent: three polls unanswered
/// (`status 3` always gets an answer), and never less than 45 s.
pub fn silence_limit(poll_interval: Duration) -> Duration {
    (poll_interval * 3).max(MIN_SILENCE)
}

/// The management watchers' sessions ended, per server (`host`), for metrics.
#[derive(Default)]
pub struct Watchers(BTreeMap<String, Arc<Reconnects>>);

impl Watchers {
    /// One entry per server with a `management` address.
    pub fn new(servers: &[LogServer]) -> Self {
        Self(
            servers
                .iter()
                .filter(|s| s.management.is_some())
                .map(|s| (s.host.clone(), Arc::default()))
                .collect(),
        )
    }

    /// `host`'s counters (fresh ones for a server not watched).
    pub fn of(&self, host: &str) -> Arc<Reconnects> {
        self.0.get(host).cloned().unwrap_or_default()
    }

    pub fn reconnects(&self) -> impl Iterator<Item = (&str, &Reconnects)> {
        self.0.iter().map(|(h, r)| (h.as_str(), &**r))
    }
}

/// Watches one server's management interface for as long as the service runs.
pub async fn management(
    server: LogServer,
    every: Duration,
    ingest: Arc<Ingest>,
    reconnects: Arc<Reconnects>,
) {
    let Some(addr) = server.management else {
        return;
    };
    let label = format!("log watcher of {}", server.host);
    crate::management::keep(addr, &label, &reconnects, || {
        watch(&server, addr, every, &ingest)
    })
    .await;
}

async fn watch(
    server: &LogServer,
    addr: SocketAddr,
    every: Duration,
    ingest: &Ingest,
) -> Result<(), ManagementError> {
    let password = server.management_password_file.as_deref();
    let mut stream = crate::management::connect(addr, password).await?;
    let secs = every.as_secs().max(1);
    stream
        .write_all(format!("bytecount {secs}\nstatus 3\n").as_bytes())
        .await?;
    info!(host = %server.host, %addr, "watching the OpenVPN management interface");
    let host = Some(server.host.as_str());
    let mut reader = Reader::default();
    let mut clients: HashMap<u64, SocketAddr> = HashMap::new();
    let mut lines = Lines::new(password.is_some());
    let mut chunk = vec![0u8; 16 * 1024];
    let mut poll = Watchdog::new(every, silence_limit(every));
    loop {
        tokio::select! {
            read = stream.read(&mut chunk) => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                poll.heard();
                lines.feed(&chunk[..n], |line| {
                    if let Some(notice) = reader.line(line) {
                        apply(notice, host, &mut clients, ingest);
                    }
                })?;
            }
            due = poll.due() => {
                due?;
                stream.write_all(b"status 3\n").await?;
            }
        }
    }
}

/// Feeds one notice to the server's session tracker.
fn apply(
    notice: Notice,
    host: Option<&str>,
    clients: &mut HashMap<u64, SocketAddr>,
    ingest: &Ingest,
) {
    let time = now();
    match notice {
        Notice::Client {
            id,
            client: Some(c),
        } => {
            clients.insert(id, c.peer);
            ingest.track(host, |t| t.seen(&c, time));
        }
        Notice::Disconnect { id, client } => {
            let peer = client
                .as_ref()
                .map(|c| c.peer)
                .or(clients.get(&id).copied());
            clients.remove(&id);
            if let Some(peer) = peer {
                let bytes = client.and_then(|c| c.bytes);
                ingest.track(host, |t| t.ended(peer, time, "disconnect", bytes));
            }
        }
        Notice::Bytes { id, received, sent } => {
            if let Some(&peer) = clients.get(&id) {
                ingest.track(host, |t| t.traffic(peer, (received, sent)));
            }
        }
        Notice::Status(s) => {
            clients.retain(|_, p| s.clients.iter().any(|c| c.peer == *p));
            for c in &s.clients {
                if let Some(id) = c.client_id {
                    clients.insert(id, c.peer);
                }
            }
            let taken = s.taken.unwrap_or(time);
            ingest.track(host, |t| t.snapshot(&s, taken, time));
        }
        // Per line of the interface.
        Notice::Error(e) => {
            crate::throttled!(warn, "OpenVPN management interface error", host, error = %e);
        }
        Notice::Client { client: None, .. } => {}
    }
}

/// Reads one server's status file whenever OpenVPN has rewritten it.
pub async fn status_file(server: LogServer, every: Duration, ingest: Arc<Ingest>) {
    let Some(path) = server.status_file.clone() else {
        return;
    };
    let mut seen = None;
    let mut last_problem = String::new();
    let mut poll = interval(every);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        poll.tick().await;
        match read_status(&path, &mut seen, &server.host, &ingest).await {
            Ok(()) => last_problem.clear(),
            Err(problem) if problem != last_problem => {
                warn!(file = %path.display(), problem = %problem, "OpenVPN status file");
                last_problem = problem;
            }
            Err(_) => {}
        }
    }
}

/// Reads the file if its modification time moved since `seen`.
async fn read_status(
    path: &Path,
    seen: &mut Option<std::time::SystemTime>,
    host: &str,
    ingest: &Ingest,
) -> Result<(), String> {
    let meta = tokio::fs::metadata(path).await.map_err(|e| e.to_string())?;
    let modified = meta.modified().map_err(|e| e.to_string())?;
    if *seen == Some(modified) {
        return Ok(());
    }
    if meta.len() > MAX_STATUS as u64 {
        return Err(format!("larger than {MAX_STATUS} bytes"));
    }
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| e.to_string())?;
    let report = parse_status(&text).map_err(|e| e.to_string())?;
    if !report.ended {
        // Caught while OpenVPN rewrites it: read again at the next poll.
        debug!(file = %path.display(), "status file without its END line yet");
        return Ok(());
    }
    if let Some(bad) = report.bad_rows.first() {
        warn!(file = %path.display(), rows = report.bad_rows.len(), first = %bad, "unreadable rows in the status file; no session is closed from it");
    }
    *seen = Some(modified);
    let taken = report.taken.unwrap_or_else(|| {
        modified
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    let time = now();
    ingest.track(Some(host), |t| t.snapshot(&report, taken, time));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_three_unanswered_polls_and_at_least_45_s() {
        let s = Duration::from_secs;
        assert_eq!(silence_limit(s(60)), s(180));
        assert_eq!(silence_limit(s(20)), s(60));
        assert_eq!(silence_limit(s(10)), s(45));
        assert_eq!(silence_limit(s(1)), s(45));
    }
}
