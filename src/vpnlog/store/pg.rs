//! Log records in PostgreSQL (`[store]`): every node writes what its own
//! sources saw into the shared tables (schema version 4 in [`crate::pg`]),
//! one transaction per batch, as in SQLite.
//!
//! The append-only tables (authentication attempts, traffic, latency,
//! unparsed lines) are partitioned by day; a day's partitions are made, under
//! an advisory lock so nodes do not race, before the first record of that
//! day is written. The retention drops whole days older than it and deletes
//! the rest of the boundary day, so old records cost no vacuum.
//!
//! [`LogStore`] is synchronous (its writer is a thread); this store drives
//! its async client on the runtime it was opened in.

use std::{
    collections::BTreeSet,
    future::Future,
    sync::{Arc, Mutex},
};

use deadpool_postgres::GenericClient;
use futures_util::future::{join_all, maybe_done};
use tokio::runtime::Handle;
use tokio_postgres::{Row, Statement, types::ToSql};
use uuid::Uuid;

use super::{
    AttemptRow, Item, LatencyRow, LogStore, LogStoreError, Origin, RegionActivity, Rtt, SessionRow,
};
use crate::{
    pg::Db,
    vpnlog::sessions::{Record, Session},
};

/// The day-partitioned tables.
const PARTITIONED: [&str; 4] = ["vpn_auth", "vpn_traffic", "vpn_latency", "vpn_unparsed"];
pub(crate) const DAY: i64 = 86_400;
/// Serializes making partitions between nodes.
const PARTITION_LOCK: i64 = 0x6d67_6e74_0004;

const SESSION_COLUMNS: &str = r#"tunnel, common_name, peer, virtual_addr, host, region, start, "end", end_reason, bytes_in, bytes_out"#;

impl From<tokio_postgres::Error> for LogStoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Pg(e.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for LogStoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Pg(format!("the database is unavailable: {e}"))
    }
}

pub struct PgLogStore {
    db: Db,
    rt: Handle,
    /// Days whose partitions exist (made by this node or found made).
    days: Mutex<BTreeSet<i64>>,
}

impl PgLogStore {
    /// The store over `db` (migrated by [`Db::open`]). Within a runtime.
    pub fn open(db: Db) -> Arc<Self> {
        Arc::new(Self {
            db,
            rt: Handle::current(),
            days: Mutex::default(),
        })
    }

    /// Runs `f` to its end on the store's runtime.
    fn run<T>(
        &self,
        f: impl Future<Output = Result<T, LogStoreError>>,
    ) -> Result<T, LogStoreError> {
        crate::pg::block_on(&self.rt, f)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, LogStoreError> {
        Ok(self.db.pool.get().await?)
    }

    fn known(&self) -> std::sync::MutexGuard<'_, BTreeSet<i64>> {
        self.days.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes the partitions of `days` that are not known to exist.
    async fn ensure_days(&self, days: BTreeSet<i64>) -> Result<(), LogStoreError> {
        let missing: Vec<i64> = {
            let known = self.known();
            days.into_iter().filter(|d| !known.contains(d)).collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
            .await?;
        make_partitions(&tx, &missing).await?;
        tx.commit().await?;
        self.known().extend(missing);
        Ok(())
    }

    async fn write_async(&self, items: &[Item]) -> Result<(), LogStoreError> {
        self.ensure_days(days(items)).await?;
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let statements = Statements::prepare(&tx).await?;
        let ops: Vec<Op> = items.iter().flat_map(|i| ops(&statements, i)).collect();
        let params: Vec<Vec<&(dyn ToSql + Sync)>> = ops
            .iter()
            .map(|op| {
                op.params
                    .iter()
                    .map(|p| &**p as &(dyn ToSql + Sync))
                    .collect()
            })
            .collect();
        // Pipelined: every statement is sent, in order, before any reply is
        // awaited (a first poll sends a request), so a batch costs about one
        // round trip and one commit, not one round trip per record.
        let mut pending: Vec<_> = ops
            .iter()
            .zip(&params)
            .map(|(op, p)| Box::pin(maybe_done(tx.execute(op.statement, p))))
            .collect();
        for p in &mut pending {
            let _ = futures_util::poll!(p.as_mut());
        }
        join_all(pending.iter_mut().map(|p| p.as_mut())).await;
        for p in &mut pending {
            if let Some(Err(e)) = p.as_mut().take_output() {
                return Err(e.into());
            }
        }
        drop(pending);
        tx.commit().await?;
        Ok(())
    }

    async fn prune_async(&self, before: u64) -> Result<u64, LogStoreError> {
        let before = secs(before);
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
            .await?;
        let mut removed = 0u64;
        let partitions = tx
            .query(
                "SELECT c.relname::text FROM pg_inherits i
                 JOIN pg_class c ON c.oid = i.inhrelid
                 JOIN pg_class p ON p.oid = i.inhparent
                 WHERE p.relname = ANY($1)",
                &[&PARTITIONED.to_vec()],
            )
            .await?;
        let mut dropped = Vec::new();
        for row in &partitions {
            let name: String = row.try_get(0)?;
            let Some(day) = day_of(&name) else { continue };
            if (day + 1) * DAY <= before {
                let n: i64 = tx
                    .query_one(&format!("SELECT count(*) FROM {name}"), &[])
                    .await?
                    .try_get(0)?;
                tx.batch_execute(&format!("DROP TABLE {name}")).await?;
                removed += n.max(0) as u64;
                dropped.push(day);
            }
        }
        for table in PARTITIONED {
            let sql = format!("DELETE FROM {table} WHERE time < $1");
            removed += tx.execute(&sql, &[&before]).await?;
        }
        removed += tx
            .execute(
                r#"DELETE FROM vpn_sessions WHERE "end" IS NOT NULL AND "end" < $1"#,
                &[&before],
            )
            .await?;
        tx.commit().await?;
        let mut known = self.known();
        for day in dropped {
            known.remove(&day);
        }
        Ok(removed)
    }
}

impl LogStore for PgLogStore {
    fn write(&self, items: &[Item]) -> Result<(), LogStoreError> {
        self.run(self.write_async(items))
    }

    fn open_sessions(&self) -> Result<Vec<(Origin, Session)>, LogStoreError> {
        self.run(async {
            let sql = format!(r#"SELECT {SESSION_COLUMNS} FROM vpn_sessions WHERE "end" IS NULL"#);
            let rows = self.client().await?.query(&sql, &[]).await?;
            let mut open = Vec::with_capacity(rows.len());
            for row in &rows {
                open.extend(session_row(row)?.into_open());
            }
            Ok(open)
        })
    }

    fn sessions(&self, tunnel: Uuid, limit: u32) -> Result<Vec<SessionRow>, LogStoreError> {
        self.run(async {
            let sql = format!(
                "SELECT {SESSION_COLUMNS} FROM vpn_sessions WHERE tunnel = $1 ORDER BY start DESC LIMIT $2"
            );
            let rows = (self.client().await?)
                .query(&sql, &[&tunnel, &i64::from(limit)])
                .await?;
            rows.iter().map(session_row).collect()
        })
    }

    fn attempts(
        &self,
        failures_only: bool,
        since: u64,
        limit: u32,
    ) -> Result<Vec<AttemptRow>, LogStoreError> {
        self.run(async {
            let rows = (self.client().await?)
                .query(
                    "SELECT time, peer, username, tunnel, ok, host, region FROM vpn_auth
                     WHERE time >= $1 AND (NOT $2 OR NOT ok) ORDER BY time DESC LIMIT $3",
                    &[&secs(since), &failures_only, &i64::from(limit)],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(AttemptRow {
                        time: unsecs(r.try_get(0)?),
                        peer: r.try_get(1)?,
                        username: r.try_get(2)?,
                        tunnel: r.try_get(3)?,
                        ok: r.try_get(4)?,
                        host: r.try_get(5)?,
                        region: r.try_get(6)?,
                    })
                })
                .collect()
        })
    }

    fn latency(
        &self,
        tunnel: Uuid,
        since: u64,
        limit: u32,
    ) -> Result<Vec<LatencyRow>, LogStoreError> {
        self.run(async {
            let rows = (self.client().await?)
                .query(
                    "SELECT time, addr, host, region, sent, received, rtt_min, rtt_avg, rtt_max FROM vpn_latency
                     WHERE tunnel = $1 AND time >= $2 ORDER BY time DESC LIMIT $3",
                    &[&tunnel, &secs(since), &i64::from(limit)],
                )
                .await?;
            rows.iter().map(latency_row).collect()
        })
    }

    fn region_activity(&self, region: &str, since: u64) -> Result<RegionActivity, LogStoreError> {
        self.run(async {
            let row = (self.client().await?)
                .query_one(
                    r#"SELECT
                        (SELECT count(*) FROM vpn_sessions WHERE region = $1 AND start >= $2),
                        (SELECT count(*) FROM vpn_auth WHERE region = $1 AND time >= $2 AND NOT ok),
                        (SELECT count(*) FROM vpn_auth WHERE region = $1 AND time >= $2 AND ok),
                        (SELECT coalesce(sum(bytes_in), 0)::bigint FROM vpn_sessions
                         WHERE region = $1 AND ("end" IS NULL OR "end" >= $2)),
                        (SELECT coalesce(sum(bytes_out), 0)::bigint FROM vpn_sessions
                         WHERE region = $1 AND ("end" IS NULL OR "end" >= $2)),
                        (SELECT count(*) FROM vpn_unparsed WHERE region = $1 AND time >= $2)"#,
                    &[&region, &secs(since)],
                )
                .await?;
            let n = |i: usize| -> Result<u64, LogStoreError> { Ok(unsecs(row.try_get(i)?)) };
            Ok(RegionActivity {
                sessions_started: n(0)?,
                auth_failures: n(1)?,
                auth_successes: n(2)?,
                bytes_in: n(3)?,
                bytes_out: n(4)?,
                unparsed_lines: n(5)?,
            })
        })
    }

    fn prune(&self, before: u64) -> Result<u64, LogStoreError> {
        self.run(self.prune_async(before))
    }
}

/// Makes the partitions of `days` (since 1970) that do not exist yet, in
/// the caller's transaction, which holds the partition lock (or is the only
/// writer, as `mgnt store migrate`).
pub(crate) async fn make_partitions(
    tx: &impl GenericClient,
    days: &[i64],
) -> Result<(), tokio_postgres::Error> {
    for &day in days {
        let (from, to) = (day * DAY, (day + 1) * DAY);
        for table in PARTITIONED {
            let name = partition_name(table, day);
            tx.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} FOR VALUES FROM ({from}) TO ({to})"
            ))
            .await?;
        }
    }
    Ok(())
}

/// The statements a batch uses, prepared once per connection.
struct Statements {
    open: Statement,
    update: Statement,
    traffic: Statement,
    auth: Statement,
    latency: Statement,
    unparsed: Statement,
}

impl Statements {
    async fn prepare(tx: &deadpool_postgres::Transaction<'_>) -> Result<Self, LogStoreError> {
        Ok(Self {
            open: tx
                .prepare_cached(&format!(
                    "INSERT INTO vpn_sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ))
                .await?,
            // The newest session of that key, or a new row when it began
            // before these records did (one statement, so it pipelines).
            update: tx
                .prepare_cached(&format!(
                    r#"WITH updated AS (
                        UPDATE vpn_sessions SET virtual_addr = $4, "end" = $8, end_reason = $9, bytes_in = $10, bytes_out = $11
                        WHERE id = (SELECT max(id) FROM vpn_sessions
                                    WHERE coalesce(host, '') = coalesce($5, '') AND peer = $3 AND start = $7)
                        RETURNING 1)
                     INSERT INTO vpn_sessions ({SESSION_COLUMNS})
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11
                     WHERE NOT EXISTS (SELECT 1 FROM updated)"#
                ))
                .await?,
            traffic: tx
                .prepare_cached(
                    "INSERT INTO vpn_traffic (time, tunnel, peer, host, region, bytes_in, bytes_out)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .await?,
            auth: tx
                .prepare_cached(
                    "INSERT INTO vpn_auth (time, peer, username, tunnel, ok, host, region)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .await?,
            latency: tx
                .prepare_cached(
                    "INSERT INTO vpn_latency (time, tunnel, common_name, addr, host, region, sent, received, rtt_min, rtt_avg, rtt_max)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .await?,
            unparsed: tx
                .prepare_cached(
                    "INSERT INTO vpn_unparsed (time, host, region, raw) VALUES ($1, $2, $3, $4)",
                )
                .await?,
        })
    }
}

/// A parameter, owned.
type Param = Box<dyn ToSql + Sync + Send>;

/// One statement to run and its parameters.
struct Op<'a> {
    statement: &'a Statement,
    params: Vec<Param>,
}

/// What storing `item` takes, in order.
fn ops<'a>(s: &'a Statements, item: &Item) -> Vec<Op<'a>> {
    let op = |statement, params| Op { statement, params };
    match item {
        Item::Record {
            record,
            origin: o,
            time,
        } => match record {
            Record::Opened(session) => vec![op(&s.open, session_params(session, o))],
            Record::Progress(session) | Record::Closed(session) => {
                let mut all = vec![op(&s.update, session_params(session, o))];
                let counted = (session.bytes_in, session.bytes_out) != (0, 0);
                if matches!(record, Record::Progress(_)) && counted {
                    all.push(op(
                        &s.traffic,
                        vec![
                            Box::new(secs(*time)),
                            Box::new(session.tunnel),
                            Box::new(session.peer.to_string()),
                            Box::new(o.host.clone()),
                            Box::new(o.region.clone()),
                            Box::new(secs(session.bytes_in)),
                            Box::new(secs(session.bytes_out)),
                        ],
                    ));
                }
                all
            }
            Record::Auth(a) => vec![op(
                &s.auth,
                vec![
                    Box::new(secs(a.time)),
                    Box::new(a.peer.map(|p| p.to_string())),
                    Box::new(a.username.clone()),
                    Box::new(a.tunnel),
                    Box::new(a.ok),
                    Box::new(o.host.clone()),
                    Box::new(o.region.clone()),
                ],
            )],
        },
        Item::Latency(l, o) => vec![op(
            &s.latency,
            vec![
                Box::new(secs(l.time)),
                Box::new(l.tunnel),
                Box::new(l.common_name.clone()),
                Box::new(l.addr.to_string()),
                Box::new(o.host.clone()),
                Box::new(o.region.clone()),
                Box::new(count(l.sent)),
                Box::new(count(l.received)),
                Box::new(l.rtt_ms.map(|r| r.min)),
                Box::new(l.rtt_ms.map(|r| r.avg)),
                Box::new(l.rtt_ms.map(|r| r.max)),
            ],
        )],
        Item::Unparsed { time, origin, raw } => vec![op(
            &s.unparsed,
            vec![
                Box::new(secs(*time)),
                Box::new(origin.host.clone()),
                Box::new(origin.region.clone()),
                Box::new(raw.clone()),
            ],
        )],
    }
}

/// A session's columns in [`SESSION_COLUMNS`] order.
fn session_params(s: &Session, o: &Origin) -> Vec<Param> {
    vec![
        Box::new(s.tunnel),
        Box::new(s.common_name.clone()),
        Box::new(s.peer.to_string()),
        Box::new(s.virtual_addr.map(|a| a.to_string())),
        Box::new(o.host.clone()),
        Box::new(o.region.clone()),
        Box::new(secs(s.start)),
        Box::new(s.end.map(secs)),
        Box::new(s.end_reason.clone()),
        Box::new(secs(s.bytes_in)),
        Box::new(secs(s.bytes_out)),
    ]
}

fn session_row(r: &Row) -> Result<SessionRow, LogStoreError> {
    Ok(SessionRow {
        tunnel: r.try_get(0)?,
        common_name: r.try_get(1)?,
        peer: r.try_get(2)?,
        virtual_addr: r.try_get(3)?,
        host: r.try_get(4)?,
        region: r.try_get(5)?,
        start: unsecs(r.try_get(6)?),
        end: r.try_get::<_, Option<i64>>(7)?.map(unsecs),
        end_reason: r.try_get(8)?,
        bytes_in: unsecs(r.try_get(9)?),
        bytes_out: unsecs(r.try_get(10)?),
    })
}

fn latency_row(r: &Row) -> Result<LatencyRow, LogStoreError> {
    let sent = u32::try_from(r.try_get::<_, i32>(4)?).unwrap_or(0);
    let received = u32::try_from(r.try_get::<_, i32>(5)?).unwrap_or(0);
    let rtt = match (r.try_get(6)?, r.try_get(7)?, r.try_get(8)?) {
        (Some(min), Some(avg), Some(max)) => Some(Rtt { min, avg, max }),
        _ => None,
    };
    Ok(LatencyRow {
        time: unsecs(r.try_get(0)?),
        addr: r.try_get(1)?,
        host: r.try_get(2)?,
        region: r.try_get(3)?,
        sent,
        received,
        loss: super::loss(sent, received),
        rtt_ms: rtt,
    })
}

/// The days (since 1970) the partitioned rows of `items` fall on.
fn days(items: &[Item]) -> BTreeSet<i64> {
    let time = |item: &Item| match item {
        Item::Record {
            record: Record::Auth(a),
            ..
        } => Some(a.time),
        Item::Record {
            record: Record::Progress(_),
            time,
            ..
        } => Some(*time),
        Item::Record { .. } => None,
        Item::Latency(l, _) => Some(l.time),
        Item::Unparsed { time, .. } => Some(*time),
    };
    items
        .iter()
        .filter_map(time)
        .map(|t| secs(t).div_euclid(DAY))
        .collect()
}

/// `vpn_auth_20261126` for `vpn_auth` and the day of 2026-11-26.
fn partition_name(table: &str, day: i64) -> String {
    let date = chrono::DateTime::from_timestamp(day * DAY, 0)
        .map_or_else(|| format!("d{day}"), |d| d.format("%Y%m%d").to_string());
    format!("{table}_{date}")
}

/// The day a partition's name stands for.
fn day_of(name: &str) -> Option<i64> {
    let date = name.rsplit('_').next()?;
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let date = chrono::NaiveDate::parse_from_str(date, "%Y%m%d").ok()?;
    Some(
        date.and_hms_opt(0, 0, 0)?
            .and_utc()
            .timestamp()
            .div_euclid(DAY),
    )
}

fn secs(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn unsecs(t: i64) -> u64 {
    t.max(0) as u64
}

fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_named_by_their_day_and_read_back() {
        let day = 1_795_651_200 / DAY; // 2026-11-26
        assert_eq!(partition_name("vpn_auth", day), "vpn_auth_20261126");
        assert_eq!(day_of("vpn_unparsed_20261126"), Some(day));
        assert_eq!(day_of("vpn_auth"), None);
        assert_eq!(day_of("vpn_auth_2026112"), None);
    }
}
