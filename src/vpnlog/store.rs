//! Where log records go: the [`LogStore`] trait and the records it keeps;
//! in SQLite ([`sqlite`]) on a single machine, in PostgreSQL ([`pg`]) with
//! `[store]`.

use std::net::IpAddr;

use serde::Serialize;
use uuid::Uuid;

use super::sessions::{Record, Session};

#[doc(hidden)]
pub mod conformance;
pub mod pg;
pub mod sqlite;

pub use pg::PgLogStore;
pub use sqlite::SqliteLogStore;

/// Where a record came from: the regional server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Origin {
    pub host: Option<String>,
    pub region: Option<String>,
}

/// One round of pings to a connected tunnel's address.
#[derive(Debug, Clone, PartialEq)]
pub struct Latency {
    pub time: u64,
    pub tunnel: Option<Uuid>,
    pub common_name: String,
    pub addr: IpAddr,
    pub sent: u32,
    pub received: u32,
    /// Round-trip times of the answered pings (none if all were lost).
    pub rtt_ms: Option<Rtt>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rtt {
    pub min: f64,
    pub avg: f64,
    pub max: f64,
}

/// What ingestion hands to storage, in the order it happened.
#[derive(Debug, Clone)]
pub enum Item {
    Record {
        record: Record,
        origin: Origin,
        time: u64,
    },
    Latency(Latency, Origin),
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
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl SessionRow {
    /// The session to resume, with where it came from: `None` when its
    /// peer is no address (a row written by hand).
    fn into_open(self) -> Option<(Origin, Session)> {
        let peer = self.peer.parse().ok()?;
        let origin = Origin {
            host: self.host,
            region: self.region,
        };
        let session = Session {
            tunnel: self.tunnel,
            common_name: self.common_name,
            peer,
            virtual_addr: self.virtual_addr.and_then(|a| a.parse().ok()),
            start: self.start,
            end: None,
            end_reason: None,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
        };
        Some((origin, session))
    }
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

/// The share of `sent` pings that got no answer.
fn loss(sent: u32, received: u32) -> f64 {
    if sent == 0 {
        0.0
    } else {
        f64::from(sent - received.min(sent)) / f64::from(sent)
    }
}

#[derive(Debug, Serialize)]
pub struct LatencyRow {
    pub time: u64,
    pub addr: String,
    pub host: Option<String>,
    pub region: Option<String>,
    pub sent: u32,
    pub received: u32,
    pub loss: f64,
    pub rtt_ms: Option<Rtt>,
}

/// A region's activity since some time, from storage.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct RegionActivity {
    pub sessions_started: u64,
    pub auth_failures: u64,
    pub auth_successes: u64,
    /// Counters of the sessions active in the window (whole sessions).
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub unparsed_lines: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    #[error("log database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("log database: {0}")]
    Pg(String),
}

/// What log ingestion and its API need from storage.
pub trait LogStore: Send + Sync {
    /// Writes a batch atomically (all of it or none).
    fn write(&self, items: &[Item]) -> Result<(), LogStoreError>;
    /// Sessions without an end, to resume after a restart.
    fn open_sessions(&self) -> Result<Vec<(Origin, Session)>, LogStoreError>;
    /// A tunnel's sessions, newest first.
    fn sessions(&self, tunnel: Uuid, limit: u32) -> Result<Vec<SessionRow>, LogStoreError>;
    fn attempts(
        &self,
        failures_only: bool,
        since: u64,
        limit: u32,
    ) -> Result<Vec<AttemptRow>, LogStoreError>;
    /// A tunnel's latency samples since `since`, newest first.
    fn latency(
        &self,
        tunnel: Uuid,
        since: u64,
        limit: u32,
    ) -> Result<Vec<LatencyRow>, LogStoreError>;
    fn region_activity(&self, region: &str, since: u64) -> Result<RegionActivity, LogStoreError>;
    /// Deletes what ended before `before`; returns the rows removed.
    fn prune(&self, before: u64) -> Result<u64, LogStoreError>;
}
