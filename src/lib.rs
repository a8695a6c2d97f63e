//! mgnt: the control plane of a management VPN for MikroTik routers.
//!
//! # Layout
//!
//! - [`config`]: `mgnt.toml` → a validated [`config::Config`].
//! - [`geo`]: where a client is (GeoIP database + country centroids).
//! - [`route`]: which region answers (pure: distance, overrides, failover, fail-open).
//! - [`health`]: probes (TCP, ICMP), the rise/fall machine, the probe scheduler, the state file.
//! - [`state`]: the region states queries read, swapped whole by writers; atomic file writes.
//! - [`dns`]: zones, geo names, ECS, the responder and the UDP/TCP listeners.
//! - [`explain`]: why a client gets its answer (`mgnt lookup`).

pub mod config;
pub mod dns;
pub mod explain;
pub mod geo;
pub mod health;
pub mod route;
pub mod state;
