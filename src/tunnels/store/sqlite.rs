//! The SQLite store: one transaction per change, WAL, `synchronous=FULL`,
//! versioned migrations. The CGNAT [`Pool`] is rebuilt from the table at open
//! and changed under the same lock as the database, and only after the
//! change is committed, so an address is never handed out twice.

use std::{
    net::Ipv4Addr,
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
};

use ipnet::Ipv4Net;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use uuid::Uuid;

use super::{
    Attempt, Created, Credential, Credentials, Enrolled, Finished, Finishing, Job, JobState,
    Lifetimes, LiveTicket, Outcome, Renumbered, Site, Store, StoreError, check_secret, finishing,
    open_sealed,
};
mod leases;
mod reboots;

use crate::tunnels::{
    keys::{Check, Keys},
    pool::Pool,
    username::{tunnel_of, username},
};

/// Schema versions, applied in order; `PRAGMA user_version` records the last.
pub(super) const MIGRATIONS: &[&str] = &[
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
    // Router tokens, secret rotation, the job lifecycle. Jobs' secrets are
    // sealed in code at open (SQL cannot), before anything reads them.
    "ALTER TABLE sites ADD COLUMN router_token_hash TEXT;
    CREATE UNIQUE INDEX sites_by_router_token ON sites(router_token_hash);
    ALTER TABLE sites ADD COLUMN secret_applied INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE sites ADD COLUMN previous_secret_hash TEXT;
    ALTER TABLE sites ADD COLUMN previous_until INTEGER;
    ALTER TABLE jobs ADD COLUMN state TEXT NOT NULL DEFAULT 'pending';
    ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN finished INTEGER;
    ALTER TABLE jobs ADD COLUMN error TEXT;
    UPDATE jobs SET state = 'applied', finished = applied WHERE applied IS NOT NULL;
    UPDATE jobs SET state = 'superseded' WHERE applied IS NULL AND secret IS NULL;
    UPDATE jobs SET state = 'fetched', attempts = 1 WHERE state = 'pending' AND fetched IS NOT NULL;
    UPDATE sites SET secret_applied = 0 WHERE EXISTS (
        SELECT 1 FROM jobs WHERE jobs.site = sites.uuid AND jobs.state IN ('pending', 'fetched'));",
    // One-time bootstrap (enrollment) tokens: one open per site.
    "ALTER TABLE sites ADD COLUMN enrollment_hash TEXT;
    CREATE UNIQUE INDEX sites_by_enrollment ON sites(enrollment_hash);
    ALTER TABLE sites ADD COLUMN enrollment_version TEXT;
    ALTER TABLE sites ADD COLUMN enrollment_until INTEGER;",
    // A change sequence for agents' credential caches: every change to what a
    // login is checked against takes the next number; deletions leave a
    // tombstone. Triggers, so no write path can forget it.
    "CREATE TABLE change_seq (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
    INSERT INTO change_seq VALUES (1, (SELECT COALESCE(MAX(rowid), 0) FROM sites));
    ALTER TABLE sites ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    UPDATE sites SET seq = rowid;
    CREATE INDEX sites_by_seq ON sites(seq);
    CREATE TABLE tombstones (username TEXT PRIMARY KEY, seq INTEGER NOT NULL);
    CREATE INDEX tombstones_by_seq ON tombstones(seq);
    CREATE TRIGGER sites_inserted AFTER INSERT ON sites BEGIN
        UPDATE change_seq SET value = value + 1;
        UPDATE sites SET seq = (SELECT value FROM change_seq) WHERE uuid = NEW.uuid;
        DELETE FROM tombstones WHERE username = NEW.username;
    END;
    CREATE TRIGGER sites_changed
        AFTER UPDATE OF address, secret_hash, previous_secret_hash, previous_until ON sites BEGIN
        UPDATE change_seq SET value = value + 1;
        UPDATE sites SET seq = (SELECT value FROM change_seq) WHERE uuid = NEW.uuid;
    END;
    CREATE TRIGGER sites_deleted AFTER DELETE ON sites BEGIN
        UPDATE change_seq SET value = value + 1;
        INSERT OR REPLACE INTO tombstones VALUES (OLD.username, (SELECT value FROM change_seq));
    END;",
    // Single-use live-view tickets, by digest.
    "CREATE TABLE live_tickets (
        digest TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        user TEXT NOT NULL,
        until INTEGER NOT NULL
    );",
    // Reboots asked through the live view (the per-site gap reads them).
    "CREATE TABLE reboots (
        id TEXT PRIMARY KEY,
        site TEXT NOT NULL,
        user TEXT NOT NULL,
        created INTEGER NOT NULL,
        state TEXT NOT NULL,
        finished INTEGER,
        error TEXT
    );
    CREATE INDEX reboots_by_site ON reboots(site, created);",
];

struct Inner {
    db: Connection,
    pool: Pool,
}

pub struct SqliteStore {
    inner: Mutex<Inner>,
    keys: Arc<Keys>,
    lifetimes: Lifetimes,
}

impl SqliteStore {
    /// Opens (creating and migrating) the database at `path`.
    pub fn open(
        path: &Path,
        net: Ipv4Net,
        keys: Arc<Keys>,
        lifetimes: Lifetimes,
    ) -> Result<Self, StoreError> {
        let mut db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut db, &keys)?;
        let pool = restore_pool(&db, net, lifetimes.quarantine)?;
        Ok(Self {
            inner: Mutex::new(Inner { db, pool }),
            keys,
            lifetimes,
        })
    }

    /// Opens the database without rebuilding the pool, so it opens fast with a
    /// million tunnels (export, renumber). Never allocate through it.
    pub fn open_for_checks(
        path: &Path,
        keys: Arc<Keys>,
        lifetimes: Lifetimes,
    ) -> Result<Self, StoreError> {
        let mut db = Connection::open(path)?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut db, &keys)?;
        let pool = Pool::new(Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 29).expect("a /29"), 0)?;
        Ok(Self {
            inner: Mutex::new(Inner { db, pool }),
            keys,
            lifetimes,
        })
    }

    /// Moves every site whose address lies outside `net` to a free address
    /// in it and forgets quarantined addresses outside it, in one transaction
    /// (`mgnt site renumber`, with the server stopped: a running server still
    /// allocates from its old pool). Routers get their new address from the
    /// server's ccd files at their next connection.
    pub fn renumber(&self, net: Ipv4Net, now: u64) -> Result<Vec<Renumbered>, StoreError> {
        let mut inner = self.lock();
        let tx = inner
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut sites = Vec::new();
        let mut stmt = tx.prepare("SELECT uuid, address FROM sites ORDER BY created, rowid")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (uuid, address) = row?;
            sites.push((parse_uuid(&uuid)?, parse_addr(&address)?));
        }
        drop(stmt);
        let mut released = read_released(&tx)?;
        let (inside, outside): (Vec<_>, Vec<_>) =
            sites.into_iter().partition(|(_, a)| net.contains(a));
        for (a, _) in released.iter().filter(|(a, _)| !net.contains(a)) {
            tx.execute("DELETE FROM released WHERE address = ?1", [a.to_string()])?;
        }
        released.retain(|(a, _)| net.contains(a));
        let mut pool = Pool::restore(
            net,
            self.lifetimes.quarantine,
            inside.iter().map(|(_, a)| *a),
            released,
        )?;
        let mut moved = Vec::with_capacity(outside.len());
        for (site, from) in outside {
            let to = pool.allocate(now)?;
            tx.execute("DELETE FROM released WHERE address = ?1", [to.to_string()])?;
            tx.execute(
                "UPDATE sites SET address = ?1 WHERE uuid = ?2",
                params![to.to_string(), site.to_string()],
            )?;
            moved.push(Renumbered { site, from, to });
        }
        tx.commit()?;
        Ok(moved)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends open jobs older than the job expiry.
    fn expire_jobs(&self, db: &Connection, now: u64) -> Result<(), StoreError> {
        // Signed: before the first expiry time has passed nothing is old enough.
        let oldest = now as i64 - i64::try_from(self.lifetimes.job_expiry).unwrap_or(i64::MAX);
        db.execute(
            "UPDATE jobs SET state = 'expired', secret = NULL, finished = ?1
             WHERE state IN ('pending', 'fetched') AND created <= ?2",
            params![now as i64, oldest],
        )?;
        Ok(())
    }

    fn read_job(&self, db: &Connection, sql: &str, key: &str) -> Result<Option<Job>, StoreError> {
        let row = db
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE {sql}"),
                [key],
                read_job,
            )
            .optional()?;
        row.map(|r| self.job_of(r)).transpose()
    }

    fn job_of(&self, r: JobRow) -> Result<Job, StoreError> {
        let id = parse_uuid(&r.id)?;
        let state = JobState::parse(&r.state)
            .ok_or_else(|| StoreError::Corrupt(format!("job state `{}`", r.state)))?;
        let secret = open_sealed(&self.keys, id, r.secret.as_deref(), state)?;
        Ok(Job {
            id,
            site: parse_uuid(&r.site)?,
            kind: r.kind,
            state,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
            created: r.created.max(0) as u64,
            fetched: r.fetched.map(|t| t.max(0) as u64),
            finished: r.finished.map(|t| t.max(0) as u64),
            error: r.error,
            secret,
        })
    }

    /// A new secret and a job installing it; the secret working on the router
    /// now (the current one if its job was applied, else the one kept from
    /// before) stays valid for the rotation grace. `None` for no such site.
    fn rotate(
        &self,
        tx: &Transaction,
        site: Uuid,
        kind: &str,
        now: u64,
    ) -> Result<Option<Job>, StoreError> {
        let secret = self.keys.new_secret()?;
        let n = tx.execute(
            "UPDATE sites SET
                previous_secret_hash = CASE WHEN secret_applied = 1 THEN secret_hash ELSE previous_secret_hash END,
                previous_until = ?1,
                secret_hash = ?2,
                secret_applied = 0
             WHERE uuid = ?3",
            params![
                (now + self.lifetimes.rotation_grace) as i64,
                self.keys.digest(&secret),
                site.to_string()
            ],
        )?;
        if n == 0 {
            return Ok(None);
        }
        self.insert_job(tx, site, kind, &secret, now).map(Some)
    }

    /// Inserts an open job carrying `secret` (sealed), superseding the site's
    /// other open jobs.
    fn insert_job(
        &self,
        tx: &Transaction,
        site: Uuid,
        kind: &str,
        secret: &str,
        now: u64,
    ) -> Result<Job, StoreError> {
        tx.execute(
            "UPDATE jobs SET state = 'superseded', secret = NULL, finished = ?1
             WHERE site = ?2 AND state IN ('pending', 'fetched')",
            params![now as i64, site.to_string()],
        )?;
        let id = Uuid::new_v4();
        let sealed = self.keys.seal(secret, &id.to_string())?;
        tx.execute(
            "INSERT INTO jobs (id, site, kind, secret, created, state) VALUES (?1, ?2, ?3, ?4, ?5, 'pending')",
            params![id.to_string(), site.to_string(), kind, sealed, now as i64],
        )?;
        Ok(Job::pending(id, site, kind, secret, now))
    }
}

fn migrate(db: &mut Connection, keys: &Keys) -> Result<(), StoreError> {
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
    seal_plaintext_secrets(db, keys)
}

/// Older versions kept an open job's secret in plaintext: seal it.
fn seal_plaintext_secrets(db: &mut Connection, keys: &Keys) -> Result<(), StoreError> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let rows: Vec<(String, String)> = {
        let mut stmt = tx.prepare("SELECT id, secret FROM jobs WHERE secret IS NOT NULL")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (id, secret) in rows.into_iter().filter(|(_, s)| !Keys::is_sealed(s)) {
        let sealed = keys.seal(&secret, &id)?;
        tx.execute(
            "UPDATE jobs SET secret = ?1 WHERE id = ?2",
            params![sealed, id],
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn parse_addr(s: &str) -> Result<Ipv4Addr, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("address `{s}`")))
}

fn parse_uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|_| StoreError::Corrupt(format!("uuid `{s}`")))
}

fn restore_pool(db: &Connection, net: Ipv4Net, quarantine: u64) -> Result<Pool, StoreError> {
    let mut in_use = Vec::new();
    let mut stmt = db.prepare("SELECT address FROM sites")?;
    for a in stmt.query_map([], |r| r.get::<_, String>(0))? {
        in_use.push(parse_addr(&a?)?);
    }
    let released = read_released(db)?;
    Ok(Pool::restore(net, quarantine, in_use, released)?)
}

/// Quarantined addresses and when each may be reused.
fn read_released(db: &Connection) -> Result<Vec<(Ipv4Addr, u64)>, StoreError> {
    let mut released = Vec::new();
    let mut stmt = db.prepare("SELECT address, until FROM released")?;
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (a, until) = row?;
        released.push((parse_addr(&a)?, until.max(0) as u64));
    }
    Ok(released)
}

/// The site columns every query reads first: uuid, username, address, created.
const SITE_COLUMNS: &str = "uuid, username, address, created";

fn read_site(r: &rusqlite::Row) -> rusqlite::Result<(String, String, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn site_of(
    (uuid, username, address, created): (String, String, String, i64),
) -> Result<Site, StoreError> {
    Ok(Site {
        uuid: parse_uuid(&uuid)?,
        username,
        address: parse_addr(&address)?,
        created: created.max(0) as u64,
    })
}

/// A site's credentials as stored.
struct Secrets {
    current: String,
    previous: Option<String>,
    previous_until: Option<u64>,
}

/// The site `uuid` and its secrets.
fn select(db: &Connection, uuid: &Uuid) -> Result<Option<(Site, Secrets)>, StoreError> {
    let sql = format!(
        "SELECT {SITE_COLUMNS}, secret_hash, previous_secret_hash, previous_until FROM sites WHERE uuid = ?1"
    );
    let row = db
        .query_row(&sql, [uuid.to_string()], |r| {
            let secrets = Secrets {
                current: r.get(4)?,
                previous: r.get(5)?,
                previous_until: r.get::<_, Option<i64>>(6)?.map(|t| t.max(0) as u64),
            };
            Ok((read_site(r)?, secrets))
        })
        .optional()?;
    row.map(|(s, secrets)| Ok((site_of(s)?, secrets)))
        .transpose()
}

const JOB_COLUMNS: &str =
    "id, site, kind, state, attempts, created, fetched, finished, error, secret";

struct JobRow {
    id: String,
    site: String,
    kind: String,
    state: String,
    attempts: i64,
    created: i64,
    fetched: Option<i64>,
    finished: Option<i64>,
    error: Option<String>,
    secret: Option<String>,
}

fn read_job(r: &rusqlite::Row) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: r.get(0)?,
        site: r.get(1)?,
        kind: r.get(2)?,
        state: r.get(3)?,
        attempts: r.get(4)?,
        created: r.get(5)?,
        fetched: r.get(6)?,
        finished: r.get(7)?,
        error: r.get(8)?,
        secret: r.get(9)?,
    })
}

/// The newest open job of a site.
const OPEN_JOB: &str =
    "site = ?1 AND state IN ('pending', 'fetched') ORDER BY created DESC, rowid DESC LIMIT 1";

impl Store for SqliteStore {
    fn ensure(&self, uuid: Uuid, now: u64) -> Result<(Site, Option<Created>), StoreError> {
        let mut inner = self.lock();
        if let Some((site, _)) = select(&inner.db, &uuid)? {
            return Ok((site, None));
        }
        let created = Created {
            secret: self.keys.new_secret()?,
            router_token: self.keys.new_secret()?,
        };
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
                "INSERT INTO sites (uuid, username, address, secret_hash, created, router_token_hash, secret_applied)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)",
                params![
                    uuid.to_string(),
                    site.username,
                    address.to_string(),
                    self.keys.digest(&created.secret),
                    now as i64,
                    self.keys.digest(&created.router_token),
                ],
            )?;
            self.insert_job(&tx, uuid, "install", &created.secret, now)?;
            tx.commit()?;
            Ok(())
        })();
        if let Err(e) = result {
            // Nothing was written: the address goes straight back.
            pool.give_back(address)?;
            return Err(e);
        }
        Ok((site, Some(created)))
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
        let until = now + self.lifetimes.quarantine;
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM jobs WHERE site = ?1", [uuid.to_string()])?;
        tx.execute("DELETE FROM reboots WHERE site = ?1", [uuid.to_string()])?;
        tx.execute("DELETE FROM sites WHERE uuid = ?1", [uuid.to_string()])?;
        tx.execute(
            "INSERT OR REPLACE INTO released (address, until) VALUES (?1, ?2)",
            params![site.address.to_string(), until as i64],
        )?;
        tx.commit()?;
        // Only now may the address wait for reuse: a failed commit keeps it taken.
        pool.release(site.address, now)?;
        Ok(true)
    }

    fn verify(&self, name: &str, password: &str, now: u64) -> Result<Option<Site>, StoreError> {
        let Ok(uuid) = tunnel_of(name) else {
            return Ok(None);
        };
        let inner = self.lock();
        let Some((site, secrets)) = select(&inner.db, &uuid)? else {
            return Ok(None);
        };
        let Some((matched, check)) = check_secret(
            &self.keys,
            password,
            &secrets.current,
            secrets.previous.as_deref(),
            secrets.previous_until,
            now,
        ) else {
            return Ok(None);
        };
        let column = matched.column();
        match check {
            Check::NoMatch => Ok(None),
            Check::Match => Ok(Some(site)),
            Check::MatchLegacy => {
                // An argon2 hash of an older version: store the digest now.
                let sql = format!("UPDATE sites SET {column} = ?1 WHERE uuid = ?2");
                inner
                    .db
                    .execute(&sql, params![self.keys.digest(password), uuid.to_string()])?;
                Ok(Some(site))
            }
        }
    }

    fn recreate(&self, site: Uuid, now: u64) -> Result<Option<Job>, StoreError> {
        let mut inner = self.lock();
        let tx = inner
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let job = self.rotate(&tx, site, "recreate", now)?;
        tx.commit()?;
        Ok(job)
    }

    fn new_enrollment(
        &self,
        site: Uuid,
        version: &str,
        until: u64,
    ) -> Result<Option<String>, StoreError> {
        let token = self.keys.new_secret()?;
        let n = self.lock().db.execute(
            "UPDATE sites SET enrollment_hash = ?1, enrollment_version = ?2, enrollment_until = ?3
             WHERE uuid = ?4",
            params![
                self.keys.digest(&token),
                version,
                until as i64,
                site.to_string()
            ],
        )?;
        Ok((n > 0).then_some(token))
    }

    fn enroll(&self, token: &str, now: u64) -> Result<Option<Enrolled>, StoreError> {
        let router_token = self.keys.new_secret()?;
        let mut inner = self.lock();
        let tx = inner
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let sql = format!(
            "SELECT {SITE_COLUMNS}, enrollment_version, enrollment_until FROM sites WHERE enrollment_hash = ?1"
        );
        let row = tx
            .query_row(&sql, [self.keys.digest(token)], |r| {
                Ok((
                    read_site(r)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                ))
            })
            .optional()?;
        let Some((site, version, until)) = row else {
            return Ok(None);
        };
        let site = site_of(site)?;
        // Used or not, an expired token is gone.
        tx.execute(
            "UPDATE sites SET enrollment_hash = NULL, enrollment_version = NULL, enrollment_until = NULL
             WHERE uuid = ?1",
            [site.uuid.to_string()],
        )?;
        if until.is_none_or(|u| u < now as i64) {
            tx.commit()?;
            return Ok(None);
        }
        tx.execute(
            "UPDATE sites SET router_token_hash = ?1 WHERE uuid = ?2",
            params![self.keys.digest(&router_token), site.uuid.to_string()],
        )?;
        let job = self
            .rotate(&tx, site.uuid, "bootstrap", now)?
            .ok_or_else(|| StoreError::Corrupt(format!("site {} vanished", site.uuid)))?;
        tx.commit()?;
        Ok(Some(Enrolled {
            site,
            version: version.unwrap_or_default(),
            router_token,
            job,
        }))
    }

    fn new_router_token(&self, site: Uuid) -> Result<Option<String>, StoreError> {
        let token = self.keys.new_secret()?;
        let n = self.lock().db.execute(
            "UPDATE sites SET router_token_hash = ?1 WHERE uuid = ?2",
            params![self.keys.digest(&token), site.to_string()],
        )?;
        Ok((n > 0).then_some(token))
    }

    fn new_live_ticket(
        &self,
        site: Uuid,
        user: &str,
        now: u64,
        until: u64,
    ) -> Result<Option<String>, StoreError> {
        let ticket = self.keys.new_secret()?;
        let mut inner = self.lock();
        let tx = inner.db.transaction()?;
        // Expired tickets go as new ones come, so the table stays small.
        tx.execute("DELETE FROM live_tickets WHERE until < ?1", [now as i64])?;
        let n = tx.execute(
            "INSERT INTO live_tickets SELECT ?1, uuid, ?2, ?3 FROM sites WHERE uuid = ?4",
            params![
                self.keys.digest(&ticket),
                user,
                until as i64,
                site.to_string()
            ],
        )?;
        tx.commit()?;
        Ok((n > 0).then_some(ticket))
    }

    fn redeem_live_ticket(&self, ticket: &str, now: u64) -> Result<Option<LiveTicket>, StoreError> {
        let row = self
            .lock()
            .db
            .query_row(
                // A deleted site's tickets are left to expire, and redeem nothing.
                "DELETE FROM live_tickets WHERE digest = ?1 AND site IN (SELECT uuid FROM sites)
                 RETURNING site, user, until",
                [self.keys.digest(ticket)],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()?;
        let Some((site, user, _)) = row.filter(|(_, _, until)| *until >= now as i64) else {
            return Ok(None);
        };
        let site = Uuid::parse_str(&site).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some(LiveTicket { site, user }))
    }

    fn router_site(&self, token: &str) -> Result<Option<Site>, StoreError> {
        // The digest is deterministic under the key, so it is the lookup key;
        // comparing digests leaks nothing about the token.
        let sql = format!("SELECT {SITE_COLUMNS} FROM sites WHERE router_token_hash = ?1");
        let row = self
            .lock()
            .db
            .query_row(&sql, [self.keys.digest(token)], read_site)
            .optional()?;
        row.map(site_of).transpose()
    }

    fn fetch_job(&self, site: Uuid, now: u64) -> Result<Option<Job>, StoreError> {
        let inner = self.lock();
        self.expire_jobs(&inner.db, now)?;
        let Some(job) = self.read_job(&inner.db, OPEN_JOB, &site.to_string())? else {
            return Ok(None);
        };
        inner.db.execute(
            "UPDATE jobs SET state = 'fetched', attempts = attempts + 1, fetched = COALESCE(fetched, ?1)
             WHERE id = ?2",
            params![now as i64, job.id.to_string()],
        )?;
        Ok(Some(Job {
            state: JobState::Fetched,
            attempts: job.attempts + 1,
            fetched: job.fetched.or(Some(now)),
            ..job
        }))
    }

    fn job(&self, id: Uuid, now: u64) -> Result<Option<Job>, StoreError> {
        let inner = self.lock();
        self.expire_jobs(&inner.db, now)?;
        self.read_job(&inner.db, "id = ?1", &id.to_string())
    }

    fn pending_job(&self, site: Uuid, now: u64) -> Result<Option<Job>, StoreError> {
        let inner = self.lock();
        self.expire_jobs(&inner.db, now)?;
        self.read_job(&inner.db, OPEN_JOB, &site.to_string())
    }

    fn job_fetched(&self, id: Uuid, now: u64) -> Result<bool, StoreError> {
        let n = self.lock().db.execute(
            "UPDATE jobs SET state = 'fetched', attempts = attempts + 1, fetched = COALESCE(fetched, ?1)
             WHERE id = ?2 AND state IN ('pending', 'fetched')",
            params![now as i64, id.to_string()],
        )?;
        Ok(n > 0)
    }

    fn finish_job(
        &self,
        id: Uuid,
        site: Option<Uuid>,
        outcome: Outcome,
        now: u64,
    ) -> Result<Finished, StoreError> {
        let mut inner = self.lock();
        self.expire_jobs(&inner.db, now)?;
        let Some(job) = self.read_job(&inner.db, "id = ?1", &id.to_string())? else {
            return Ok(Finished::NotFound);
        };
        let (job, wanted, error) = match finishing(job, site, outcome) {
            Finishing::Record(job, wanted, error) => (job, wanted, error),
            Finishing::Answer(answer) => return Ok(answer),
        };
        let tx = inner
            .db
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE jobs SET state = ?1, finished = ?2, error = ?3, secret = NULL WHERE id = ?4",
            params![wanted.as_str(), now as i64, error, id.to_string()],
        )?;
        if wanted == JobState::Applied {
            // The open job holds the current secret: the router has it now,
            // so the previous one is done with.
            tx.execute(
                "UPDATE sites SET secret_applied = 1, previous_secret_hash = NULL, previous_until = NULL
                 WHERE uuid = ?1",
                [job.site.to_string()],
            )?;
        }
        tx.commit()?;
        Ok(Finished::Done(Job {
            state: wanted,
            finished: Some(now),
            error,
            secret: None,
            ..job
        }))
    }

    fn sites(&self) -> Result<Vec<Site>, StoreError> {
        let inner = self.lock();
        let sql = format!("SELECT {SITE_COLUMNS} FROM sites ORDER BY address");
        let mut stmt = inner.db.prepare(&sql)?;
        let rows = stmt.query_map([], read_site)?;
        rows.map(|row| site_of(row?)).collect()
    }

    fn addresses(&self) -> Result<Vec<Ipv4Addr>, StoreError> {
        let inner = self.lock();
        let mut stmt = inner
            .db
            .prepare("SELECT address FROM sites UNION SELECT address FROM released")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.map(|a| parse_addr(&a?)).collect()
    }

    fn credentials(&self, since: u64) -> Result<Credentials, StoreError> {
        let inner = self.lock();
        let tx = inner.db.unchecked_transaction()?;
        let seq: i64 = tx.query_row("SELECT value FROM change_seq", [], |r| r.get(0))?;
        let mut sites = Vec::new();
        let mut stmt = tx.prepare(
            "SELECT username, address, secret_hash, previous_secret_hash, previous_until
             FROM sites WHERE seq > ?1 ORDER BY seq",
        )?;
        let rows = stmt.query_map([since as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<i64>>(4)?,
            ))
        })?;
        for row in rows {
            let (username, address, secret, previous, until) = row?;
            sites.push(Credential {
                username,
                address: parse_addr(&address)?,
                secret,
                previous,
                previous_until: until.map(|t| t.max(0) as u64),
            });
        }
        drop(stmt);
        let mut stmt = tx.prepare("SELECT username FROM tombstones WHERE seq > ?1 ORDER BY seq")?;
        let deleted = stmt
            .query_map([since as i64], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        tx.finish()?;
        Ok(Credentials {
            seq: seq.max(0) as u64,
            sites,
            deleted,
        })
    }

    fn digests(&self) -> crate::tunnels::keys::Digests {
        self.keys.digests().clone()
    }

    fn live_password(&self, site: Uuid, job: Uuid) -> String {
        self.keys.live_password(site, job)
    }

    fn applied_job(&self, site: Uuid) -> Result<Option<Uuid>, StoreError> {
        let id: Option<String> = self
            .lock()
            .db
            .query_row(
                "SELECT id FROM jobs WHERE site = ?1 AND state = 'applied'
                 ORDER BY finished DESC, rowid DESC LIMIT 1",
                [site.to_string()],
                |r| r.get(0),
            )
            .optional()?;
        id.map(|id| Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
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
}
