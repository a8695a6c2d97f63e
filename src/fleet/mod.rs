//! Several nodes on one database (`[store]`): each publishes a hash of what
//! it loaded, so nodes that would answer differently are reported.
//!
//! - [`hash`]: the config hash (pure): the shared part of the configuration,
//!   the zones' records, the GeoIP data.

pub mod hash;

pub use hash::{ConfigHash, config_hash};
