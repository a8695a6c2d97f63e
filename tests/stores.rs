//! The PostgreSQL stores (`[store]`) against a real server: every promise
//! the SQLite stores keep (`tunnels::store::conformance` for sites, jobs and
//! credentials, `vpnlog::store::conformance` for log records), each check on
//! a fresh database. Root only: the cluster runs as the `postgres` user.

mod common;

use std::sync::Arc;

use common::pg::Postgres;
use mgnt::{
    config::{StoreConfig, StorePassword, StoreTls},
    pg::Db,
    tunnels::{
        keys::Keys,
        store::{self, PgSiteStore, Store},
    },
    vpnlog::store::{self as logs, PgLogStore},
};

/// A cluster, a runtime and a password file, making fresh databases.
struct Fresh {
    pg: Postgres,
    rt: tokio::runtime::Runtime,
    password: std::path::PathBuf,
    dir: tempfile::TempDir,
    made: usize,
}

impl Fresh {
    fn new() -> Self {
        let pg = Postgres::start();
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("db.password");
        pg.store_toml(&password, "30s"); // writes the password file, 0600
        Self {
            pg,
            rt: tokio::runtime::Runtime::new().unwrap(),
            password,
            dir,
            made: 0,
        }
    }

    /// Opens `open` on a new, migrated database, within the runtime.
    fn open<T>(&mut self, open: impl FnOnce(Db) -> T) -> T {
        self.made += 1;
        let name = format!("check{}", self.made);
        self.pg
            .psql("postgres", &format!("CREATE DATABASE {name} OWNER mgnt"));
        let config = StoreConfig {
            url: format!("postgres://mgnt@127.0.0.1:{}/{name}", self.pg.port),
            password: Some(StorePassword::File(self.password.clone())),
            tls: StoreTls::Disable,
            pool_size: 8,
            reread_interval: std::time::Duration::from_secs(30),
        };
        self.rt
            .block_on(async { open(Db::open(&config).await.unwrap()) })
    }
}

#[test]
#[ignore = "needs root (runs a PostgreSQL cluster as the postgres user); scripts/test runs it as root"]
fn the_postgresql_stores_keep_every_promise_of_the_sqlite_stores() {
    let mut fresh = Fresh::new();
    let keys = Arc::new(Keys::load_or_create(&fresh.dir.path().join("secret.key")).unwrap());
    for (name, check) in store::conformance::ALL {
        eprintln!("sites: {name}");
        let pool = store::conformance::POOL.parse().unwrap();
        let lifetimes = store::conformance::LIFETIMES;
        let store = fresh.open(|db| PgSiteStore::open(db, pool, keys.clone(), lifetimes));
        check(Arc::new(store) as Arc<dyn Store>);
    }
    for (name, check) in logs::conformance::ALL {
        eprintln!("logs: {name}");
        let store = fresh.open(PgLogStore::open);
        check(&*store);
    }
}
