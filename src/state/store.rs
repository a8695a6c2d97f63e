//! Where region state is persisted: the state owner's storage boundary.
//!
//! The owner saves once per batch of commands, and acknowledges a drain,
//! undrain or reload only after [`StateStore::save`] returned. The default
//! store is the state file (health and drains, replaced atomically) plus the
//! audit log (JSON lines); a database store plugs in behind the same trait.

use std::path::PathBuf;

use tracing::warn;

use super::{
    audit,
    file::{self, StateFile},
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("the database: {0}")]
    Db(String),
}

#[async_trait::async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The saved state; `None` for a fresh start (nothing saved, or
    /// unreadable: logged, never a refusal to start).
    async fn load(&self) -> Option<StateFile>;

    /// Persists `state` and records `audit`.
    async fn save(&self, state: StateFile, audit: Vec<audit::Entry>) -> Result<(), StoreError>;

    /// The drains as the store holds them (other nodes write there too),
    /// each time they change; taken once, by the owner. `None`: no one else
    /// writes.
    fn shared(&self) -> Option<tokio::sync::mpsc::Receiver<Shared>> {
        None
    }

    /// The other nodes' health votes, all of them each time they are read;
    /// taken once, by the owner. `None`: no other node votes.
    fn votes(&self) -> Option<tokio::sync::mpsc::Receiver<crate::health::quorum::Votes>> {
        None
    }

    /// The version of the drains this node saved last: a [`Shared`] read
    /// older than it predates our own change and is not adopted.
    fn saved_version(&self) -> u64 {
        0
    }
}

/// The drains as read from a shared store, and their version there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    pub version: u64,
    pub drains: super::drain::Drains,
}

/// The state file and the audit log.
pub struct FileStore {
    pub state_file: PathBuf,
    pub audit_log: PathBuf,
}

#[async_trait::async_trait]
impl StateStore for FileStore {
    async fn load(&self) -> Option<StateFile> {
        let path = self.state_file.clone();
        tokio::task::spawn_blocking(move || file::load(&path))
            .await
            .ok()
            .flatten()
    }

    /// The state file is the record: a change is persisted once it is
    /// renamed into place. The audit lines are appended after it; failing to
    /// append them is logged and does not undo the change.
    async fn save(&self, state: StateFile, audit: Vec<audit::Entry>) -> Result<(), StoreError> {
        let (state_file, audit_log) = (self.state_file.clone(), self.audit_log.clone());
        let written = tokio::task::spawn_blocking(move || {
            file::save(&state_file, &state).map_err(|source| StoreError::Io {
                file: state_file.clone(),
                source,
            })?;
            if let Err(error) = audit::append(&audit_log, &audit) {
                warn!(file = %audit_log.display(), %error, "cannot append to the audit log");
            }
            Ok(())
        })
        .await;
        written.unwrap_or_else(|e| {
            Err(StoreError::Io {
                file: self.state_file.clone(),
                source: std::io::Error::other(e),
            })
        })
    }
}
