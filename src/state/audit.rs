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
    /// `drain`, `undrain`, `reload`, `drain-ended` or `reboot`.
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A reboot's site.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    pub outcome: String,
    /// A reload's new config hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// What a reload could not apply (it waits for a restart).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub needs_restart: Vec<String>,
}

impl Entry {
    /// An entry with no region, reason or time limit.
    pub fn new(time: u64, token: &str, action: &'static str, outcome: impl Into<String>) -> Self {
        Self {
            time,
            token: token.to_owned(),
            action,
            region: None,
            site: None,
            reason: None,
            until: None,
            force: false,
            outcome: outcome.into(),
            config_hash: None,
            needs_restart: Vec::new(),
        }
    }
}

/// Appends `entries` to the log at `path` and syncs it.
pub fn append(path: &Path, entries: &[Entry]) -> std::io::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::durable::private_dir(dir)?;
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

/// A line of an audit log that is not an entry.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct BadLine {
    /// Counted from 1.
    pub line: usize,
    pub reason: String,
}

/// The entries of an audit log's text as written (JSON objects) with their
/// times, blank lines skipped; the first line that is not an entry refuses
/// the whole text, so a copy never silently drops part of the record.
pub fn read_lines(text: &str) -> Result<Vec<(u64, serde_json::Value)>, BadLine> {
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| BadLine {
            line: i + 1,
            reason,
        };
        let entry: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
        let time = entry
            .get("time")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| bad("no `time` in seconds since 1970".into()))?;
        if entry
            .get("action")
            .and_then(serde_json::Value::as_str)
            .is_none()
        {
            return Err(bad("no `action`".into()));
        }
        entries.push((time, entry));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_reads_back_as_written_and_a_torn_line_is_named() {
        let mut drain = Entry::new(1_700_000_000, "ops", "drain", "drained");
        drain.region = Some("europe1".into());
        drain.reason = Some("maintenance".into());
        let mut reload = Entry::new(1_700_000_100, "SIGHUP", "reload", "reloaded");
        reload.config_hash = Some("0123456789abcdef".into());
        reload.needs_restart = vec!["dns.listen".into()];
        let text = format!(
            "{}\n\n{}\n",
            serde_json::to_string(&drain).unwrap(),
            serde_json::to_string(&reload).unwrap()
        );
        let read = read_lines(&text).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].0, 1_700_000_000);
        assert_eq!(read[0].1, serde_json::to_value(&drain).unwrap());
        assert_eq!(read[1].1["action"], "reload");
        assert_eq!(
            read[1].1["needs_restart"],
            serde_json::json!(["dns.listen"])
        );
        assert!(
            read[0].1.get("needs_restart").is_none(),
            "left out when empty"
        );

        let torn = format!("{text}{{\"time\":1700000200,\"tok");
        let e = read_lines(&torn).unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        let e = read_lines("{\"action\":\"drain\"}\n").unwrap_err();
        assert_eq!((e.line, e.reason.contains("time")), (1, true), "{e}");
        let e = read_lines("{\"time\":5}\n").unwrap_err();
        assert!(e.reason.contains("action"), "{e}");
        assert_eq!(read_lines("").unwrap(), []);
    }
}
