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

#[test]
#[ignore = "needs root (runs a PostgreSQL cluster as the postgres user); scripts/test runs it as root"]
fn a_full_pool_reuses_only_what_waited_out_its_quarantine_and_a_renumber_moves_the_cursor() {
    use mgnt::tunnels::store::StoreError;
    let mut fresh = Fresh::new();
    let keys = Arc::new(Keys::load_or_create(&fresh.dir.path().join("secret.key")).unwrap());
    let small: ipnet::Ipv4Net = "100.64.0.0/29".parse().unwrap(); // .2 to .6
    let lifetimes = store::conformance::LIFETIMES; // an hour's quarantine
    let k = keys.clone();
    let (store, db) = fresh.open(|db| {
        let store = PgSiteStore::open(db.clone(), small, k, lifetimes);
        (store, db)
    });
    let ids: Vec<uuid::Uuid> = (0..5).map(|_| uuid::Uuid::new_v4()).collect();
    for id in &ids {
        store.ensure(*id, 0).unwrap();
    }
    let full = store.ensure(uuid::Uuid::new_v4(), 0);
    assert!(matches!(full, Err(StoreError::Pool(_))), "{full:?}");
    let freed = store.get(ids[1]).unwrap().unwrap().address;
    assert!(store.delete(ids[1], 0).unwrap());
    let waiting = store.ensure(uuid::Uuid::new_v4(), 10);
    assert!(
        matches!(waiting, Err(StoreError::Pool(_))),
        "quarantined: {waiting:?}"
    );
    let (reused, _) = store.ensure(uuid::Uuid::new_v4(), 3600).unwrap();
    assert_eq!(reused.address, freed);

    // Onto a new pool: every site moves, and new ones follow them.
    let other: ipnet::Ipv4Net = "10.9.0.0/24".parse().unwrap();
    let moved = fresh.rt.block_on(store.renumber(other, 4000)).unwrap();
    assert_eq!(moved.len(), 5);
    let to: std::collections::BTreeSet<String> = moved.iter().map(|m| m.to.to_string()).collect();
    assert_eq!(to.len(), 5, "{to:?}");
    assert!(moved.iter().all(|m| other.contains(&m.to)));
    let moved_store = fresh
        .rt
        .block_on(async { PgSiteStore::open(db, other, keys, lifetimes) });
    let (next, _) = moved_store.ensure(uuid::Uuid::new_v4(), 4001).unwrap();
    assert_eq!(
        next.address.to_string(),
        "10.9.0.7",
        "after the moved sites"
    );
}

#[test]
#[ignore = "needs root (runs a PostgreSQL cluster as the postgres user); scripts/test runs it as root"]
fn one_node_holds_a_routers_live_lease_until_it_expires_or_gives_it_up() {
    use mgnt::tunnels::store::leases::{Holder, LeaseStore, Lessee};
    let mut fresh = Fresh::new();
    let keys = Arc::new(Keys::load_or_create(&fresh.dir.path().join("secret.key")).unwrap());
    let pool = store::conformance::POOL.parse().unwrap();
    let lifetimes = store::conformance::LIFETIMES;
    let store = fresh.open(|db| PgSiteStore::open(db, pool, keys, lifetimes));
    let (site, _) = store.ensure(uuid::Uuid::new_v4(), 0).unwrap();
    let a = Lessee {
        node: "a",
        api_url: "https://a.example:8053",
    };
    let b = Lessee {
        node: "b",
        api_url: "https://b.example:8053",
    };
    let a_holds = Holder::Other {
        node: "a".into(),
        api_url: "https://a.example:8053".into(),
    };
    assert_eq!(
        store.take_live_lease(site.uuid, a, 100, 130).unwrap(),
        Holder::Us
    );
    assert_eq!(
        store.take_live_lease(site.uuid, b, 110, 140).unwrap(),
        a_holds
    );
    assert_eq!(
        store.live_lease_holder(site.uuid, "b", 110).unwrap(),
        a_holds
    );
    assert_eq!(
        store.live_lease_holder(site.uuid, "a", 110).unwrap(),
        Holder::Us
    );
    // Renewed by its holder; taken over once expired.
    assert_eq!(
        store.take_live_lease(site.uuid, a, 120, 150).unwrap(),
        Holder::Us
    );
    assert_eq!(
        store.take_live_lease(site.uuid, b, 140, 170).unwrap(),
        a_holds
    );
    assert_eq!(
        store.live_lease_holder(site.uuid, "b", 151).unwrap(),
        Holder::Us,
        "expired"
    );
    assert_eq!(
        store.take_live_lease(site.uuid, b, 151, 181).unwrap(),
        Holder::Us
    );
    // Given up by its holder only.
    store.release_live_lease(site.uuid, "a").unwrap();
    assert_ne!(
        store.live_lease_holder(site.uuid, "a", 160).unwrap(),
        Holder::Us
    );
    store.release_live_lease(site.uuid, "b").unwrap();
    assert_eq!(
        store.take_live_lease(site.uuid, a, 160, 190).unwrap(),
        Holder::Us
    );
    assert!(
        store.delete(site.uuid, 200).unwrap(),
        "a leased site is deleted with its lease"
    );
}
