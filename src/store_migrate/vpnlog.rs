//! The log store's copy: sessions, authentication attempts, traffic,
//! latency and unparsed lines from a single machine's `vpnlog.db` into the
//! tables of schema 4 in [`crate::pg`], the day partitions the records fall
//! on made first. As with `tunnels.db`, the file is read from a private copy
//! (brought up to date as the server would) and never changed.

use std::{
    path::{Path, PathBuf},
    pin::pin,
};

use deadpool_postgres::Transaction;
use rusqlite::{Connection, OpenFlags, Row};
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use super::{
    MigrateError,
    scratch::{Fault, Scratch, copy_in},
};
use crate::vpnlog::store::{
    SqliteLogStore,
    pg::{DAY, make_partitions},
};

/// What was copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub file: PathBuf,
    pub sessions: u64,
    pub auth: u64,
    pub traffic: u64,
    pub latency: u64,
    pub unparsed: u64,
}

/// `vpnlog.db`, read from a private copy brought up to date.
pub(super) struct Source {
    file: PathBuf,
    db: Connection,
    /// Declared after `db`: removed once the connection is closed.
    _copy: Scratch,
}

/// One table: its SQLite query, its PostgreSQL table and columns with their
/// types, in the same order.
struct Table {
    select: &'static str,
    into: &'static str,
    columns: &'static str,
    types: &'static [Type],
}

const SESSIONS: Table = Table {
    select: "SELECT tunnel, common_name, peer, virtual_addr, host, region, start, end, end_reason, bytes_in, bytes_out
             FROM sessions ORDER BY id",
    into: "vpn_sessions",
    columns: r#"tunnel, common_name, peer, virtual_addr, host, region, start, "end", end_reason, bytes_in, bytes_out"#,
    types: &[
        Type::UUID,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::INT8,
        Type::TEXT,
        Type::INT8,
        Type::INT8,
    ],
};

const AUTH: Table = Table {
    select: "SELECT time, peer, username, tunnel, ok, host, region FROM auth_attempts ORDER BY time, rowid",
    into: "vpn_auth",
    columns: "time, peer, username, tunnel, ok, host, region",
    types: &[
        Type::INT8,
        Type::TEXT,
        Type::TEXT,
        Type::UUID,
        Type::BOOL,
        Type::TEXT,
        Type::TEXT,
    ],
};

const TRAFFIC: Table = Table {
    select: "SELECT time, tunnel, peer, host, region, bytes_in, bytes_out FROM traffic ORDER BY time, rowid",
    into: "vpn_traffic",
    columns: "time, tunnel, peer, host, region, bytes_in, bytes_out",
    types: &[
        Type::INT8,
        Type::UUID,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT8,
        Type::INT8,
    ],
};

const LATENCY: Table = Table {
    select: "SELECT time, tunnel, common_name, addr, host, region, sent, received, rtt_min, rtt_avg, rtt_max
             FROM latency ORDER BY time, rowid",
    into: "vpn_latency",
    columns: "time, tunnel, common_name, addr, host, region, sent, received, rtt_min, rtt_avg, rtt_max",
    types: &[
        Type::INT8,
        Type::UUID,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::TEXT,
        Type::INT4,
        Type::INT4,
        Type::FLOAT8,
        Type::FLOAT8,
        Type::FLOAT8,
    ],
};

const UNPARSED: Table = Table {
    select: "SELECT time, host, region, raw FROM unparsed ORDER BY time, rowid",
    into: "vpn_unparsed",
    columns: "time, host, region, raw",
    types: &[Type::INT8, Type::TEXT, Type::TEXT, Type::TEXT],
};

impl Source {
    /// `dir`'s `vpnlog.db`; `None` when there is none.
    pub(super) fn open(dir: &Path) -> Result<Option<Self>, MigrateError> {
        let file = dir.join("vpnlog.db");
        let exists = file.try_exists().map_err(|source| MigrateError::Io {
            file: file.clone(),
            source,
        })?;
        if !exists {
            return Ok(None);
        }
        let copy = Scratch::of(&file)?;
        // As the server opens it: older databases gain the newer columns.
        drop(
            SqliteLogStore::open(&copy.path).map_err(|e| MigrateError::Corrupt {
                file: file.clone(),
                what: e.to_string(),
            })?,
        );
        let db = Connection::open_with_flags(&copy.path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|source| MigrateError::Sqlite {
                file: file.clone(),
                source,
            })?;
        Ok(Some(Self {
            file,
            db,
            _copy: copy,
        }))
    }

    /// Copies every table inside `tx`.
    pub(super) async fn copy(&self, tx: &Transaction<'_>) -> Result<Copied, MigrateError> {
        // No key is read here: a wrong-key fault cannot arise.
        self.copy_tables(tx)
            .await
            .map_err(|fault| fault.about(&self.file, Path::new("")))
    }

    async fn copy_tables(&self, tx: &Transaction<'_>) -> Result<Copied, Fault> {
        let mut stmt = self.db.prepare(&format!(
            "SELECT DISTINCT time / {DAY} FROM (
                 SELECT time FROM auth_attempts UNION ALL SELECT time FROM traffic
                 UNION ALL SELECT time FROM latency UNION ALL SELECT time FROM unparsed)"
        ))?;
        let days = stmt
            .query_map([], |r| r.get::<_, i64>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        make_partitions(tx, &days).await?;
        Ok(Copied {
            file: self.file.clone(),
            sessions: self.table(tx, &SESSIONS).await?,
            auth: self.table(tx, &AUTH).await?,
            traffic: self.table(tx, &TRAFFIC).await?,
            latency: self.table(tx, &LATENCY).await?,
            unparsed: self.table(tx, &UNPARSED).await?,
        })
    }

    /// Copies one table, row by row as SQLite has it; how many rows.
    async fn table(&self, tx: &Transaction<'_>, t: &Table) -> Result<u64, Fault> {
        let mut writer = pin!(copy_in(tx, t.into, t.columns, t.types).await?);
        let mut stmt = self.db.prepare(t.select)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let values = values(r, t.types)?;
            let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(Value::as_sql).collect();
            writer.as_mut().write(&refs).await?;
        }
        Ok(writer.finish().await?)
    }
}

/// One column's value, as its PostgreSQL type wants it.
enum Value {
    Uuid(Option<Uuid>),
    Text(Option<String>),
    Int8(Option<i64>),
    Int4(Option<i32>),
    Bool(bool),
    Float8(Option<f64>),
}

impl Value {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Self::Uuid(v) => v,
            Self::Text(v) => v,
            Self::Int8(v) => v,
            Self::Int4(v) => v,
            Self::Bool(v) => v,
            Self::Float8(v) => v,
        }
    }
}

/// A row's columns by `types`. A tunnel that is not a UUID (written by hand,
/// or by a version that stored something else) is copied as none, as the
/// SQLite store reads it.
fn values(r: &Row, types: &[Type]) -> Result<Vec<Value>, Fault> {
    types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Ok(match *t {
                Type::UUID => Value::Uuid(
                    r.get::<_, Option<String>>(i)?
                        .and_then(|s| Uuid::parse_str(&s).ok()),
                ),
                Type::TEXT => Value::Text(r.get(i)?),
                Type::INT8 => Value::Int8(r.get(i)?),
                Type::INT4 => Value::Int4(r.get(i)?),
                Type::BOOL => Value::Bool(r.get(i)?),
                Type::FLOAT8 => Value::Float8(r.get(i)?),
                ref other => return Err(Fault::Corrupt(format!("column type {other}"))),
            })
        })
        .collect()
}
