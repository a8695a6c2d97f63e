//! VPN log ingestion: the regional OpenVPN servers' logs → sessions, auth
//! attempts, traffic and latency. So far: the line parser ([`parse`]).

pub mod parse;
