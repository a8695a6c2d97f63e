//! PostgreSQL, the store every node shares (`[store]`): the connection pool,
//! TLS, a dedicated connection for notifications, and versioned migrations
//! run at start (serialized across nodes by an advisory lock; a schema newer
//! than this build knows is refused).

use std::{str::FromStr, sync::Arc};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{StoreConfig, StorePassword, StoreTls};

/// The schema, one step per version; never edited once released.
const MIGRATIONS: &[&str] = &[
    // 1: region state shared by the nodes (drains), each node's health
    // view, and the audit of operator actions.
    "CREATE TABLE drains (
         region text PRIMARY KEY,
         reason text NOT NULL,
         by_token text NOT NULL,
         since bigint NOT NULL,
         until bigint
     );
     CREATE TABLE health (
         node text NOT NULL,
         region text NOT NULL,
         state jsonb NOT NULL,
         PRIMARY KEY (node, region)
     );
     CREATE TABLE audit (
         id bigserial PRIMARY KEY,
         time bigint NOT NULL,
         node text NOT NULL,
         entry jsonb NOT NULL
     );",
    // 2: a version of the drains, one more per batch that changed them
    // (its row lock also orders such batches): a node tells a read older
    // than its own last change from a newer one.
    "CREATE TABLE drains_version (version bigint NOT NULL);
     INSERT INTO drains_version VALUES (0);",
    // 3: sites, their jobs and credentials (crate::tunnels::store::pg).
    // Every change to what a login is checked against takes the next number
    // of `sites_seq` and is announced on `mgnt_sites`; a deletion leaves a
    // tombstone. Triggers, so no write path can forget it; the counter's row
    // lock makes numbers follow commit order.
    "CREATE TABLE sites (
         uuid uuid PRIMARY KEY,
         username text NOT NULL UNIQUE,
         address inet NOT NULL UNIQUE,
         secret_hash text NOT NULL,
         secret_applied boolean NOT NULL,
         previous_secret_hash text,
         previous_until bigint,
         router_token_hash text UNIQUE,
         enrollment_hash text UNIQUE,
         enrollment_version text,
         enrollment_until bigint,
         created bigint NOT NULL,
         seq bigint NOT NULL DEFAULT 0
     );
     CREATE INDEX sites_by_seq ON sites (seq);
     CREATE TABLE released (address inet PRIMARY KEY, until bigint NOT NULL);
     -- The next never-used address, as a number: nodes allocate from it
     -- without waiting for each other (a sequence is never rolled back).
     CREATE SEQUENCE site_cursor AS bigint MINVALUE 0 START 0;
     CREATE TABLE jobs (
         id uuid PRIMARY KEY,
         site uuid NOT NULL REFERENCES sites (uuid) ON DELETE CASCADE
             DEFERRABLE INITIALLY DEFERRED,
         kind text NOT NULL,
         state text NOT NULL,
         secret text,
         attempts integer NOT NULL DEFAULT 0,
         created bigint NOT NULL,
         fetched bigint,
         finished bigint,
         error text
     );
     CREATE INDEX jobs_by_site ON jobs (site, created);
     CREATE INDEX jobs_open ON jobs (created) WHERE state IN ('pending', 'fetched');
     CREATE TABLE auth_attempts (
         time bigint NOT NULL,
         username text NOT NULL,
         site uuid,
         ok boolean NOT NULL,
         source text
     );
     CREATE INDEX auth_attempts_by_time ON auth_attempts (time);
     CREATE TABLE sites_seq (value bigint NOT NULL);
     INSERT INTO sites_seq VALUES (0);
     CREATE TABLE tombstones (username text PRIMARY KEY, seq bigint NOT NULL);
     CREATE INDEX tombstones_by_seq ON tombstones (seq);
     CREATE FUNCTION sites_changed() RETURNS trigger LANGUAGE plpgsql AS $$
     BEGIN
         UPDATE sites_seq SET value = value + 1 RETURNING value INTO NEW.seq;
         IF TG_OP = 'INSERT' THEN
             DELETE FROM tombstones WHERE username = NEW.username;
         END IF;
         PERFORM pg_notify('mgnt_sites', NEW.seq::text);
         RETURN NEW;
     END $$;
     CREATE TRIGGER sites_inserted BEFORE INSERT ON sites
         FOR EACH ROW EXECUTE FUNCTION sites_changed();
     CREATE TRIGGER sites_changed
         BEFORE UPDATE OF address, secret_hash, previous_secret_hash, previous_until ON sites
         FOR EACH ROW EXECUTE FUNCTION sites_changed();
     CREATE FUNCTION sites_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
     DECLARE n bigint;
     BEGIN
         UPDATE sites_seq SET value = value + 1 RETURNING value INTO n;
         INSERT INTO tombstones VALUES (OLD.username, n)
             ON CONFLICT (username) DO UPDATE SET seq = EXCLUDED.seq;
         PERFORM pg_notify('mgnt_sites', n::text);
         RETURN OLD;
     END $$;
     CREATE TRIGGER sites_deleted AFTER DELETE ON sites
         FOR EACH ROW EXECUTE FUNCTION sites_deleted();",
    // 4: VPN log records (crate::vpnlog::store::pg). The append-only tables
    // are partitioned by day (partitions made as records arrive), so the
    // retention drops whole partitions; sessions change until they end and
    // are deleted by their end.
    r#"CREATE TABLE vpn_sessions (
         id bigserial PRIMARY KEY,
         tunnel uuid,
         common_name text NOT NULL,
         peer text NOT NULL,
         virtual_addr text,
         host text,
         region text,
         start bigint NOT NULL,
         "end" bigint,
         end_reason text,
         bytes_in bigint NOT NULL DEFAULT 0,
         bytes_out bigint NOT NULL DEFAULT 0
     );
     CREATE INDEX vpn_sessions_by_tunnel ON vpn_sessions (tunnel, start);
     -- A session is found again by (server, peer, start), the newest row
     -- of a key first (id last, so max(id) is one index probe, never a scan
     -- of the primary key); a record from no known server has no host, and
     -- NULL is no key: index it as ''.
     CREATE INDEX vpn_sessions_by_source
         ON vpn_sessions ((coalesce(host, '')), peer, start, id);
     CREATE INDEX vpn_sessions_open ON vpn_sessions (id) WHERE "end" IS NULL;
     CREATE INDEX vpn_sessions_by_region ON vpn_sessions (region, "end");
     CREATE INDEX vpn_sessions_by_end ON vpn_sessions ("end");
     CREATE TABLE vpn_auth (
         time bigint NOT NULL,
         peer text,
         username text,
         tunnel uuid,
         ok boolean NOT NULL,
         host text,
         region text
     ) PARTITION BY RANGE (time);
     CREATE INDEX vpn_auth_by_time ON vpn_auth (time);
     CREATE INDEX vpn_auth_by_region ON vpn_auth (region, time);
     CREATE TABLE vpn_traffic (
         time bigint NOT NULL,
         tunnel uuid,
         peer text NOT NULL,
         host text,
         region text,
         bytes_in bigint NOT NULL,
         bytes_out bigint NOT NULL
     ) PARTITION BY RANGE (time);
     CREATE INDEX vpn_traffic_by_tunnel ON vpn_traffic (tunnel, time);
     CREATE TABLE vpn_latency (
         time bigint NOT NULL,
         tunnel uuid,
         common_name text NOT NULL,
         addr text NOT NULL,
         host text,
         region text,
         sent integer NOT NULL,
         received integer NOT NULL,
         rtt_min double precision,
         rtt_avg double precision,
         rtt_max double precision
     ) PARTITION BY RANGE (time);
     CREATE INDEX vpn_latency_by_tunnel ON vpn_latency (tunnel, time);
     CREATE TABLE vpn_unparsed (
         time bigint NOT NULL,
         host text,
         region text,
         raw text NOT NULL
     ) PARTITION BY RANGE (time);
     CREATE INDEX vpn_unparsed_by_region ON vpn_unparsed (region, time);"#,
    // 5: when a node last wrote its health view of a region (the
    // database's clock, one for every node): the others count its vote on
    // the region only while it is recent. A row written before, or by a
    // build that does not set it, dates from 1970: no vote.
    "ALTER TABLE health ADD COLUMN reported timestamptz NOT NULL DEFAULT 'epoch';",
    // 6: the nodes that ran on this database, each under its [node] name (a
    // live node also holds its name's advisory lock): when it started, its
    // last heartbeat, its config hash and mgnt version.
    "CREATE TABLE nodes (
         name text PRIMARY KEY,
         started bigint NOT NULL,
         last_seen bigint NOT NULL,
         config_hash text NOT NULL,
         version text NOT NULL
     );",
    // 7: single-use live-view tickets, by digest: any node redeems them.
    "CREATE TABLE live_tickets (
         digest text PRIMARY KEY,
         site uuid NOT NULL REFERENCES sites (uuid) ON DELETE CASCADE,
         \"user\" text NOT NULL,
         until bigint NOT NULL
     );
     CREATE INDEX live_tickets_by_until ON live_tickets (until);",
    // 8: reboots asked through the live view (the per-site gap reads them).
    "CREATE TABLE reboots (
         id uuid PRIMARY KEY,
         site uuid NOT NULL REFERENCES sites (uuid) ON DELETE CASCADE,
         \"user\" text NOT NULL,
         created bigint NOT NULL,
         state text NOT NULL,
         finished bigint,
         error text
     );
     CREATE INDEX reboots_by_site ON reboots (site, created);",
    // 9: which node holds a router's live-view connection, and where the
    // other nodes reach it.
    "CREATE TABLE live_leases (
         site uuid PRIMARY KEY REFERENCES sites (uuid) ON DELETE CASCADE,
         node text NOT NULL,
         api_url text NOT NULL,
         until bigint NOT NULL
     );",
];

/// Serializes migrations between nodes starting at once.
const MIGRATION_LOCK: i64 = 0x6d67_6e74;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Config(String),
    #[error("reading the password: {0}")]
    Password(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("connection pool: {0}")]
    Pool(String),
    #[error(
        "the database's schema is version {found}, newer than this mgnt knows ({known}): upgrade mgnt"
    )]
    Newer { found: i32, known: i32 },
}

impl DbError {
    /// Whether the database did not answer (rather than refused).
    pub fn unavailable(&self) -> bool {
        match self {
            Self::Pool(_) => true,
            // No SQLSTATE: the connection failed or closed; connection
            // classes (08), resources (53), operator intervention (57).
            Self::Postgres(e) => e
                .code()
                .is_none_or(|c| ["08", "53", "57"].iter().any(|p| c.code().starts_with(p))),
            _ => false,
        }
    }
}

impl From<deadpool_postgres::PoolError> for DbError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Pool(e.to_string())
    }
}

/// Whether the database answers, as the node last found it: for
/// `/healthz`, the metrics and one log line per change.
#[derive(Debug, Default)]
pub struct Reach {
    /// Since when it has not answered (seconds since 1970); 0 while it does.
    since: std::sync::atomic::AtomicU64,
}

impl Reach {
    /// It did not answer at `now`; `true` if it did until now.
    pub fn lost(&self, now: u64) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.since
            .compare_exchange(0, now.max(1), Relaxed, Relaxed)
            .is_ok()
    }

    /// It answered; `true` if it had not.
    pub fn found(&self) -> bool {
        self.since.swap(0, std::sync::atomic::Ordering::Relaxed) != 0
    }

    /// Since when it has not answered; `None` while it does.
    pub fn lost_since(&self) -> Option<u64> {
        Some(self.since.load(std::sync::atomic::Ordering::Relaxed)).filter(|&s| s != 0)
    }
}

/// The database: a pool for queries, and what it takes to open one more
/// connection (for LISTEN).
#[derive(Clone)]
pub struct Db {
    pub pool: Pool,
    connect: Arc<(tokio_postgres::Config, Option<MakeRustlsConnect>)>,
    pub reach: Arc<Reach>,
}

impl Db {
    /// Connects as `[store]` says and brings the schema up to date.
    pub async fn open(config: &StoreConfig) -> Result<Self, DbError> {
        let db = Self::connect(config)?;
        db.migrate().await?;
        Ok(db)
    }

    /// The pool `[store]` describes, before any connection is made (the
    /// schema is not brought up to date: [`Db::migrate`]).
    pub fn connect(config: &StoreConfig) -> Result<Self, DbError> {
        let mut pg = tokio_postgres::Config::from_str(&config.url)
            .map_err(|e| DbError::Config(format!("store.url: {e}")))?;
        if let Some(password) = password(config.password.as_ref())? {
            pg.password(password);
        }
        pg.application_name("mgnt");
        pg.connect_timeout(std::time::Duration::from_secs(10));
        // A database machine that vanished is noticed in about half a minute
        // rather than the kernel's two hours.
        pg.keepalives_idle(std::time::Duration::from_secs(15));
        pg.keepalives_interval(std::time::Duration::from_secs(5));
        pg.keepalives_retries(3);
        let tls = match &config.tls {
            StoreTls::Disable => None,
            StoreTls::Require { ca } => {
                pg.ssl_mode(tokio_postgres::config::SslMode::Require);
                Some(tls(ca)?)
            }
        };
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            None => Manager::from_config(pg.clone(), NoTls, manager_config),
            Some(t) => Manager::from_config(pg.clone(), t.clone(), manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| DbError::Pool(e.to_string()))?;
        Ok(Self {
            pool,
            connect: Arc::new((pg, tls)),
            reach: Arc::default(),
        })
    }

    /// One connection of its own, its messages (notifications) handed to
    /// `messages`; the connection ends when the client is dropped.
    pub async fn dedicated(
        &self,
        messages: tokio::sync::mpsc::Sender<tokio_postgres::AsyncMessage>,
    ) -> Result<Client, DbError> {
        let (pg, tls) = &*self.connect;
        match tls {
            None => {
                let (client, connection) = pg.connect(NoTls).await?;
                tokio::spawn(forward(connection, messages));
                Ok(client)
            }
            Some(t) => {
                let (client, connection) = pg.connect(t.clone()).await?;
                tokio::spawn(forward(connection, messages));
                Ok(client)
            }
        }
    }

    /// Applies the migrations this database lacks, in one transaction.
    pub async fn migrate(&self) -> Result<(), DbError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        // "already exists, skipping" is no news at every start.
        tx.batch_execute("SET LOCAL client_min_messages = warning")
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS mgnt_schema (version integer NOT NULL);
             INSERT INTO mgnt_schema SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM mgnt_schema);",
        )
        .await?;
        let found: i32 = tx
            .query_one("SELECT version FROM mgnt_schema", &[])
            .await?
            .get(0);
        let known = MIGRATIONS.len() as i32;
        if found > known {
            return Err(DbError::Newer { found, known });
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.batch_execute(step).await?;
            tx.execute("UPDATE mgnt_schema SET version = $1", &[&(i as i32 + 1)])
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Runs `f` to its end on `rt` for a synchronous store call. Such calls are
/// made from blocking threads; should one come from a runtime worker, the
/// worker hands its other tasks on while it waits instead of panicking.
pub fn block_on<F: std::future::Future>(rt: &tokio::runtime::Handle, f: F) -> F::Output {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| rt.block_on(f))
        }
        _ => rt.block_on(f),
    }
}

/// Hands a connection's asynchronous messages on until it ends.
async fn forward<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    messages: tokio::sync::mpsc::Sender<tokio_postgres::AsyncMessage>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(message)) => {
                if messages.send(message).await.is_err() {
                    return;
                }
            }
            Some(Err(_)) | None => return,
        }
    }
}

fn password(source: Option<&StorePassword>) -> Result<Option<String>, DbError> {
    match source {
        None => Ok(None),
        Some(StorePassword::File(f)) => {
            use std::os::unix::fs::PermissionsExt;
            let err = |e: std::io::Error| DbError::Password(format!("{}: {e}", f.display()));
            let mode = std::fs::metadata(f).map_err(err)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(DbError::Password(format!(
                    "{}: mode {mode:03o} lets group or others read it: chmod 600",
                    f.display()
                )));
            }
            let text = std::fs::read_to_string(f).map_err(err)?;
            Ok(Some(text.lines().next().unwrap_or("").to_owned()))
        }
        Some(StorePassword::Env(v)) => std::env::var(v)
            .map(Some)
            .map_err(|_| DbError::Password(format!("the environment has no {v}"))),
    }
}

/// rustls on ring, trusting the certificates in `ca` only.
fn tls(ca: &std::path::Path) -> Result<MakeRustlsConnect, DbError> {
    let config = crate::edge::tls::client_config(Some(ca)).map_err(DbError::Tls)?;
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_password_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "secret\nignored\n").unwrap();
        let source = StorePassword::File(file.clone());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = password(Some(&source)).unwrap_err().to_string();
        assert!(e.contains("mode 644") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(password(Some(&source)).unwrap().as_deref(), Some("secret"));
        assert_eq!(password(None).unwrap(), None);
    }
}
