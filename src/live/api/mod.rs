//! The RouterOS API: [`word`] (bytes ↔ sentences), [`command`] (the
//! allowlist of sentences mgnt sends) and [`reply`] (the sentences a router
//! answers with).
//!
//! Written from MikroTik's API manual (<https://help.mikrotik.com/docs/spaces/ROS/pages/47579160/API>):
//! plain login only (the challenge login was removed in RouterOS 6.45.1) and
//! `!empty` accepted (RouterOS 7.18 and later).

pub mod command;
pub mod reply;
pub mod word;

pub use command::{Command, Interfaces, NotAllowed};
pub use reply::{Attrs, Reply, ReplyError, Tagged};
