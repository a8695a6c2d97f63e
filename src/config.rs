//! `mgnt.toml` → a validated [`Config`].
//!
//! Parsing is strict: unknown keys are rejected, every value is checked at load,
//! and each error names the file, the key path and the reason, so an operator
//! can fix a broken config without reading the source. Cross-checks that need
//! the zone data (a region host missing from the zones, a geo name colliding
//! with zone records) live in [`crate::dns::zones`].

mod raw;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use hickory_proto::rr::Name;
use ipnet::IpNet;

use crate::route::Coord;

/// Default number of simultaneous TCP connections a DNS listener accepts.
pub const DEFAULT_TCP_MAX_CONNECTIONS: usize = 1024;
/// Default idle time after which a TCP connection without a query is closed.
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest UDP response (RFC 9715 / DNS flag day 2020 value).
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;
/// Default TTL of geo answers.
pub const DEFAULT_GEO_TTL: u32 = 60;

/// A config error, always naming the file it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        file: PathBuf,
        key: String,
        reason: String,
    },
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from; relative paths inside are resolved against its directory.
    pub file: PathBuf,
    pub dns: DnsConfig,
    pub geoip: GeoipConfig,
    pub geo: Vec<GeoName>,
    /// Every configured region, sorted by name; geo names refer to them by index.
    pub regions: Vec<Region>,
    pub overrides: Overrides,
}

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub listen: Vec<SocketAddr>,
    pub zones_dir: PathBuf,
    pub tcp_idle_timeout: Duration,
    pub tcp_max_connections: usize,
    pub max_udp_payload: u16,
    /// UDP sockets per listen address (SO_REUSEPORT), one receive loop each.
    pub udp_sockets: usize,
}

#[derive(Debug, Clone)]
pub struct GeoipConfig {
    pub database: PathBuf,
    pub centroids: PathBuf,
}

/// How a geo name is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerMode {
    /// `name CNAME region-host` plus the host's in-zone records.
    Cname,
    /// The region host's A/AAAA records, owned by the geo name itself.
    Address,
}

#[derive(Debug, Clone)]
pub struct GeoName {
    pub name: Name,
    pub ttl: u32,
    pub answer: AnswerMode,
    /// Indices into [`Config::regions`], in the configured (fallback) order.
    pub regions: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Region {
    pub name: String,
    pub host: Name,
    pub location: Coord,
}

/// Operator overrides: they win over distance.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// ISO 3166-1 alpha-2 code (upper case) → preferred regions (indices), in order.
    pub countries: BTreeMap<[u8; 2], Vec<usize>>,
    /// Address prefix → preferred regions; the longest matching prefix wins.
    pub prefixes: Vec<(IpNet, Vec<usize>)>,
}

impl Config {
    /// Reads and validates `file`.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        Self::parse(&text, file)
    }

    /// Validates `text` as if read from `file` (used for error messages and relative paths).
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        raw.validate(file)
    }

    pub fn region_index(&self, name: &str) -> Option<usize> {
        self.regions.iter().position(|r| r.name == name)
    }
}
