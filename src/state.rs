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

/// Writes `bytes` to `path` so that a crash leaves either the old file or the
/// new one: a temp file in the same directory, fsync, rename, fsync the directory.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
    }
}
