//! Leases on routers' live-view connections: with several nodes on one
//! database, the node holding a router's lease is the one that holds its
//! API connection, and the other nodes relay their viewers from it (at the
//! `api_url` the lease records). A single machine holds every lease.

use uuid::Uuid;

use super::StoreError;

/// Who asks for a lease.
#[derive(Debug, Clone, Copy)]
pub struct Lessee<'a> {
    pub node: &'a str,
    /// Where the other nodes reach this node's API.
    pub api_url: &'a str,
}

/// Who holds a router's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// The asking node (or nobody, for [`LeaseStore::live_lease_holder`]).
    Us,
    Other {
        node: String,
        api_url: String,
    },
}

pub trait LeaseStore {
    /// Takes or renews `site`'s lease for `who` until `until`, unless
    /// another node holds one that has not expired at `now`: then that node.
    fn take_live_lease(
        &self,
        site: Uuid,
        who: Lessee<'_>,
        now: u64,
        until: u64,
    ) -> Result<Holder, StoreError>;
    /// Another node holding `site`'s lease at `now`, or [`Holder::Us`].
    fn live_lease_holder(&self, site: Uuid, node: &str, now: u64) -> Result<Holder, StoreError>;
    /// Gives `site`'s lease up, if `node` holds it.
    fn release_live_lease(&self, site: Uuid, node: &str) -> Result<(), StoreError>;
}
