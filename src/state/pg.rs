//! Region state in PostgreSQL, shared by every node (`[store]`): drains are
//! one set for all nodes, health is each node's own view, the audit one log.
//!
//! A save writes only the drains its batch changed, named by the batch's
//! audit entries (drain, undrain, drain-ended), so a node never writes back
//! another node's drains from a stale view; it bumps `drains_version`, and
//! `NOTIFY mgnt_drains` tells every node on commit. Each reads the drains
//! and their version again and hands them to its owner, which skips a read
//! older than its own last change; a full re-read every `reread_interval`
//! covers a notification missed while disconnected.
//!
//! Health rows carry when they were written (`reported`, the database's
//! clock). Every save that writes them says so on `mgnt_health`; the other
//! nodes read every row but their own again, with each row's age as the
//! database tells it (so the nodes' clocks never meet), and hand them to
//! their owners as votes. A live node saves at least once per probe
//! interval, so the notification also keeps its votes counted.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{
    DrainRecord, audit,
    drain::Drains,
    file::{SavedRegion, StateFile},
    store::{Shared, StateStore, StoreError},
};
use crate::{
    health::{
        machine::Status,
        quorum::{Vote, Votes},
    },
    pg::Db,
};

/// Where drain changes are announced.
pub(crate) const CHANNEL: &str = "mgnt_drains";
/// Told by a node each time it wrote its health rows; the payload is its name.
const HEALTH_CHANNEL: &str = "mgnt_health";

pub struct PgStore {
    db: Db,
    node: String,
    shared: Mutex<Option<mpsc::Receiver<Shared>>>,
    votes: Mutex<Option<mpsc::Receiver<Votes>>>,
    /// The drains' version after this node's last change.
    saved: AtomicU64,
    /// The last-known state, on this node's disk.
    copy: LocalCopy,
}

/// The state last read from or written to the database, kept in a file of
/// the node's own (`[health] state_file`), so that a node started while the
/// database is away answers by the drains it last knew. One writer at a time.
#[derive(Clone)]
pub struct LocalCopy {
    file: std::path::PathBuf,
    lock: std::sync::Arc<Mutex<()>>,
    /// Set while writing fails: said once, not at every save.
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LocalCopy {
    pub fn new(file: std::path::PathBuf) -> Self {
        Self {
            file,
            lock: std::sync::Arc::default(),
            failing: std::sync::Arc::default(),
        }
    }

    /// Replaces the copy with `state`, or only its drains with `drains`.
    async fn write(&self, state: Option<StateFile>, drains: Option<Drains>) {
        let copy = self.clone();
        let written = tokio::task::spawn_blocking(move || {
            let _one = copy.lock.lock().unwrap_or_else(|p| p.into_inner());
            let state = match (state, drains) {
                (Some(state), _) => state,
                (None, Some(drains)) => {
                    let regions = super::file::load(&copy.file).map(|s| s.regions);
                    StateFile::new(regions.unwrap_or_default(), drains)
                }
                (None, None) => return Ok(()),
            };
            super::file::save(&copy.file, &state)
        })
        .await;
        match written {
            Ok(Err(error)) if !self.failing.swap(true, Relaxed) => {
                warn!(file = %self.file.display(), %error, "cannot keep the last-known state on disk");
            }
            Ok(Ok(())) if self.failing.swap(false, Relaxed) => {
                info!(file = %self.file.display(), "the last-known state is kept on disk again");
            }
            _ => {}
        }
    }

    async fn read(&self) -> Option<StateFile> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || super::file::load(&file))
            .await
            .ok()
            .flatten()
    }
}

impl PgStore {
    /// The store of node `node`; follows the other nodes' drains and health
    /// votes from now on, keeping what it last knew in `copy`.
    pub fn start(db: Db, node: String, reread: Duration, copy: LocalCopy) -> Self {
        let (tx, rx) = mpsc::channel(16);
        let (votes_tx, votes_rx) = mpsc::channel(16);
        let to_owner = ToOwner {
            drains: tx,
            votes: votes_tx,
        };
        tokio::spawn(follow(
            db.clone(),
            node.clone(),
            reread,
            to_owner,
            copy.clone(),
        ));
        Self {
            db,
            node,
            shared: Mutex::new(Some(rx)),
            votes: Mutex::new(Some(votes_rx)),
            saved: AtomicU64::new(0),
            copy,
        }
    }
}

/// Every drain and their version, as the database has them (one snapshot).
async fn read_drains(db: &Db) -> Result<Shared, String> {
    let mut client = db.pool.get().await.map_err(|e| e.to_string())?;
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let version: i64 = tx
        .query_one("SELECT version FROM drains_version", &[])
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    let rows = tx
        .query(
            "SELECT region, reason, by_token, since, until FROM drains",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    let mut drains = BTreeMap::new();
    for row in rows {
        let (since, until): (i64, Option<i64>) = (row.get(3), row.get(4));
        drains.insert(
            row.get::<_, String>(0),
            DrainRecord {
                reason: row.get(1),
                by: row.get(2),
                since: since.max(0) as u64,
                until: until.map(|u| u.max(0) as u64),
            },
        );
    }
    Ok(Shared {
        version: version.max(0) as u64,
        drains: Drains(drains),
    })
}

/// Every other node's health rows, as votes; each row's age is the
/// database's, its time of report this node's `now` less that age.
async fn read_votes(db: &Db, node: &str) -> Result<Votes, String> {
    let client = db.pool.get().await.map_err(|e| e.to_string())?;
    let rows = client
        .query(
            "SELECT node, region, state,
                    extract(epoch FROM now() - reported)::float8
             FROM health WHERE node <> $1 ORDER BY region, node",
            &[&node],
        )
        .await
        .map_err(|e| e.to_string())?;
    let now = crate::clock::now();
    let mut votes = Votes::new();
    for row in rows {
        let state: serde_json::Value = row.get(2);
        // A row this build cannot read is no vote (a newer node's, say).
        let Ok(saved) = serde_json::from_value::<SavedRegion>(state) else {
            continue;
        };
        let age: f64 = row.get(3);
        let vote = Vote {
            node: row.get(0),
            down: saved.status == Status::Down,
            reported: now.saturating_sub(age.max(0.0) as u64),
        };
        votes.entry(row.get(1)).or_default().push(vote);
    }
    Ok(votes)
}

#[async_trait::async_trait]
impl StateStore for PgStore {
    async fn load(&self) -> Option<StateFile> {
        let drains = match read_drains(&self.db).await {
            Ok(shared) => {
                self.saved.store(shared.version, Relaxed);
                shared.drains
            }
            Err(error) => {
                let copy = self.copy.read().await;
                let known = match &copy {
                    Some(_) => "answering by the last-known state",
                    None => "no last-known state either: starting without drains",
                };
                warn!(%error, file = %self.copy.file.display(), "cannot read the drains from the database; {known}");
                return copy;
            }
        };
        let mut regions = BTreeMap::new();
        if let Ok(client) = self.db.pool.get().await {
            let rows = client
                .query(
                    "SELECT region, state FROM health WHERE node = $1",
                    &[&self.node],
                )
                .await
                .unwrap_or_default();
            for row in rows {
                let state: serde_json::Value = row.get(1);
                if let Ok(saved) = serde_json::from_value::<SavedRegion>(state) {
                    regions.insert(row.get::<_, String>(0), saved);
                }
            }
        }
        let state = StateFile::new(regions, drains);
        self.copy.write(Some(state.clone()), None).await;
        Some(state)
    }

    async fn save(&self, state: StateFile, audit: Vec<audit::Entry>) -> Result<(), StoreError> {
        let saved = self.write(state.clone(), audit).await;
        match &saved {
            Ok(()) => {
                found(&self.db);
                self.copy.write(Some(state), None).await;
            }
            Err(e) => lost(&self.db, e),
        }
        saved
    }

    fn shared(&self) -> Option<mpsc::Receiver<Shared>> {
        self.shared.lock().ok()?.take()
    }

    fn votes(&self) -> Option<mpsc::Receiver<Votes>> {
        self.votes.lock().ok()?.take()
    }

    fn saved_version(&self) -> u64 {
        self.saved.load(Relaxed)
    }
}

/// The database answered again: said once.
fn found(db: &Db) {
    if db.reach.found() {
        info!("the database answers again");
    }
}

/// The database did not answer: said once, until it does again.
fn lost(db: &Db, error: &dyn std::fmt::Display) {
    if db.reach.lost(crate::clock::now()) {
        warn!(%error, "the database does not answer: DNS answers from the state last known, drains and undrains are refused");
    }
}

impl PgStore {
    async fn write(&self, state: StateFile, audit: Vec<audit::Entry>) -> Result<(), StoreError> {
        let db = |e: tokio_postgres::Error| StoreError::Db(e.to_string());
        let mut client = self
            .db
            .pool
            .get()
            .await
            .map_err(|e| StoreError::Db(e.to_string()))?;
        let tx = client.transaction().await.map_err(db)?;
        let mut touched = false;
        for region in changed_drains(&audit) {
            touched = true;
            match state.drains.0.get(region) {
                Some(d) => {
                    let until = d.until.map(|u| u as i64);
                    tx.execute(
                        "INSERT INTO drains (region, reason, by_token, since, until)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (region) DO UPDATE SET reason = $2, by_token = $3,
                             since = $4, until = $5",
                        &[&region, &d.reason, &d.by, &(d.since as i64), &until],
                    )
                    .await
                    .map_err(db)?;
                }
                None => {
                    tx.execute("DELETE FROM drains WHERE region = $1", &[&region])
                        .await
                        .map_err(db)?;
                }
            }
        }
        for (region, saved) in &state.regions {
            let json = serde_json::to_value(saved).map_err(|e| StoreError::Db(e.to_string()))?;
            tx.execute(
                "INSERT INTO health (node, region, state, reported) VALUES ($1, $2, $3, now())
                 ON CONFLICT (node, region) DO UPDATE SET state = $3, reported = now()",
                &[&self.node, region, &json],
            )
            .await
            .map_err(db)?;
        }
        if !state.regions.is_empty() {
            // Even unchanged, the rows are news: they keep this node's votes counted.
            tx.execute("SELECT pg_notify($1, $2)", &[&HEALTH_CHANNEL, &self.node])
                .await
                .map_err(db)?;
        }
        for entry in &audit {
            let json = serde_json::to_value(entry).map_err(|e| StoreError::Db(e.to_string()))?;
            tx.execute(
                "INSERT INTO audit (time, node, entry) VALUES ($1, $2, $3)",
                &[&(entry.time as i64), &self.node, &json],
            )
            .await
            .map_err(db)?;
        }
        let mut version = None;
        if touched {
            let row = tx
                .query_one(
                    "UPDATE drains_version SET version = version + 1 RETURNING version",
                    &[],
                )
                .await
                .map_err(db)?;
            version = Some(row.get::<_, i64>(0).max(0) as u64);
            // Delivered to the listeners when the transaction commits.
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &self.node])
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        if let Some(v) = version {
            self.saved.fetch_max(v, Relaxed);
        }
        Ok(())
    }
}

/// The regions whose drain a batch changed, by its audit entries (the
/// owner's outcomes: a refused drain or an undrain of an undrained region
/// changed nothing, and must not write this node's view of it).
fn changed_drains(audit: &[audit::Entry]) -> impl Iterator<Item = &str> {
    audit
        .iter()
        .filter(|e| {
            matches!(
                (e.action, e.outcome.as_str()),
                ("drain", "drained") | ("undrain", "undrained") | ("drain-ended", _)
            )
        })
        .filter_map(|e| e.region.as_deref())
}

/// Where [`follow`] hands what it read.
struct ToOwner {
    drains: mpsc::Sender<Shared>,
    votes: mpsc::Sender<Votes>,
}

/// Follows the other nodes: LISTEN on a connection of its own; the drains
/// read again on each of their notifications and every `reread`, and sent
/// to the owner with their version whenever it moved (the owner skips a
/// read older than its own last change, and drains equal to its own); the
/// other nodes' health rows read again on each of their notifications and
/// every `reread`, and sent as votes (the owner publishes only a change).
async fn follow(db: Db, node: String, reread: Duration, to_owner: ToOwner, copy: LocalCopy) {
    let mut last: Option<u64> = None;
    let mut backoff = Duration::from_secs(1);
    loop {
        let (messages_tx, mut messages) = mpsc::channel(64);
        let listening = match db.dedicated(messages_tx).await {
            Ok(client) => client
                .batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {HEALTH_CHANNEL}"))
                .await
                .map(|()| client)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let client = match listening {
            Ok(c) => {
                backoff = Duration::from_secs(1);
                c
            }
            Err(error) => {
                lost(&db, &error);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        info!("following the other nodes' drains and health");
        found(&db);
        let mut every = tokio::time::interval(reread);
        every.tick().await;
        // Read first: whatever changed while we were not listening. Then the
        // drains on each of their notifications, ours included (a read taken
        // for ours may hold another node's change made just before), the
        // health on each other node's, and both every `reread`.
        let mut reads = Reads::ALL;
        loop {
            if reads.drains {
                match read_drains(&db).await {
                    Ok(shared) if last != Some(shared.version) => {
                        last = Some(shared.version);
                        copy.write(None, Some(shared.drains.clone())).await;
                        if to_owner.drains.send(shared).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => lost(&db, &error),
                }
            }
            if reads.votes {
                match read_votes(&db, &node).await {
                    Ok(votes) => {
                        if to_owner.votes.send(votes).await.is_err() {
                            return;
                        }
                    }
                    Err(error) => lost(&db, &error),
                }
            }
            match wake(&mut messages, &mut every, &node).await {
                Some(r) => reads = r,
                // The connection ended: listen again.
                None => break,
            }
        }
        drop(client);
    }
}

/// What to read again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Reads {
    drains: bool,
    votes: bool,
}

impl Reads {
    const ALL: Self = Self {
        drains: true,
        votes: true,
    };

    /// Adds what a notification on `channel` from `sender` asks for
    /// (`node`'s own health is no news to it).
    fn note(&mut self, channel: &str, sender: &str, node: &str) {
        match channel {
            CHANNEL => self.drains = true,
            HEALTH_CHANNEL if sender != node => self.votes = true,
            _ => {}
        }
    }
}

/// Waits for a reason to read: a notification that asks for a read (those
/// already queued with it join it: one read for all) or the re-read
/// interval; `None` once the connection ended.
async fn wake(
    messages: &mut mpsc::Receiver<tokio_postgres::AsyncMessage>,
    every: &mut tokio::time::Interval,
    node: &str,
) -> Option<Reads> {
    use tokio_postgres::AsyncMessage::Notification;
    let mut reads = Reads::default();
    while reads == Reads::default() {
        tokio::select! {
            m = messages.recv() => {
                // A notice, not a notification: nothing to read.
                if let Notification(n) = m? {
                    reads.note(n.channel(), n.payload(), node);
                }
            }
            _ = every.tick() => return Some(Reads::ALL),
        }
    }
    while let Ok(m) = messages.try_recv() {
        if let Notification(n) = m {
            reads.note(n.channel(), n.payload(), node);
        }
    }
    Some(reads)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_writes_only_the_drains_its_audit_names() {
        let mut drain = audit::Entry::new(1, "ops", "drain", "drained");
        drain.region = Some("europe1".into());
        let mut ended = audit::Entry::new(2, "mgnt", "drain-ended", "ended");
        ended.region = Some("us1".into());
        let reload = audit::Entry::new(3, "SIGHUP", "reload", "reloaded");
        let mut refused = audit::Entry::new(4, "ops", "drain", "refused: last serving region");
        refused.region = Some("asia1".into());
        let mut noop = audit::Entry::new(5, "ops", "undrain", "was not drained");
        noop.region = Some("sa1".into());
        let entries = [drain, reload, ended, refused, noop];
        assert_eq!(
            changed_drains(&entries).collect::<Vec<_>>(),
            ["europe1", "us1"]
        );
    }

    #[test]
    fn a_node_reads_the_drains_on_any_news_and_the_health_on_another_nodes() {
        let mut reads = Reads::default();
        reads.note(HEALTH_CHANNEL, "a", "a");
        assert_eq!(reads, Reads::default(), "its own health");
        reads.note(CHANNEL, "a", "a");
        assert_eq!((reads.drains, reads.votes), (true, false), "its own drains");
        reads.note(HEALTH_CHANNEL, "b", "a");
        assert_eq!(reads, Reads::ALL);
    }
}
