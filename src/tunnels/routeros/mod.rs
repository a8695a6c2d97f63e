//! RouterOS scripts: the job that (re)creates a site's tunnel ([`job`]),
//! the bootstrap that installs a router's poller ([`poller`]), what each
//! release accepts ([`version`], one table with sources) and a checker for
//! scripts run with `/import` ([`check`]).

pub mod check;
pub mod job;
pub mod poller;
mod text;
pub mod version;

pub use job::{Ca, TunnelScript};
pub use poller::Poller;
pub use version::{ScriptError, Version};

#[cfg(test)]
mod tests;
