//! Log records in SQLite, written in batches (one transaction per batch).

use std::{collections::HashMap, net::SocketAddr, path::Path, sync::Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use uuid::Uuid;

use super::sessions::{AuthAttempt, Record, Session};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    tunnel TEXT,
    common_name TEXT NOT NULL,
    peer TEXT NOT NULL,
    virtual_addr TEXT,
    host TEXT,
    region TEXT,
    start INTEGER NOT NULL,
    end INTEGER,
    end_reason TEXT
);
CREATE INDEX IF NOT EXISTS sessions_by_tunnel ON sessions(tunnel, start);
CREATE TABLE IF NOT EXISTS auth_attempts (
    time INTEGER NOT NULL,
    peer TEXT,
    username TEXT,
    tunnel TEXT,
    ok INTEGER NOT NULL,
    host TEXT,
    region TEXT
);
CREATE INDEX IF NOT EXISTS auth_by_time ON auth_attempts(time);
CREATE TABLE IF NOT EXISTS unparsed (
    time INTEGER NOT NULL,
    host TEXT,
    raw TEXT NOT NULL
);
";

/// Where a record came from: the regional server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub host: Option<String>,
    pub region: Option<String>,
}

/// What the ingest loop hands to storage.
#[derive(Debug, Clone)]
pub enum Item {
    Record(Record, Origin),
    Unparsed {
        time: u64,
        origin: Origin,
        raw: String,
    },
}

#[derive(Debug, Serialize)]
pub struct SessionRow {
    pub tunnel: Option<Uuid>,
    pub common_name: String,
    pub peer: String,
    pub virtual_addr: Option<String>,
    pub host: Option<String>,
    pub region: Option<String>,
    pub start: u64,
    pub end: Option<u64>,
    pub end_reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AttemptRow {
    pub time: u64,
    pub peer: Option<String>,
    pub username: Option<String>,
    pub tunnel: Option<Uuid>,
    pub ok: bool,
    pub host: Option<String>,
    pub region: Option<String>,
}

pub struct LogStore {
    inner: Mutex<Inner>,
}

struct Inner {
    db: Connection,
    /// Row of each open session, by server and client address.
    open: HashMap<(Option<String>, SocketAddr), i64>,
}

impl LogStore {
    pub fn open(path: &Path) -> Result<Self, rusqlite::Error> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(SCHEMA)?;
        Ok(Self {
            inner: Mutex::new(Inner {
                db,
                open: HashMap::new(),
            }),
        })
    }

    /// Writes a batch in one transaction.
    pub fn write(&self, items: &[Item]) -> Result<(), rusqlite::Error> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Inner { db, open } = &mut *inner;
        let tx = db.transaction()?;
        for item in items {
            match item {
                Item::Record(Record::Opened(s), o) => {
                    insert_session(&tx, s, o)?;
                    open.insert((o.host.clone(), s.peer), tx.last_insert_rowid());
                }
                Item::Record(Record::Closed(s), o) => {
                    match open.remove(&(o.host.clone(), s.peer)) {
                        Some(id) => {
                            tx.execute(
                            "UPDATE sessions SET virtual_addr = ?1, end = ?2, end_reason = ?3 WHERE id = ?4",
                            params![s.virtual_addr.map(|a| a.to_string()), s.end.map(|e| e as i64), s.end_reason, id],
                        )?;
                        }
                        None => insert_session(&tx, s, o)?,
                    }
                }
                Item::Record(Record::Auth(a), o) => insert_attempt(&tx, a, o)?,
                Item::Unparsed { time, origin, raw } => {
                    tx.execute(
                        "INSERT INTO unparsed (time, host, raw) VALUES (?1, ?2, ?3)",
                        params![*time as i64, origin.host, raw],
                    )?;
                }
            }
        }
        tx.commit()
    }

    pub fn sessions(&self, tunnel: Uuid) -> Result<Vec<SessionRow>, rusqlite::Error> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = inner.db.prepare(
            "SELECT tunnel, common_name, peer, virtual_addr, host, region, start, end, end_reason
             FROM sessions WHERE tunnel = ?1 ORDER BY start DESC LIMIT 1000",
        )?;
        let rows = stmt.query_map([tunnel.to_string()], |r| {
            Ok(SessionRow {
                tunnel: r
                    .get::<_, Option<String>>(0)?
                    .and_then(|t| Uuid::parse_str(&t).ok()),
                common_name: r.get(1)?,
                peer: r.get(2)?,
                virtual_addr: r.get(3)?,
                host: r.get(4)?,
                region: r.get(5)?,
                start: r.get::<_, i64>(6)?.max(0) as u64,
                end: r.get::<_, Option<i64>>(7)?.map(|e| e.max(0) as u64),
                end_reason: r.get(8)?,
            })
        })?;
        rows.collect()
    }

    pub fn attempts(
        &self,
        failures_only: bool,
        since: u64,
    ) -> Result<Vec<AttemptRow>, rusqlite::Error> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt = inner.db.prepare(
            "SELECT time, peer, username, tunnel, ok, host, region FROM auth_attempts
             WHERE time >= ?1 AND (?2 = 0 OR ok = 0) ORDER BY time DESC LIMIT 1000",
        )?;
        let rows = stmt.query_map(params![since as i64, failures_only], |r| {
            Ok(AttemptRow {
                time: r.get::<_, i64>(0)?.max(0) as u64,
                peer: r.get(1)?,
                username: r.get(2)?,
                tunnel: r
                    .get::<_, Option<String>>(3)?
                    .and_then(|t| Uuid::parse_str(&t).ok()),
                ok: r.get(4)?,
                host: r.get(5)?,
                region: r.get(6)?,
            })
        })?;
        rows.collect()
    }

    pub fn unparsed_count(&self) -> Result<u64, rusqlite::Error> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let n: Option<i64> = inner
            .db
            .query_row("SELECT count(*) FROM unparsed", [], |r| r.get(0))
            .optional()?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }
}

fn insert_session(
    tx: &rusqlite::Transaction,
    s: &Session,
    o: &Origin,
) -> Result<(), rusqlite::Error> {
    tx.execute(
        "INSERT INTO sessions (tunnel, common_name, peer, virtual_addr, host, region, start, end, end_reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            s.tunnel.map(|t| t.to_string()),
            s.common_name,
            s.peer.to_string(),
            s.virtual_addr.map(|a| a.to_string()),
            o.host,
            o.region,
            s.start as i64,
            s.end.map(|e| e as i64),
            s.end_reason
        ],
    )?;
    Ok(())
}

fn insert_attempt(
    tx: &rusqlite::Transaction,
    a: &AuthAttempt,
    o: &Origin,
) -> Result<(), rusqlite::Error> {
    tx.execute(
        "INSERT INTO auth_attempts (time, peer, username, tunnel, ok, host, region) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            a.time as i64,
            a.peer.map(|p| p.to_string()),
            a.username,
            a.tunnel.map(|t| t.to_string()),
            a.ok,
            o.host,
            o.region
        ],
    )?;
    Ok(())
}
