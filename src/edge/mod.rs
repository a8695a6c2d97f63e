//! Listeners for what comes from outside, bounded: a cap on connections in
//! total and per source address (refused and counted beyond it), a time
//! limit on every connection, TLS off loopback ([`tls`]), and HTTP served by
//! hyper with small header and body limits ([`http`]).

pub mod accept;
pub mod bind;
pub mod http;
pub mod sockopt;
pub mod sources;
pub mod tls;
pub mod ws;

pub use http::{EdgeCounters, Limits, serve};
