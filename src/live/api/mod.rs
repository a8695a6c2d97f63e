//! The RouterOS API: [`word`] (bytes ↔ sentences), [`command`] (the
//! allowlist of sentences mgnt sends), [`reply`] (the sentences a router
//! answers with) and [`Client`] (one connection, commands multiplexed by
//! `.tag`, streams with bounded queues).
//!
//! Written from MikroTik's API manual (<https://help.mikrotik.com/docs/x/DoC4Bw>):
//! plain login only (the challenge login was removed in RouterOS 6.45.1),
//! `!empty` accepted (RouterOS 7.18 and later), and late replies to a
//! cancelled command dropped.

pub mod client;
pub mod command;
mod connection;
mod demux;
mod error;
pub mod reply;
mod subscription;
pub mod word;

pub use client::{Client, STREAM_QUEUE};
pub use command::{Command, Interfaces, NotAllowed};
pub use connection::Timeouts;
pub use demux::MAX_ITEMS;
pub use error::ClientError;
pub use reply::{Attrs, Reply, ReplyError, Tagged};
pub use subscription::Subscription;
