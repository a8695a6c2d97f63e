//! Wall-clock time as the JSON API and the stores speak it: seconds since 1970.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

/// Seconds since 1970.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `secs` (since 1970) as RFC 3339 in UTC, for log lines.
pub fn rfc3339(secs: u64) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// A source of [`now`], injectable so tests can drive drain expiry with
/// tokio's paused clock.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(now)
}
