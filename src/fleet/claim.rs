//! A node's name in the shared database: claimed at start by an advisory
//! lock held on a connection of its own for the node's whole life, its row
//! in `nodes` kept fresh (heartbeat, config hash), and the other nodes'
//! rows compared with it.
//!
//! PostgreSQL releases a session's advisory locks when the session ends,
//! so liveness needs no clean shutdown: a killed process's connection
//! closes at once, and a dead machine's is dropped by the server's TCP
//! keepalives (set on that connection). Should the connection drop while
//! the node runs (a database restart), the node claims its name again, and
//! says loudly if another node took it meanwhile.

use std::{
    collections::BTreeSet,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, error::SqlState};
use tracing::{error, info, warn};

use super::{
    View,
    compare::{Differences, Node, key_of_lock, lock_key, mark_live},
};
use crate::{
    pg::{Db, DbError},
    state::Reader,
};

/// How often a node writes its `last_seen` and reads the others' rows
/// (besides the notifications, which come at once).
const HEARTBEAT: Duration = Duration::from_secs(10);
/// How often the loaded config hash is compared with the one published: a
/// reload reaches the other nodes within this.
const HASH_LOOK: Duration = Duration::from_secs(1);
/// Longest wait for a claimed name: long enough for the connection of a
/// process killed a moment ago to be closed by the server.
const CLAIM_WAIT: &str = "5s";
/// Longest wait for one statement on the claim's connection; beyond, the
/// connection is taken for dead and made again.
const STATEMENT: Duration = Duration::from_secs(15);
/// The server's TCP keepalives on the claim's connection: a vanished
/// machine's connection, and so its name, is released within about
/// idle + interval × count seconds.
const KEEPALIVES: &str = "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; \
     SET tcp_keepalives_count = 3";
/// Told when a node claims its name or changes its config hash (not at
/// every heartbeat: each node would read every other's rows each time).
const CHANNEL: &str = "mgnt_nodes";

/// What this node says of itself.
#[derive(Debug, Clone)]
pub struct Me {
    pub name: String,
    /// Seconds since 1970.
    pub started: u64,
    pub version: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "node name `{name}` is held by another live node on this database{}: give this node a name of its own ([node] name) or stop the other node (a node on a machine that vanished releases its name about 25 s later, when the database drops its connection)",
        holder.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    Taken {
        name: String,
        holder: Option<Holder>,
    },
    #[error("claiming the node name: {0}")]
    Db(#[from] DbError),
    #[error("claiming the node name: the database did not answer within {0:?}")]
    Silent(Duration),
}

/// What the row of a name's holder says of it.
#[derive(Debug)]
pub struct Holder {
    /// Seconds since 1970.
    pub started: u64,
    pub version: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let started = std::time::UNIX_EPOCH + Duration::from_secs(self.started);
        write!(
            f,
            "mgnt {}, started {}",
            self.version,
            humantime::format_rfc3339_seconds(started)
        )
    }
}

impl From<tokio_postgres::Error> for ClaimError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(DbError::Postgres(e))
    }
}

/// A claimed name: the connection that holds its lock, and that
/// connection's notifications.
pub struct Claim {
    client: Client,
    messages: mpsc::Receiver<AsyncMessage>,
}

/// Claims `me`'s name on a connection of its own, waiting a few seconds
/// for a holder that is going away; writes its row with `hash`.
pub async fn claim(db: &Db, me: &Me, hash: &str) -> Result<Claim, ClaimError> {
    let (tx, messages) = mpsc::channel(64);
    let client = db.dedicated(tx).await?;
    client
        .batch_execute(&format!("{KEEPALIVES}; SET lock_timeout = '{CLAIM_WAIT}'"))
        .await?;
    let locked = client
        .execute("SELECT pg_advisory_lock($1)", &[&lock_key(&me.name)])
        .await;
    if let Err(e) = locked {
        if e.code() != Some(&SqlState::LOCK_NOT_AVAILABLE) {
            return Err(e.into());
        }
        return Err(ClaimError::Taken {
            name: me.name.clone(),
            holder: holder(&client, &me.name).await,
        });
    }
    client.batch_execute("SET lock_timeout = 0").await?;
    write_row(&client, me, hash, true).await?;
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    Ok(Claim { client, messages })
}

/// What the row of the node holding `name` says of it, for the refusal.
async fn holder(client: &Client, name: &str) -> Option<Holder> {
    let row = client
        .query_opt(
            "SELECT started, version FROM nodes WHERE name = $1",
            &[&name],
        )
        .await
        .ok()??;
    Some(Holder {
        started: row.get::<_, i64>(0).max(0) as u64,
        version: row.get(1),
    })
}

/// Writes this node's row (now its last heartbeat); tells the others if
/// `news`.
async fn write_row(
    client: &Client,
    me: &Me,
    hash: &str,
    news: bool,
) -> Result<(), tokio_postgres::Error> {
    let now = crate::clock::now() as i64;
    client
        .execute(
            "INSERT INTO nodes (name, started, last_seen, config_hash, version)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET started = $2, last_seen = $3,
                 config_hash = $4, version = $5",
            &[&me.name, &(me.started as i64), &now, &hash, &me.version],
        )
        .await?;
    if news {
        client
            .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &me.name])
            .await?;
    }
    Ok(())
}

/// Every node's row, marked live when its name's lock is held.
pub async fn nodes(client: &Client) -> Result<Vec<Node>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT name, started, last_seen, config_hash, version FROM nodes ORDER BY name",
            &[],
        )
        .await?;
    let locks = client
        .query(
            "SELECT classid, objid FROM pg_locks
             WHERE locktype = 'advisory' AND granted AND objsubid = 1
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await?;
    let held: BTreeSet<i64> = locks
        .iter()
        .map(|l| key_of_lock(l.get(0), l.get(1)))
        .collect();
    let mut nodes: Vec<Node> = rows
        .iter()
        .map(|r| Node {
            name: r.get(0),
            started: r.get::<_, i64>(1).max(0) as u64,
            last_seen: r.get::<_, i64>(2).max(0) as u64,
            config_hash: r.get(3),
            version: r.get(4),
            live: false,
        })
        .collect();
    mark_live(&mut nodes, &held);
    Ok(nodes)
}

/// Keeps the claim for the node's life: heartbeats, the config hash after
/// reloads, the other nodes compared; the name claimed again whenever the
/// connection had to be made again.
/// Without a first claim (the database was away at start), claims it first.
pub async fn keep(db: Db, first: Option<Claim>, me: Me, reader: Reader, view: Arc<View>) {
    let mut claim = match first {
        Some(claim) => claim,
        None => reclaim(&db, &me, &reader).await,
    };
    let mut seen = Differences::default();
    loop {
        view.held.store(true, Relaxed);
        if let Err(error) = hold(claim, &me, &reader, &view, &mut seen).await {
            warn!(%error, "lost the connection holding this node's name; claiming it again");
        }
        view.held.store(false, Relaxed);
        // A connection that fails as soon as it is made is not made again at once.
        tokio::time::sleep(Duration::from_secs(1)).await;
        claim = reclaim(&db, &me, &reader).await;
    }
}

/// Claims the name again, as often as it takes; says once if another
/// node holds it meanwhile.
async fn reclaim(db: &Db, me: &Me, reader: &Reader) -> Claim {
    let mut backoff = Duration::from_secs(1);
    let mut said = false;
    loop {
        let hash = reader.load().data.config_hash.to_string();
        match claim_again(db, me, &hash).await {
            Ok(claim) => {
                if said {
                    info!("this node holds its name again");
                }
                return claim;
            }
            // Our own row: the database has not yet dropped the connection
            // this node lost (a network cut rather than a restart).
            Err(ClaimError::Taken { holder, .. })
                if !said && holder.as_ref().is_some_and(|h| h.started == me.started) =>
            {
                said = true;
                warn!(
                    "the database still holds this node's previous connection; claiming the name again once it drops it"
                );
            }
            Err(ClaimError::Taken { holder, .. }) if !said => {
                said = true;
                error!(
                    holder = %holder.map(|h| h.to_string()).unwrap_or_default(),
                    "another node took this node's name while it was away from the database: two nodes now answer under one name; stop one of them or rename it"
                );
            }
            // Said already, or the database is away (the state store says so).
            Err(_) => {}
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn claim_again(db: &Db, me: &Me, hash: &str) -> Result<Claim, ClaimError> {
    match tokio::time::timeout(STATEMENT, claim(db, me, hash)).await {
        Ok(claimed) => claimed,
        Err(_) => Err(ClaimError::Silent(STATEMENT)),
    }
}

/// Why holding the name ended.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error("{0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("no answer within {STATEMENT:?}")]
    Silent,
    #[error("the connection closed")]
    Closed,
}

/// Holds the name until the connection ends.
async fn hold(
    claim: Claim,
    me: &Me,
    reader: &Reader,
    view: &View,
    seen: &mut Differences,
) -> Result<(), Lost> {
    let Claim {
        client,
        mut messages,
    } = claim;
    let mut published = reader.load().data.config_hash.to_string();
    let mut beat = tokio::time::interval(HEARTBEAT);
    let mut look = tokio::time::interval(HASH_LOOK);
    loop {
        let hash = reader.load().data.config_hash.to_string();
        let write = tokio::select! {
            m = messages.recv() => match m {
                None => return Err(Lost::Closed),
                // A notice, not a notification: nothing changed.
                Some(AsyncMessage::Notification(_)) => false,
                Some(_) => continue,
            },
            _ = beat.tick() => true,
            _ = look.tick() => {
                if hash == published {
                    continue;
                }
                info!(config_hash = %hash, previous = %published, "the config hash changed; telling the other nodes");
                true
            }
        };
        if write {
            within(write_row(&client, me, &hash, hash != published)).await?;
            published = hash.clone();
        }
        let nodes = within(nodes(&client)).await?;
        compare(me, &hash, &nodes, view, seen);
    }
}

async fn within<T>(f: impl Future<Output = Result<T, tokio_postgres::Error>>) -> Result<T, Lost> {
    match tokio::time::timeout(STATEMENT, f).await {
        Ok(done) => Ok(done?),
        Err(_) => Err(Lost::Silent),
    }
}

/// Publishes what `nodes` say to the metrics, and logs what changed.
fn compare(me: &Me, ours: &str, nodes: &[Node], view: &View, seen: &mut Differences) {
    let now = Differences::of(&me.name, ours, nodes);
    let news = now.news(seen);
    for (node, theirs) in &news.differ {
        warn!(
            config_hash = %ours,
            other_node = %node,
            other_config_hash = %theirs,
            "this node's configuration, zones or GeoIP data differ from another live node's"
        );
    }
    for node in &news.agree {
        info!(
            other_node = %node,
            "another node no longer differs from this one (same config hash now, or it stopped)"
        );
    }
    view.live
        .store(nodes.iter().filter(|n| n.live).count() as u64, Relaxed);
    view.differing.store(now.theirs.len() as u64, Relaxed);
    *seen = now;
}
