//! Durable file writes: a crash leaves the old file or the new one, never a mix.

use std::{io::Write, path::Path};

/// Writes `bytes` to `path` through a temp file in the same directory, fsync,
/// rename, and an fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
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

/// Creates `dir` and its missing parents mode 0700, whatever the umask: the
/// directories of secrets and records are the owner's only (an existing
/// directory is left as the operator made it).
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Makes `path` a file only its owner can read and write, whatever the
/// umask: created empty (mode 0600) when missing, tightened when it exists,
/// and so are the journal files SQLite keeps beside a database (`-wal`,
/// `-shm`, `-journal`), which SQLite creates with the database's mode.
pub fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let private = std::fs::Permissions::from_mode(0o600);
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, private.clone())?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        match std::fs::set_permissions(&side, private.clone()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Why a secret file gave no secret.
#[derive(Debug)]
pub enum SecretFileError {
    Io(std::io::Error),
    /// Not `N` bytes of hex on one line.
    Format,
    /// The system's random generator failed.
    Random,
}

/// Reads a file holding `N` random bytes in hex (one line), made the
/// owner's only when others could read it (a secret copied in with `cp`
/// follows the umask); when it is missing and `create`, writes a fresh
/// random one, 0600 from the start.
pub fn hex_secret<const N: usize>(path: &Path, create: bool) -> Result<[u8; N], SecretFileError> {
    use data_encoding::HEXLOWER_PERMISSIVE;
    match std::fs::read_to_string(path) {
        Ok(text) => {
            tighten(path).map_err(SecretFileError::Io)?;
            let bytes = HEXLOWER_PERMISSIVE.decode(text.trim().as_bytes());
            bytes
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or(SecretFileError::Format)
        }
        Err(e) if create && e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; N];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
                .map_err(|_| SecretFileError::Random)?;
            let text = format!("{}\n", HEXLOWER_PERMISSIVE.encode(&secret));
            create_private(path, text.as_bytes()).map_err(SecretFileError::Io)?;
            Ok(secret)
        }
        Err(e) => Err(SecretFileError::Io(e)),
    }
}

/// Takes group and other permissions away from an existing file (a secret
/// copied in with `cp` follows the umask).
pub fn tighten(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

/// Writes a new secret file: mode 0600 from the start (no moment when
/// others could read it), synced, never replacing an existing one.
pub fn create_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        private_dir(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    if let Some(dir) = dir {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
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
