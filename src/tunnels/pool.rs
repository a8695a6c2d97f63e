//! The CGNAT address pool: one /32 per tunnel from a configured prefix.
//!
//! Never the network, broadcast or gateway address (the server's own end of
//! `topology subnet`), never twice. Addresses are handed out from a cursor
//! over never-used space, then from released ones; a released address waits
//! out a quarantine first, so a router still holding it from an old session
//! cannot collide with a new tunnel. Every operation is O(log n).

use std::{
    collections::{BTreeSet, VecDeque},
    net::Ipv4Addr,
};

use ipnet::Ipv4Net;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("pool {0} is too small: it needs room for a gateway and at least one tunnel")]
    TooSmall(Ipv4Net),
    #[error("pool {0} is exhausted")]
    Exhausted(Ipv4Net),
    #[error("{0} is not a tunnel address of pool {1}")]
    Foreign(Ipv4Addr, Ipv4Net),
    #[error("{0} is already allocated")]
    Duplicate(Ipv4Addr),
}

/// The allocator's state; persistence lives in the store, which replays it with [`Pool::restore`].
#[derive(Debug, Clone)]
pub struct Pool {
    net: Ipv4Net,
    /// Offsets from the network address: first and last assignable.
    first: u32,
    last: u32,
    /// Next never-used offset.
    cursor: u32,
    /// Released offsets whose quarantine is over.
    free: BTreeSet<u32>,
    /// Released offsets and when they may be reused (seconds since 1970), oldest first.
    quarantine: VecDeque<(u64, u32)>,
    quarantine_secs: u64,
    allocated: u64,
}

impl Pool {
    /// A pool over `net`; its first host address is the gateway and never assigned.
    pub fn new(net: Ipv4Net, quarantine_secs: u64) -> Result<Self, PoolError> {
        let net = net.trunc();
        let size = 1u64 << (32 - u32::from(net.prefix_len()));
        // network, gateway, broadcast, and at least one tunnel
        if size < 4 {
            return Err(PoolError::TooSmall(net));
        }
        Ok(Self {
            net,
            first: 2,
            last: (size - 2) as u32,
            cursor: 2,
            free: BTreeSet::new(),
            quarantine: VecDeque::new(),
            quarantine_secs,
            allocated: 0,
        })
    }

    pub fn net(&self) -> Ipv4Net {
        self.net
    }

    /// The server's address: the first host of the pool.
    pub fn gateway(&self) -> Ipv4Addr {
        gateway(self.net)
    }

    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    fn addr(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net.network()) + offset)
    }

    fn offset(&self, addr: Ipv4Addr) -> Result<u32, PoolError> {
        let off = u32::from(addr).wrapping_sub(u32::from(self.net.network()));
        if self.net.contains(&addr) && (self.first..=self.last).contains(&off) {
            Ok(off)
        } else {
            Err(PoolError::Foreign(addr, self.net))
        }
    }

    /// Rebuilds the pool from the store: addresses in use and those in quarantine.
    pub fn restore(
        net: Ipv4Net,
        quarantine_secs: u64,
        in_use: impl IntoIterator<Item = Ipv4Addr>,
        quarantined: impl IntoIterator<Item = (Ipv4Addr, u64)>,
    ) -> Result<Self, PoolError> {
        let mut pool = Self::new(net, quarantine_secs)?;
        let mut taken = BTreeSet::new();
        for a in in_use {
            if !taken.insert(pool.offset(a)?) {
                return Err(PoolError::Duplicate(a));
            }
        }
        let mut waiting: Vec<(u64, u32)> = Vec::new();
        for (a, until) in quarantined {
            let off = pool.offset(a)?;
            if !taken.insert(off) {
                return Err(PoolError::Duplicate(a));
            }
            waiting.push((until, off));
        }
        waiting.sort_unstable();
        pool.allocated = (taken.len() - waiting.len()) as u64;
        pool.cursor = taken.last().map_or(pool.first, |&m| m + 1);
        // Holes below the cursor are free (released long ago, or never used).
        let mut expected = pool.first;
        for &off in &taken {
            pool.free.extend(expected..off);
            expected = off + 1;
        }
        pool.quarantine = waiting.into();
        Ok(pool)
    }

    /// Takes an address for a new tunnel.
    pub fn allocate(&mut self, now: u64) -> Result<Ipv4Addr, PoolError> {
        while let Some(&(until, off)) = self.quarantine.front() {
            if until > now {
                break;
            }
            self.quarantine.pop_front();
            self.free.insert(off);
        }
        let off = if let Some(off) = self.free.pop_first() {
            off
        } else if self.cursor <= self.last {
            self.cursor += 1;
            self.cursor - 1
        } else {
            return Err(PoolError::Exhausted(self.net));
        };
        self.allocated += 1;
        Ok(self.addr(off))
    }

    /// Undoes an [`Pool::allocate`] whose tunnel was never stored: no quarantine,
    /// since no router ever held the address.
    pub fn give_back(&mut self, addr: Ipv4Addr) -> Result<(), PoolError> {
        let off = self.offset(addr)?;
        self.free.insert(off);
        self.allocated = self.allocated.saturating_sub(1);
        Ok(())
    }

    /// Returns `addr` to the pool after the quarantine; `until` is when it may be reused.
    pub fn release(&mut self, addr: Ipv4Addr, now: u64) -> Result<u64, PoolError> {
        let off = self.offset(addr)?;
        let until = now + self.quarantine_secs;
        self.quarantine.push_back((until, off));
        self.allocated = self.allocated.saturating_sub(1);
        Ok(until)
    }
}

/// The server's own address in `net`: its first host.
pub fn gateway(net: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.trunc().network()) + 1)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn never_hands_out_network_gateway_or_broadcast_and_never_twice() {
        let mut p = Pool::new(net("100.64.0.0/28"), 0).unwrap();
        assert_eq!(p.gateway(), Ipv4Addr::new(100, 64, 0, 1));
        let mut seen = HashSet::new();
        while let Ok(a) = p.allocate(0) {
            assert!(seen.insert(a), "{a} twice");
        }
        assert_eq!(seen.len(), 16 - 3);
        for reserved in ["100.64.0.0", "100.64.0.1", "100.64.0.15"] {
            assert!(!seen.contains(&reserved.parse().unwrap()), "{reserved}");
        }
        assert_eq!(
            p.allocate(0),
            Err(PoolError::Exhausted(net("100.64.0.0/28")))
        );
    }

    #[test]
    fn released_addresses_wait_out_the_quarantine() {
        let mut p = Pool::new(net("100.64.0.0/29"), 3600).unwrap();
        let all: Vec<_> = (0..5).map(|_| p.allocate(0).unwrap()).collect();
        assert!(p.allocate(0).is_err());
        assert_eq!(p.release(all[2], 100), Ok(3700));
        assert!(p.allocate(3699).is_err(), "still in quarantine");
        assert_eq!(p.allocate(3700), Ok(all[2]));
    }

    #[test]
    fn restore_rebuilds_the_same_state() {
        let mut p = Pool::new(net("100.64.0.0/24"), 60).unwrap();
        let a: Vec<_> = (0..10).map(|_| p.allocate(0).unwrap()).collect();
        p.release(a[3], 0).unwrap();
        let in_use: Vec<_> = a.iter().copied().filter(|&x| x != a[3]).collect();
        let mut r = Pool::restore(net("100.64.0.0/24"), 60, in_use.clone(), [(a[3], 60)]).unwrap();
        assert_eq!(r.allocated(), 9);
        let next = r.allocate(0).unwrap();
        assert!(!in_use.contains(&next) && next != a[3], "{next}");
        assert_eq!(r.allocate(61), Ok(a[3]), "quarantine carried over");
        assert!(Pool::restore(net("100.64.0.0/24"), 60, [a[0], a[0]], []).is_err());
        assert!(
            Pool::restore(
                net("100.64.0.0/24"),
                60,
                ["100.64.0.1".parse().unwrap()],
                []
            )
            .is_err()
        );
    }

    #[test]
    fn a_million_tunnels_fit_the_cgnat_range_quickly() {
        let mut p = Pool::new(net("100.64.0.0/10"), 0).unwrap();
        let mut last = Ipv4Addr::UNSPECIFIED;
        for i in 0..1_000_000u64 {
            last = p.allocate(i).unwrap();
        }
        assert_eq!(p.allocated(), 1_000_000);
        assert!(net("100.64.0.0/10").contains(&last));
        // Releases and re-allocations stay logarithmic with a million in use.
        for i in 0..1000u32 {
            p.release(Ipv4Addr::from(u32::from(last) - i), 0).unwrap();
        }
        for _ in 0..1000 {
            p.allocate(1).unwrap();
        }
        assert_eq!(p.allocated(), 1_000_000);
    }

    #[test]
    fn tiny_pools_and_foreign_addresses_are_rejected() {
        assert!(Pool::new(net("100.64.0.0/31"), 0).is_err());
        let mut p = Pool::new(net("100.64.0.0/24"), 0).unwrap();
        assert!(p.release("10.0.0.1".parse().unwrap(), 0).is_err());
        assert!(
            p.release("100.64.0.255".parse().unwrap(), 0).is_err(),
            "broadcast"
        );
    }
}
