//! The state file: last-known health and the drains, written together.
//!
//! A restart must not forget a dead region or an operator's drain. The file is
//! replaced atomically on every change; a missing or corrupt file only costs
//! the history, never the start.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::drain::Drains;
use crate::health::{machine::Status, probe::Round};

const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    pub version: u32,
    pub regions: BTreeMap<String, SavedRegion>,
    #[serde(default)]
    pub drains: Drains,
}

#[derive(Debug, Serialize, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SavedRegion {
    pub status: Status,
    /// Seconds since 1970 of the last transition.
    pub since: Option<u64>,
    pub last: Option<Round>,
}

/// Why a state file that exists cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: not a state file: {source}")]
    Corrupt {
        file: PathBuf,
        source: serde_json::Error,
    },
    #[error("{file}: state file version {version}, this mgnt knows {VERSION}")]
    Version { file: PathBuf, version: u32 },
}

/// Reads the state file: `None` when there is none.
pub fn read(path: &Path) -> Result<Option<StateFile>, ReadError> {
    let file = || path.to_owned();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ReadError::Io {
                file: file(),
                source,
            });
        }
    };
    match serde_json::from_str::<StateFile>(&text) {
        Ok(f) if f.version == VERSION => Ok(Some(f)),
        Ok(f) => Err(ReadError::Version {
            file: file(),
            version: f.version,
        }),
        Err(source) => Err(ReadError::Corrupt {
            file: file(),
            source,
        }),
    }
}

/// Reads the state file; `None` (with a warning when it exists but cannot
/// be used) for a fresh start.
pub fn load(path: &Path) -> Option<StateFile> {
    read(path).unwrap_or_else(|error| {
        warn!(%error, "cannot use the state file; starting fresh");
        None
    })
}

impl StateFile {
    pub fn new(regions: BTreeMap<String, SavedRegion>, drains: Drains) -> Self {
        Self {
            version: VERSION,
            regions,
            drains,
        }
    }
}

/// Replaces the state file with `state` (temp file, fsync, rename).
pub fn save(path: &Path, state: &StateFile) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    crate::durable::write_atomic(path, &bytes)
}
