//! One UDP thread's memo of routing orders, by GeoIP record and by client block.
//!
//! The ranking of a geo name's regions depends only on the client's GeoIP
//! record, the configured regions and the country overrides, and millions of
//! addresses share a few thousand records: caching it skips the record
//! decoding and the distance sort, and caching whole client blocks (the /24
//! an ECS option usually carries, the /16 a GeoIP network commonly spans)
//! skips the database walk as well. Health and drains are applied after the
//! cache, so they act at once.
//!
//! Entries are 16 bytes, four to a 64-byte bucket (one cache line per
//! probe); the orders they point at are interned, because a configuration has
//! few distinct orders (at most 24 with four regions). Lookups never
//! allocate. About 384 KiB of tables per thread, plus the interned orders
//! (40 bytes each, at most [`MAX_ORDERS`]).

use std::{collections::HashMap, net::IpAddr};

use crate::route::Order;

/// The client blocks cached whole (IPv4, IPv6 prefix lengths), finest first:
/// what ECS from resolvers typically carries, then what GeoIP networks
/// commonly span, so one entry serves every /24 of a /16 network.
pub(super) const BLOCKS: [(u8, u8); 2] = [(24, 56), (16, 32)];
const _: () = {
    assert!(MAX_ORDERS <= 1 << 16, "order ids are u16");
    let mut i = 0;
    while i < BLOCKS.len() {
        // Keys shift by (width - prefix) and must fit 64 bits.
        assert!(BLOCKS[i].0 > 0 && BLOCKS[i].0 <= 32);
        assert!(BLOCKS[i].1 > 0 && BLOCKS[i].1 <= 64);
        i += 1;
    }
};

/// Buckets per table (powers of two): the /24 level sees the most distinct keys.
const BLOCK_BUCKETS: [usize; 2] = [4096, 1024];
const RECORD_BUCKETS: usize = 1024;
const WAYS: usize = 4;
/// Interned orders kept before the cache starts over.
const MAX_ORDERS: usize = 8192;

pub struct RouteCache {
    generation: u64,
    /// Distinct orders since the last reset; entries hold indices into it.
    orders: Vec<Order>,
    ids: HashMap<Order, u16>,
    /// By (geo name, GeoIP record).
    records: Table,
    /// By (geo name, client block), one table per [`BLOCKS`] level.
    blocks: [Table; 2],
}

impl Default for RouteCache {
    fn default() -> Self {
        Self {
            generation: 0,
            orders: Vec::new(),
            ids: HashMap::new(),
            records: Table::new(RECORD_BUCKETS),
            blocks: BLOCK_BUCKETS.map(Table::new),
        }
    }
}

/// A cached order and the ECS scope it was found with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cached {
    pub order: u16,
    pub scope: u8,
}

impl RouteCache {
    /// Forgets everything cached for another load of the data.
    pub(super) fn sync(&mut self, generation: u64) {
        if self.generation != generation {
            self.clear();
            self.generation = generation;
        }
    }

    fn clear(&mut self) {
        self.orders.clear();
        self.ids.clear();
        self.records.clear();
        self.blocks.iter_mut().for_each(Table::clear);
    }

    pub(super) fn order(&self, id: u16) -> &Order {
        &self.orders[usize::from(id)]
    }

    /// `order`'s index, adding it; past [`MAX_ORDERS`] the whole cache starts
    /// over (every id handed out before is void).
    pub(super) fn intern(&mut self, order: Order) -> u16 {
        if let Some(&id) = self.ids.get(&order) {
            return id;
        }
        if self.orders.len() >= MAX_ORDERS {
            self.clear();
        }
        let id = self.orders.len() as u16;
        self.orders.push(order);
        self.ids.insert(order, id);
        id
    }

    /// Hints the CPU to load the block entries `ip` will be looked up in.
    pub(super) fn prefetch(&self, table: usize, ip: IpAddr) {
        for (level, t) in self.blocks.iter().enumerate() {
            let (key, meta) = block_key(level, table, ip);
            t.prefetch(key, meta);
        }
    }

    pub(super) fn block(&self, level: usize, table: usize, ip: IpAddr) -> Option<Cached> {
        let (key, meta) = block_key(level, table, ip);
        self.blocks[level].get(key, meta)
    }

    pub(super) fn put_block(&mut self, level: usize, table: usize, ip: IpAddr, value: Cached) {
        let (key, meta) = block_key(level, table, ip);
        self.blocks[level].put(key, meta, value);
    }

    pub(super) fn record(&self, table: usize, record: usize) -> Option<u16> {
        let (key, meta) = record_key(table, record);
        self.records.get(key, meta).map(|c| c.order)
    }

    pub(super) fn put_record(&mut self, table: usize, record: usize, order: u16) {
        let (key, meta) = record_key(table, record);
        self.records.put(key, meta, Cached { order, scope: 0 });
    }
}

/// The block of `ip` at `level` as a key, and the geo name and family as `meta`.
fn block_key(level: usize, table: usize, ip: IpAddr) -> (u64, u32) {
    let (v4, v6) = BLOCKS[level];
    match ip {
        IpAddr::V4(a) => (u64::from(u32::from(a) >> (32 - v4)), meta(table, 0)),
        IpAddr::V6(a) => ((u128::from(a) >> (128 - v6)) as u64, meta(table, 1)),
    }
}

fn record_key(table: usize, record: usize) -> (u64, u32) {
    (record as u64, meta(table, 0))
}

/// Never 0, which marks an empty entry. `table` is a geo name's index in the
/// config (a handful), far below the 2^30 that fit.
fn meta(table: usize, family: u32) -> u32 {
    ((table as u32) << 2) | (family << 1) | 1
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    key: u64,
    meta: u32,
    order: u16,
    scope: u8,
}

#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Bucket([Entry; WAYS]);

/// A set-associative table: a key hashes to one bucket and may sit in any of its ways.
struct Table {
    buckets: Vec<Bucket>,
    /// Which way the next insertion into a full bucket replaces.
    victim: usize,
}

impl Table {
    fn new(buckets: usize) -> Self {
        debug_assert!(buckets.is_power_of_two());
        Self {
            buckets: vec![Bucket::default(); buckets],
            victim: 0,
        }
    }

    fn clear(&mut self) {
        self.buckets.fill(Bucket::default());
    }

    fn bucket(&self, key: u64, meta: u32) -> usize {
        let h = (key ^ u64::from(meta).rotate_left(40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> 32) as usize & (self.buckets.len() - 1)
    }

    fn prefetch(&self, key: u64, meta: u32) {
        let bucket: *const Bucket = &self.buckets[self.bucket(key, meta)];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch only hints the cache; the address is a live bucket.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>(bucket.cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = bucket;
    }

    fn get(&self, key: u64, meta: u32) -> Option<Cached> {
        self.buckets[self.bucket(key, meta)]
            .0
            .iter()
            .find(|e| e.meta == meta && e.key == key)
            .map(|e| Cached {
                order: e.order,
                scope: e.scope,
            })
    }

    fn put(&mut self, key: u64, meta: u32, value: Cached) {
        let b = self.bucket(key, meta);
        let ways = &mut self.buckets[b].0;
        let way = match ways
            .iter()
            .position(|e| e.meta == 0 || (e.meta == meta && e.key == key))
        {
            Some(w) => w,
            None => {
                self.victim = (self.victim + 1) % WAYS;
                self.victim
            }
        };
        ways[way] = Entry {
            key,
            meta,
            order: value.order,
            scope: value.scope,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{Coord, rank};

    /// Four unlocated regions in configured order, starting at `first`.
    fn order(first: usize) -> Order {
        let locations = [Coord { lat: 0.0, lon: 0.0 }; 4];
        let candidates: Vec<usize> = (0..4).map(|i| (first + i) % 4).collect();
        Order::of(&rank(None, &candidates, &locations, &[]), false).unwrap()
    }

    #[test]
    fn entry_and_bucket_sizes() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
    }

    #[test]
    fn blocks_are_keyed_by_prefix_family_and_name() {
        let mut c = RouteCache::default();
        let v = Cached {
            order: 3,
            scope: 20,
        };
        c.put_block(0, 0, "81.2.69.7".parse().unwrap(), v);
        assert_eq!(c.block(0, 0, "81.2.69.200".parse().unwrap()), Some(v));
        assert_eq!(c.block(0, 0, "81.2.70.1".parse().unwrap()), None);
        assert_eq!(c.block(0, 1, "81.2.69.7".parse().unwrap()), None);
        assert_eq!(c.block(1, 0, "81.2.69.7".parse().unwrap()), None);
        // An IPv6 block whose top bits equal the IPv4 key is another entry.
        let v6 = IpAddr::V6(std::net::Ipv6Addr::from(u128::from(0x51_0245u32) << 72));
        assert_eq!(c.block(0, 0, v6), None);
        c.put_block(1, 0, "2001:db8:1::1".parse().unwrap(), v);
        assert_eq!(c.block(1, 0, "2001:db8:ffff::1".parse().unwrap()), Some(v));
        assert_eq!(c.block(1, 0, "2001:db9::1".parse().unwrap()), None);
    }

    #[test]
    fn a_full_bucket_keeps_the_newest_and_replaces_in_place() {
        let mut t = Table::new(1);
        for k in 0..10u64 {
            t.put(
                k,
                1,
                Cached {
                    order: k as u16,
                    scope: 0,
                },
            );
            assert_eq!(t.get(k, 1).map(|c| c.order), Some(k as u16));
        }
        let kept = (0..10u64).filter(|&k| t.get(k, 1).is_some()).count();
        assert_eq!(kept, WAYS);
        t.put(
            9,
            1,
            Cached {
                order: 99,
                scope: 1,
            },
        );
        assert_eq!(
            t.get(9, 1),
            Some(Cached {
                order: 99,
                scope: 1
            })
        );
        assert_eq!((0..10u64).filter(|&k| t.get(k, 1).is_some()).count(), WAYS);
    }

    #[test]
    fn interned_orders_and_generations() {
        let mut c = RouteCache::default();
        c.sync(7);
        let a = c.intern(order(0));
        let b = c.intern(order(1));
        assert_ne!(a, b);
        assert_eq!(c.intern(order(0)), a);
        assert_eq!(*c.order(b), order(1));
        c.put_record(0, 1234, b);
        assert_eq!(c.record(0, 1234), Some(b));
        assert_eq!(c.record(1, 1234), None);
        c.sync(7);
        assert_eq!(c.record(0, 1234), Some(b));
        c.sync(8);
        assert_eq!(c.record(0, 1234), None);
        assert_eq!(c.intern(order(1)), 0);
    }

    #[test]
    fn too_many_orders_start_the_cache_over() {
        let mut c = RouteCache::default();
        let b = c.intern(order(1));
        c.put_record(0, 1, b);
        // Four regions give 24 orders at most: fill the table directly.
        while c.orders.len() < MAX_ORDERS {
            c.orders.push(order(2));
        }
        assert_eq!(c.record(0, 1), Some(b));
        let id = c.intern(order(3));
        assert_eq!((id, c.orders.len()), (0, 1));
        assert_eq!(c.record(0, 1), None, "entries pointing at old ids are gone");
        assert_eq!(*c.order(id), order(3));
    }
}
