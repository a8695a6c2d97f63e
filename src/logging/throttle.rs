//! Warnings that the network can set off, at most one line per kind per
//! [`INTERVAL`]: a flood of bad input (or a listener out of file
//! descriptors) would otherwise write a line per packet or per accept.
//!
//! The first occurrence of a kind is written at once; those that follow
//! within the interval are only counted. Once the interval is over, the
//! count is written as `suppressed=N`: on the kind's next line, or by
//! [`report_suppressed`] (a line whose message is the kind) if none comes
//! first, so a count is not held back until the next flood.
//!
//! Use it through [`throttled!`](crate::throttled).

use std::{
    mem,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::Duration,
};

use tokio::time::Instant;
use tracing::Level;

/// At most one line per kind in this time.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// How often [`report_suppressed`] looks for intervals that are over.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Every kind that has occurred, for [`report_suppressed`]. Process-wide
/// like the logger itself; each entry is a call site's `static`.
static KINDS: Mutex<Vec<&'static Throttle>> = Mutex::new(Vec::new());

/// One kind of line: a call site of [`throttled!`](crate::throttled).
pub struct Throttle {
    level: Level,
    kind: &'static str,
    window: Mutex<Window>,
    listed: AtomicBool,
}

impl Throttle {
    pub const fn new(level: Level, kind: &'static str) -> Self {
        Self {
            level,
            kind,
            window: Mutex::new(Window {
                opened: None,
                suppressed: 0,
            }),
            listed: AtomicBool::new(false),
        }
    }

    /// An occurrence now: `Some(n)` when its line is to be written, `n`
    /// the occurrences counted and not written before it; `None` when it
    /// is only counted.
    pub fn admit(&'static self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&'static self, now: Instant) -> Option<u64> {
        if !self.listed.swap(true, Relaxed) {
            KINDS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(self);
        }
        self.window().occur(now)
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        // A panic while holding it leaves a count, nothing inconsistent.
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the count of an interval that is over at `now`, if any.
    fn report(&self, now: Instant) {
        let Some(suppressed) = self.window().close(now) else {
            return;
        };
        let kind = self.kind;
        match self.level {
            Level::ERROR => tracing::error!(message = kind, suppressed),
            Level::WARN => tracing::warn!(message = kind, suppressed),
            _ => tracing::info!(message = kind, suppressed),
        }
    }
}

/// One kind's interval: when its last line was written, how many
/// occurrences were counted since.
#[derive(Debug, PartialEq)]
struct Window {
    opened: Option<Instant>,
    suppressed: u64,
}

impl Window {
    /// See [`Throttle::admit`]; a line written opens a new interval.
    fn occur(&mut self, now: Instant) -> Option<u64> {
        match self.opened {
            Some(at) if now < at + INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.opened = Some(now);
                Some(mem::take(&mut self.suppressed))
            }
        }
    }

    /// At `now`: the count to write when the interval is over and counted
    /// something (its line opens the next interval); a quiet interval ends
    /// without a line, so the next occurrence is written at once.
    fn close(&mut self, now: Instant) -> Option<u64> {
        let at = self.opened?;
        if now < at + INTERVAL {
            return None;
        }
        if self.suppressed == 0 {
            self.opened = None;
            return None;
        }
        self.opened = Some(now);
        Some(mem::take(&mut self.suppressed))
    }
}

/// Writes the counts of intervals that are over, every second, for as long
/// as it runs (it is spawned by `mgnt serve` and `mgnt agent`).
pub async fn report_suppressed() {
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let kinds = KINDS.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let now = Instant::now();
        for kind in kinds {
            kind.report(now);
        }
    }
}

/// `tracing`'s `error!`, `warn!` or `info!` for what the network can set
/// off again and again: at most one line per call site per [`INTERVAL`],
/// with `suppressed=N` for the occurrences not written before it. The kind
/// (a string literal) comes first and is the line's message, the fields
/// follow:
///
/// ```ignore
/// throttled!(warn, "tcp accept failed", %error);
/// ```
#[macro_export]
macro_rules! throttled {
    (error, $($rest:tt)+) => { $crate::throttled!(@ ERROR error, $($rest)+) };
    (warn, $($rest:tt)+) => { $crate::throttled!(@ WARN warn, $($rest)+) };
    (info, $($rest:tt)+) => { $crate::throttled!(@ INFO info, $($rest)+) };
    (@ $level:ident $event:ident, $kind:literal $(, $($field:tt)+)?) => {{
        static THROTTLE: $crate::logging::Throttle =
            $crate::logging::Throttle::new(::tracing::Level::$level, $kind);
        if let Some(suppressed) = THROTTLE.admit() {
            // `None` (nothing suppressed) leaves the field out.
            let suppressed = (suppressed > 0).then_some(suppressed);
            ::tracing::$event!($($($field)+,)? suppressed, $kind);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::tests::capture;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn one_line_per_interval_and_the_next_one_says_how_many_were_not_written() {
        static KIND: Throttle = Throttle::new(Level::WARN, "a kind");
        let t0 = Instant::now();
        assert_eq!(KIND.admit_at(t0), Some(0), "the first is written");
        for i in 1..1000 {
            assert_eq!(KIND.admit_at(t0 + secs(i as f64 / 100.0)), None);
        }
        assert_eq!(KIND.admit_at(t0 + secs(9.999)), None);
        assert_eq!(
            KIND.admit_at(t0 + INTERVAL),
            Some(1000),
            "the first after the interval carries the count"
        );
        assert_eq!(KIND.admit_at(t0 + INTERVAL + secs(1.0)), None);
        assert_eq!(KIND.admit_at(t0 + secs(60.0)), Some(1));
        assert_eq!(KIND.admit_at(t0 + secs(75.0)), Some(0));
    }

    #[test]
    fn an_interval_over_writes_its_count_once_and_a_quiet_one_nothing() {
        let t0 = Instant::now();
        let mut w = Window {
            opened: None,
            suppressed: 0,
        };
        assert_eq!(w.close(t0), None, "nothing occurred");
        assert_eq!(w.occur(t0), Some(0));
        assert_eq!(w.close(t0 + secs(20.0)), None, "only the first occurred");
        assert_eq!(w.opened, None, "so the next is written at once");
        assert_eq!(w.occur(t0 + secs(21.0)), Some(0));
        w.occur(t0 + secs(22.0));
        w.occur(t0 + secs(23.0));
        assert_eq!(w.close(t0 + secs(30.0)), None, "not over yet");
        assert_eq!(w.close(t0 + secs(31.0)), Some(2));
        assert_eq!(
            w.occur(t0 + secs(32.0)),
            None,
            "the count's line opened the next interval"
        );
        assert_eq!(w.close(t0 + secs(41.0)), Some(1));
        assert_eq!(w.close(t0 + secs(51.0)), None);
        assert_eq!(w.occur(t0 + secs(51.5)), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_writes_one_line_per_interval_with_its_count() {
        let written = capture(|| async {
            tokio::spawn(report_suppressed());
            // 100 a second for 25 seconds.
            for _ in 0..2500 {
                crate::throttled!(warn, "a flood", source = "127.0.0.1", bytes = 3u64);
                tokio::time::sleep(secs(0.01)).await;
            }
            tokio::time::sleep(secs(30.0)).await;
        })
        .await;
        let lines: Vec<&str> = written.lines().filter(|l| l.contains("a flood")).collect();
        // Written at 0 s, then a line at about 10, 20 and 30 s; none at 40.
        assert_eq!(lines.len(), 4, "{written}");
        assert!(
            lines[0].ends_with(
                " WARN mgnt::logging::throttle::tests: a flood source=\"127.0.0.1\" bytes=3"
            ),
            "{}",
            lines[0]
        );
        // Each occurrence is written (with its fields) or counted once.
        let mut accounted = 0;
        for line in &lines {
            assert!(line.contains(" WARN "), "{line}");
            if line.contains("source=") {
                accounted += 1;
            }
            if let Some((_, n)) = line.rsplit_once("suppressed=") {
                accounted += n.parse::<u64>().unwrap();
            }
        }
        assert_eq!(accounted, 2500, "{written}");
    }
}
