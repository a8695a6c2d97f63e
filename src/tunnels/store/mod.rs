//! Sites, their tunnels and their jobs, behind [`Store`]: SQLite on a single
//! machine, PostgreSQL when several nodes share `[store]`.
//!
//! Secrets are random and stored only as keyed digests ([`super::keys`]); a
//! pending job keeps its tunnel secret sealed so the router that fetches it
//! can be shown it. A site has three credentials over its life:
//! - its tunnel secret (OpenVPN password), rotated by a recreate job. Until
//!   that job is applied, or `rotation_grace` ends, the last applied secret
//!   keeps working too: a rotation never cuts a live tunnel;
//! - its router token, with which its router pulls jobs;
//! - nothing else: the admin API's tokens never reach a router.
//!
//! Jobs move pending → fetched → applied | failed | expired | superseded.

#[doc(hidden)]
pub mod conformance;
pub mod leases;
mod pg;
pub mod reboots;
mod sqlite;
#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    keys::{Check, Digests, KeyError, Keys},
    pool::PoolError,
};
pub use pg::PgSiteStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// PostgreSQL refused or failed a statement.
    #[error("database: {0}")]
    Pg(String),
    /// PostgreSQL cannot be reached: nothing was changed.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Keys(#[from] KeyError),
}

/// Lifetimes the store enforces (seconds).
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// How long a deleted tunnel's address waits before reuse.
    pub quarantine: u64,
    /// How long the last applied secret keeps working after a recreate.
    pub rotation_grace: u64,
    /// How long a job waits for its router before it expires.
    pub job_expiry: u64,
}

/// A site's tunnel as stored (never a secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Site {
    pub uuid: Uuid,
    pub username: String,
    pub address: Ipv4Addr,
    /// Seconds since 1970.
    pub created: u64,
}

/// What a new site's creator is shown, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub secret: String,
    pub router_token: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Pending,
    Fetched,
    Applied,
    Failed,
    Expired,
    Superseded,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Fetched => "fetched",
            Self::Applied => "applied",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Superseded => "superseded",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Fetched,
            Self::Applied,
            Self::Failed,
            Self::Expired,
            Self::Superseded,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }

    /// Whether the job may still be fetched and run.
    pub fn open(self) -> bool {
        matches!(self, Self::Pending | Self::Fetched)
    }
}

/// A redeemed live-view ticket: whose site, and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTicket {
    pub site: Uuid,
    /// The name of the token it was issued to.
    pub user: String,
}

/// A job that (re)installs a site's tunnel on its router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    pub id: Uuid,
    pub site: Uuid,
    /// `install` (with the site) or `recreate`.
    pub kind: String,
    pub state: JobState,
    /// Times a router fetched it.
    pub attempts: u32,
    /// Seconds since 1970.
    pub created: u64,
    pub fetched: Option<u64>,
    pub finished: Option<u64>,
    /// What the router reported when it failed.
    pub error: Option<String>,
    /// The tunnel secret it installs, while the job is open; never serialised.
    #[serde(skip)]
    pub secret: Option<String>,
}

impl Job {
    /// A new job, waiting for its router, carrying `secret`.
    fn pending(id: Uuid, site: Uuid, kind: &str, secret: &str, now: u64) -> Self {
        Self {
            id,
            site,
            kind: kind.to_owned(),
            state: JobState::Pending,
            attempts: 0,
            created: now,
            fetched: None,
            finished: None,
            error: None,
            secret: Some(secret.to_owned()),
        }
    }
}

/// One tunnel's login, as an agent checks it: the username, the address it
/// gets and the digests its secret is checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub username: String,
    pub address: Ipv4Addr,
    pub secret: String,
    /// The last applied secret during a rotation, until `previous_until`.
    pub previous: Option<String>,
    pub previous_until: Option<u64>,
}

/// Changes since a sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The newest change included: ask for changes after it next time.
    pub seq: u64,
    pub sites: Vec<Credential>,
    /// Usernames of deleted sites.
    pub deleted: Vec<String>,
}

/// A site moved into a new pool by `mgnt site renumber`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Renumbered {
    pub site: Uuid,
    pub from: Ipv4Addr,
    pub to: Ipv4Addr,
}

/// What spending a bootstrap token gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub site: Site,
    /// The RouterOS version the bootstrap was issued for.
    pub version: String,
    pub router_token: String,
    /// The job installing the tunnel (its secret included).
    pub job: Job,
}

/// What a router reports for a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Failed(String),
}

/// What reporting an outcome did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// Recorded now, or the same outcome was recorded before (idempotent).
    Done(Job),
    /// The job had already ended otherwise (its state is in the job).
    Conflict(Job),
    /// No such job (for this site).
    NotFound,
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

/// Longest failure text kept from a router (a job's, a reboot's), in characters.
const MAX_ERROR: usize = 500;

/// `error` cut to [`MAX_ERROR`] characters.
fn clip_error(error: &str) -> String {
    error.chars().take(MAX_ERROR).collect()
}

/// The stored digest a password matched: the column to replace should it
/// be an older version's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Matched {
    Current,
    Previous,
}

impl Matched {
    fn column(self) -> &'static str {
        match self {
            Self::Current => "secret_hash",
            Self::Previous => "previous_secret_hash",
        }
    }
}

/// Checks `password` against a site's current digest, then against the
/// previous one while its grace lasts; `None` when neither matches.
fn check_secret(
    keys: &Keys,
    password: &str,
    current: &str,
    previous: Option<&str>,
    previous_until: Option<u64>,
    now: u64,
) -> Option<(Matched, Check)> {
    match keys.check(password, current) {
        Check::NoMatch => {
            let in_grace = previous_until.is_some_and(|until| now < until);
            let previous = previous.filter(|_| in_grace)?;
            match keys.check(password, previous) {
                Check::NoMatch => None,
                check => Some((Matched::Previous, check)),
            }
        }
        check => Some((Matched::Current, check)),
    }
}

/// What reporting an outcome for a job comes to.
enum Finishing {
    /// Record this state and error.
    Record(Job, JobState, Option<String>),
    /// Nothing to write: not that site's job, or already ended (the same
    /// way or not).
    Answer(Finished),
}

/// What reporting `outcome` for `job` (by `site`'s router, if given) comes to.
fn finishing(job: Job, site: Option<Uuid>, outcome: Outcome) -> Finishing {
    if site.is_some_and(|s| s != job.site) {
        return Finishing::Answer(Finished::NotFound);
    }
    let wanted = match &outcome {
        Outcome::Applied => JobState::Applied,
        Outcome::Failed(_) => JobState::Failed,
    };
    if !job.state.open() {
        return Finishing::Answer(if job.state == wanted {
            Finished::Done(job)
        } else {
            Finished::Conflict(job)
        });
    }
    let error = match outcome {
        Outcome::Applied => None,
        Outcome::Failed(e) => Some(clip_error(&e)),
    };
    Finishing::Record(job, wanted, error)
}

/// The secret an open job carries, opened from its sealed form.
fn open_sealed(
    keys: &Keys,
    id: Uuid,
    sealed: Option<&str>,
    state: JobState,
) -> Result<Option<String>, StoreError> {
    match (sealed, state.open()) {
        (Some(sealed), true) => keys.open(sealed, &id.to_string()).map(Some).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "job {id}: sealed secret does not open with this key file"
            ))
        }),
        _ => Ok(None),
    }
}

/// What provisioning needs from storage.
pub trait Store: reboots::RebootStore + leases::LeaseStore + Send + Sync {
    /// Returns the site, creating it (address, secret, router token, install
    /// job) if it does not exist; safe to retry and to race: one site, one
    /// address. The credentials are returned only to the call that created it.
    fn ensure(&self, uuid: Uuid, now: u64) -> Result<(Site, Option<Created>), StoreError>;
    fn get(&self, uuid: Uuid) -> Result<Option<Site>, StoreError>;
    /// Deletes the site and its jobs; its address returns to the pool after
    /// the quarantine, once the deletion is committed.
    fn delete(&self, uuid: Uuid, now: u64) -> Result<bool, StoreError>;
    /// Checks a router's OpenVPN username and password: the current secret,
    /// or the last applied one while a rotation is in its grace time.
    fn verify(&self, username: &str, password: &str, now: u64) -> Result<Option<Site>, StoreError>;
    /// A new secret and a job that installs it (superseding open jobs); the
    /// current secret stays valid as described on [`Store`]. `None` for an
    /// unknown site.
    fn recreate(&self, site: Uuid, now: u64) -> Result<Option<Job>, StoreError>;
    /// Issues the site a one-time bootstrap token for a router of `version`,
    /// valid until `until` (replacing an earlier one). `None` for no such site.
    fn new_enrollment(
        &self,
        site: Uuid,
        version: &str,
        until: u64,
    ) -> Result<Option<String>, StoreError>;
    /// Spends a bootstrap token: the site gets a new router token and a
    /// `bootstrap` job with a new secret (rotated as by [`Store::recreate`]).
    /// `None` for an unknown, spent or expired token.
    fn enroll(&self, token: &str, now: u64) -> Result<Option<Enrolled>, StoreError>;
    /// Issues the site a new router token (the old one stops working).
    fn new_router_token(&self, site: Uuid) -> Result<Option<String>, StoreError>;
    /// The site a router token belongs to.
    fn router_site(&self, token: &str) -> Result<Option<Site>, StoreError>;
    /// A single-use live-view ticket for `site`, issued to `user` (the name
    /// of the token that asked), valid until `until`; `None` without such a
    /// site. Stored as a digest, so any node can redeem it.
    fn new_live_ticket(
        &self,
        site: Uuid,
        user: &str,
        now: u64,
        until: u64,
    ) -> Result<Option<String>, StoreError>;
    /// Spends a ticket: its site and user, if it was valid at `now`.
    /// Spent, expired or unknown: `None` (a spent ticket is gone).
    fn redeem_live_ticket(&self, ticket: &str, now: u64) -> Result<Option<LiveTicket>, StoreError>;
    /// The site's open job for its router, recorded as fetched once more.
    fn fetch_job(&self, site: Uuid, now: u64) -> Result<Option<Job>, StoreError>;
    fn job(&self, id: Uuid, now: u64) -> Result<Option<Job>, StoreError>;
    /// The site's open job, unchanged (for the admin API).
    fn pending_job(&self, site: Uuid, now: u64) -> Result<Option<Job>, StoreError>;
    /// Records that the job's script was handed out through the admin API.
    fn job_fetched(&self, id: Uuid, now: u64) -> Result<bool, StoreError>;
    /// Records a job's outcome, for `site`'s router only when `site` is given.
    fn finish_job(
        &self,
        id: Uuid,
        site: Option<Uuid>,
        outcome: Outcome,
        now: u64,
    ) -> Result<Finished, StoreError>;
    /// Every site, for exporting the OpenVPN server files.
    fn sites(&self) -> Result<Vec<Site>, StoreError>;
    /// Every address the pool must hold: sites' and quarantined ones.
    fn addresses(&self) -> Result<Vec<Ipv4Addr>, StoreError>;
    /// What logins are checked against, changed after `since` (a change
    /// sequence number; 0 for everything), for agents' caches.
    fn credentials(&self, since: u64) -> Result<Credentials, StoreError>;
    /// The key secrets are digested under (for agents).
    fn digests(&self) -> Digests;
    /// The live-view user's password `job` installs on `site`'s router.
    fn live_password(&self, site: Uuid, job: Uuid) -> String;
    /// The job the site's router last reported applied.
    fn applied_job(&self, site: Uuid) -> Result<Option<Uuid>, StoreError>;
    /// The jobs whose live-view password the router may hold, likeliest
    /// first: the last applied, then the open one (fetched and perhaps
    /// applied, its report not in yet) — both until the open one is applied.
    fn live_jobs(&self, site: Uuid, now: u64) -> Result<Vec<Uuid>, StoreError> {
        let mut jobs: Vec<Uuid> = self.applied_job(site)?.into_iter().collect();
        jobs.extend(self.pending_job(site, now)?.map(|j| j.id));
        Ok(jobs)
    }
    /// Records one authentication attempt.
    fn record_attempt(&self, attempt: &Attempt) -> Result<(), StoreError>;
    /// The newest credential change this node has heard of, when the store
    /// announces changes (other nodes make them too); `None`: look again.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}
