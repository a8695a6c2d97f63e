//! The authoritative DNS server: zones, geo names, ECS and the UDP/TCP listeners.
//!
//! [`Data`] is everything loaded from disk (config, zones, GeoIP database) as
//! one immutable value; [`answer::Responder`] turns a query's bytes into a
//! response's bytes against the current `Data` and region states; [`listen`]
//! moves bytes between sockets and the responder.

pub mod answer;
mod batch;
pub mod ecs;
pub mod fast;
pub mod geo_names;
pub mod listen;
pub mod replay;
mod route_cache;
pub mod zones;

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use ipnet::IpNet;
use route_cache::BLOCKS;

use crate::{
    config::{Config, ConfigError},
    geo::{GeoDb, GeoError, Located},
    metrics::RegionCounters,
    route::{self, Coord, Decision, Order, Ranking, RegionState},
};

pub use geo_names::GeoTable;
pub use route_cache::RouteCache;
pub use zones::{ZoneError, Zones};

/// Anything that stops a config from being served.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Zone(#[from] ZoneError),
    #[error(transparent)]
    Geo(#[from] GeoError),
}

/// Everything loaded from disk, validated together; swapped whole on reload.
pub struct Data {
    pub config: Config,
    pub zones: Zones,
    pub geodb: GeoDb,
    pub geo: Vec<GeoTable>,
    /// Geo answers per region (config order); carried over by name across reloads.
    pub counters: Vec<Arc<RegionCounters>>,
    locations: Vec<Coord>,
    /// Distinguishes loads, so per-thread caches know when they are stale.
    generation: u64,
}

/// Source of [`Data::generation`].
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// Where a client was routed, and the ECS scope that answer may be cached for.
#[derive(Debug, Clone)]
pub struct Choice {
    pub location: Located,
    pub ranking: Ranking,
    pub decision: Decision,
    /// Prefix length of the network that decided (before capping at the source prefix).
    pub scope: u8,
}

impl Data {
    /// Loads zones and the GeoIP database named by `config` and checks them against it.
    pub fn load(config: Config) -> Result<Self, LoadError> {
        let zones = Zones::load(&config.dns.zones_dir)?;
        let geo = geo_names::build(&config, &zones)?;
        let geodb = GeoDb::open(&config.geoip.database, &config.geoip.centroids)?;
        let locations = config.regions.iter().map(|r| r.location).collect();
        let counters = config.regions.iter().map(|_| Arc::default()).collect();
        Ok(Self {
            config,
            zones,
            geodb,
            geo,
            counters,
            locations,
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
        })
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
    pub fn geo_table(&self, name: &hickory_proto::rr::LowerName) -> Option<&GeoTable> {
        self.geo.iter().find(|t| t.name == *name)
    }

    /// [`Self::choose`]'s decision and scope, memoised in `cache` by client
    /// block and by GeoIP record.
    pub fn choose_cached(
        &self,
        table_index: usize,
        ip: IpAddr,
        states: &[RegionState],
        cache: &mut RouteCache,
    ) -> (Decision, u8) {
        let ip = crate::geo::canonical(ip);
        cache.sync(self.generation);
        for level in 0..BLOCKS.len() {
            if let Some(c) = cache.block(level, table_index, ip) {
                return (cache.order(c.order).decide(states), c.scope);
            }
        }
        let table = &self.geo[table_index];
        let prefixes = &self.config.overrides.prefixes;
        let hit = self.geodb.hit(ip);
        let (Some(hit), false) = (hit, prefixes.iter().any(|(n, _)| n.contains(&ip))) else {
            let c = self.choose(table, ip, states);
            return (c.decision, c.scope);
        };
        // Addresses the database has no record for (private, unlisted) share
        // one entry: they all rank in the configured order.
        let record = hit.record().unwrap_or(usize::MAX);
        let id = match cache.record(table_index, record) {
            Some(id) => id,
            None => {
                let location = hit.located();
                let preferred = self.by_country(location.country);
                let (ranking, located) = self.rank(table, &location, preferred);
                let Some(order) = Order::of(&ranking, located) else {
                    let c = self.choose(table, ip, states);
                    return (c.decision, c.scope);
                };
                let id = cache.intern(order);
                cache.put_record(table_index, record, id);
                id
            }
        };
        let decision = cache.order(id).decide(states);
        let scope = scope(ip, &hit.network, prefixes);
        // A whole block answers alike when the database network covers it
        // and no override prefix splits it.
        for (level, (v4, v6)) in BLOCKS.into_iter().enumerate() {
            let len = if ip.is_ipv4() { v4 } else { v6 };
            let Ok(block) = IpNet::new(ip, len).map(|n| n.trunc()) else {
                continue;
            };
            let uniform = hit.network.prefix_len() <= len
                && prefixes.iter().all(|(p, _)| {
                    p.prefix_len() <= len || !(p.contains(&block.addr()) || block.contains(p))
                });
            if uniform {
                let value = route_cache::Cached { order: id, scope };
                cache.put_block(level, table_index, ip, value);
            }
        }
        (decision, scope)
    }

    /// The regions an operator put first for clients in `country`.
    fn by_country(&self, country: Option<[u8; 2]>) -> &[usize] {
        country
            .and_then(|c| self.config.overrides.countries.get(&c))
            .map_or(&[], Vec::as_slice)
    }

    /// `table`'s regions ranked for a client at `location`, `preferred` first,
    /// and whether that ranking is the client's own (else the configured order).
    fn rank(&self, table: &GeoTable, location: &Located, preferred: &[usize]) -> (Ranking, bool) {
        let ranking = route::rank(
            location.coords,
            &table.spec.regions,
            &self.locations,
            preferred,
        );
        (ranking, location.coords.is_some() || !preferred.is_empty())
    }

    /// Routes a client of `table` located at `ip`.
    pub fn choose(&self, table: &GeoTable, ip: IpAddr, states: &[RegionState]) -> Choice {
        let ip = crate::geo::canonical(ip);
        let location = self.geodb.locate_raw(ip);
        let overrides = &self.config.overrides;
        let by_prefix = overrides
            .prefixes
            .iter()
            .filter(|(net, _)| net.contains(&ip))
            .max_by_key(|(net, _)| net.prefix_len());
        let preferred = match by_prefix {
            Some((_, regions)) => regions,
            None => self.by_country(location.country),
        };
        let (ranking, located) = self.rank(table, &location, preferred);
        let decision = route::decide(&ranking, located, states);
        let scope = scope(ip, &location.network, &overrides.prefixes);
        Choice {
            location,
            ranking,
            decision,
            scope,
        }
    }
}

/// The prefix length over which a choice holds.
///
/// It starts at the GeoIP network's length. An override prefix that contains the
/// client, or that lies inside that network without containing the client,
/// lengthens it to its own length: then every address sharing the client's scope
/// block is on the same side of that override.
fn scope(client: IpAddr, network: &IpNet, prefixes: &[(IpNet, Vec<usize>)]) -> u8 {
    let mut scope = network.prefix_len();
    for (p, _) in prefixes {
        if p.contains(&client) || network.contains(p) {
            scope = scope.max(p.prefix_len());
        }
    }
    scope
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn scope(network: &IpNet, o: &[(IpNet, Vec<usize>)]) -> u8 {
        super::scope("81.240.1.1".parse().unwrap(), network, o)
    }

    #[test]
    fn scope_is_the_geoip_network_without_overrides() {
        assert_eq!(scope(&net("81.240.0.0/14"), &[]), 14);
    }

    #[test]
    fn scope_grows_to_exclude_overrides_inside_the_network() {
        let o = vec![(net("81.241.7.0/24"), vec![1])];
        assert_eq!(scope(&net("81.240.0.0/14"), &o), 24);
        // An override elsewhere changes nothing.
        let far = vec![(net("10.0.0.0/8"), vec![1])];
        assert_eq!(scope(&net("81.240.0.0/14"), &far), 14);
        // A wider override containing the network keeps the network's length.
        let wide = vec![(net("81.0.0.0/8"), vec![1])];
        assert_eq!(scope(&net("81.240.0.0/14"), &wide), 14);
        // The client inside a narrower override: that override's length.
        let inner = vec![(net("81.240.1.0/24"), vec![1])];
        assert_eq!(scope(&net("81.240.0.0/14"), &inner), 24);
    }
}
