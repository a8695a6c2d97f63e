//! `mgnt store migrate`: a single machine's stores copied into the `[store]`
//! database, in one transaction, into an empty store only.
//!
//! One copy per store, each reading its files and writing its tables inside
//! the transaction: [`tunnels`] (`tunnels.db`: sites, quarantined addresses,
//! jobs, auth attempts), [`regions`] (the state file's drains and the audit
//! log) and [`vpnlog`] (`vpnlog.db`: sessions and the day-partitioned records). The files are opened and checked first, `tunnels.db`'s rows
//! read as they are copied; a failure anywhere rolls all of it back. The
//! sources are never changed, so the single machine can go on as it was.
//!
//! Its SQLite reads block between its awaits: run it with
//! `Runtime::block_on`, as the command line does, not on a runtime's workers.

pub mod regions;
mod scratch;
pub mod tunnels;
pub mod vpnlog;

use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::{config::Config, pg::Db, state, tunnels::keys::KeyError};

/// Where the single machine keeps what is copied.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Its `[provision] data_dir` (with `tunnels.db`).
    pub dir: PathBuf,
    pub state_file: PathBuf,
    pub audit_log: PathBuf,
    /// Its `[vpnlog] data_dir` (with `vpnlog.db`, if it kept logs).
    pub vpnlog_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    #[error(
        "{file}: not found; with [provision] in the config, --from names the single machine's [provision] data_dir"
    )]
    NoTunnels { file: PathBuf },
    #[error(
        "{file} exists but the config has no [provision] table: its secret_key_file is needed to copy the sites"
    )]
    NoProvision { file: PathBuf },
    #[error(
        "{file}: not found; [provision] secret_key_file must be the single machine's key file (digests and sealed secrets are copied as they are)"
    )]
    NoKey { file: PathBuf },
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {source}")]
    Sqlite {
        file: PathBuf,
        source: rusqlite::Error,
    },
    #[error("{file}: {source}")]
    Open {
        file: PathBuf,
        source: crate::tunnels::store::StoreError,
    },
    #[error("{file}: {what}")]
    Corrupt { file: PathBuf, what: String },
    #[error(
        "{file}: job {job}: its sealed secret does not open with {key}: set [provision] secret_key_file to the single machine's key file"
    )]
    WrongKey {
        file: PathBuf,
        job: Uuid,
        key: PathBuf,
    },
    #[error(transparent)]
    StateFile(#[from] state::file::ReadError),
    #[error("{file}: {source}")]
    AuditLog {
        file: PathBuf,
        source: state::audit::BadLine,
    },
    #[error(
        "the database already holds {0}: `mgnt store migrate` copies into an empty store only; nothing was written"
    )]
    NotEmpty(String),
    #[error("the database: {0}")]
    Db(String),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's own words (and its DETAIL: which key, which row).
        Self::Db(match (e.as_db_error(), std::error::Error::source(&e)) {
            (Some(db), _) => db.to_string(),
            (None, Some(cause)) => format!("{e}: {cause}"),
            (None, None) => e.to_string(),
        })
    }
}

impl From<deadpool_postgres::PoolError> for MigrateError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Db(e.to_string())
    }
}

/// What was copied, for the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// `None`: no `tunnels.db` and no `[provision]`.
    pub tunnels: Option<tunnels::Copied>,
    pub regions: regions::Copied,
    /// `None`: no `vpnlog.db`.
    pub vpnlog: Option<vpnlog::Copied>,
    /// The node name the audit rows carry.
    pub node: String,
}

/// Copies `from` into `db` for `config`'s node (see the module comment).
pub async fn run(config: &Config, db: &Db, from: &Sources) -> Result<Summary, MigrateError> {
    if !from.dir.is_dir() {
        return Err(MigrateError::NotADirectory(from.dir.clone()));
    }
    let tunnels = tunnels::Source::open(config, &from.dir)?;
    let regions = regions::Source::read(&from.state_file, &from.audit_log)?;
    let logs = vpnlog::Source::open(&from.vpnlog_dir)?;
    let mut client = db.pool.get().await?;
    let tx = client.transaction().await?;
    refuse_unless_empty(&tx).await?;
    let copied_tunnels = match &tunnels {
        Some(t) => Some(t.copy(&tx).await?),
        None => None,
    };
    let copied_regions = regions.copy(&tx, &config.node.name).await?;
    let copied_logs = match &logs {
        Some(l) => Some(l.copy(&tx).await?),
        None => None,
    };
    tx.commit().await?;
    Ok(Summary {
        tunnels: copied_tunnels,
        regions: copied_regions,
        vpnlog: copied_logs,
        node: config.node.name.clone(),
    })
}

/// Locks out every writer of what an empty store must not hold until the
/// commit (nodes already running on the database wait), then counts it.
async fn refuse_unless_empty(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), MigrateError> {
    tx.batch_execute(
        "LOCK TABLE sites, released, drains, vpn_sessions, vpn_auth IN EXCLUSIVE MODE",
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT (SELECT count(*) FROM sites), (SELECT count(*) FROM released),
                    (SELECT count(*) FROM drains),
                    (SELECT count(*) FROM vpn_sessions) + (SELECT count(*) FROM vpn_auth)",
            &[],
        )
        .await?;
    let held = Held {
        sites: row.try_get(0)?,
        released: row.try_get(1)?,
        drains: row.try_get(2)?,
        log_records: row.try_get(3)?,
    };
    match held.refusal() {
        Some(what) => Err(MigrateError::NotEmpty(what)),
        None => Ok(()),
    }
}

/// What the database holds that a copy would mix with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Held {
    sites: i64,
    released: i64,
    drains: i64,
    log_records: i64,
}

impl Held {
    /// What stands in the way, in words ("2 sites and 1 drain"); `None` when
    /// nothing does.
    fn refusal(&self) -> Option<String> {
        let count = |n: i64, one: &str, many: &str| match n {
            0 => None,
            1 => Some(format!("1 {one}")),
            n => Some(format!("{n} {many}")),
        };
        let parts: Vec<String> = [
            count(self.sites, "site", "sites"),
            count(
                self.released,
                "quarantined address",
                "quarantined addresses",
            ),
            count(self.drains, "drain", "drains"),
            count(self.log_records, "VPN log record", "VPN log records"),
        ]
        .into_iter()
        .flatten()
        .collect();
        match parts.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            [init @ .., last] => Some(format!("{} and {last}", init.join(", "))),
        }
    }
}

impl Summary {
    /// The report printed by `mgnt store migrate`.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "copied into the [store] database in one transaction (audit rows as node `{}`):\n",
            self.node
        );
        let line = |out: &mut String, table: &str, n: u64, note: String| {
            out.push_str(&format!("  {table:<14}{n:>8}{note}\n"));
        };
        let from = |f: &Path, found: bool| {
            if found {
                format!("  from {}", f.display())
            } else {
                format!("  ({} not found)", f.display())
            }
        };
        let mut notes = Vec::new();
        match &self.tunnels {
            Some(t) => {
                line(
                    &mut out,
                    "sites",
                    t.sites,
                    format!("  from {} (left unchanged)", t.file.display()),
                );
                line(&mut out, "released", t.released, String::new());
                line(
                    &mut out,
                    "jobs",
                    t.jobs,
                    format!("  ({} open)", t.open_jobs),
                );
                line(&mut out, "auth_attempts", t.auth_attempts, String::new());
                notes.push(format!(
                    "Digests and sealed job secrets were copied as they are: every node must use this [provision] secret_key_file, {}.",
                    t.key_file.display()
                ));
                if t.open_jobs == 0 {
                    notes.push(
                        "No open job to check the key file with: make sure it is the single machine's."
                            .to_owned(),
                    );
                } else if t.open_jobs == 1 {
                    notes.push("The open job's sealed secret opens with it.".to_owned());
                } else {
                    notes.push(format!(
                        "The sealed secrets of all {} open jobs open with it.",
                        t.open_jobs
                    ));
                }
                if t.orphan_jobs > 0 {
                    notes.push(format!(
                        "{} job(s) of sites no longer in the store were left out.",
                        t.orphan_jobs
                    ));
                }
                if t.outside_pool > 0 {
                    notes.push(format!(
                        "{} site(s) lie outside [provision] pool {}: run `mgnt site renumber` before starting the nodes.",
                        t.outside_pool, t.pool
                    ));
                }
            }
            None => notes.push("No tunnels.db and no [provision]: no sites copied.".to_owned()),
        }
        let r = &self.regions;
        line(
            &mut out,
            "drains",
            r.drains,
            from(&r.state_file, r.state_file_found),
        );
        line(
            &mut out,
            "audit",
            r.audit,
            from(&r.audit_log, r.audit_log_found),
        );
        match &self.vpnlog {
            Some(l) => {
                let note = format!("  from {} (left unchanged)", l.file.display());
                line(&mut out, "vpn_sessions", l.sessions, note);
                line(&mut out, "vpn_auth", l.auth, String::new());
                line(&mut out, "vpn_traffic", l.traffic, String::new());
                line(&mut out, "vpn_latency", l.latency, String::new());
                line(&mut out, "vpn_unparsed", l.unparsed, String::new());
            }
            None => notes.push("No vpnlog.db: no VPN log records copied.".to_owned()),
        }
        for note in notes {
            out.push_str(&note);
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_what_the_database_holds() {
        let held = |sites, released, drains| Held {
            sites,
            released,
            drains,
            log_records: 0,
        };
        assert_eq!(held(0, 0, 0).refusal(), None);
        assert_eq!(held(1, 0, 0).refusal().as_deref(), Some("1 site"));
        assert_eq!(
            held(2, 0, 1).refusal().as_deref(),
            Some("2 sites and 1 drain")
        );
        assert_eq!(
            held(1, 3, 2).refusal().as_deref(),
            Some("1 site, 3 quarantined addresses and 2 drains")
        );
        assert_eq!(
            held(0, 1, 0).refusal().as_deref(),
            Some("1 quarantined address")
        );
    }

    #[test]
    fn the_summary_counts_every_table_and_says_which_key_file_every_node_needs() {
        let summary = Summary {
            tunnels: Some(tunnels::Copied {
                file: "/srv/state/tunnels.db".into(),
                sites: 2,
                released: 1,
                jobs: 3,
                open_jobs: 0,
                orphan_jobs: 1,
                auth_attempts: 4,
                outside_pool: 2,
                key_file: "/srv/state/secret.key".into(),
                pool: "100.64.0.0/24".parse().unwrap(),
            }),
            regions: regions::Copied {
                drains: 1,
                audit: 5,
                state_file: "/srv/state/health.json".into(),
                state_file_found: true,
                audit_log: "/srv/state/audit.log".into(),
                audit_log_found: false,
            },
            vpnlog: Some(vpnlog::Copied {
                file: "/srv/state/vpnlog.db".into(),
                sessions: 6,
                auth: 7,
                traffic: 8,
                latency: 9,
                unparsed: 10,
            }),
            node: "node-a".into(),
        };
        let text = summary.to_text();
        for want in [
            "node `node-a`",
            "  sites                2  from /srv/state/tunnels.db",
            "  released             1\n",
            "  jobs                 3  (0 open)",
            "  auth_attempts        4\n",
            "  drains               1  from /srv/state/health.json",
            "  audit                5  (/srv/state/audit.log not found)",
            "secret_key_file, /srv/state/secret.key.",
            "No open job to check the key file with",
            "1 job(s) of sites no longer in the store were left out",
            "2 site(s) lie outside [provision] pool 100.64.0.0/24",
            "  vpn_sessions         6  from /srv/state/vpnlog.db",
            "  vpn_unparsed        10\n",
        ] {
            assert!(text.contains(want), "{want:?} in\n{text}");
        }
        let bare = Summary {
            tunnels: None,
            ..summary
        }
        .to_text();
        assert!(bare.contains("no sites copied") && !bare.contains("secret_key_file"));
    }
}
