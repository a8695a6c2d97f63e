//! The audit log: one JSON line per operator action (and per drain that ended
//! by itself), appended and synced.

use std::{io::Write, path::Path};

use serde::Serialize;

/// One audited action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Seconds since 1970.
    pub time: u64,
    /// Who acted: the API token's name, `SIGHUP`, or `mgnt` for a drain's end.
    pub token: String,
    /// `drain`, `undrain`, `reload` or `drain-ended`.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    pub outcome: String,
}

impl Entry {
    /// An entry with no region, reason or time limit.
    pub fn new(time: u64, token: &str, action: &'static str, outcome: impl Into<String>) -> Self {
        Self {
            time,
            token: token.to_owned(),
            action,
            region: None,
            reason: None,
            until: None,
            force: false,
            outcome: outcome.into(),
        }
    }
}

/// Appends `entries` to the log at `path` and syncs it.
pub fn append(path: &Path, entries: &[Entry]) -> std::io::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut lines = Vec::new();
    for entry in entries {
        serde_json::to_writer(&mut lines, entry).map_err(std::io::Error::other)?;
        lines.push(b'\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(&lines)?;
    f.sync_data()
}
