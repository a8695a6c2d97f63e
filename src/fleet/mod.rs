//! Several nodes on one database (`[store]`): each claims its `[node] name`
//! for as long as it runs, so two nodes with one name are refused, and
//! publishes a hash of what it loaded, so nodes that would answer
//! differently are reported.
//!
//! - [`hash`]: the config hash (pure): the shared part of the configuration,
//!   the zones' records, the GeoIP data.
//! - [`compare`]: the nodes as values: liveness from the held locks, which
//!   differ from this node, what changed since the last look (pure).
//! - [`claim`]: the name's advisory lock and the `nodes` table (I/O).

pub mod claim;
pub mod compare;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use serde::Serialize;

pub use claim::{Claim, ClaimError, Me};
pub use compare::Node;

use crate::{config::hash::ConfigHash, pg::Db};

/// What the node last found of the fleet, for the metrics.
#[derive(Debug, Default)]
pub struct View {
    /// This node holds its name's lock.
    pub held: AtomicBool,
    /// Live nodes, this one included.
    pub live: AtomicU64,
    /// Other live nodes whose config hash differs from this node's.
    pub differing: AtomicU64,
}

/// The fleet as the admin API shows it.
pub struct Fleet {
    pub me: Me,
    /// `None` without `[store]`: the node is alone.
    pub db: Option<Db>,
    pub view: std::sync::Arc<View>,
}

/// A node in `GET /v1/nodes`.
#[derive(Debug, Serialize)]
pub struct Listed {
    #[serde(flatten)]
    pub node: Node,
    /// Its config hash is this node's.
    pub matches: bool,
    /// It is the node that answered.
    pub this: bool,
}

impl Fleet {
    /// Every node the database knows (only this one without `[store]`),
    /// compared with `ours`.
    pub async fn nodes(&self, ours: &ConfigHash) -> Result<Vec<Listed>, crate::pg::DbError> {
        let nodes = match &self.db {
            None => vec![Node {
                name: self.me.name.clone(),
                started: self.me.started,
                last_seen: crate::clock::now(),
                config_hash: ours.to_string(),
                version: self.me.version.to_owned(),
                live: true,
            }],
            Some(db) => claim::nodes(&*db.pool.get().await?).await?,
        };
        Ok(nodes
            .into_iter()
            .map(|node| Listed {
                matches: node.config_hash == ours.as_str(),
                this: node.name == self.me.name,
                node,
            })
            .collect())
    }

    /// Whether this node holds its name (always, alone).
    pub fn holds_name(&self) -> bool {
        self.db.is_none() || self.view.held.load(Relaxed)
    }
}
