//! Sites and their tunnels in SQLite: one transaction per change, WAL,
//! versioned migrations; secrets stored only as argon2 hashes.
//!
//! The store sits behind [`Store`] so a PostgreSQL backend can follow. The
//! CGNAT [`Pool`] is rebuilt from the table at open and changed under the same
//! lock as the database, so an address is never handed out twice.

use std::{
    net::Ipv4Addr,
    path::Path,
    sync::{Mutex, MutexGuard},
};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use ipnet::Ipv4Net;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use uuid::Uuid;

use super::{
    pool::{Pool, PoolError},
    username::username,
};

/// Schema versions, applied in order; `PRAGMA user_version` records the last.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE sites (
        uuid TEXT PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        address TEXT NOT NULL UNIQUE,
        secret_hash TEXT NOT NULL,
        created INTEGER NOT NULL
    );
    CREATE TABLE released (
        address TEXT PRIMARY KEY,
        until INTEGER NOT NULL
    );",
    // Jobs carry the only plaintext copy of a secret until the router applied them.
    "CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        kind TEXT NOT NULL,
        secret TEXT,
        created INTEGER NOT NULL,
        fetched INTEGER,
        applied INTEGER
    );
    CREATE INDEX jobs_by_site ON jobs(site);",
    "CREATE TABLE auth_attempts (
        time INTEGER NOT NULL,
        username TEXT NOT NULL,
        site TEXT,
        ok INTEGER NOT NULL,
        source TEXT
    );
    CREATE INDEX auth_attempts_by_time ON auth_attempts(time);",
];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("hashing the secret failed: {0}")]
    Hash(String),
}

/// A site's tunnel as stored (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Site {
    pub uuid: Uuid,
    pub username: String,
    pub address: Ipv4Addr,
    /// Seconds since 1970.
    pub created: u64,
}

/// A job that (re)installs a site's tunnel on its router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    pub id: Uuid,
    pub site: Uuid,
    /// `install` (with the site) or `recreate`.
    pub kind: String,
    pub created: u64,
    pub fetched: Option<u64>,
    pub applied: Option<u64>,
    /// Plaintext until applied; never serialised.
    #[serde(skip)]
    pub secret: Option<String>,
}

/// What provisioning needs from storage.
pub trait Store: Send + Sync {
    /// Returns the site, creating it (address, secret) if it does not exist;
    /// safe to retry and to race: one site, one address.
    fn ensure(&self, uuid: Uuid, now: u64) -> Result<(Site, Option<String>), StoreError>;
    fn get(&self, uuid: Uuid) -> Result<Option<Site>, StoreError>;
    /// Deletes the site; its address returns to the pool after the quarantine.
    fn delete(&self, uuid: Uuid, now: u64) -> Result<bool, StoreError>;
    /// Checks a router's username and password.
    fn verify(&self, username: &str, password: &str) -> Result<Option<Site>, StoreError>;
    /// Gives the site a new secret and a job that installs it; `None` for an unknown site.
    fn recreate(&self, site: Uuid, now: u64) -> Result<Option<Job>, StoreError>;
    fn job(&self, id: Uuid) -> Result<Option<Job>, StoreError>;
    /// The newest job of `site` not applied yet.
    fn pending_job(&self, site: Uuid) -> Result<Option<Job>, StoreError>;
    /// Records that the router fetched the job's script.
    fn job_fetched(&self, id: Uuid, now: u64) -> Result<bool, StoreError>;
    /// Records that the router applied it; the plaintext secret is erased.
    fn job_applied(&self, id: Uuid, now: u64) -> Result<bool, StoreError>;
    /// Every site, for exporting the OpenVPN server files.
    fn sites(&self) -> Result<Vec<Site>, StoreError>;
    /// Records one authentication attempt.
    fn record_attempt(&self, attempt: &Attempt) -> Result<(), StoreError>;
}

/// One router's try to authenticate, as OpenVPN reported it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub time: u64,
    pub username: String,
    pub site: Option<Uuid>,
    pub ok: bool,
    pub source: Option<String>,
}

fn hash_secret(secret: &str) -> Result<String, StoreError> {
    Ok(Argon2::default()
        .hash_password(secret.as_bytes())
        .map_err(|e| StoreError::Hash(e.to_string()))?
        .to_string())
}

fn insert_job(
    tx: &rusqlite::Transaction,
    site: Uuid,
    kind: &str,
    secret: &str,
    now: u64,
) -> Result<Job, StoreError> {
    let job = Job {
        id: Uuid::new_v4(),
        site,
        kind: kind.to_owned(),
        created: now,
        fetched: None,
        applied: None,
        secret: Some(secret.to_owned()),
    };
    tx.execute(
        "INSERT INTO jobs (id, site, kind, secret, created) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            job.id.to_string(),
            site.to_string(),
            kind,
            secret,
            now as i64
        ],
    )?;
    Ok(job)
}

fn select_job(db: &Connection, condition: &str, value: &str) -> Result<Option<Job>, StoreError> {
    let sql = format!(
        "SELECT id, site, kind, secret, created, fetched, applied FROM jobs WHERE {condition} \
         ORDER BY created DESC, rowid DESC LIMIT 1"
    );
    let row = db
        .query_row(&sql, [value], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, Option<i64>>(6)?,
            ))
        })
        .optional()?;
    let Some((id, site, kind, secret, created, fetched, applied)) = row else {
        return Ok(None);
    };
    let uuid = |s: &str| Uuid::parse_str(s).map_err(|_| StoreError::Corrupt(format!("uuid `{s}`")));
    Ok(Some(Job {
        id: uuid(&id)?,
        site: uuid(&site)?,
        kind,
        created: created.max(0) as u64,
        fetched: fetched.map(|t| t.max(0) as u64),
        applied: applied.map(|t| t.max(0) as u64),
        secret,
    }))
}

struct Inner {
    db: Connection,
    pool: Pool,
}

pub struct SqliteStore {
    inner: Mutex<Inner>,
}

impl SqliteStore {
    /// Opens (creating and migrating) the database at `path`.
    pub fn open(path: &Path, net: Ipv4Net, quarantine_secs: u64) -> Result<Self, StoreError> {
        let mut db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut db)?;
        let pool = restore_pool(&db, net, quarantine_secs)?;
        Ok(Self {
            inner: Mutex::new(Inner { db, pool }),
        })
    }

    /// Opens the database for authentication checks only: no pool is rebuilt,
    /// so a check stays fast with a million tunnels. Never allocate through it.
    pub fn open_for_checks(path: &Path) -> Result<Self, StoreError> {
        let mut db = Connection::open(path)?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut db)?;
        let pool = Pool::new(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 29).expect("a /29"), 0)?;
        Ok(Self {
            inner: Mutex::new(Inner { db, pool }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn migrate(db: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(StoreError::Corrupt(format!(
            "schema version {version} is newer than this program ({})",
            MIGRATIONS.len()
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = db.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

fn parse_addr(s: &str) -> Result<Ipv4Addr, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("address `{s}`")))
}

fn restore_pool(db: &Connection, net: Ipv4Net, quarantine: u64) -> Result<Pool, StoreError> {
    let mut in_use = Vec::new();
    let mut stmt = db.prepare("SELECT address FROM sites")?;
    for a in stmt.query_map([], |r| r.get::<_, String>(0))? {
        in_use.push(parse_addr(&a?)?);
    }
    let mut released = Vec::new();
    let mut stmt = db.prepare("SELECT address, until FROM released")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (a, until) = row?;
        released.push((parse_addr(&a)?, until.max(0) as u64));
    }
    Ok(Pool::restore(net, quarantine, in_use, released)?)
}

fn row_to_site(
    uuid: &str,
    username: String,
    address: &str,
    created: i64,
) -> Result<Site, StoreError> {
    Ok(Site {
        uuid: Uuid::parse_str(uuid).map_err(|_| StoreError::Corrupt(format!("uuid `{uuid}`")))?,
        username,
        address: parse_addr(address)?,
        created: created.max(0) as u64,
    })
}

/// The site columns every query reads first: uuid, username, address, created.
const SITE_COLUMNS: &str = "uuid, username, address, created";

fn read_site(r: &rusqlite::Row) -> rusqlite::Result<(String, String, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

/// The site `uuid` and its secret hash.
fn select(db: &Connection, uuid: &Uuid) -> Result<Option<(Site, String)>, StoreError> {
    let sql = format!("SELECT {SITE_COLUMNS}, secret_hash FROM sites WHERE uuid = ?1");
    let row = db
        .query_row(&sql, [uuid.to_string()], |r| {
            Ok((read_site(r)?, r.get::<_, String>(4)?))
        })
        .optional()?;
    row.map(|((u, n, a, c), h)| Ok((row_to_site(&u, n, &a, c)?, h)))
        .transpose()
}

/// A new random secret: 30 bytes in base32, 48 characters (RouterOS allows 233).
fn new_secret() -> String {
    let bytes: [u8; 30] = rand::random();
    data_encoding::BASE32_NOPAD
        .encode(&bytes)
        .to_ascii_lowercase()
}

impl Store for SqliteStore {
    fn ensure(&self, uuid: Uuid, now: u64) -> Result<(Site, Option<String>), StoreError> {
        if let Some((site, _)) = select(&self.lock().db, &uuid)? {
            return Ok((site, None));
        }
        // Hash outside the lock (argon2 is slow on purpose), then check again.
        let secret = new_secret();
        let hash = hash_secret(&secret)?;
        let mut inner = self.lock();
        if let Some((site, _)) = select(&inner.db, &uuid)? {
            return Ok((site, None));
        }
        let Inner { db, pool } = &mut *inner;
        let address = pool.allocate(now)?;
        let site = Site {
            uuid,
            username: username(&uuid),
            address,
            created: now,
        };
        let result = (|| -> Result<(), StoreError> {
            let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "DELETE FROM released WHERE address = ?1",
                [address.to_string()],
            )?;
            tx.execute(
                "INSERT INTO sites (uuid, username, address, secret_hash, created) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![uuid.to_string(), site.username, address.to_string(), hash, now as i64],
            )?;
            insert_job(&tx, uuid, "install", &secret, now)?;
            tx.commit()?;
            Ok(())
        })();
        if let Err(e) = result {
            // Nothing was written: the address goes straight back.
            pool.give_back(address)?;
            return Err(e);
        }
        Ok((site, Some(secret)))
    }

    fn get(&self, uuid: Uuid) -> Result<Option<Site>, StoreError> {
        Ok(select(&self.lock().db, &uuid)?.map(|(s, _)| s))
    }

    fn delete(&self, uuid: Uuid, now: u64) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let Some((site, _)) = select(&inner.db, &uuid)? else {
            return Ok(false);
        };
        let Inner { db, pool } = &mut *inner;
        let until = pool.release(site.address, now)?;
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM jobs WHERE site = ?1", [uuid.to_string()])?;
        tx.execute("DELETE FROM sites WHERE uuid = ?1", [uuid.to_string()])?;
        tx.execute(
            "INSERT OR REPLACE INTO released (address, until) VALUES (?1, ?2)",
            params![site.address.to_string(), until as i64],
        )?;
        tx.commit()?;
        Ok(true)
    }

    fn verify(&self, name: &str, password: &str) -> Result<Option<Site>, StoreError> {
        let Ok(uuid) = super::username::tunnel_of(name) else {
            return Ok(None);
        };
        let Some((site, hash)) = select(&self.lock().db, &uuid)? else {
            return Ok(None);
        };
        let hash = PasswordHash::new(&hash).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
            .then_some(site))
    }

    fn recreate(&self, site: Uuid, now: u64) -> Result<Option<Job>, StoreError> {
        if self.get(site)?.is_none() {
            return Ok(None);
        }
        let secret = new_secret();
        let hash = hash_secret(&secret)?;
        let mut inner = self.lock();
        let tx = inner
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE sites SET secret_hash = ?1 WHERE uuid = ?2",
            params![hash, site.to_string()],
        )?;
        if n == 0 {
            return Ok(None);
        }
        // Older jobs carried secrets that no longer work: erase them.
        tx.execute(
            "UPDATE jobs SET secret = NULL WHERE site = ?1",
            [site.to_string()],
        )?;
        let job = insert_job(&tx, site, "recreate", &secret, now)?;
        tx.commit()?;
        Ok(Some(job))
    }

    fn job(&self, id: Uuid) -> Result<Option<Job>, StoreError> {
        select_job(&self.lock().db, "id = ?1", &id.to_string())
    }

    fn pending_job(&self, site: Uuid) -> Result<Option<Job>, StoreError> {
        select_job(
            &self.lock().db,
            "site = ?1 AND applied IS NULL AND secret IS NOT NULL",
            &site.to_string(),
        )
    }

    fn job_fetched(&self, id: Uuid, now: u64) -> Result<bool, StoreError> {
        let n = self.lock().db.execute(
            "UPDATE jobs SET fetched = COALESCE(fetched, ?1) WHERE id = ?2",
            params![now as i64, id.to_string()],
        )?;
        Ok(n > 0)
    }

    fn sites(&self) -> Result<Vec<Site>, StoreError> {
        let inner = self.lock();
        let sql = format!("SELECT {SITE_COLUMNS} FROM sites ORDER BY address");
        let mut stmt = inner.db.prepare(&sql)?;
        let rows = stmt.query_map([], read_site)?;
        rows.map(|row| {
            let (u, n, a, c) = row?;
            row_to_site(&u, n, &a, c)
        })
        .collect()
    }

    fn record_attempt(&self, a: &Attempt) -> Result<(), StoreError> {
        self.lock().db.execute(
            "INSERT INTO auth_attempts (time, username, site, ok, source) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                a.time as i64,
                a.username,
                a.site.map(|s| s.to_string()),
                a.ok,
                a.source
            ],
        )?;
        Ok(())
    }

    fn job_applied(&self, id: Uuid, now: u64) -> Result<bool, StoreError> {
        let n = self.lock().db.execute(
            "UPDATE jobs SET applied = COALESCE(applied, ?1), secret = NULL WHERE id = ?2",
            params![now as i64, id.to_string()],
        )?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, sync::Arc};

    use super::*;

    fn open(dir: &Path) -> SqliteStore {
        SqliteStore::open(
            &dir.join("tunnels.db"),
            "100.64.0.0/10".parse().unwrap(),
            3600,
        )
        .unwrap()
    }

    #[test]
    fn ensure_is_idempotent_and_shows_the_secret_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let id = Uuid::new_v4();
        let (site, secret) = store.ensure(id, 10).unwrap();
        let secret = secret.expect("a new site shows its secret");
        assert_eq!(site.username, username(&id));
        assert_eq!(site.address, Ipv4Addr::new(100, 64, 0, 2));
        let (again, none) = store.ensure(id, 11).unwrap();
        assert_eq!((again, none), (site.clone(), None));
        assert_eq!(
            store.verify(&site.username, &secret).unwrap(),
            Some(site.clone())
        );
        assert_eq!(
            store.verify(&id.to_string(), &secret).unwrap(),
            Some(site.clone())
        );
        assert_eq!(store.verify(&site.username, "wrong").unwrap(), None);
        assert_eq!(store.verify("nobody", &secret).unwrap(), None);
    }

    #[test]
    fn concurrent_ensures_of_one_uuid_give_one_site_and_address() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(open(dir.path()));
        let id = Uuid::new_v4();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || store.ensure(id, 0).unwrap())
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let addresses: HashSet<_> = results.iter().map(|(s, _)| s.address).collect();
        assert_eq!(addresses.len(), 1);
        assert_eq!(
            results.iter().filter(|(_, s)| s.is_some()).count(),
            1,
            "one creation"
        );
    }

    #[test]
    fn everything_survives_a_reopen_and_deleted_addresses_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (site_a, site_b) = {
            let store = open(dir.path());
            let (sa, _) = store.ensure(a, 0).unwrap();
            let (sb, _) = store.ensure(b, 0).unwrap();
            assert!(store.delete(a, 100).unwrap());
            assert!(!store.delete(a, 100).unwrap());
            (sa, sb)
        };
        let store = open(dir.path());
        assert_eq!(store.get(a).unwrap(), None);
        assert_eq!(store.get(b).unwrap(), Some(site_b.clone()));
        let (c, _) = store.ensure(Uuid::new_v4(), 200).unwrap();
        assert_ne!(c.address, site_a.address, "quarantined for an hour");
        assert_ne!(c.address, site_b.address);
        let (d, _) = store.ensure(Uuid::new_v4(), 100 + 3600).unwrap();
        assert_eq!(d.address, site_a.address, "reused after the quarantine");
    }

    #[test]
    fn jobs_carry_the_secret_until_applied_and_recreate_rotates_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let id = Uuid::new_v4();
        let (site, secret) = store.ensure(id, 0).unwrap();
        let install = store.pending_job(id).unwrap().expect("an install job");
        assert_eq!(
            (install.kind.as_str(), install.secret.clone()),
            ("install", secret)
        );
        assert!(store.job_fetched(install.id, 5).unwrap());
        assert!(store.job_applied(install.id, 6).unwrap());
        let applied = store.job(install.id).unwrap().unwrap();
        assert_eq!(
            (applied.fetched, applied.applied, applied.secret),
            (Some(5), Some(6), None)
        );
        assert_eq!(store.pending_job(id).unwrap(), None);

        let job = store.recreate(id, 10).unwrap().unwrap();
        let new_secret = job.secret.clone().unwrap();
        assert!(store.verify(&site.username, &new_secret).unwrap().is_some());
        assert_eq!(store.pending_job(id).unwrap().map(|j| j.id), Some(job.id));
        assert_eq!(store.recreate(Uuid::new_v4(), 10).unwrap(), None);
        assert!(store.delete(id, 20).unwrap());
        assert_eq!(store.job(job.id).unwrap(), None, "jobs go with the site");
    }

    #[test]
    fn sites_are_listed_and_attempts_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let (a, _) = store.ensure(Uuid::new_v4(), 0).unwrap();
        let (b, _) = store.ensure(Uuid::new_v4(), 0).unwrap();
        assert_eq!(store.sites().unwrap(), [a.clone(), b]);
        let attempt = Attempt {
            time: 5,
            username: a.username.clone(),
            site: Some(a.uuid),
            ok: false,
            source: Some("198.51.100.7".into()),
        };
        store.record_attempt(&attempt).unwrap();
        let checks = SqliteStore::open_for_checks(&dir.path().join("tunnels.db")).unwrap();
        checks.record_attempt(&attempt).unwrap();
        let n: i64 = store
            .lock()
            .db
            .query_row("SELECT count(*) FROM auth_attempts WHERE ok = 0", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()));
        let db = Connection::open(dir.path().join("tunnels.db")).unwrap();
        db.pragma_update(None, "user_version", 99).unwrap();
        drop(db);
        let err = SqliteStore::open(
            &dir.path().join("tunnels.db"),
            "100.64.0.0/10".parse().unwrap(),
            0,
        );
        assert!(matches!(err, Err(StoreError::Corrupt(_))));
    }
}
