//! Log records in SQLite, written in batches (one transaction per batch).
//! Sessions are found again by (server, client address, start), so a session
//! can be updated by any source, after a restart too; should a replayed log
//! repeat a key, the newest row is the one meant.

use std::{path::Path, sync::Mutex};

use rusqlite::{Connection, Row, Transaction, params};
use uuid::Uuid;

use super::{
    AttemptRow, Item, LatencyRow, LogStore, LogStoreError, Origin, RegionActivity, Rtt, SessionRow,
};
use crate::vpnlog::sessions::{AuthAttempt, Record, Session};

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
CREATE TABLE IF NOT EXISTS traffic (
    time INTEGER NOT NULL,
    tunnel TEXT,
    peer TEXT NOT NULL,
    host TEXT,
    region TEXT,
    bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS traffic_by_tunnel ON traffic(tunnel, time);
CREATE TABLE IF NOT EXISTS latency (
    time INTEGER NOT NULL,
    tunnel TEXT,
    common_name TEXT NOT NULL,
    addr TEXT NOT NULL,
    host TEXT,
    region TEXT,
    sent INTEGER NOT NULL,
    received INTEGER NOT NULL,
    rtt_min REAL,
    rtt_avg REAL,
    rtt_max REAL
);
CREATE INDEX IF NOT EXISTS latency_by_tunnel ON latency(tunnel, time);
";

/// Columns added after the first release, for databases that predate them.
const ADDED: [(&str, &str, &str); 3] = [
    ("sessions", "bytes_in", "INTEGER NOT NULL DEFAULT 0"),
    ("sessions", "bytes_out", "INTEGER NOT NULL DEFAULT 0"),
    ("unparsed", "region", "TEXT"),
];

const INDEXES: &str = "
DROP INDEX IF EXISTS sessions_by_key;
CREATE INDEX IF NOT EXISTS sessions_by_source ON sessions(host, peer, start);
CREATE INDEX IF NOT EXISTS sessions_open ON sessions(end) WHERE end IS NULL;
CREATE INDEX IF NOT EXISTS sessions_by_region ON sessions(region, end);
CREATE INDEX IF NOT EXISTS auth_by_region ON auth_attempts(region, time);
CREATE INDEX IF NOT EXISTS unparsed_by_time ON unparsed(time);
";

const SESSION_COLUMNS: &str = "tunnel, common_name, peer, virtual_addr, host, region, start, end, end_reason, bytes_in, bytes_out";

pub struct SqliteLogStore {
    db: Mutex<Connection>,
}

fn uuid_col(r: &Row, i: usize) -> rusqlite::Result<Option<Uuid>> {
    Ok(r.get::<_, Option<String>>(i)?
        .and_then(|t| Uuid::parse_str(&t).ok()))
}

fn u64_col(r: &Row, i: usize) -> rusqlite::Result<u64> {
    Ok(r.get::<_, i64>(i)?.max(0) as u64)
}

fn session_row(r: &Row) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        tunnel: uuid_col(r, 0)?,
        common_name: r.get(1)?,
        peer: r.get(2)?,
        virtual_addr: r.get(3)?,
        host: r.get(4)?,
        region: r.get(5)?,
        start: u64_col(r, 6)?,
        end: r.get::<_, Option<i64>>(7)?.map(|e| e.max(0) as u64),
        end_reason: r.get(8)?,
        bytes_in: u64_col(r, 9)?,
        bytes_out: u64_col(r, 10)?,
    })
}

impl SqliteLogStore {
    pub fn open(path: &Path) -> Result<Self, LogStoreError> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute_batch(SCHEMA)?;
        for (table, column, decl) in ADDED {
            let present: bool = db.query_row(
                "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
                params![table, column],
                |r| r.get(0),
            )?;
            if !present {
                db.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
            }
        }
        db.execute_batch(INDEXES)?;
        Ok(Self { db: Mutex::new(db) })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl LogStore for SqliteLogStore {
    fn write(&self, items: &[Item]) -> Result<(), LogStoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        for item in items {
            match item {
                Item::Record {
                    record,
                    origin,
                    time,
                } => write_record(&tx, record, origin, *time)?,
                Item::Latency(l, o) => {
                    tx.prepare_cached(
                        "INSERT INTO latency (time, tunnel, common_name, addr, host, region, sent, received, rtt_min, rtt_avg, rtt_max)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    )?
                    .execute(params![
                        l.time as i64,
                        l.tunnel.map(|t| t.to_string()),
                        l.common_name,
                        l.addr.to_string(),
                        o.host,
                        o.region,
                        l.sent,
                        l.received,
                        l.rtt_ms.map(|r| r.min),
                        l.rtt_ms.map(|r| r.avg),
                        l.rtt_ms.map(|r| r.max),
                    ])?;
                }
                Item::Unparsed { time, origin, raw } => {
                    tx.prepare_cached(
                        "INSERT INTO unparsed (time, host, region, raw) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![
                        *time as i64,
                        origin.host,
                        origin.region,
                        raw
                    ])?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn open_sessions(&self) -> Result<Vec<(Origin, Session)>, LogStoreError> {
        let db = self.db();
        let mut stmt = db.prepare(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE end IS NULL"
        ))?;
        let rows = stmt.query_map([], session_row)?;
        let mut open = Vec::new();
        for row in rows {
            open.extend(row?.into_open());
        }
        Ok(open)
    }

    fn sessions(&self, tunnel: Uuid, limit: u32) -> Result<Vec<SessionRow>, LogStoreError> {
        let db = self.db();
        let mut stmt = db.prepare(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE tunnel = ?1 ORDER BY start DESC LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![tunnel.to_string(), limit], session_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn attempts(
        &self,
        failures_only: bool,
        since: u64,
        limit: u32,
    ) -> Result<Vec<AttemptRow>, LogStoreError> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT time, peer, username, tunnel, ok, host, region FROM auth_attempts
             WHERE time >= ?1 AND (?2 = 0 OR ok = 0) ORDER BY time DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![since as i64, failures_only, limit], |r| {
            Ok(AttemptRow {
                time: u64_col(r, 0)?,
                peer: r.get(1)?,
                username: r.get(2)?,
                tunnel: uuid_col(r, 3)?,
                ok: r.get(4)?,
                host: r.get(5)?,
                region: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn latency(
        &self,
        tunnel: Uuid,
        since: u64,
        limit: u32,
    ) -> Result<Vec<LatencyRow>, LogStoreError> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT time, addr, host, region, sent, received, rtt_min, rtt_avg, rtt_max FROM latency
             WHERE tunnel = ?1 AND time >= ?2 ORDER BY time DESC LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![tunnel.to_string(), since as i64, limit], |r| {
            let (sent, received): (u32, u32) = (r.get(4)?, r.get(5)?);
            let rtt = match (r.get(6)?, r.get(7)?, r.get(8)?) {
                (Some(min), Some(avg), Some(max)) => Some(Rtt { min, avg, max }),
                _ => None,
            };
            Ok(LatencyRow {
                time: u64_col(r, 0)?,
                addr: r.get(1)?,
                host: r.get(2)?,
                region: r.get(3)?,
                sent,
                received,
                loss: super::loss(sent, received),
                rtt_ms: rtt,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn region_activity(&self, region: &str, since: u64) -> Result<RegionActivity, LogStoreError> {
        let db = self.db();
        let since = since as i64;
        let count = |sql: &str| -> rusqlite::Result<u64> {
            db.query_row(sql, params![region, since], |r| u64_col(r, 0))
        };
        let (bytes_in, bytes_out) = db.query_row(
            "SELECT coalesce(sum(bytes_in), 0), coalesce(sum(bytes_out), 0) FROM sessions
             WHERE region = ?1 AND (end IS NULL OR end >= ?2)",
            params![region, since],
            |r| Ok((u64_col(r, 0)?, u64_col(r, 1)?)),
        )?;
        Ok(RegionActivity {
            sessions_started: count(
                "SELECT count(*) FROM sessions WHERE region = ?1 AND start >= ?2",
            )?,
            auth_failures: count(
                "SELECT count(*) FROM auth_attempts WHERE region = ?1 AND time >= ?2 AND ok = 0",
            )?,
            auth_successes: count(
                "SELECT count(*) FROM auth_attempts WHERE region = ?1 AND time >= ?2 AND ok = 1",
            )?,
            bytes_in,
            bytes_out,
            unparsed_lines: count(
                "SELECT count(*) FROM unparsed WHERE region = ?1 AND time >= ?2",
            )?,
        })
    }

    fn prune(&self, before: u64) -> Result<u64, LogStoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let mut removed = 0;
        for sql in [
            "DELETE FROM sessions WHERE end IS NOT NULL AND end < ?1",
            "DELETE FROM auth_attempts WHERE time < ?1",
            "DELETE FROM traffic WHERE time < ?1",
            "DELETE FROM latency WHERE time < ?1",
            "DELETE FROM unparsed WHERE time < ?1",
        ] {
            removed += tx.execute(sql, [before as i64])? as u64;
        }
        tx.commit()?;
        Ok(removed)
    }
}

fn write_record(
    tx: &Transaction,
    record: &Record,
    o: &Origin,
    time: u64,
) -> Result<(), LogStoreError> {
    match record {
        Record::Opened(s) => insert_session(tx, s, o)?,
        Record::Progress(s) | Record::Closed(s) => {
            let updated = tx
                .prepare_cached(
                    "UPDATE sessions SET virtual_addr = ?1, end = ?2, end_reason = ?3, bytes_in = ?4, bytes_out = ?5
                     WHERE id = (SELECT max(id) FROM sessions WHERE host IS ?8 AND peer = ?6 AND start = ?7)",
                )?
                .execute(params![
                    s.virtual_addr.map(|a| a.to_string()),
                    s.end.map(|e| e as i64),
                    s.end_reason,
                    s.bytes_in as i64,
                    s.bytes_out as i64,
                    s.peer.to_string(),
                    s.start as i64,
                    o.host,
                ])?;
            if updated == 0 {
                insert_session(tx, s, o)?;
            }
            if matches!(record, Record::Progress(_)) && (s.bytes_in, s.bytes_out) != (0, 0) {
                tx.prepare_cached(
                    "INSERT INTO traffic (time, tunnel, peer, host, region, bytes_in, bytes_out)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    time as i64,
                    s.tunnel.map(|t| t.to_string()),
                    s.peer.to_string(),
                    o.host,
                    o.region,
                    s.bytes_in as i64,
                    s.bytes_out as i64
                ])?;
            }
        }
        Record::Auth(a) => insert_attempt(tx, a, o)?,
    }
    Ok(())
}

fn insert_session(tx: &Transaction, s: &Session, o: &Origin) -> rusqlite::Result<()> {
    tx.prepare_cached(&format!(
        "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    ))?
    .execute(params![
        s.tunnel.map(|t| t.to_string()),
        s.common_name,
        s.peer.to_string(),
        s.virtual_addr.map(|a| a.to_string()),
        o.host,
        o.region,
        s.start as i64,
        s.end.map(|e| e as i64),
        s.end_reason,
        s.bytes_in as i64,
        s.bytes_out as i64,
    ])?;
    Ok(())
}

fn insert_attempt(tx: &Transaction, a: &AuthAttempt, o: &Origin) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO auth_attempts (time, peer, username, tunnel, ok, host, region) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        a.time as i64,
        a.peer.map(|p| p.to_string()),
        a.username,
        a.tunnel.map(|t| t.to_string()),
        a.ok,
        o.host,
        o.region
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sqlite_store_keeps_every_promise() {
        for (name, check) in crate::vpnlog::store::conformance::ALL {
            let dir = tempfile::tempdir().unwrap();
            eprintln!("{name}");
            check(&SqliteLogStore::open(&dir.path().join("v.db")).unwrap());
        }
    }

    #[test]
    fn a_database_from_before_the_byte_counters_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("old.db");
        Connection::open(&file)
            .unwrap()
            .execute_batch(
                "CREATE TABLE sessions (id INTEGER PRIMARY KEY, tunnel TEXT, common_name TEXT NOT NULL,
                 peer TEXT NOT NULL, virtual_addr TEXT, host TEXT, region TEXT, start INTEGER NOT NULL,
                 end INTEGER, end_reason TEXT);
                 INSERT INTO sessions (common_name, peer, start) VALUES ('r', '198.51.100.7:1', 5);
                 CREATE TABLE unparsed (time INTEGER NOT NULL, host TEXT, raw TEXT NOT NULL);",
            )
            .unwrap();
        let store = SqliteLogStore::open(&file).unwrap();
        let open = store.open_sessions().unwrap();
        assert_eq!((open.len(), open[0].1.bytes_in), (1, 0));
    }
}
