//! mgnt: the control plane of a management VPN for MikroTik routers.
//!
//! # Layout
//!
//! Pure parts first, then the one owner of region state, then the edges:
//!
//! - [`config`]: `mgnt.toml` → a validated [`config::Config`].
//! - [`clock`], [`durable`]: epoch seconds; atomic file writes (temp file, fsync, rename).
//! - [`geo`]: the GeoIP database and country centroids (records, networks, locations).
//! - [`route`]: the pure decision: rank regions by distance and overrides, take the
//!   first serving one of an order, fail open.
//! - [`locate`]: "where" as one unit: a client (address or ECS prefix) → every geo
//!   name's region order and the ECS scope, precomputed at load per GeoIP record
//!   and override prefix.
//! - [`health`]: probes (TCP, ICMP), the rise/fall machine, the probe loops (which
//!   report rounds to the state owner).
//! - [`dns`]: zones, geo names, ECS, and answers (the full path and the fast path)
//!   from one load's data and one region view.
//! - [`state`]: the state owner (machines, drains, loaded data), the snapshot it
//!   publishes, its storage boundary (state file and audit log).
//! - [`listen`]: DNS over UDP (batched threads) and TCP, answering from snapshots.
//! - [`explain`]: why a client gets its answer (`mgnt lookup`, `/v1/explain`).
//! - [`agent`]: `mgnt agent`, beside each OpenVPN server: logins through the
//!   management interface from a credential cache kept in step with the control plane.
//! - [`admin`]: the authenticated HTTP API (regions, drains, explain, reload,
//!   metrics, provisioning, VPN logs).
//! - [`routers`]: the router endpoint, where routers pull their jobs with per-site tokens.
//! - [`edge`]: bounded listeners (connection caps, time limits, TLS) for what comes from outside.
//! - [`metrics`]: lock-free counters and histograms, Prometheus text.
//! - [`tunnels`]: provisioning: username codec, CGNAT pool, RouterOS and OpenVPN
//!   files, SQLite store.
//! - [`vpnlog`]: OpenVPN log ingestion: syslog, management interface, status files.
//! - [`live`]: the live view's RouterOS API client, restricted to an allowlist
//!   of commands: reads (interface traffic, log events, resources) and a reboot.
//! - [`fleet`]: nodes on one database: each claims its name, publishes its
//!   config hash (config, zones, GeoIP data), and compares it with the others'.
//! - [`server`]: `mgnt serve`: starts everything, signals.
//! - [`store_migrate`]: `mgnt store migrate`: a single machine's stores copied
//!   into the `[store]` database.
//! - [`cli`]: the other commands of the command line.
//! - [`logging`]: log lines (RFC 3339 times, the node's name for `mgnt serve`), and
//!   at most one per kind and interval for what the network can set off again and again.

pub mod admin;
pub mod agent;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dns;
pub mod durable;
pub mod edge;
pub mod explain;
pub mod fleet;
pub mod geo;
pub mod health;
pub mod listen;
pub mod live;
pub mod locate;
pub mod logging;
pub mod management;
pub mod metrics;
pub mod notify;
pub mod pg;
pub mod route;
pub mod routers;
pub mod server;
pub mod state;
pub mod store_migrate;
pub mod tunnels;
pub mod vpnlog;

#[cfg(test)]
pub(crate) mod testing;
