//! The tunnel store's copy: sites, quarantined addresses, jobs and auth
//! attempts from a single machine's `tunnels.db` into the tables of schema 3
//! in [`crate::pg`].
//!
//! The file itself is never changed: it is copied aside (`VACUUM INTO`,
//! which takes in what its write-ahead log holds too), and the copy is opened
//! as the server opens it, bringing an older schema up to date and sealing
//! job secrets older versions kept in plaintext. Digests and sealed secrets
//! are copied as they are, good only under the same key file: every open
//! job's secret is opened with it first. Each site inserted takes the next
//! credential-change number from the schema's trigger, in the order the
//! single machine numbered them, so an agent asking with `since=0` gets
//! them all.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    pin::pin,
    sync::Arc,
};

use deadpool_postgres::Transaction;
use ipnet::Ipv4Net;
use rusqlite::{Connection, OpenFlags};
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use super::{
    MigrateError,
    scratch::{Fault, Scratch, copy_in},
};
use crate::{
    config::Config,
    tunnels::{
        keys::Keys,
        store::{JobState, SqliteStore},
    },
};

/// The `tunnels.db` schema version this copy reads (the SQLite store's
/// last); another is refused rather than a column it does not know dropped.
/// Versions 7 and 8 added only live-view tickets, which live seconds, and
/// reboot records, whose gap and confirmation last minutes: not copied.
const SCHEMA: i64 = 8;

/// What was copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// The source, `tunnels.db`.
    pub file: PathBuf,
    pub sites: u64,
    pub released: u64,
    pub jobs: u64,
    /// Jobs still to be fetched or applied: their secrets opened with the key file.
    pub open_jobs: u64,
    /// Jobs of sites no longer in the store (older versions left them), not copied.
    pub orphan_jobs: u64,
    pub auth_attempts: u64,
    /// Sites whose address lies outside this config's `[provision] pool`.
    pub outside_pool: u64,
    pub key_file: PathBuf,
    pub pool: Ipv4Net,
}

/// `tunnels.db`, read from a private copy brought up to date.
pub(super) struct Source {
    file: PathBuf,
    db: Connection,
    /// Declared after `db`: removed once the connection is closed.
    _copy: Scratch,
    keys: Arc<Keys>,
    key_file: PathBuf,
    pool: Ipv4Net,
}

impl Source {
    /// `dir`'s `tunnels.db` under `config`'s key file; `None` when there is
    /// none and the config provisions nothing.
    pub(super) fn open(config: &Config, dir: &Path) -> Result<Option<Self>, MigrateError> {
        let file = dir.join("tunnels.db");
        let io = |file: &Path| {
            let file = file.to_owned();
            move |source| MigrateError::Io { file, source }
        };
        let exists = file.try_exists().map_err(io(&file))?;
        let p = match (&config.provision, exists) {
            (None, false) => return Ok(None),
            (None, true) => return Err(MigrateError::NoProvision { file }),
            (Some(_), false) => return Err(MigrateError::NoTunnels { file }),
            (Some(p), true) => p,
        };
        // A new key would leave every digest and sealed secret useless.
        let key_file = p.secret_key_file.clone();
        if !key_file.try_exists().map_err(io(&key_file))? {
            return Err(MigrateError::NoKey { file: key_file });
        }
        let keys = Arc::new(Keys::load_or_create(&key_file)?);
        let copy = Scratch::of(&file)?;
        let lifetimes = crate::tunnels::lifetimes(config);
        let opened = SqliteStore::open_for_checks(&copy.path, keys.clone(), lifetimes);
        drop(opened.map_err(|source| MigrateError::Open {
            file: file.clone(),
            source,
        })?);
        let sqlite = |source| MigrateError::Sqlite {
            file: file.clone(),
            source,
        };
        let db = Connection::open_with_flags(&copy.path, OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(sqlite)?;
        let version: i64 = db
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sqlite)?;
        if version != SCHEMA {
            return Err(MigrateError::Corrupt {
                file,
                what: format!("schema version {version}; this mgnt copies version {SCHEMA}"),
            });
        }
        Ok(Some(Self {
            file,
            db,
            _copy: copy,
            keys,
            key_file,
            pool: p.pool,
        }))
    }

    /// Copies every table inside `tx`.
    pub(super) async fn copy(&self, tx: &Transaction<'_>) -> Result<Copied, MigrateError> {
        self.copy_tables(tx)
            .await
            .map_err(|fault| fault.about(&self.file, &self.key_file))
    }

    async fn copy_tables(&self, tx: &Transaction<'_>) -> Result<Copied, Fault> {
        let (sites, outside_pool) = self.sites(tx).await?;
        let released = self.released(tx).await?;
        let (jobs, open_jobs) = self.jobs(tx).await?;
        let orphan_jobs: i64 = self.db.query_row(
            "SELECT count(*) FROM jobs WHERE site NOT IN (SELECT uuid FROM sites)",
            [],
            |r| r.get(0),
        )?;
        let auth_attempts = self.auth_attempts(tx).await?;
        Ok(Copied {
            file: self.file.clone(),
            sites,
            released,
            jobs,
            open_jobs,
            orphan_jobs: orphan_jobs.max(0) as u64,
            auth_attempts,
            outside_pool,
            key_file: self.key_file.clone(),
            pool: self.pool,
        })
    }

    /// The sites in the order of their change numbers; how many, and how
    /// many lie outside the pool.
    async fn sites(&self, tx: &Transaction<'_>) -> Result<(u64, u64), Fault> {
        const COLUMNS: &str = "uuid, username, address, secret_hash, secret_applied, \
            previous_secret_hash, previous_until, router_token_hash, enrollment_hash, \
            enrollment_version, enrollment_until, created";
        let types = [
            Type::UUID,
            Type::TEXT,
            Type::INET,
            Type::TEXT,
            Type::BOOL,
            Type::TEXT,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::INT8,
        ];
        let mut writer = pin!(copy_in(tx, "sites", COLUMNS, &types).await?);
        let mut stmt = self
            .db
            .prepare(&format!("SELECT {COLUMNS} FROM sites ORDER BY seq, rowid"))?;
        let mut rows = stmt.query([])?;
        let mut outside = 0;
        while let Some(r) = rows.next()? {
            let uuid = parse_uuid(&r.get::<_, String>(0)?)?;
            let address = parse_address(&r.get::<_, String>(2)?)?;
            outside += u64::from(!self.pool.contains(&address));
            let username: String = r.get(1)?;
            let secret_hash: String = r.get(3)?;
            let secret_applied: bool = r.get(4)?;
            let previous: Option<String> = r.get(5)?;
            let previous_until: Option<i64> = r.get(6)?;
            let router_token: Option<String> = r.get(7)?;
            let enrollment: Option<String> = r.get(8)?;
            let enrollment_version: Option<String> = r.get(9)?;
            let enrollment_until: Option<i64> = r.get(10)?;
            let created: i64 = r.get(11)?;
            let row: [&(dyn ToSql + Sync); 12] = [
                &uuid,
                &username,
                &IpAddr::V4(address),
                &secret_hash,
                &secret_applied,
                &previous,
                &previous_until,
                &router_token,
                &enrollment,
                &enrollment_version,
                &enrollment_until,
                &created,
            ];
            writer.as_mut().write(&row).await?;
        }
        Ok((writer.finish().await?, outside))
    }

    /// Quarantined addresses, each with the time it may be reused.
    async fn released(&self, tx: &Transaction<'_>) -> Result<u64, Fault> {
        let mut writer =
            pin!(copy_in(tx, "released", "address, until", &[Type::INET, Type::INT8]).await?);
        let mut stmt = self
            .db
            .prepare("SELECT address, until FROM released ORDER BY address")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let address = IpAddr::V4(parse_address(&r.get::<_, String>(0)?)?);
            let until: i64 = r.get(1)?;
            writer.as_mut().write(&[&address, &until]).await?;
        }
        Ok(writer.finish().await?)
    }

    /// The jobs of the sites copied; how many, and how many are open (each
    /// open job's secret opened with the key file).
    async fn jobs(&self, tx: &Transaction<'_>) -> Result<(u64, u64), Fault> {
        const COLUMNS: &str =
            "id, site, kind, state, secret, attempts, created, fetched, finished, error";
        let types = [
            Type::UUID,
            Type::UUID,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT4,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::TEXT,
        ];
        let mut writer = pin!(copy_in(tx, "jobs", COLUMNS, &types).await?);
        // The PostgreSQL table refers to its site; SQLite's never did.
        let mut stmt = self.db.prepare(&format!(
            "SELECT {COLUMNS} FROM jobs WHERE site IN (SELECT uuid FROM sites) ORDER BY created, rowid"
        ))?;
        let mut rows = stmt.query([])?;
        let mut open = 0;
        while let Some(r) = rows.next()? {
            let id = parse_uuid(&r.get::<_, String>(0)?)?;
            let site = parse_uuid(&r.get::<_, String>(1)?)?;
            let kind: String = r.get(2)?;
            let state: String = r.get(3)?;
            let parsed = JobState::parse(&state)
                .ok_or_else(|| Fault::Corrupt(format!("job {id}: state `{state}`")))?;
            let secret: Option<String> = r.get(4)?;
            if parsed.open() {
                open += 1;
                // Opened as PostgreSQL's store will: bound to the id as it prints it.
                if let Some(sealed) = &secret
                    && self.keys.open(sealed, &id.to_string()).is_none()
                {
                    return Err(Fault::WrongKey(id));
                }
            }
            let attempts = i32::try_from(r.get::<_, i64>(5)?).unwrap_or(i32::MAX);
            let created: i64 = r.get(6)?;
            let fetched: Option<i64> = r.get(7)?;
            let finished: Option<i64> = r.get(8)?;
            let error: Option<String> = r.get(9)?;
            let row: [&(dyn ToSql + Sync); 10] = [
                &id, &site, &kind, &state, &secret, &attempts, &created, &fetched, &finished,
                &error,
            ];
            writer.as_mut().write(&row).await?;
        }
        Ok((writer.finish().await?, open))
    }

    async fn auth_attempts(&self, tx: &Transaction<'_>) -> Result<u64, Fault> {
        const COLUMNS: &str = "time, username, site, ok, source";
        let types = [Type::INT8, Type::TEXT, Type::UUID, Type::BOOL, Type::TEXT];
        let mut writer = pin!(copy_in(tx, "auth_attempts", COLUMNS, &types).await?);
        let mut stmt = self.db.prepare(&format!(
            "SELECT {COLUMNS} FROM auth_attempts ORDER BY time, rowid"
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let time: i64 = r.get(0)?;
            let username: String = r.get(1)?;
            let site = r
                .get::<_, Option<String>>(2)?
                .map(|s| parse_uuid(&s))
                .transpose()?;
            let ok: bool = r.get(3)?;
            let source: Option<String> = r.get(4)?;
            writer
                .as_mut()
                .write(&[&time, &username, &site, &ok, &source])
                .await?;
        }
        Ok(writer.finish().await?)
    }
}

fn parse_uuid(s: &str) -> Result<Uuid, Fault> {
    Uuid::parse_str(s).map_err(|_| Fault::Corrupt(format!("uuid `{s}`")))
}

fn parse_address(s: &str) -> Result<Ipv4Addr, Fault> {
    s.parse()
        .map_err(|_| Fault::Corrupt(format!("address `{s}`")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_reads_the_sqlite_stores_last_schema() {
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(Keys::load_or_create(&dir.path().join("secret.key")).unwrap());
        let lifetimes = crate::tunnels::store::Lifetimes {
            quarantine: 60,
            rotation_grace: 60,
            job_expiry: 60,
        };
        let file = dir.path().join("tunnels.db");
        drop(SqliteStore::open(&file, "100.64.0.0/24".parse().unwrap(), keys, lifetimes).unwrap());
        let db = Connection::open(&file).unwrap();
        let version: i64 = db
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(
            version, SCHEMA,
            "a new tunnels.db migration: copy its columns in store_migrate::tunnels"
        );
    }

    #[test]
    fn a_scratch_copy_leaves_the_source_alone_and_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("tunnels.db");
        let db = Connection::open(&source).unwrap();
        db.pragma_update(None, "journal_mode", "WAL").unwrap();
        db.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        // Still open: the row may be only in the write-ahead log.
        let files = || {
            ["", "-wal"].map(|suffix| {
                std::fs::read(dir.path().join(format!("tunnels.db{suffix}"))).unwrap()
            })
        };
        let before = files();
        let scratch = Scratch::of(&source).unwrap();
        let copied: i64 = Connection::open(&scratch.path)
            .unwrap()
            .query_row("SELECT x FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(copied, 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&scratch.path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(files() == before, "the source changed");
        let path = scratch.path.clone();
        drop(scratch);
        assert!(!path.exists());
        let missing = Scratch::of(&dir.path().join("nothing.db")).unwrap_err();
        assert!(missing.to_string().contains("nothing.db"), "{missing}");
        assert!(!dir.path().join("nothing.db").exists());
    }
}
