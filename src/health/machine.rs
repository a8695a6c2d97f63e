//! The rise/fall state machine of one region: pure, so every flap is testable.
//!
//! A region goes down after `fall` consecutive failed rounds and comes back
//! after `rise` consecutive good ones. While a streak is open the scheduler
//! probes every `recheck` instead of every `interval`, so an outage is seen
//! within interval + fall × recheck rather than fall × interval.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Up,
    Down,
}

impl Status {
    /// As the state file and the API spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// Consecutive results needed to change state.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub fall: u32,
    pub rise: u32,
}

/// A state change, reported once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: Status,
    pub to: Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub status: Status,
    /// False until a probe result agrees with `status` (a fresh start is up-but-unconfirmed).
    pub confirmed: bool,
    /// Consecutive results that disagree with `status`.
    pub streak: u32,
}

impl Machine {
    /// A region with no history: serving, probed at once.
    pub fn unconfirmed() -> Self {
        Self {
            status: Status::Up,
            confirmed: false,
            streak: 0,
        }
    }

    /// A region whose last state was read back from disk.
    pub fn restored(status: Status) -> Self {
        Self {
            status,
            confirmed: true,
            streak: 0,
        }
    }

    /// Feeds one probe round's verdict; returns the transition it caused, if any.
    pub fn observe(&mut self, ok: bool, t: Thresholds) -> Option<Transition> {
        let agrees = ok == (self.status == Status::Up);
        if agrees {
            self.streak = 0;
            self.confirmed = true;
            return None;
        }
        self.streak += 1;
        let needed = match self.status {
            Status::Up => t.fall,
            Status::Down => t.rise,
        };
        if self.streak < needed {
            return None;
        }
        let from = self.status;
        self.status = if ok { Status::Up } else { Status::Down };
        self.streak = 0;
        self.confirmed = true;
        Some(Transition {
            from,
            to: self.status,
        })
    }

    /// When to probe next: quickly while a streak needs confirming.
    pub fn next_delay(&self, interval: Duration, recheck: Duration) -> Duration {
        if self.streak > 0 { recheck } else { interval }
    }

    pub fn serving(&self) -> bool {
        self.status == Status::Up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds { fall: 2, rise: 3 };
    const INTERVAL: Duration = Duration::from_secs(300);
    const RECHECK: Duration = Duration::from_secs(10);

    #[test]
    fn logged_names_are_the_stored_ones() {
        for s in [Status::Up, Status::Down] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.name());
        }
    }

    fn feed(m: &mut Machine, results: &[bool]) -> Vec<Transition> {
        results.iter().filter_map(|&ok| m.observe(ok, T)).collect()
    }

    #[test]
    fn starts_up_unconfirmed_and_confirms_on_success() {
        let mut m = Machine::unconfirmed();
        assert!(m.serving() && !m.confirmed);
        assert_eq!(feed(&mut m, &[true]), []);
        assert!(m.confirmed);
    }

    #[test]
    fn goes_down_after_fall_failures_and_up_after_rise_successes() {
        let mut m = Machine::unconfirmed();
        assert_eq!(feed(&mut m, &[false]), []);
        assert!(m.serving(), "one failure is not an outage");
        let t = feed(&mut m, &[false]);
        assert_eq!(
            t,
            [Transition {
                from: Status::Up,
                to: Status::Down
            }]
        );
        assert!(!m.serving());
        assert_eq!(feed(&mut m, &[true, true]), []);
        assert!(!m.serving(), "rise = 3");
        let t = feed(&mut m, &[true]);
        assert_eq!(
            t,
            [Transition {
                from: Status::Down,
                to: Status::Up
            }]
        );
    }

    #[test]
    fn a_flapping_target_never_changes_state() {
        let mut m = Machine::restored(Status::Up);
        let flaps: Vec<bool> = (0..50).map(|i| i % 2 == 0).collect();
        assert_eq!(feed(&mut m, &flaps), []);
        assert!(m.serving());
        let mut d = Machine::restored(Status::Down);
        let flaps: Vec<bool> = (0..50).map(|i| i % 3 != 0).collect();
        // Two successes then a failure, over and over: never three in a row.
        assert_eq!(feed(&mut d, &flaps), []);
        assert!(!d.serving());
    }

    #[test]
    fn timeouts_count_as_failures_and_slow_answers_as_success() {
        // The machine only sees verdicts: a timed-out probe is `false`, a slow
        // answer within the timeout is `true`. A target slow enough to time out
        // every other round keeps a region up; every round takes it down.
        let mut m = Machine::restored(Status::Up);
        assert_eq!(feed(&mut m, &[false, true, false, true]), []);
        assert_eq!(feed(&mut m, &[false, false]).len(), 1);
    }

    #[test]
    fn rechecks_quickly_only_while_a_streak_is_open() {
        let mut m = Machine::restored(Status::Up);
        assert_eq!(m.next_delay(INTERVAL, RECHECK), INTERVAL);
        m.observe(false, T);
        assert_eq!(m.next_delay(INTERVAL, RECHECK), RECHECK);
        m.observe(false, T);
        assert_eq!(
            m.next_delay(INTERVAL, RECHECK),
            INTERVAL,
            "down and settled"
        );
        m.observe(true, T);
        assert_eq!(m.next_delay(INTERVAL, RECHECK), RECHECK, "recovering");
    }

    #[test]
    fn restored_state_is_kept_until_proven_otherwise() {
        let mut m = Machine::restored(Status::Down);
        assert!(!m.serving());
        assert_eq!(feed(&mut m, &[false, false]), []);
        assert!(!m.serving());
    }
}
