//! mgnt: the control plane of a management VPN for MikroTik routers.
//!
//! # Layout
//!
//! - [`admin`]: the authenticated HTTP API (regions, drains, explain, reload, metrics).
//! - [`server`]: `mgnt serve` — wiring, reload, signals.
//! - [`config`]: `mgnt.toml` → a validated [`config::Config`].
//! - [`geo`]: where a client is (GeoIP database + country centroids).
//! - [`route`]: which region answers (pure: distance, overrides, failover, fail-open).
//! - [`health`]: probes (TCP, ICMP), the rise/fall machine, the probe scheduler, the state file.
//! - [`state`]: drains, the view queries read (health × drains), the state file, atomic writes.
//! - [`dns`]: zones, geo names, ECS, the responder and the UDP/TCP listeners.
//! - [`metrics`]: lock-free counters and histograms, Prometheus text.
//! - [`tunnels`]: provisioning: username codec, CGNAT pool, RouterOS and OpenVPN files, SQLite store.
//! - [`vpnlog`]: OpenVPN log ingestion (for now the line parser).
//! - [`explain`]: why a client gets its answer (`mgnt lookup`).

pub mod admin;
pub mod config;
pub mod dns;
pub mod explain;
pub mod geo;
pub mod health;
pub mod metrics;
pub mod route;
pub mod server;
pub mod state;
pub mod tunnels;
pub mod vpnlog;
