//! VPN log ingestion: the regional OpenVPN servers' logs, management
//! interfaces and status files → sessions, auth attempts, traffic and
//! latency. Parsing ([`parse`], [`status`], [`management`]) and session
//! tracking ([`sessions`]) are pure; [`ingest`], [`watch`] and [`latency`]
//! are the I/O around them; [`store`] keeps the records.

pub mod framing;
pub mod ingest;
pub mod latency;
pub mod management;
pub mod parse;
pub mod report;
pub mod service;
pub mod sessions;
pub mod status;
pub mod store;
pub mod syslog;
pub mod udp;
pub mod watch;
