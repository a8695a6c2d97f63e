//! What the copies share: a private copy of a single machine's SQLite file
//! to read from, binary `COPY` into PostgreSQL, and why a copy stopped.

use std::path::{Path, PathBuf};

use deadpool_postgres::Transaction;
use rusqlite::{Connection, OpenFlags};
use tokio_postgres::{binary_copy::BinaryCopyInWriter, types::Type};
use uuid::Uuid;

use super::MigrateError;

/// Why a copy stopped, before the file it concerns is put to it.
pub(super) enum Fault {
    Sqlite(rusqlite::Error),
    Db(MigrateError),
    Corrupt(String),
    WrongKey(Uuid),
}

impl Fault {
    /// The error naming `file` (and `key`, the key file, for a secret that
    /// does not open with it).
    pub(super) fn about(self, file: &Path, key: &Path) -> MigrateError {
        let file = file.to_owned();
        match self {
            Self::Sqlite(source) => MigrateError::Sqlite { file, source },
            Self::Db(e) => e,
            Self::Corrupt(what) => MigrateError::Corrupt { file, what },
            Self::WrongKey(job) => MigrateError::WrongKey {
                file,
                job,
                key: key.to_owned(),
            },
        }
    }
}

impl From<rusqlite::Error> for Fault {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e)
    }
}

impl From<tokio_postgres::Error> for Fault {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e.into())
    }
}

/// A binary `COPY … FROM STDIN` into `table`'s `columns`.
pub(super) async fn copy_in(
    tx: &Transaction<'_>,
    table: &str,
    columns: &str,
    types: &[Type],
) -> Result<BinaryCopyInWriter, Fault> {
    let sink = tx
        .copy_in(&format!(
            "COPY {table} ({columns}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    Ok(BinaryCopyInWriter::new(sink, types))
}

/// A private copy of a SQLite database (mode 0600: it holds digests and
/// sealed secrets), removed on drop with whatever journal SQLite left beside it.
#[derive(Debug)]
pub(super) struct Scratch {
    pub(super) path: PathBuf,
}

impl Scratch {
    /// Copies `source` consistently without changing it; a missing file is
    /// an error (never a new, empty store).
    pub(super) fn of(source: &Path) -> Result<Self, MigrateError> {
        use std::os::unix::fs::OpenOptionsExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "mgnt-migrate-{}-{nanos:08x}.db",
            std::process::id()
        ));
        // `VACUUM INTO` fills an empty file; creating it first sets its mode.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| MigrateError::Io {
                file: path.clone(),
                source,
            })?;
        let scratch = Self { path };
        let fail = |e: rusqlite::Error| MigrateError::Sqlite {
            file: source.to_owned(),
            source: e,
        };
        // Read-only: closing it does not even checkpoint the write-ahead log.
        let db =
            Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(fail)?;
        db.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(fail)?;
        let into = scratch.path.to_str().ok_or_else(|| MigrateError::Io {
            file: scratch.path.clone(),
            source: std::io::Error::other("not UTF-8"),
        })?;
        db.execute("VACUUM INTO ?1", [into]).map_err(fail)?;
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut file = self.path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}
