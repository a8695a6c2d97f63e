//! What the state owner holds about regions, as a pure value: each region's
//! health (its rise/fall machine and last round), the other nodes' votes on
//! it (a shared store only) and the operators' drains, all keyed by region
//! name, so a reload that reorders, removes or adds regions can never apply
//! one region's state to another.
//!
//! [`Regions::view`] turns them into the view of one load's region indices,
//! a probed region's health decided by [`quorum::tally`].

use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    drain::{DrainRecord, Drains},
    file::{SavedRegion, StateFile},
};
use crate::{
    config::Config,
    health::{
        RegionHealth,
        machine::{Machine, Status, Thresholds, Transition},
        probe::Round,
        quorum::{self, Rule, Tally, Votes},
    },
    route::{RegionState, RegionView},
};

/// A region as reports show it: health, drain and the result of both.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RegionStatus {
    pub name: String,
    pub serving: bool,
    pub health: RegionHealth,
    /// How the nodes' votes stand (this node's alone without a shared
    /// store); `None` for an unprobed region.
    pub votes: Option<Tally>,
    /// The active drain, if any.
    pub drain: Option<DrainRecord>,
}

/// Why a drain was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoRegion,
    /// It is the last serving region of these geo names.
    LastServing(Vec<String>),
}

/// Health by region name (configured regions only) and drains by region name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Regions {
    health: BTreeMap<String, RegionHealth>,
    /// Kept across reloads even for regions the config no longer has: a
    /// region that comes back is still drained, as the operator left it.
    drains: Drains,
    /// The other nodes' votes as last read from the shared store.
    votes: Votes,
}

impl Regions {
    /// The state at start: the saved state where it has one, up but
    /// unconfirmed elsewhere.
    pub fn restore(config: &Config, saved: Option<&StateFile>) -> Self {
        let mut regions = Self {
            health: BTreeMap::new(),
            drains: saved.map(|s| s.drains.clone()).unwrap_or_default(),
            votes: Votes::new(),
        };
        for r in &config.regions {
            let probed = r.probe.is_some();
            let old = saved.and_then(|s| s.regions.get(&r.name));
            let health = RegionHealth {
                probed,
                machine: match old {
                    Some(o) if probed => Machine::restored(o.status),
                    _ => Machine::unconfirmed(),
                },
                since: old.and_then(|o| o.since),
                last: old.and_then(|o| o.last.clone()),
            };
            regions.health.insert(r.name.clone(), health);
        }
        regions
    }

    /// Follows a reload: regions that stay keep their state, new ones start
    /// up but unconfirmed, removed ones are forgotten.
    pub fn reconfigure(&mut self, config: &Config) {
        let mut old = std::mem::take(&mut self.health);
        for r in &config.regions {
            let probed = r.probe.is_some();
            let health = match old.remove(&r.name) {
                Some(h) => RegionHealth { probed, ..h },
                None => RegionHealth::fresh(probed),
            };
            self.health.insert(r.name.clone(), health);
        }
    }

    /// Applies a probe round of `region`; returns its machine afterwards and
    /// the transition the round caused. `None` for a region not configured.
    pub fn observe(
        &mut self,
        region: &str,
        round: Round,
        thresholds: Thresholds,
    ) -> Option<(Machine, Option<Transition>)> {
        let h = self.health.get_mut(region)?;
        let transition = h.machine.observe(round.ok, thresholds);
        if transition.is_some() {
            h.since = Some(round.at);
        }
        h.last = Some(round);
        Some((h.machine, transition))
    }

    /// The machine of `region` (a fresh one for a region not configured).
    pub fn machine(&self, region: &str) -> Machine {
        self.health
            .get(region)
            .map_or_else(Machine::unconfirmed, |h| h.machine)
    }

    /// Drains `region`, unless that leaves a geo name of `config` with no
    /// serving region and `force` is not set.
    pub fn drain(
        &mut self,
        config: &Config,
        region: &str,
        record: DrainRecord,
        force: bool,
    ) -> Result<(), Refusal> {
        let Some(index) = config.region_index(region) else {
            return Err(Refusal::NoRegion);
        };
        let now = record.since;
        let mut after = self.clone();
        after.drains.0.insert(region.to_owned(), record);
        let view = after.view(config, now).0;
        let stranded: Vec<String> = config
            .geo
            .iter()
            .filter(|g| g.regions.contains(&index))
            .filter(|g| g.regions.iter().all(|&r| !view.serving(r)))
            .map(|g| g.name.to_string())
            .collect();
        if !stranded.is_empty() && !force {
            return Err(Refusal::LastServing(stranded));
        }
        *self = after;
        Ok(())
    }

    /// Ends the drain of `region`; returns it if there was one.
    pub fn undrain(&mut self, region: &str) -> Option<DrainRecord> {
        self.drains.0.remove(region)
    }

    /// Takes the drains other nodes agreed on (the shared store's); returns
    /// whether they differ from ours.
    pub fn adopt_drains(&mut self, drains: Drains) -> bool {
        let changed = self.drains != drains;
        self.drains = drains;
        changed
    }

    /// Takes the other nodes' votes as just read (all of them).
    pub fn adopt_votes(&mut self, votes: Votes) {
        self.votes = votes;
    }

    /// When the next vote that counts at `now` stops counting: the view may
    /// change then without any news.
    pub fn next_vote_expiry(&self, rule: Rule, now: u64) -> Option<u64> {
        self.votes
            .values()
            .flatten()
            .filter(|v| rule.counts(v.reported, now))
            .map(|v| rule.expiry(v.reported))
            .min()
    }

    /// Drops drains whose `until` has passed; returns them.
    pub fn expire(&mut self, now: u64) -> Vec<(String, DrainRecord)> {
        let ended: Vec<String> = self
            .drains
            .0
            .iter()
            .filter(|(_, d)| !d.active(now))
            .map(|(n, _)| n.clone())
            .collect();
        ended
            .into_iter()
            .filter_map(|n| self.drains.0.remove(&n).map(|d| (n, d)))
            .collect()
    }

    /// When the next drain ends (seconds since 1970), or ended.
    pub fn next_expiry(&self) -> Option<u64> {
        self.drains.next_expiry()
    }

    /// Which regions of `config` may answer at `now` (health by the nodes'
    /// votes × drains), by `config`'s region indices, and each one's status
    /// for reports.
    pub fn view(&self, config: &Config, now: u64) -> (RegionView, Vec<RegionStatus>) {
        let rule = Rule::of(&config.health);
        let statuses: Vec<RegionStatus> = config
            .regions
            .iter()
            .map(|r| {
                let health = self
                    .health
                    .get(&r.name)
                    .cloned()
                    .unwrap_or_else(|| RegionHealth::fresh(r.probe.is_some()));
                let drain = self
                    .drains
                    .0
                    .get(&r.name)
                    .filter(|d| d.active(now))
                    .cloned();
                let votes = health.probed.then(|| {
                    let down = health.machine.status == Status::Down;
                    let others = self.votes.get(&r.name).map_or(&[][..], Vec::as_slice);
                    quorum::tally(&config.node.name, down, others, rule, now)
                });
                RegionStatus {
                    name: r.name.clone(),
                    serving: !votes.as_ref().is_some_and(Tally::out) && drain.is_none(),
                    health,
                    votes,
                    drain,
                }
            })
            .collect();
        let view = RegionView {
            states: statuses
                .iter()
                .map(|s| RegionState { serving: s.serving })
                .collect(),
        };
        (view, statuses)
    }

    /// What is persisted: probed regions' health, and every drain.
    pub fn saved(&self) -> StateFile {
        let regions = self
            .health
            .iter()
            .filter(|(_, h)| h.probed)
            .map(|(name, h)| {
                let saved = SavedRegion {
                    status: h.machine.status,
                    since: h.since,
                    last: h.last.clone(),
                };
                (name.clone(), saved)
            })
            .collect();
        StateFile::new(regions, self.drains.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::machine::Status;

    /// A config of `regions`, probes on the `probed` ones.
    fn config(regions: &[&str], probed: &[&str]) -> Config {
        let fixture = crate::testing::Fixture::new(&[]);
        Config::load(&fixture.config(regions, probed, "")).unwrap()
    }

    fn round(ok: bool, at: u64) -> Round {
        Round {
            at,
            ok,
            results: vec![],
        }
    }

    fn drain(by: &str, since: u64, until: Option<u64>) -> DrainRecord {
        DrainRecord {
            reason: "maintenance".into(),
            by: by.into(),
            since,
            until,
        }
    }

    const T: Thresholds = Thresholds { fall: 1, rise: 1 };

    #[test]
    fn state_follows_names_across_reloads() {
        let both = config(&["europe1", "us1"], &["europe1", "us1"]);
        let mut r = Regions::restore(&both, None);
        r.observe("us1", round(false, 10), T).unwrap();
        assert_eq!(
            r.view(&both, 10)
                .0
                .states
                .iter()
                .map(|s| s.serving)
                .collect::<Vec<_>>(),
            [true, false]
        );
        // us1 disappears, then comes back: it starts over, unconfirmed.
        let one = config(&["us1"], &["us1"]);
        r.reconfigure(&one);
        assert_eq!(r.machine("us1").status, Status::Down, "kept by name");
        let europe = config(&["europe1"], &["europe1"]);
        r.reconfigure(&europe);
        assert!(
            r.observe("us1", round(false, 11), T).is_none(),
            "not configured"
        );
        r.reconfigure(&both);
        assert_eq!(r.machine("us1"), Machine::unconfirmed());
        assert!(r.view(&both, 12).0.serving(1));
    }

    #[test]
    fn the_last_serving_region_needs_force() {
        let c = config(&["europe1", "us1"], &[]);
        let mut r = Regions::restore(&c, None);
        r.drain(&c, "europe1", drain("a", 1, None), false).unwrap();
        assert_eq!(
            r.drain(&c, "us1", drain("a", 1, None), false),
            Err(Refusal::LastServing(vec!["mgnt.mkcld.io.".into()]))
        );
        assert_eq!(
            r.drain(&c, "nowhere", drain("a", 1, None), true),
            Err(Refusal::NoRegion)
        );
        r.drain(&c, "us1", drain("a", 1, None), true).unwrap();
        assert!(r.view(&c, 2).0.states.iter().all(|s| !s.serving));
    }

    #[test]
    fn drains_end_at_until_and_outlive_their_region() {
        let c = config(&["europe1", "us1"], &[]);
        let mut r = Regions::restore(&c, None);
        r.drain(&c, "us1", drain("a", 1, Some(100)), false).unwrap();
        assert_eq!(r.next_expiry(), Some(100));
        assert!(!r.view(&c, 99).0.serving(1));
        assert!(
            r.view(&c, 100).0.serving(1),
            "inactive at until, even before expiry runs"
        );
        r.reconfigure(&config(&["europe1"], &[]));
        r.reconfigure(&c);
        assert!(
            !r.view(&c, 99).0.serving(1),
            "still drained when the region comes back"
        );
        assert_eq!(r.expire(100).len(), 1);
        assert_eq!(r.next_expiry(), None);
    }

    fn vote(node: &str, down: bool, reported: u64) -> crate::health::quorum::Vote {
        crate::health::quorum::Vote {
            node: node.into(),
            down,
            reported,
        }
    }

    #[test]
    fn the_nodes_votes_decide_a_probed_region() {
        // Two intervals of 300 s: a vote counts for 600 s.
        let c = config(&["europe1", "us1"], &["europe1"]);
        let mut r = Regions::restore(&c, None);
        r.observe("europe1", round(false, 10), T).unwrap();
        assert!(!r.view(&c, 10).0.serving(0), "alone, it decides alone");
        r.adopt_votes(Votes::from([
            ("europe1".into(), vec![vote("b", false, 10)]),
            ("us1".into(), vec![vote("b", true, 10), vote("c", true, 10)]),
        ]));
        let (view, statuses) = r.view(&c, 20);
        assert!(view.serving(0), "one of two is not a majority");
        let votes = statuses[0].votes.as_ref().unwrap();
        assert_eq!((votes.down, votes.counted, votes.quorum), (1, 2, 2));
        assert!(view.serving(1), "an unprobed region has no vote");
        assert_eq!(statuses[1].votes, None);
        assert_eq!(r.next_vote_expiry(Rule::of(&c.health), 20), Some(611));
        assert!(!r.view(&c, 611).0.serving(0), "b fell silent");
        assert_eq!(r.next_vote_expiry(Rule::of(&c.health), 611), None);
    }

    #[test]
    fn saved_state_restores() {
        let c = config(&["europe1", "us1"], &["us1"]);
        let mut r = Regions::restore(&c, None);
        r.observe("us1", round(false, 10), T).unwrap();
        r.drain(&c, "europe1", drain("a", 1, None), true).unwrap();
        let back = Regions::restore(&c, Some(&r.saved()));
        assert_eq!(back.machine("us1"), Machine::restored(Status::Down));
        assert_eq!(back.view(&c, 20).0, r.view(&c, 20).0);
    }
}
