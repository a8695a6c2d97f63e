//! The PostgreSQL store (`[store]`): the sites, jobs and credentials of
//! [`super::SqliteStore`], shared by every node.
//!
//! Each change is one transaction. Addresses are allocated inside it, under
//! a transaction-scoped advisory lock, from what the tables hold — never from
//! one node's memory — so two nodes never hand out one address and a crash
//! leaves nothing half-allocated. Credential changes are numbered by triggers
//! (schema version 3 in [`crate::pg`]) and announced on `mgnt_sites`, which
//! [`PgSiteStore::changes`] follows for agents' long polls.
//!
//! [`Store`] is synchronous (SQLite's calls block, so callers run every call
//! on the blocking pool); this store drives its async client on the runtime
//! it was opened in, from those blocking threads.

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Duration,
};

use deadpool_postgres::GenericClient;
use ipnet::Ipv4Net;
use tokio::{
    runtime::Handle,
    sync::{mpsc, watch},
};
use tokio_postgres::{AsyncMessage, Row, types::FromSql};
use uuid::Uuid;

mod leases;
mod reboots;

use super::{
    Attempt, Created, Credential, Credentials, Enrolled, Finished, Finishing, Job, JobState,
    Lifetimes, LiveTicket, Outcome, Renumbered, Site, Store, StoreError, check_secret, finishing,
    open_sealed,
};
use crate::{
    pg::Db,
    tunnels::{
        keys::{Check, Digests, Keys},
        pool::PoolError,
        username::{tunnel_of, username},
    },
};

/// Where credential changes are announced (by the schema's triggers).
const CHANNEL: &str = "mgnt_sites";
/// Serializes what allocation cannot do side by side: moving the cursor,
/// looking for holes, renumbering.
const ALLOCATION_LOCK: i64 = 0x6d67_6e74_0003;
/// Tries at creating a site whose address another took meanwhile.
const MAX_TRIES: usize = 8;
/// How long the change follower waits before connecting again.
const RECONNECT: Duration = Duration::from_secs(1);

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // No SQLSTATE: the connection failed or closed. Connection classes
        // (08), resources (53) and operator intervention (57: a shutdown)
        // also mean the database is away, not that the request was wrong.
        let away = e
            .code()
            .is_none_or(|c| ["08", "53", "57"].iter().any(|p| c.code().starts_with(p)));
        if away {
            Self::Unavailable(e.to_string())
        } else {
            Self::Pg(e.to_string())
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

pub struct PgSiteStore {
    db: Db,
    rt: Handle,
    keys: Arc<Keys>,
    lifetimes: Lifetimes,
    net: Ipv4Net,
    changes: watch::Receiver<u64>,
}

impl PgSiteStore {
    /// The store over `db` (migrated by [`Db::open`]), allocating from `net`;
    /// starts following the changes every node makes. Within a runtime.
    pub fn open(db: Db, net: Ipv4Net, keys: Arc<Keys>, lifetimes: Lifetimes) -> Self {
        let (tx, rx) = watch::channel(0);
        tokio::spawn(follow(db.clone(), tx));
        Self {
            db,
            rt: Handle::current(),
            keys,
            lifetimes,
            net: net.trunc(),
            changes: rx,
        }
    }

    /// Runs `f` to its end on the store's runtime.
    fn run<T>(&self, f: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        crate::pg::block_on(&self.rt, f)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.db.pool.get().await?)
    }

    /// Moves every site whose address lies outside `net` to a free address
    /// in it, and forgets quarantined addresses outside it, in one
    /// transaction (`mgnt site renumber`, with every node on the new pool).
    pub async fn renumber(&self, net: Ipv4Net, now: u64) -> Result<Vec<Renumbered>, StoreError> {
        let (first, last) = bounds(net)?;
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ALLOCATION_LOCK])
            .await?;
        tx.execute(
            "DELETE FROM released WHERE NOT address BETWEEN $1 AND $2",
            &[&first, &last],
        )
        .await?;
        resync_cursor(&tx, net, true).await?;
        let outside = tx
            .query(
                "SELECT uuid, address FROM sites WHERE NOT address BETWEEN $1 AND $2
                 ORDER BY created, uuid",
                &[&first, &last],
            )
            .await?;
        let mut moved = Vec::with_capacity(outside.len());
        for row in outside {
            let site: Uuid = col(&row, 0)?;
            let from = v4(col(&row, 1)?)?;
            let to = allocate(&tx, net, now).await?;
            tx.execute(
                "UPDATE sites SET address = $1 WHERE uuid = $2",
                &[&IpAddr::V4(to), &site],
            )
            .await?;
            moved.push(Renumbered { site, from, to });
        }
        tx.commit().await?;
        Ok(moved)
    }

    /// A new secret and a job installing it; the secret working on the router
    /// now stays valid for the rotation grace (as in SQLite). `None`: no site.
    async fn rotate(
        &self,
        tx: &impl GenericClient,
        site: Uuid,
        kind: &str,
        now: u64,
    ) -> Result<Option<Job>, StoreError> {
        let secret = self.keys.new_secret()?;
        let n = tx
            .execute(
                "UPDATE sites SET
                    previous_secret_hash = CASE WHEN secret_applied THEN secret_hash ELSE previous_secret_hash END,
                    previous_until = $1,
                    secret_hash = $2,
                    secret_applied = false
                 WHERE uuid = $3",
                &[
                    &secs(now + self.lifetimes.rotation_grace),
                    &self.keys.digest(&secret),
                    &site,
                ],
            )
            .await?;
        if n == 0 {
            return Ok(None);
        }
        self.insert_job(tx, site, kind, &secret, now)
            .await
            .map(Some)
    }

    /// Inserts an open job carrying `secret` (sealed), superseding the site's
    /// other open jobs.
    async fn insert_job(
        &self,
        tx: &impl GenericClient,
        site: Uuid,
        kind: &str,
        secret: &str,
        now: u64,
    ) -> Result<Job, StoreError> {
        tx.execute(
            "UPDATE jobs SET state = 'superseded', secret = NULL, finished = $1
             WHERE site = $2 AND state IN ('pending', 'fetched')",
            &[&secs(now), &site],
        )
        .await?;
        self.new_job(tx, site, kind, secret, now).await
    }

    /// Inserts an open job carrying `secret` (sealed), for a site that has
    /// no other open job.
    async fn new_job(
        &self,
        tx: &impl GenericClient,
        site: Uuid,
        kind: &str,
        secret: &str,
        now: u64,
    ) -> Result<Job, StoreError> {
        let id = Uuid::new_v4();
        let sealed = self.keys.seal(secret, &id.to_string())?;
        tx.execute(
            "INSERT INTO jobs (id, site, kind, secret, created, state) VALUES ($1, $2, $3, $4, $5, 'pending')",
            &[&id, &site, &kind, &sealed, &secs(now)],
        )
        .await?;
        Ok(Job::pending(id, site, kind, secret, now))
    }

    /// Ends open jobs older than the job expiry.
    async fn expire_jobs(&self, c: &impl GenericClient, now: u64) -> Result<(), StoreError> {
        let oldest = secs(now) - i64::try_from(self.lifetimes.job_expiry).unwrap_or(i64::MAX);
        c.execute(
            "UPDATE jobs SET state = 'expired', secret = NULL, finished = $1
             WHERE state IN ('pending', 'fetched') AND created <= $2",
            &[&secs(now), &oldest],
        )
        .await?;
        Ok(())
    }

    /// One job by `condition` on `$1` (`FOR UPDATE` may follow it).
    async fn read_job(
        &self,
        c: &impl GenericClient,
        condition: &str,
        key: &Uuid,
    ) -> Result<Option<Job>, StoreError> {
        let sql = format!("SELECT {JOB} FROM jobs WHERE {condition}");
        match c.query_opt(&sql, &[key]).await? {
            Some(row) => self.job_of(&row).map(Some),
            None => Ok(None),
        }
    }

    fn job_of(&self, r: &Row) -> Result<Job, StoreError> {
        let id: Uuid = col(r, 0)?;
        let state: String = col(r, 3)?;
        let state = JobState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("job state `{state}`")))?;
        let sealed: Option<String> = col(r, 9)?;
        let secret = open_sealed(&self.keys, id, sealed.as_deref(), state)?;
        Ok(Job {
            id,
            site: col(r, 1)?,
            kind: col(r, 2)?,
            state,
            attempts: u32::try_from(col::<i32>(r, 4)?).unwrap_or(0),
            created: unsecs(col(r, 5)?),
            fetched: col::<Option<i64>>(r, 6)?.map(unsecs),
            finished: col::<Option<i64>>(r, 7)?.map(unsecs),
            error: col(r, 8)?,
            secret,
        })
    }

    async fn ensure_async(
        &self,
        uuid: Uuid,
        now: u64,
    ) -> Result<(Site, Option<Created>), StoreError> {
        let mut c = self.client().await?;
        if let Some(site) = select_site(&c, &uuid).await? {
            return Ok((site, None));
        }
        let created = Created {
            secret: self.keys.new_secret()?,
            router_token: self.keys.new_secret()?,
        };
        // Nodes allocate without waiting for each other; an address taken
        // meanwhile (the cursor resynchronised) is a conflict and another try.
        for _ in 0..MAX_TRIES {
            let tx = c.transaction().await?;
            let address = allocate(&tx, self.net, now).await?;
            // The job first (its reference to the site is checked at
            // commit): inserting the site takes the change counter's row
            // lock, which every node's credential changes wait on until this
            // commits, so it comes last.
            self.new_job(&tx, uuid, "install", &created.secret, now)
                .await?;
            let site = Site {
                uuid,
                username: username(&uuid),
                address,
                created: now,
            };
            let inserted = tx
                .execute(
                    "INSERT INTO sites (uuid, username, address, secret_hash, secret_applied, router_token_hash, created)
                     VALUES ($1, $2, $3, $4, false, $5, $6)",
                    &[
                        &uuid,
                        &site.username,
                        &IpAddr::V4(address),
                        &self.keys.digest(&created.secret),
                        &self.keys.digest(&created.router_token),
                        &secs(now),
                    ],
                )
                .await;
            match inserted.as_ref().map_err(conflict) {
                Ok(_) => {}
                Err(Some("sites_address_key")) => continue,
                // Created by another request meanwhile: theirs stands.
                Err(Some(_)) => {
                    drop(tx);
                    let site = select_site(&c, &uuid).await?;
                    return site.map(|s| (s, None)).ok_or_else(|| {
                        StoreError::Corrupt(format!("site {uuid} conflicted but is not there"))
                    });
                }
                Err(None) => {
                    inserted?;
                }
            }
            tx.commit().await?;
            return Ok((site, Some(created)));
        }
        Err(StoreError::Pg(format!(
            "no free address after {MAX_TRIES} tries: every one was taken meanwhile"
        )))
    }

    async fn verify_async(
        &self,
        name: &str,
        password: &str,
        now: u64,
    ) -> Result<Option<Site>, StoreError> {
        let Ok(uuid) = tunnel_of(name) else {
            return Ok(None);
        };
        let c = self.client().await?;
        let sql = format!(
            "SELECT {SITE}, secret_hash, previous_secret_hash, previous_until FROM sites WHERE uuid = $1"
        );
        let Some(row) = c.query_opt(&sql, &[&uuid]).await? else {
            return Ok(None);
        };
        let site = site_of(&row)?;
        let current: String = col(&row, 4)?;
        let previous: Option<String> = col(&row, 5)?;
        let until: Option<i64> = col(&row, 6)?;
        let until = until.map(unsecs);
        let Some((matched, check)) = check_secret(
            &self.keys,
            password,
            &current,
            previous.as_deref(),
            until,
            now,
        ) else {
            return Ok(None);
        };
        let column = matched.column();
        match check {
            Check::NoMatch => Ok(None),
            Check::Match => Ok(Some(site)),
            Check::MatchLegacy => {
                // An argon2 hash copied from an older SQLite store: digest it now.
                let sql = format!("UPDATE sites SET {column} = $1 WHERE uuid = $2");
                c.execute(&sql, &[&self.keys.digest(password), &uuid])
                    .await?;
                Ok(Some(site))
            }
        }
    }

    async fn delete_async(&self, uuid: Uuid, now: u64) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let Some(row) = tx
            .query_opt(
                "DELETE FROM sites WHERE uuid = $1 RETURNING address",
                &[&uuid],
            )
            .await?
        else {
            return Ok(false);
        };
        let address: IpAddr = col(&row, 0)?;
        tx.execute(
            "INSERT INTO released (address, until) VALUES ($1, $2)
             ON CONFLICT (address) DO UPDATE SET until = EXCLUDED.until",
            &[&address, &secs(now + self.lifetimes.quarantine)],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn enroll_async(&self, token: &str, now: u64) -> Result<Option<Enrolled>, StoreError> {
        let router_token = self.keys.new_secret()?;
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let sql = format!(
            "SELECT {SITE}, enrollment_version, enrollment_until FROM sites
             WHERE enrollment_hash = $1 FOR UPDATE"
        );
        let Some(row) = tx.query_opt(&sql, &[&self.keys.digest(token)]).await? else {
            return Ok(None);
        };
        let site = site_of(&row)?;
        let version: Option<String> = col(&row, 4)?;
        let until: Option<i64> = col(&row, 5)?;
        // Used or not, an expired token is gone.
        tx.execute(
            "UPDATE sites SET enrollment_hash = NULL, enrollment_version = NULL, enrollment_until = NULL
             WHERE uuid = $1",
            &[&site.uuid],
        )
        .await?;
        if until.is_none_or(|u| u < secs(now)) {
            tx.commit().await?;
            return Ok(None);
        }
        tx.execute(
            "UPDATE sites SET router_token_hash = $1 WHERE uuid = $2",
            &[&self.keys.digest(&router_token), &site.uuid],
        )
        .await?;
        let job = self
            .rotate(&tx, site.uuid, "bootstrap", now)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("site {} vanished", site.uuid)))?;
        tx.commit().await?;
        Ok(Some(Enrolled {
            site,
            version: version.unwrap_or_default(),
            router_token,
            job,
        }))
    }

    async fn fetch_job_async(&self, site: Uuid, now: u64) -> Result<Option<Job>, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        self.expire_jobs(&tx, now).await?;
        let condition = format!("{OPEN_JOB} FOR UPDATE");
        let Some(job) = self.read_job(&tx, &condition, &site).await? else {
            tx.commit().await?; // the expiry
            return Ok(None);
        };
        tx.execute(
            "UPDATE jobs SET state = 'fetched', attempts = attempts + 1, fetched = COALESCE(fetched, $1)
             WHERE id = $2",
            &[&secs(now), &job.id],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(Job {
            state: JobState::Fetched,
            attempts: job.attempts + 1,
            fetched: job.fetched.or(Some(now)),
            ..job
        }))
    }

    async fn finish_job_async(
        &self,
        id: Uuid,
        site: Option<Uuid>,
        outcome: Outcome,
        now: u64,
    ) -> Result<Finished, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        self.expire_jobs(&tx, now).await?;
        let Some(job) = self.read_job(&tx, "id = $1 FOR UPDATE", &id).await? else {
            tx.commit().await?; // the expiry
            return Ok(Finished::NotFound);
        };
        let (job, wanted, error) = match finishing(job, site, outcome) {
            Finishing::Record(job, wanted, error) => (job, wanted, error),
            Finishing::Answer(answer) => {
                tx.commit().await?; // the expiry
                return Ok(answer);
            }
        };
        tx.execute(
            "UPDATE jobs SET state = $1, finished = $2, error = $3, secret = NULL WHERE id = $4",
            &[&wanted.as_str(), &secs(now), &error, &id],
        )
        .await?;
        if wanted == JobState::Applied {
            // The router has the current secret now: the previous one is done with.
            tx.execute(
                "UPDATE sites SET secret_applied = true, previous_secret_hash = NULL, previous_until = NULL
                 WHERE uuid = $1",
                &[&job.site],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Finished::Done(Job {
            state: wanted,
            finished: Some(now),
            error,
            secret: None,
            ..job
        }))
    }

    async fn credentials_async(&self, since: u64) -> Result<Credentials, StoreError> {
        let mut c = self.client().await?;
        // One snapshot: the number and the rows it covers.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let seq: i64 = col(&tx.query_one("SELECT value FROM sites_seq", &[]).await?, 0)?;
        let rows = tx
            .query(
                "SELECT username, address, secret_hash, previous_secret_hash, previous_until
                 FROM sites WHERE seq > $1 ORDER BY seq",
                &[&secs(since)],
            )
            .await?;
        let mut sites = Vec::with_capacity(rows.len());
        for r in &rows {
            sites.push(Credential {
                username: col(r, 0)?,
                address: v4(col(r, 1)?)?,
                secret: col(r, 2)?,
                previous: col(r, 3)?,
                previous_until: col::<Option<i64>>(r, 4)?.map(unsecs),
            });
        }
        let deleted = tx
            .query(
                "SELECT username FROM tombstones WHERE seq > $1 ORDER BY seq",
                &[&secs(since)],
            )
            .await?
            .iter()
            .map(|r| col(r, 0))
            .collect::<Result<Vec<String>, _>>()?;
        tx.commit().await?;
        Ok(Credentials {
            seq: unsecs(seq),
            sites,
            deleted,
        })
    }

    /// `UPDATE sites SET {set} WHERE uuid = $2` with `$1`: whether the site exists.
    async fn update_site(&self, set: &str, value: &str, site: Uuid) -> Result<bool, StoreError> {
        let sql = format!("UPDATE sites SET {set} WHERE uuid = $2");
        let n = self.client().await?.execute(&sql, &[&value, &site]).await?;
        Ok(n > 0)
    }
}

impl Store for PgSiteStore {
    fn ensure(&self, uuid: Uuid, now: u64) -> Result<(Site, Option<Created>), StoreError> {
        self.run(self.ensure_async(uuid, now))
    }

    fn get(&self, uuid: Uuid) -> Result<Option<Site>, StoreError> {
        self.run(async { select_site(&self.client().await?, &uuid).await })
    }

    fn delete(&self, uuid: Uuid, now: u64) -> Result<bool, StoreError> {
        self.run(self.delete_async(uuid, now))
    }

    fn verify(&self, name: &str, password: &str, now: u64) -> Result<Option<Site>, StoreError> {
        self.run(self.verify_async(name, password, now))
    }

    fn recreate(&self, site: Uuid, now: u64) -> Result<Option<Job>, StoreError> {
        self.run(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            let job = self.rotate(&tx, site, "recreate", now).await?;
            tx.commit().await?;
            Ok(job)
        })
    }

    fn new_enrollment(
        &self,
        site: Uuid,
        version: &str,
        until: u64,
    ) -> Result<Option<String>, StoreError> {
        let token = self.keys.new_secret()?;
        self.run(async {
            let n = self
                .client()
                .await?
                .execute(
                    "UPDATE sites SET enrollment_hash = $1, enrollment_version = $2, enrollment_until = $3
                     WHERE uuid = $4",
                    &[&self.keys.digest(&token), &version, &secs(until), &site],
                )
                .await?;
            Ok((n > 0).then_some(token))
        })
    }

    fn enroll(&self, token: &str, now: u64) -> Result<Option<Enrolled>, StoreError> {
        self.run(self.enroll_async(token, now))
    }

    fn new_router_token(&self, site: Uuid) -> Result<Option<String>, StoreError> {
        let token = self.keys.new_secret()?;
        let digest = self.keys.digest(&token);
        let found = self.run(self.update_site("router_token_hash = $1", &digest, site))?;
        Ok(found.then_some(token))
    }

    fn new_live_ticket(
        &self,
        site: Uuid,
        user: &str,
        now: u64,
        until: u64,
    ) -> Result<Option<String>, StoreError> {
        let ticket = self.keys.new_secret()?;
        let digest = self.keys.digest(&ticket);
        self.run(async {
            let c = self.client().await?;
            // Expired tickets go as new ones come, so the table stays small.
            c.execute(
                "DELETE FROM live_tickets WHERE until < $1",
                &[&(now as i64)],
            )
            .await?;
            let n = c
                .execute(
                    "INSERT INTO live_tickets SELECT $1, uuid, $2, $3 FROM sites WHERE uuid = $4",
                    &[&digest, &user, &(until as i64), &site],
                )
                .await?;
            Ok((n > 0).then_some(ticket))
        })
    }

    fn redeem_live_ticket(&self, ticket: &str, now: u64) -> Result<Option<LiveTicket>, StoreError> {
        let digest = self.keys.digest(ticket);
        self.run(async {
            let c = self.client().await?;
            let row = c
                .query_opt(
                    "DELETE FROM live_tickets WHERE digest = $1 RETURNING site, \"user\", until",
                    &[&digest],
                )
                .await?;
            let Some(r) = row else {
                return Ok(None);
            };
            if col::<i64>(&r, 2)? < now as i64 {
                return Ok(None);
            }
            Ok(Some(LiveTicket {
                site: col(&r, 0)?,
                user: col(&r, 1)?,
            }))
        })
    }

    fn router_site(&self, token: &str) -> Result<Option<Site>, StoreError> {
        // The digest is deterministic under the key, so it is the lookup key.
        let sql = format!("SELECT {SITE} FROM sites WHERE router_token_hash = $1");
        self.run(async {
            let c = self.client().await?;
            match c.query_opt(&sql, &[&self.keys.digest(token)]).await? {
                Some(row) => site_of(&row).map(Some),
                None => Ok(None),
            }
        })
    }

    fn fetch_job(&self, site: Uuid, now: u64) -> Result<Option<Job>, StoreError> {
        self.run(self.fetch_job_async(site, now))
    }

    fn job(&self, id: Uuid, now: u64) -> Result<Option<Job>, StoreError> {
        self.run(async {
            let c = self.client().await?;
            self.expire_jobs(&c, now).await?;
            self.read_job(&c, "id = $1", &id).await
        })
    }

    fn pending_job(&self, site: Uuid, now: u64) -> Result<Option<Job>, StoreError> {
        self.run(async {
            let c = self.client().await?;
            self.expire_jobs(&c, now).await?;
            self.read_job(&c, OPEN_JOB, &site).await
        })
    }

    fn job_fetched(&self, id: Uuid, now: u64) -> Result<bool, StoreError> {
        self.run(async {
            let n = self
                .client()
                .await?
                .execute(
                    "UPDATE jobs SET state = 'fetched', attempts = attempts + 1, fetched = COALESCE(fetched, $1)
                     WHERE id = $2 AND state IN ('pending', 'fetched')",
                    &[&secs(now), &id],
                )
                .await?;
            Ok(n > 0)
        })
    }

    fn finish_job(
        &self,
        id: Uuid,
        site: Option<Uuid>,
        outcome: Outcome,
        now: u64,
    ) -> Result<Finished, StoreError> {
        self.run(self.finish_job_async(id, site, outcome, now))
    }

    fn sites(&self) -> Result<Vec<Site>, StoreError> {
        let sql = format!("SELECT {SITE} FROM sites ORDER BY address");
        self.run(async {
            let rows = self.client().await?.query(&sql, &[]).await?;
            rows.iter().map(site_of).collect()
        })
    }

    fn addresses(&self) -> Result<Vec<Ipv4Addr>, StoreError> {
        self.run(async {
            let rows = self
                .client()
                .await?
                .query(
                    "SELECT address FROM sites UNION SELECT address FROM released",
                    &[],
                )
                .await?;
            rows.iter().map(|r| v4(col(r, 0)?)).collect()
        })
    }

    fn credentials(&self, since: u64) -> Result<Credentials, StoreError> {
        self.run(self.credentials_async(since))
    }

    fn digests(&self) -> Digests {
        self.keys.digests().clone()
    }

    fn live_password(&self, site: Uuid, job: Uuid) -> String {
        self.keys.live_password(site, job)
    }

    fn applied_job(&self, site: Uuid) -> Result<Option<Uuid>, StoreError> {
        self.run(async {
            let row = self
                .client()
                .await?
                .query_opt(
                    "SELECT id FROM jobs WHERE site = $1 AND state = 'applied'
                     ORDER BY finished DESC, created DESC LIMIT 1",
                    &[&site],
                )
                .await?;
            row.map(|r| col(&r, 0)).transpose()
        })
    }

    fn record_attempt(&self, a: &Attempt) -> Result<(), StoreError> {
        self.run(async {
            self.client()
                .await?
                .execute(
                    "INSERT INTO auth_attempts (time, username, site, ok, source) VALUES ($1, $2, $3, $4, $5)",
                    &[&secs(a.time), &a.username, &a.site, &a.ok, &a.source],
                )
                .await?;
            Ok(())
        })
    }

    fn changes(&self) -> Option<watch::Receiver<u64>> {
        Some(self.changes.clone())
    }
}

/// The site columns every query reads first: uuid, username, address, created.
const SITE: &str = "uuid, username, address, created";

const JOB: &str = "id, site, kind, state, attempts, created, fetched, finished, error, secret";

/// The newest open job of the site `$1`.
const OPEN_JOB: &str =
    "site = $1 AND state IN ('pending', 'fetched') ORDER BY created DESC, id DESC LIMIT 1";

async fn select_site(c: &impl GenericClient, uuid: &Uuid) -> Result<Option<Site>, StoreError> {
    let sql = format!("SELECT {SITE} FROM sites WHERE uuid = $1");
    match c.query_opt(&sql, &[uuid]).await? {
        Some(row) => site_of(&row).map(Some),
        None => Ok(None),
    }
}

fn site_of(r: &Row) -> Result<Site, StoreError> {
    Ok(Site {
        uuid: col(r, 0)?,
        username: col(r, 1)?,
        address: v4(col(r, 2)?)?,
        created: unsecs(col(r, 3)?),
    })
}

/// Column `i`, a type mismatch being corrupt data (not an unavailable database).
fn col<'a, T: FromSql<'a>>(r: &'a Row, i: usize) -> Result<T, StoreError> {
    r.try_get(i)
        .map_err(|e| StoreError::Corrupt(format!("column {i}: {e}")))
}

fn v4(a: IpAddr) -> Result<Ipv4Addr, StoreError> {
    match a {
        IpAddr::V4(a) => Ok(a),
        IpAddr::V6(a) => Err(StoreError::Corrupt(format!("address `{a}`"))),
    }
}

fn secs(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn unsecs(t: i64) -> u64 {
    t.max(0) as u64
}

/// The first and last tunnel addresses of `net` (as [`crate::tunnels::pool::Pool`]:
/// never the network, gateway or broadcast address).
fn bounds(net: Ipv4Net) -> Result<(IpAddr, IpAddr), StoreError> {
    let net = net.trunc();
    let size = 1u64 << (32 - u32::from(net.prefix_len()));
    if size < 4 {
        return Err(PoolError::TooSmall(net).into());
    }
    let base = u64::from(u32::from(net.network()));
    let at = |offset: u64| IpAddr::V4(Ipv4Addr::from((base + offset) as u32));
    Ok((at(2), at(size - 2)))
}

/// A free address of `net` for the caller's transaction: a released one
/// whose quarantine is over (the lowest no other transaction is taking),
/// else the cursor's next never-used one, else — the cursor past the end —
/// a hole below it. Only the last waits for other nodes.
async fn allocate(tx: &impl GenericClient, net: Ipv4Net, now: u64) -> Result<Ipv4Addr, StoreError> {
    let (first, last) = bounds(net)?;
    let reused = tx
        .query_opt(
            "DELETE FROM released WHERE address = (
                 SELECT address FROM released WHERE until <= $1 AND address BETWEEN $2 AND $3
                 ORDER BY address LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING address",
            &[&secs(now), &first, &last],
        )
        .await?;
    if let Some(row) = reused {
        return v4(col(&row, 0)?);
    }
    for _ in 0..2 {
        let next: IpAddr = col(
            &tx.query_one("SELECT '0.0.0.0'::inet + nextval('site_cursor')", &[])
                .await?,
            0,
        )?;
        if next < first {
            // A new pool, or a store filled by `mgnt store migrate`.
            resync_cursor(tx, net, false).await?;
            continue;
        }
        if next <= last {
            return v4(next);
        }
        break;
    }
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ALLOCATION_LOCK])
        .await?;
    let hole = tx
        .query_opt(
            "WITH taken AS (SELECT address AS a FROM sites UNION ALL SELECT address FROM released)
             SELECT c FROM (SELECT $1::inet AS c UNION ALL SELECT a + 1 FROM taken) AS candidates
             WHERE c BETWEEN $1 AND $2
               AND NOT EXISTS (SELECT 1 FROM sites WHERE address = c)
               AND NOT EXISTS (SELECT 1 FROM released WHERE address = c)
             ORDER BY c LIMIT 1",
            &[&first, &last],
        )
        .await?;
    match hole {
        Some(row) => v4(col(&row, 0)?),
        None => Err(PoolError::Exhausted(net).into()),
    }
}

/// Moves the cursor to the highest address `net` has taken (or just before
/// its first): up only, unless `down` (a renumber onto another pool).
async fn resync_cursor(
    tx: &impl GenericClient,
    net: Ipv4Net,
    down: bool,
) -> Result<(), StoreError> {
    let (first, last) = bounds(net)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ALLOCATION_LOCK])
        .await?;
    tx.execute(
        "SELECT setval('site_cursor', GREATEST(
             CASE WHEN $3 THEN 0 ELSE (SELECT last_value FROM site_cursor) END,
             $1::inet - '0.0.0.0'::inet - 1,
             (SELECT max(address) - '0.0.0.0'::inet FROM (
                 (SELECT address FROM sites WHERE address BETWEEN $1 AND $2
                  ORDER BY address DESC LIMIT 1)
                 UNION ALL
                 (SELECT address FROM released WHERE address BETWEEN $1 AND $2
                  ORDER BY address DESC LIMIT 1)) AS top)))",
        &[&first, &last, &down],
    )
    .await?;
    Ok(())
}

/// The constraint a statement violated, when it was a unique violation.
fn conflict(e: &tokio_postgres::Error) -> Option<&str> {
    let db = e.as_db_error()?;
    (db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
        .then(|| db.constraint())
        .flatten()
}

/// Follows `mgnt_sites` on a connection of its own and keeps `changes` at
/// the newest number announced (and, after each (re)connect, the newest
/// committed, so nothing said while disconnected is missed).
async fn follow(db: Db, changes: watch::Sender<u64>) {
    let newer = |seq: u64| {
        changes.send_if_modified(|v| {
            let newer = seq > *v;
            *v = (*v).max(seq);
            newer
        })
    };
    loop {
        let (tx, mut messages) = mpsc::channel(64);
        if let Ok(client) = db.dedicated(tx).await {
            let listening = client.batch_execute(&format!("LISTEN {CHANNEL}")).await;
            let current = client.query_one("SELECT value FROM sites_seq", &[]).await;
            if let (Ok(()), Ok(row)) = (listening, current) {
                newer(unsecs(row.try_get(0).unwrap_or(0)));
                while let Some(message) = messages.recv().await {
                    if let AsyncMessage::Notification(n) = message
                        && let Ok(seq) = n.payload().parse::<u64>()
                    {
                        newer(seq);
                    }
                }
            }
        }
        if changes.is_closed() {
            return;
        }
        tokio::time::sleep(RECONNECT).await;
    }
}
