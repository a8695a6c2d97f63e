//! VPN log ingestion: the regional OpenVPN servers' logs → sessions, auth
//! attempts, traffic and latency. So far: the line parser ([`parse`]) and the
//! session tracker ([`sessions`]), both pure.

pub mod framing;
pub mod ingest;
pub mod parse;
pub mod sessions;
pub mod store;
