//! The live view: a router's interface traffic and log events as they
//! happen, shown read-only in the web portal. mgnt opens the router's
//! RouterOS API (TCP 8728, through the management VPN), sends only the
//! commands of [`api::Command`] and streams what comes back.

pub mod api;
pub mod connect;
pub mod hub;
pub mod message;
pub mod reboot;
pub mod relay;
pub mod resource;

use std::sync::Arc;

use crate::{config::LiveConfig, state::Reader, tunnels::store::Store, vpnlog::store::LogStore};

/// A lock whose holder panicked still guards consistent data here (each
/// writer finishes its change before it could panic): take it anyway.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The hub's limits from `[live]`.
pub fn limits(live: &LiveConfig) -> hub::Limits {
    hub::Limits {
        max_viewers_per_router: live.max_viewers_per_router,
        max_streams_per_user: live.max_streams_per_user,
        linger: live.linger,
    }
}

/// The hub of a node: routers reached through the agent holding their
/// session (when it has a channel to this node) or at their tunnel address,
/// reading `[live]` from the running config at every open.
pub fn hub(
    store: Arc<dyn Store>,
    logs: Option<Arc<dyn LogStore>>,
    relays: Arc<relay::Relays>,
    state: Reader,
) -> hub::Hub {
    let live = state.load().data.config.live.clone();
    let limits = live
        .as_ref()
        .map_or_else(|| limits(&crate::config::LiveConfig::default()), limits);
    let connector = connect::Reach {
        store,
        logs,
        relays,
        state,
        timeouts: api::Timeouts::default(),
    };
    hub::Hub::new(Arc::new(connector), limits)
}
