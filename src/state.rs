//! The region states every query reads: one immutable snapshot, replaced whole.

use crate::route::RegionState;

/// Serving state per region, indexed like [`crate::config::Config::regions`].
///
/// Health checks and drains build a new view and swap it into the
/// [`crate::dns::answer::Responder`]; queries never wait for them.
#[derive(Debug, Clone, Default)]
pub struct RegionView {
    pub states: Vec<RegionState>,
}

impl RegionView {
    /// Every region serving: the state before any health information exists.
    pub fn all_serving(regions: usize) -> Self {
        Self {
            states: vec![RegionState::default(); regions],
        }
    }
}
