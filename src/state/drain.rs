//! Drains: an operator's decision to take a region out of the answers.
//!
//! Separate from health (gdnsd's admin-forced state): a drained region is
//! skipped even when healthy, stays drained across restarts, and may end by
//! itself at `until`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Why and by whom a region is drained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRecord {
    pub reason: String,
    /// The API token's name that drained it.
    pub by: String,
    /// Seconds since 1970.
    pub since: u64,
    /// The drain ends by itself at this time (seconds since 1970).
    pub until: Option<u64>,
}

impl DrainRecord {
    pub fn active(&self, now: u64) -> bool {
        self.until.is_none_or(|u| now < u)
    }
}

/// Drains by region name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Drains(pub BTreeMap<String, DrainRecord>);

impl Drains {
    pub fn is_drained(&self, region: &str, now: u64) -> bool {
        self.0.get(region).is_some_and(|d| d.active(now))
    }

    /// Drops drains whose `until` has passed; returns the names removed.
    pub fn expire(&mut self, now: u64) -> Vec<String> {
        let gone: Vec<String> = self
            .0
            .iter()
            .filter(|(_, d)| !d.active(now))
            .map(|(n, _)| n.clone())
            .collect();
        for n in &gone {
            self.0.remove(n);
        }
        gone
    }

    /// When the next expiry must be applied: the earliest `until`, even one
    /// already passed (a drain restored or adopted after its end is ended,
    /// and audited, at once rather than at the next unrelated change).
    pub fn next_expiry(&self) -> Option<u64> {
        self.0.values().filter_map(|d| d.until).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(until: Option<u64>) -> DrainRecord {
        DrainRecord {
            reason: "maintenance".into(),
            by: "admin".into(),
            since: 100,
            until,
        }
    }

    #[test]
    fn drains_end_at_until() {
        let mut d = Drains::default();
        d.0.insert("europe1".into(), rec(Some(200)));
        d.0.insert("us1".into(), rec(None));
        assert!(d.is_drained("europe1", 199));
        assert!(!d.is_drained("europe1", 200));
        assert!(d.is_drained("us1", u64::MAX));
        assert_eq!(d.next_expiry(), Some(200));
        assert_eq!(d.expire(250), ["europe1"]);
        assert_eq!(d.next_expiry(), None);
        assert!(!d.is_drained("asia1", 0));
    }
}
