//! Confirming a reboot: the router must come back with an uptime that began
//! after the reboot was sent. A router that reboots closes every connection
//! and its tunnel on the way down, so an uptime that restarted is proof of
//! both; an uptime that kept counting means it never went down.

use std::{sync::Arc, time::Duration};

use tracing::{info, warn};
use uuid::Uuid;

use super::{api::Command, hub::Hub, resource::Resource};
use crate::{
    clock,
    tunnels::store::{Store, reboots::RebootState},
};

/// Whether a router whose uptime read `uptime` seconds at `now` booted after
/// `sent` (both seconds since 1970; a second of slack for the rounding of
/// RouterOS's uptime and of our clock).
pub fn booted_after(sent: u64, now: u64, uptime: u64) -> bool {
    now.saturating_sub(uptime) + 1 >= sent
}

/// How often a reboot is looked at: twenty looks within `timeout`, between
/// one and fifteen seconds apart.
pub fn check_every(timeout: Duration) -> Duration {
    (timeout / 20).clamp(Duration::from_secs(1), Duration::from_secs(15))
}

/// Watches reboot `id` of `site`, sent at `sent`, until the router confirms
/// it or `timeout` passes, and records which. Another node's GET reads the
/// outcome from the store; a node that stops watching leaves it to the
/// timeout (see [`crate::tunnels::store::reboots::Reboot::at`]).
pub async fn watch(
    hub: Arc<Hub>,
    store: Arc<dyn Store>,
    id: Uuid,
    site: Uuid,
    sent: u64,
    timeout: Duration,
) {
    let every = check_every(timeout);
    let deadline = tokio::time::Instant::now() + timeout;
    let state = loop {
        tokio::time::sleep(every).await;
        if tokio::time::Instant::now() >= deadline {
            break RebootState::Unconfirmed;
        }
        // Down, or still going down: look again.
        let Ok(rows) = hub.call(site, Command::ResourcePrint).await else {
            continue;
        };
        let resource = rows.first().and_then(Resource::parse);
        if resource.is_some_and(|r| booted_after(sent, clock::now(), r.uptime)) {
            break RebootState::Confirmed;
        }
    };
    let recorded =
        tokio::task::spawn_blocking(move || store.set_reboot(id, state, clock::now(), None)).await;
    match (state, recorded) {
        (RebootState::Confirmed, Ok(Ok(_))) => info!(%site, reboot = %id, "reboot confirmed"),
        (_, Ok(Ok(_))) => {
            warn!(%site, reboot = %id, "reboot unconfirmed: the router did not come back with a new uptime in time")
        }
        (_, Ok(Err(e))) => {
            warn!(%site, reboot = %id, error = %e, "cannot record a reboot's outcome")
        }
        (_, Err(e)) => warn!(%site, reboot = %id, error = %e, "cannot record a reboot's outcome"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reboot_is_confirmed_by_an_uptime_younger_than_it() {
        // Sent at 1000; seen at 1040.
        assert!(booted_after(1000, 1040, 35), "booted at 1005");
        assert!(
            booted_after(1000, 1040, 41),
            "at 999: within the second of slack"
        );
        assert!(!booted_after(1000, 1040, 42), "at 998: before the reboot");
        assert!(!booted_after(1000, 1040, 300_000), "never went down");
        assert!(
            !booted_after(1000, 10, 300_000),
            "a clock behind does not underflow"
        );
    }

    #[test]
    fn looks_are_spread_over_the_timeout() {
        let s = Duration::from_secs;
        assert_eq!(check_every(s(600)), s(15));
        assert_eq!(check_every(s(60)), s(3));
        assert_eq!(check_every(s(5)), s(1));
    }
}
