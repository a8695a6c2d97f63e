//! DNS answers: zones, geo names, ECS, and bytes in → bytes out (full and fast path).
//!
//! [`Data`] is everything loaded from disk (config, zones, GeoIP database and
//! the region orders built from it) as one immutable value. [`answer`] (the
//! full path) and [`fast`] turn a query's bytes into a response's bytes
//! against one `Data` and one [`RegionView`](crate::route::RegionView), both
//! taken from the same state snapshot; the listeners that move bytes between
//! sockets and these live in [`crate::listen`].

pub mod answer;
pub mod cookie;
pub mod ecs;
pub mod fast;
pub mod geo_names;
pub mod guard;
pub mod replay;
mod route_cache;
pub mod zones;

use std::sync::Arc;

use crate::{
    config::hash::{ConfigHash, config_hash},
    config::{Config, ConfigError, Named},
    geo::{GeoDb, GeoError},
    locate::{Maps, MapsError},
    metrics::RegionCounters,
};

pub use geo_names::GeoTable;
pub use route_cache::{RouteCache, Routed};
pub use zones::{ZoneError, Zones};

/// Anything that stops a config from being served.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Zone(#[from] Named<ZoneError>),
    #[error(transparent)]
    Geo(#[from] Named<GeoError>),
    #[error("{file}: {source}")]
    Maps {
        file: std::path::PathBuf,
        source: MapsError,
    },
    /// A check outside the loaded data refused the config.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Cookie(#[from] Named<cookie::SecretError>),
}

/// Everything loaded from disk, validated together; replaced whole on reload.
/// Region indices in it (geo tables, counters, orders) are those of
/// `config.regions`, and mean nothing for another load.
pub struct Data {
    pub config: Config,
    pub zones: Zones,
    /// The GeoIP database and every client class's region orders ("where").
    pub maps: Maps,
    pub geo: Vec<GeoTable>,
    /// Geo answers per region (config order); carried over by name across reloads.
    pub counters: Vec<Arc<RegionCounters>>,
    /// Which load this is: per-thread caches compare it to know they are
    /// stale. The state owner numbers its loads; a fresh load is 0.
    pub generation: u64,
    /// What every node of a fleet should load alike: `config`'s shared
    /// part, the zones' records, the GeoIP data.
    pub config_hash: ConfigHash,
    /// The cookie secrets, once [`Data::load_cookies`] read them; without
    /// them COOKIE options are neither answered nor judged.
    pub cookies: Option<cookie::Secrets>,
}

impl Data {
    /// Loads zones and the GeoIP database named by `config`, checks them
    /// against it and precomputes where clients go.
    pub fn load(config: Config) -> Result<Self, LoadError> {
        let file = config.file.as_path();
        let zones =
            Zones::load(&config.dns.zones_dir).map_err(|e| Named::new(file, "dns.zones_dir", e))?;
        let geo = geo_names::build(&config, &zones)?;
        let geo_err = |e: GeoError| Named::new(file, e.key(), e);
        let geodb =
            GeoDb::open(&config.geoip.database, &config.geoip.centroids).map_err(geo_err)?;
        let config_hash = config_hash(&config, &zones.digest, &geodb.digest().map_err(geo_err)?);
        let maps = Maps::build(&config, geodb).map_err(|source| LoadError::Maps {
            file: config.geoip.database.clone(),
            source,
        })?;
        let counters = config.regions.iter().map(|_| Arc::default()).collect();
        Ok(Self {
            config,
            zones,
            maps,
            geo,
            counters,
            generation: 0,
            config_hash,
            cookies: None,
        })
    }

    /// Reads the cookie secret files (when cookies are on), creating the
    /// current one when `create` and missing; without `create` a missing
    /// current secret leaves cookies unread (what `check-config` wants:
    /// the server creates it), while a missing previous one is an error.
    pub fn load_cookies(&mut self, create: bool) -> Result<(), LoadError> {
        let dns = &self.config.dns;
        if !dns.cookies {
            return Ok(());
        }
        let file = self.config.file.as_path();
        let named = |key: &str, e| Named::new(file, key, e);
        let current = match cookie::read_secret(&dns.cookie_secret_file, create) {
            Err(cookie::SecretError::Io { source, .. })
                if !create && source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(());
            }
            read => read.map_err(|e| named("dns.cookie_secret_file", e))?,
        };
        let previous = match &dns.cookie_previous_secret_file {
            Some(previous) => Some(
                cookie::read_secret(previous, false)
                    .map_err(|e| named("dns.cookie_previous_secret_file", e))?,
            ),
            None => None,
        };
        self.cookies = Some(cookie::Secrets::new(current, previous));
        Ok(())
    }

    /// Takes over `old`'s answer counters for regions that keep their name.
    pub fn inherit_counters(&mut self, old: &Data) {
        for (i, region) in self.config.regions.iter().enumerate() {
            if let Some(j) = old.config.region_index(&region.name) {
                self.counters[i] = old.counters[j].clone();
            }
        }
    }

    /// The geo table for a query name, if it is one.
    pub fn geo_table(&self, name: &hickory_proto::rr::LowerName) -> Option<usize> {
        self.geo.iter().position(|t| t.name == *name)
    }
}
