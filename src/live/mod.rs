//! The live view: a router's interface traffic and log events as they
//! happen, shown read-only in the web portal. mgnt opens the router's
//! RouterOS API (TCP 8728, through the management VPN), sends only the
//! commands of [`api::Command`] and streams what comes back.

pub mod api;
pub mod connect;
pub mod hub;
pub mod message;
