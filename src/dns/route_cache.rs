//! One UDP thread's memo of [`Maps::locate`], by client block.
//!
//! Locating a client walks the GeoIP tree (a few hundred nanoseconds of
//! dependent memory reads); millions of clients share a few thousand
//! networks, and resolvers send ECS /24s. The memo keeps locate's output
//! (the client class and its span) for whole blocks — the /24 an ECS option
//! usually carries, the /16 a GeoIP network commonly spans — wherever the span
//! says the whole block is located alike. It memoises nothing else: the scope
//! is recomputed from the span per query ([`ecs_scope`]), and health and
//! drains are applied after it, so they act at once.
//!
//! Entries are 16 bytes, four to a 64-byte bucket (one cache line per probe);
//! lookups never allocate. 320 KiB of tables per thread.

use std::net::IpAddr;

use crate::locate::{Client, Maps, OrdersId, ecs_scope};

/// The client blocks memoised (IPv4, IPv6 prefix lengths), finest first:
/// what ECS from resolvers typically carries, then what GeoIP networks
/// commonly span, so one entry serves every /24 of a /16 network.
const BLOCKS: [(u8, u8); 2] = [(24, 56), (16, 32)];
const _: () = {
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
const WAYS: usize = 4;

/// A located client: its class and the ECS scope of its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    pub orders: OrdersId,
    pub scope: u8,
}

pub struct RouteCache {
    generation: u64,
    blocks: [Table; 2],
}

impl Default for RouteCache {
    fn default() -> Self {
        Self {
            generation: 0,
            blocks: BLOCK_BUCKETS.map(Table::new),
        }
    }
}

impl RouteCache {
    /// [`Maps::locate`] for `client`, memoised; `generation` names the load
    /// `maps` belongs to (entries of another load are dropped first).
    pub fn locate(&mut self, maps: &Maps, generation: u64, client: Client) -> Routed {
        if self.generation != generation {
            self.blocks.iter_mut().for_each(Table::clear);
            self.generation = generation;
        }
        for (level, table) in self.blocks.iter().enumerate() {
            let (key, family) = block_key(level, client.addr);
            if let Some((orders, span)) = table.get(key, family) {
                return Routed {
                    orders,
                    scope: ecs_scope(span, &client),
                };
            }
        }
        let at = maps.locate(client);
        for (level, (v4, v6)) in BLOCKS.into_iter().enumerate() {
            let len = if client.addr.is_ipv4() { v4 } else { v6 };
            // The whole block is located alike when the span lies within it.
            if at.span <= len {
                let (key, family) = block_key(level, client.addr);
                self.blocks[level].put(key, family, at.orders, at.span);
            }
        }
        Routed {
            orders: at.orders,
            scope: at.scope,
        }
    }

    /// Hints the CPU to load the block entries `ip` will be looked up in.
    pub fn prefetch(&self, ip: IpAddr) {
        for (level, t) in self.blocks.iter().enumerate() {
            let (key, family) = block_key(level, ip);
            t.prefetch(key, family);
        }
    }
}

/// The block of `ip` at `level` as a key, and its family tag (never 0, which
/// marks an empty entry).
fn block_key(level: usize, ip: IpAddr) -> (u64, u8) {
    let (v4, v6) = BLOCKS[level];
    match ip {
        IpAddr::V4(a) => (u64::from(u32::from(a) >> (32 - v4)), 1),
        IpAddr::V6(a) => ((u128::from(a) >> (128 - v6)) as u64, 2),
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    key: u64,
    orders: OrdersId,
    family: u8,
    span: u8,
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

    fn bucket(&self, key: u64, family: u8) -> usize {
        let h = (key ^ u64::from(family).rotate_left(40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> 32) as usize & (self.buckets.len() - 1)
    }

    fn prefetch(&self, key: u64, family: u8) {
        let bucket: *const Bucket = &self.buckets[self.bucket(key, family)];
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch only hints the cache; the address is a live bucket.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>(bucket.cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = bucket;
    }

    fn get(&self, key: u64, family: u8) -> Option<(OrdersId, u8)> {
        self.buckets[self.bucket(key, family)]
            .0
            .iter()
            .find(|e| e.family == family && e.key == key)
            .map(|e| (e.orders, e.span))
    }

    fn put(&mut self, key: u64, family: u8, orders: OrdersId, span: u8) {
        let b = self.bucket(key, family);
        let ways = &mut self.buckets[b].0;
        let way = match ways
            .iter()
            .position(|e| e.family == 0 || (e.family == family && e.key == key))
        {
            Some(w) => w,
            None => {
                self.victim = (self.victim + 1) % WAYS;
                self.victim
            }
        };
        ways[way] = Entry {
            key,
            orders,
            family,
            span,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_and_bucket_sizes() {
        assert_eq!(std::mem::size_of::<Entry>(), 16);
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
    }

    #[test]
    fn blocks_are_keyed_by_prefix_and_family() {
        let mut t = Table::new(64);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let (k, f) = block_key(0, ip("81.2.69.7"));
        t.put(k, f, 3, 20);
        assert_eq!(block_key(0, ip("81.2.69.200")), (k, f));
        assert_ne!(block_key(0, ip("81.2.70.1")), (k, f));
        assert_eq!(t.get(k, f), Some((3, 20)));
        // An IPv6 block whose top bits equal the IPv4 key is another entry.
        let v6 = IpAddr::V6(std::net::Ipv6Addr::from(u128::from(0x51_0245u32) << 72));
        let (k6, f6) = block_key(0, v6);
        assert_eq!(k6, k);
        assert_eq!(t.get(k6, f6), None);
        assert_eq!(
            block_key(1, ip("2001:db8:1::1")),
            block_key(1, ip("2001:db8:ffff::1"))
        );
        assert_ne!(
            block_key(1, ip("2001:db8:1::1")),
            block_key(1, ip("2001:db9::1"))
        );
    }

    #[test]
    fn a_full_bucket_keeps_the_newest_and_replaces_in_place() {
        let mut t = Table::new(1);
        for k in 0..10u64 {
            t.put(k, 1, k as u32, 0);
            assert_eq!(t.get(k, 1), Some((k as u32, 0)));
        }
        let kept = (0..10u64).filter(|&k| t.get(k, 1).is_some()).count();
        assert_eq!(kept, WAYS);
        t.put(9, 1, 99, 1);
        assert_eq!(t.get(9, 1), Some((99, 1)));
        assert_eq!((0..10u64).filter(|&k| t.get(k, 1).is_some()).count(), WAYS);
    }
}
