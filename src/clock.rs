//! Wall-clock time as the JSON API and the stores speak it: seconds since 1970.

use std::{sync::Arc, time::SystemTime};

/// Seconds since 1970.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A source of [`now`], injectable so tests can drive drain expiry with
/// tokio's paused clock.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(now)
}
