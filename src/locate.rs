//! "Where" a client is, as one unit: its GeoIP record and the operator's
//! overrides → every geo name's region order, and the ECS scope it holds for.
//!
//! gdnsd's split (`libgdmaps`): this module turns a client into ordered
//! regions and knows nothing about health, drains or answers;
//! [`route::decide`](crate::route::decide) then takes the first serving entry.
//! Everything is precomputed at load: each GeoIP record, and each record found
//! inside each override prefix, gets its region order for every geo name,
//! interned (a configuration has few distinct orders). A lookup is one walk of
//! the database tree, a scan of the override prefixes and one table lookup; no
//! record is decoded and nothing is ranked per query.

use std::{collections::BTreeMap, net::IpAddr};

use foldhash::{HashMap, HashMapExt};

use ipnet::IpNet;

use crate::{
    config::Config,
    geo::{Found, GeoDb, Located, RecordId, canonical},
    route::{self, Coord, Order, Ranking},
};

/// Identifies the region orders (one per geo name) of a class of clients.
pub type OrdersId = u32;

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("region index {0} does not fit a region order (at most 65,536 regions)")]
    TooManyRegions(usize),
    #[error("more than {} distinct region orders", u32::MAX)]
    TooManyOrders,
}

/// A client as "where" sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The address located (an IPv4-mapped IPv6 address as its IPv4 address).
    pub addr: IpAddr,
    /// Leading bits of the original address the client stands for: the ECS
    /// source prefix, or the whole address for a packet source.
    pub source_prefix: u8,
    /// 96 when `addr` came from an IPv4-mapped IPv6 address: scopes are
    /// reported in the original family's bits.
    mapped_bits: u8,
}

impl Client {
    /// The client of a query from `src`, with the ECS option's address and
    /// source prefix if it had one. [RFC 7871 §7.1.2]: a source prefix of 0
    /// asks to be located by the source address; the answer's scope is then 0.
    ///
    /// [RFC 7871 §7.1.2]: https://www.rfc-editor.org/rfc/rfc7871#section-7.1.2
    pub fn of(src: IpAddr, subnet: Option<(IpAddr, u8)>) -> Self {
        match subnet {
            Some((addr, prefix)) if prefix > 0 => Self::prefix(addr, prefix),
            Some(_) => Self::prefix(src, 0),
            None => Self::address(src),
        }
    }

    /// A single address (a packet source).
    pub fn address(addr: IpAddr) -> Self {
        let width = if addr.is_ipv4() { 32 } else { 128 };
        Self::prefix(addr, width)
    }

    /// A client prefix (an ECS source address and prefix length).
    pub fn prefix(addr: IpAddr, source_prefix: u8) -> Self {
        let located = canonical(addr);
        let mapped_bits = if located.is_ipv4() && addr.is_ipv6() {
            96
        } else {
            0
        };
        Self {
            addr: located,
            source_prefix,
            mapped_bits,
        }
    }
}

/// The outcome of [`Maps::locate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Where {
    /// The region order of every geo name: [`Maps::order`].
    pub orders: OrdersId,
    /// Leading bits of the address that decided: every address sharing them
    /// is located alike (the database network, lengthened so that no override
    /// prefix splits it).
    pub span: u8,
    /// The ECS scope to send: [`ecs_scope`].
    pub scope: u8,
    pub location: Position,
}

/// What decided a [`Where`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The GeoIP record (if any) and its network.
    pub found: Found,
    /// The override prefix that put its regions first, if one contains the client.
    pub prefix: Option<IpNet>,
}

/// The ECS scope of an answer ([RFC 7871 §7.2.1]): the bits that decided it,
/// even when they are more than the client sent — "the SCOPE PREFIX-LENGTH
/// MAY be longer than the SOURCE PREFIX-LENGTH", telling the resolver that
/// its prefix was not specific enough (it then caches the answer for its
/// source prefix only, §7.3.1). As gdnsd does. A source prefix of 0 asked
/// to be located by the resolver's own address (§7.1.2): scope 0.
///
/// [RFC 7871 §7.2.1]: https://www.rfc-editor.org/rfc/rfc7871#section-7.2.1
pub fn ecs_scope(span: u8, client: &Client) -> u8 {
    if client.source_prefix == 0 {
        return 0;
    }
    span.saturating_add(client.mapped_bits)
}

/// How clients are mapped to orders: outside every override prefix, or inside one.
#[derive(Debug, Default)]
struct Classes {
    by_record: HashMap<RecordId, OrdersId>,
    /// Clients the database has no (readable) record for.
    unlisted: OrdersId,
}

/// The GeoIP database with every client class's region orders, built at load.
pub struct Maps {
    db: GeoDb,
    /// Interned orders; `sets` index into it.
    orders: Vec<Order>,
    /// Per [`OrdersId`], one row with an entry per geo name: its order (an
    /// index into `orders`). Flat, so a lookup is two indexed loads.
    sets: Vec<u32>,
    outside: Classes,
    /// Override prefixes, longest first (the first that contains a client wins).
    prefixes: Vec<(IpNet, Vec<usize>, Classes)>,
    countries: BTreeMap<[u8; 2], Vec<usize>>,
    /// Per geo name: its regions in configured order.
    candidates: Vec<Vec<usize>>,
    locations: Vec<Coord>,
}

impl Maps {
    /// Precomputes the orders of every record of `db`, and of every record
    /// inside each of `config`'s override prefixes.
    pub fn build(config: &Config, db: GeoDb) -> Result<Self, MapsError> {
        let mut prefixes: Vec<(IpNet, Vec<usize>, Classes)> = config
            .overrides
            .prefixes
            .iter()
            .map(|(net, regions)| (*net, regions.clone(), Classes::default()))
            .collect();
        prefixes.sort_by_key(|(net, _, _)| std::cmp::Reverse(net.prefix_len()));
        let mut maps = Self {
            db,
            orders: Vec::new(),
            sets: Vec::new(),
            outside: Classes::default(),
            prefixes,
            countries: config.overrides.countries.clone(),
            candidates: config.geo.iter().map(|g| g.regions.clone()).collect(),
            locations: config.regions.iter().map(|r| r.location).collect(),
        };
        let mut interner = Interner::default();
        let records = maps.db.records(None);
        let outside = maps.classes(&records, None, &mut interner)?;
        maps.outside = outside;
        for i in 0..maps.prefixes.len() {
            let records = maps.db.records(Some(maps.prefixes[i].0));
            maps.prefixes[i].2 = maps.classes(&records, Some(i), &mut interner)?;
        }
        maps.sets = interner.sets.concat();
        maps.orders = interner.orders;
        Ok(maps)
    }

    fn classes(
        &self,
        records: &[(RecordId, Located)],
        prefix: Option<usize>,
        interner: &mut Interner,
    ) -> Result<Classes, MapsError> {
        let mut class = |coords: Option<Coord>, country: Option<[u8; 2]>| {
            let set = (0..self.candidates.len())
                .map(|geo| {
                    let (ranking, located) = self.ranking(geo, coords, country, prefix);
                    let order = Order::of(&ranking, located).ok_or_else(|| {
                        MapsError::TooManyRegions(
                            ranking.iter().map(|r| r.region).max().unwrap_or(0),
                        )
                    })?;
                    interner.order(order)
                })
                .collect::<Result<Box<[u32]>, MapsError>>()?;
            interner.set(set)
        };
        let mut by_record = HashMap::with_capacity(records.len());
        for (record, located) in records {
            by_record.insert(*record, class(located.coords, located.country)?);
        }
        let unlisted = class(None, None)?;
        Ok(Classes {
            by_record,
            unlisted,
        })
    }

    /// Ranks geo name `geo`'s regions for a client at `coords` in `country`,
    /// inside override prefix `prefix` (an index into `self.prefixes`):
    /// overridden regions first, the rest by distance. Also says whether the
    /// ranking is the client's own (else it is the configured order).
    fn ranking(
        &self,
        geo: usize,
        coords: Option<Coord>,
        country: Option<[u8; 2]>,
        prefix: Option<usize>,
    ) -> (Ranking, bool) {
        let preferred = match prefix {
            Some(i) => self.prefixes[i].1.as_slice(),
            None => country
                .and_then(|c| self.countries.get(&c))
                .map_or(&[][..], Vec::as_slice),
        };
        let ranking = route::rank(coords, &self.candidates[geo], &self.locations, preferred);
        (ranking, coords.is_some() || !preferred.is_empty())
    }

    /// Where `client` is: its region orders and the scope they hold for.
    pub fn locate(&self, client: Client) -> Where {
        let found = self.db.lookup(client.addr);
        let mut span = found.network.prefix_len();
        let mut chosen = None;
        for (i, (net, _, _)) in self.prefixes.iter().enumerate() {
            let Some(common) = common_bits(client.addr, net) else {
                continue;
            };
            if common >= net.prefix_len() {
                // Inside: every address of the span must be inside too.
                span = span.max(net.prefix_len());
                chosen.get_or_insert(i);
            } else {
                // Outside: the span must exclude it.
                span = span.max(common + 1);
            }
        }
        let classes = chosen.map_or(&self.outside, |i| &self.prefixes[i].2);
        let orders = found
            .record
            .and_then(|r| classes.by_record.get(&r).copied())
            .unwrap_or(classes.unlisted);
        Where {
            orders,
            span,
            scope: ecs_scope(span, &client),
            location: Position {
                found,
                prefix: chosen.map(|i| self.prefixes[i].0),
            },
        }
    }

    /// Geo name `geo`'s region order for the clients of `orders`.
    pub fn order(&self, orders: OrdersId, geo: usize) -> &Order {
        let id = self.sets[orders as usize * self.candidates.len() + geo];
        &self.orders[id as usize]
    }

    /// The full ranking (with distances) behind [`Self::order`] for a client
    /// located at `location`: for reports; the query path never ranks.
    pub fn explain(&self, geo: usize, at: &Where, location: &Located) -> Ranking {
        let prefix = at
            .location
            .prefix
            .and_then(|p| self.prefixes.iter().position(|(net, _, _)| *net == p));
        // A record the maps do not hold was answered as unlisted.
        let classes = prefix.map_or(&self.outside, |i| &self.prefixes[i].2);
        let listed = at
            .location
            .found
            .record
            .is_some_and(|r| classes.by_record.contains_key(&r));
        let (coords, country) = if listed {
            (location.coords, location.country)
        } else {
            (None, None)
        };
        self.ranking(geo, coords, country, prefix).0
    }

    pub fn db(&self) -> &GeoDb {
        &self.db
    }

    /// Distinct region orders and client classes (for reports and tests).
    pub fn counts(&self) -> (usize, usize) {
        (
            self.orders.len(),
            self.sets.len() / self.candidates.len().max(1),
        )
    }
}

/// Leading bits `addr` shares with `net`'s address, at most its width;
/// `None` across families.
fn common_bits(addr: IpAddr, net: &IpNet) -> Option<u8> {
    let diff = match (addr, net.network()) {
        (IpAddr::V4(a), IpAddr::V4(n)) => (u32::from(a) ^ u32::from(n)).leading_zeros(),
        (IpAddr::V6(a), IpAddr::V6(n)) => (u128::from(a) ^ u128::from(n)).leading_zeros(),
        _ => return None,
    };
    Some(diff as u8)
}

/// Interns orders and per-geo-name order sets while maps are built.
#[derive(Default)]
struct Interner {
    orders: Vec<Order>,
    order_ids: HashMap<Order, u32>,
    sets: Vec<Box<[u32]>>,
    set_ids: HashMap<Box<[u32]>, OrdersId>,
}

impl Interner {
    fn order(&mut self, order: Order) -> Result<u32, MapsError> {
        if let Some(&id) = self.order_ids.get(&order) {
            return Ok(id);
        }
        let id = u32::try_from(self.orders.len()).map_err(|_| MapsError::TooManyOrders)?;
        self.orders.push(order);
        self.order_ids.insert(order, id);
        Ok(id)
    }

    fn set(&mut self, set: Box<[u32]>) -> Result<OrdersId, MapsError> {
        if let Some(&id) = self.set_ids.get(&set) {
            return Ok(id);
        }
        let id = OrdersId::try_from(self.sets.len()).map_err(|_| MapsError::TooManyOrders)?;
        self.sets.push(set.clone());
        self.set_ids.insert(set, id);
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        dns::Data,
        testing::{Fixture, ROWS, names},
    };

    const OVERRIDES: &str =
        "[overrides]\n\"NZ\" = \"us1\"\n\"81.241.7.0/24\" = [\"sa1\", \"us1\"]\n";
    const BE: [&str; 4] = ["europe1", "us1", "sa1", "asia1"];

    fn data() -> Data {
        Fixture::new(ROWS).load(&["europe1", "us1", "asia1", "sa1"], &[], OVERRIDES)
    }

    fn order(data: &Data, at: &Where) -> Vec<String> {
        names(data, data.maps.order(at.orders, 0).regions())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// gdnsd's `t/libgdmaps` habit: rows of (client, source prefix,
    /// expected order, expected scope) against a database made here.
    #[test]
    fn where_clients_are() {
        let data = data();
        let rows: &[(&str, u8, &[&str], u8)] = &[
            // Belgium's /14 holds the override /24: 81.240/16 is outside it.
            ("81.240.1.1", 32, &BE, 16),
            ("81.240.0.0", 16, &BE, 16),
            // A short source prefix: the scope says more bits decided.
            ("81.240.0.0", 12, &BE, 16),
            // Inside the override: its regions first, then by distance.
            ("81.241.7.9", 32, &["sa1", "us1", "europe1", "asia1"], 24),
            ("81.241.7.0", 24, &["sa1", "us1", "europe1", "asia1"], 24),
            // Its neighbour /24 is outside; the scope says so.
            ("81.241.6.0", 24, &BE, 24),
            // A /16 holding the override: located by its first address, and
            // the scope the /22 that excludes the override, longer than /16.
            ("81.241.0.0", 16, &BE, 22),
            ("3.5.7.0", 24, &["us1", "europe1", "sa1", "asia1"], 9),
            // Country override, then distance from New Zealand.
            ("49.224.0.1", 32, &["us1", "asia1", "sa1", "europe1"], 14),
            // No coordinates in the record: the country's centroid.
            ("181.1.0.0", 16, &["sa1", "us1", "europe1", "asia1"], 12),
            ("2a02:1800::1", 128, &BE, 24),
            ("2804:1::", 48, &["sa1", "us1", "europe1", "asia1"], 16),
            // IPv4-mapped: located as IPv4, the scope in IPv6 bits.
            ("::ffff:81.240.1.1", 128, &BE, 112),
        ];
        for &(client, prefix, want, scope) in rows {
            let at = data.maps.locate(Client::prefix(ip(client), prefix));
            assert_eq!(order(&data, &at), want, "{client}/{prefix}");
            assert_eq!(at.scope, scope, "{client}/{prefix}");
        }
    }

    #[test]
    fn unlisted_clients_get_the_configured_order() {
        let data = data();
        let at = data.maps.locate(Client::address(ip("10.1.2.3")));
        assert_eq!(order(&data, &at), ["europe1", "us1", "asia1", "sa1"]);
        assert_eq!(at.location.found.record, None);
        let decision = route::decide(data.maps.order(at.orders, 0), &route::RegionView::default());
        assert_eq!(decision.reason, route::Reason::NoLocation);
    }

    #[test]
    fn a_zero_source_prefix_locates_by_the_sender_with_scope_zero() {
        let data = data();
        let client = Client::of(ip("3.5.7.1"), Some((ip("81.240.0.0"), 0)));
        let at = data.maps.locate(client);
        assert_eq!(order(&data, &at)[0], "us1");
        assert_eq!(at.scope, 0);
        let plain = Client::of(ip("3.5.7.1"), None);
        assert_eq!(data.maps.locate(plain).scope, 9, "no ECS: the whole span");
    }

    /// The span's promise: every address sharing its leading bits is located
    /// alike. Checked for random addresses near the networks and overrides.
    #[test]
    fn every_address_in_the_span_gets_the_same_orders() {
        let data = data();
        let mut x: u64 = 0x5eed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let bases = [
            0x51f0_0000u32,
            0x51f1_0700,
            0x0300_0000,
            0x31e0_0000,
            0x0a00_0000,
            0,
        ];
        for _ in 0..20_000 {
            let base = bases[next() as usize % bases.len()];
            let a = base
                ^ (next() as u32)
                    .checked_shr((next() % 33) as u32)
                    .unwrap_or(0);
            let at = data
                .maps
                .locate(Client::address(IpAddr::from(a.to_be_bytes())));
            let host = if at.span >= 32 {
                0
            } else {
                u32::MAX >> at.span
            };
            let b = (a & !host) | (next() as u32 & host);
            let other = data
                .maps
                .locate(Client::address(IpAddr::from(b.to_be_bytes())));
            assert_eq!(other.orders, at.orders, "{a:08x} /{} vs {b:08x}", at.span);
        }
    }

    #[test]
    fn the_explained_ranking_is_the_order() {
        let data = data();
        for client in [
            "81.240.1.1",
            "81.241.7.9",
            "49.224.0.1",
            "181.1.0.0",
            "10.0.0.1",
            "2804::1",
        ] {
            let at = data.maps.locate(Client::address(ip(client)));
            let located = data.maps.db().locate_raw(ip(client));
            let ranking = data.maps.explain(0, &at, &located);
            let ranked: Vec<usize> = ranking.iter().map(|r| r.region).collect();
            let ordered: Vec<usize> = data.maps.order(at.orders, 0).regions().collect();
            assert_eq!(ranked, ordered, "{client}");
        }
    }

    #[test]
    fn orders_are_interned() {
        let data = data();
        let (orders, classes) = data.maps.counts();
        // Eight records and a handful of override classes share few orders.
        assert!(
            orders <= 8 && classes <= orders,
            "{orders} orders, {classes} classes"
        );
    }
}
