//! Health by quorum: several nodes probe the same region, each with its own
//! rise/fall machine, and the region leaves the answers only when enough of
//! them say it is down. Pure: votes and times in, a tally out.
//!
//! Each node writes its view to the shared store (`[store]`); the other
//! nodes' views arrive as [`Vote`]s. A vote counts while it is recent:
//! reported within the last two probe intervals (a live node reports at
//! least once per interval plus its jitter), so a node that stopped
//! reporting neither holds a region out nor keeps it in. This node's own
//! vote always counts.
//!
//! The quorum is `[health] quorum` when set, else a strict majority of the
//! counted nodes; in both cases at most the number counted, so a node alone
//! (no store, or every other node silent) decides alone, and a quorum larger
//! than the fleet asks every counted node to agree.
//!
//! A tie keeps the region: of two nodes, one saying down is not a majority
//! of two, so the region stays in both nodes' answers. Taking a region out
//! needs more than half the vantage points, so one node's broken path never
//! fails it for every client, while a region every node sees down does go.

use std::{collections::BTreeMap, time::Duration};

use serde::Serialize;

/// One other node's say on one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    /// The node's `[node] name`.
    pub node: String,
    /// Its rise/fall machine has the region down.
    pub down: bool,
    /// When it last reported (seconds since 1970, this node's clock).
    pub reported: u64,
}

/// The other nodes' votes as last read, by region name.
pub type Votes = BTreeMap<String, Vec<Vote>>;

/// What the votes are weighed by: `[health] quorum` and `interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Down votes that take a region out; `None`: a majority of those counted.
    pub quorum: Option<u32>,
    pub interval: Duration,
}

impl Rule {
    pub fn of(health: &crate::config::HealthConfig) -> Self {
        Self {
            quorum: health.quorum,
            interval: health.interval,
        }
    }

    /// How long a vote counts after it was reported: two intervals, in
    /// whole seconds (rounded up, as the clock counts whole seconds).
    fn window(&self) -> u64 {
        let two = self.interval.saturating_mul(2);
        two.as_secs() + u64::from(two.subsec_nanos() > 0)
    }

    /// Whether a vote reported at `reported` counts at `now`.
    pub fn counts(&self, reported: u64, now: u64) -> bool {
        now.saturating_sub(reported) <= self.window()
    }

    /// The first second a vote reported at `reported` no longer counts.
    pub fn expiry(&self, reported: u64) -> u64 {
        reported.saturating_add(self.window()).saturating_add(1)
    }
}

/// How one region's vote stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Counted nodes that say down, this one included.
    pub down: u32,
    /// Nodes whose vote counts: this one and those recent enough.
    pub counted: u32,
    /// Down votes that take the region out.
    pub quorum: u32,
    /// The nodes that say down, by name.
    pub down_nodes: Vec<String>,
}

impl Tally {
    /// Whether the votes take the region out of the answers.
    pub fn out(&self) -> bool {
        self.down >= self.quorum
    }
}

/// Weighs this node's vote (`me`, down or not) with `others` at `now`.
/// A vote of `others` under this node's own name is ignored: its own view
/// is the one it holds, not the one it last wrote.
pub fn tally(me: &str, down: bool, others: &[Vote], rule: Rule, now: u64) -> Tally {
    let counted: Vec<&Vote> = others
        .iter()
        .filter(|v| v.node != me && rule.counts(v.reported, now))
        .collect();
    // This node first, then the others by name: the same votes read in
    // another order make the same tally.
    let mut others_down: Vec<String> = counted
        .iter()
        .filter(|v| v.down)
        .map(|v| v.node.clone())
        .collect();
    others_down.sort();
    let mut down_nodes: Vec<String> = Vec::with_capacity(others_down.len() + 1);
    if down {
        down_nodes.push(me.to_owned());
    }
    down_nodes.extend(others_down);
    let voters = u32::try_from(counted.len() + 1).unwrap_or(u32::MAX);
    let majority = voters / 2 + 1;
    let quorum = rule.quorum.unwrap_or(majority).clamp(1, voters);
    Tally {
        down: u32::try_from(down_nodes.len()).unwrap_or(u32::MAX),
        counted: voters,
        quorum,
        down_nodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const MAJORITY: Rule = Rule {
        quorum: None,
        interval: Duration::from_secs(300),
    };

    fn vote(node: &str, down: bool, age: u64) -> Vote {
        Vote {
            node: node.into(),
            down,
            reported: NOW - age,
        }
    }

    fn out(down: bool, others: &[Vote], rule: Rule) -> bool {
        tally("me", down, others, rule, NOW).out()
    }

    #[test]
    fn a_node_alone_decides_alone() {
        assert!(out(true, &[], MAJORITY));
        assert!(!out(false, &[], MAJORITY));
        let three = Rule {
            quorum: Some(3),
            ..MAJORITY
        };
        assert!(out(true, &[], three), "a quorum is capped at those counted");
    }

    #[test]
    fn a_tie_keeps_the_region() {
        let t = tally("me", true, &[vote("b", false, 10)], MAJORITY, NOW);
        assert_eq!((t.down, t.counted, t.quorum), (1, 2, 2));
        assert!(!t.out(), "one of two is not a majority");
        assert!(!out(false, &[vote("b", true, 10)], MAJORITY));
        assert!(out(true, &[vote("b", true, 10)], MAJORITY));
        let four = [vote("b", true, 1), vote("c", false, 1), vote("d", false, 1)];
        assert!(!out(true, &four, MAJORITY), "two of four");
    }

    /// Every fleet of one to seven nodes, every set of down votes: out
    /// exactly when more than half say down.
    #[test]
    fn the_default_is_a_strict_majority() {
        for nodes in 1..=7usize {
            for mask in 0u32..(1 << nodes) {
                let others: Vec<Vote> = (1..nodes)
                    .map(|i| vote(&format!("n{i}"), mask & (1 << i) != 0, 0))
                    .collect();
                let t = tally("me", mask & 1 != 0, &others, MAJORITY, NOW);
                let down = mask.count_ones() as usize;
                assert_eq!(t.counted as usize, nodes);
                assert_eq!(t.down as usize, down);
                assert_eq!(t.out(), 2 * down > nodes, "{down} of {nodes}");
            }
        }
    }

    #[test]
    fn votes_older_than_two_intervals_do_not_count() {
        let t = tally("me", false, &[vote("b", true, 600)], MAJORITY, NOW);
        assert_eq!((t.down, t.counted), (1, 2), "exactly two intervals counts");
        let t = tally("me", false, &[vote("b", true, 601)], MAJORITY, NOW);
        assert_eq!((t.down, t.counted, t.quorum), (0, 1, 1));
        // Two silent nodes that said down cannot hold the region out.
        let silent = [vote("b", true, 700), vote("c", true, 700)];
        assert!(!out(false, &silent, MAJORITY));
        assert!(out(true, &silent, MAJORITY), "and cannot keep it in");
        // A vote from the future (clocks apart) counts.
        let ahead = Vote {
            reported: NOW + 5,
            ..vote("b", true, 0)
        };
        assert!(out(true, &[ahead], MAJORITY));
    }

    #[test]
    fn a_set_quorum_counts_down_votes() {
        let one = Rule {
            quorum: Some(1),
            ..MAJORITY
        };
        let others = [vote("b", true, 0), vote("c", false, 0)];
        assert!(out(false, &others, one), "any one node takes it out");
        let three = Rule {
            quorum: Some(3),
            ..MAJORITY
        };
        assert!(!out(true, &others, three), "two of three");
        let stale = [vote("b", true, 0), vote("c", false, 900)];
        assert!(
            out(true, &stale, three),
            "every counted node says down: c is silent"
        );
    }

    #[test]
    fn our_own_row_is_not_a_second_vote() {
        let t = tally("me", false, &[vote("me", true, 0)], MAJORITY, NOW);
        assert_eq!((t.down, t.counted), (0, 1));
    }

    #[test]
    fn the_down_nodes_are_named() {
        let others = [vote("d", true, 0), vote("c", false, 0), vote("b", true, 0)];
        let t = tally("me", true, &others, MAJORITY, NOW);
        assert_eq!(t.down_nodes, ["me", "b", "d"], "in an order of their own");
        assert!(t.out());
    }

    #[test]
    fn the_window_rounds_a_short_interval_up() {
        let short = Rule {
            quorum: None,
            interval: Duration::from_millis(1500),
        };
        assert!(short.counts(NOW - 3, NOW));
        assert!(!short.counts(NOW - 4, NOW));
        assert_eq!(short.expiry(NOW), NOW + 4);
        assert_eq!(MAJORITY.expiry(NOW), NOW + 601);
    }
}
