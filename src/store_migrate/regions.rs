//! Region state's copy: the state file's drains and the audit log's entries
//! into the `drains` and `audit` tables of [`crate::state::pg`]. Health is
//! each node's own view and is not copied: a node's first probe rounds make it.

use std::path::{Path, PathBuf};

use deadpool_postgres::Transaction;
use tokio_postgres::{binary_copy::BinaryCopyInWriter, types::Type};

use super::MigrateError;
use crate::state::{audit, drain::Drains, file};

/// What was copied, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub drains: u64,
    pub audit: u64,
    pub state_file: PathBuf,
    pub state_file_found: bool,
    pub audit_log: PathBuf,
    pub audit_log_found: bool,
}

/// The state file's drains and the audit log's entries, read and checked.
pub(super) struct Source {
    drains: Drains,
    audit: Vec<(u64, serde_json::Value)>,
    state_file: PathBuf,
    state_file_found: bool,
    audit_log: PathBuf,
    audit_log_found: bool,
}

impl Source {
    /// Reads both files; a missing one holds nothing, an unreadable one is refused.
    pub(super) fn read(state_file: &Path, audit_log: &Path) -> Result<Self, MigrateError> {
        let saved = file::read(state_file)?;
        let text = match std::fs::read_to_string(audit_log) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(MigrateError::Io {
                    file: audit_log.to_owned(),
                    source,
                });
            }
        };
        let audit = match &text {
            Some(text) => audit::read_lines(text).map_err(|source| MigrateError::AuditLog {
                file: audit_log.to_owned(),
                source,
            })?,
            None => Vec::new(),
        };
        Ok(Self {
            state_file_found: saved.is_some(),
            drains: saved.map(|s| s.drains).unwrap_or_default(),
            audit,
            state_file: state_file.to_owned(),
            audit_log: audit_log.to_owned(),
            audit_log_found: text.is_some(),
        })
    }

    /// Writes the drains (announced to running nodes at the commit, as a
    /// node's own drains are) and the audit entries, as node `node`'s.
    pub(super) async fn copy(
        &self,
        tx: &Transaction<'_>,
        node: &str,
    ) -> Result<Copied, MigrateError> {
        for (region, d) in &self.drains.0 {
            let (since, until) = (secs(d.since), d.until.map(secs));
            tx.execute(
                "INSERT INTO drains (region, reason, by_token, since, until) VALUES ($1, $2, $3, $4, $5)",
                &[region, &d.reason, &d.by, &since, &until],
            )
            .await?;
        }
        if !self.drains.0.is_empty() {
            tx.execute("UPDATE drains_version SET version = version + 1", &[])
                .await?;
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&crate::state::pg::CHANNEL, &node],
            )
            .await?;
        }
        let sink = tx
            .copy_in("COPY audit (time, node, entry) FROM STDIN (FORMAT binary)")
            .await?;
        let types = [Type::INT8, Type::TEXT, Type::JSONB];
        let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &types));
        for (time, entry) in &self.audit {
            writer.as_mut().write(&[&secs(*time), &node, entry]).await?;
        }
        let audit = writer.finish().await?;
        Ok(Copied {
            drains: self.drains.0.len() as u64,
            audit,
            state_file: self.state_file.clone(),
            state_file_found: self.state_file_found,
            audit_log: self.audit_log.clone(),
            audit_log_found: self.audit_log_found,
        })
    }
}

fn secs(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}
