//! Open connections per source address, for the per-source cap.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

/// How many connections each source has open. A slot is held for the life
/// of a connection and given back on drop, so counts never leak.
#[derive(Default)]
pub struct Sources(Mutex<HashMap<IpAddr, usize>>);

/// One connection's place in [`Sources`].
pub struct Slot {
    sources: Arc<Sources>,
    ip: IpAddr,
}

impl Sources {
    /// Takes a slot for `ip` unless it already has `max` connections.
    pub fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Slot> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            sources: self.clone(),
            ip,
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.sources.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                // Bounded by open connections, not by every address ever seen.
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_at_most_max_slots_and_gets_them_back() {
        let sources = Arc::new(Sources::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let first = sources.take(a, 2).unwrap();
        let second = sources.take(a, 2).unwrap();
        assert!(sources.take(a, 2).is_none());
        assert!(sources.take(b, 2).is_some(), "another source");
        drop(first);
        assert!(sources.take(a, 2).is_some());
        drop(second);
        assert_eq!(sources.len(), 0, "forgotten once closed");
    }
}
