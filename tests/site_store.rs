//! The PostgreSQL site store (`[store]`) against a real server: every
//! promise the SQLite store keeps (`tunnels::store::conformance`), each on a
//! fresh database. Root only: the cluster runs as the `postgres` user.

mod common;

use std::sync::Arc;

use common::pg::Postgres;
use mgnt::{
    config::{StoreConfig, StorePassword, StoreTls},
    pg::Db,
    tunnels::{
        keys::Keys,
        store::{PgSiteStore, Store, conformance},
    },
};

#[test]
#[ignore = "needs root (runs a PostgreSQL cluster as the postgres user); scripts/test runs it as root"]
fn the_postgresql_store_keeps_every_promise_of_the_sqlite_store() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("db.password");
    pg.store_toml(&password, "30s"); // writes the password file, 0600
    let keys = Arc::new(Keys::load_or_create(&dir.path().join("secret.key")).unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (i, (name, check)) in conformance::ALL.iter().enumerate() {
        eprintln!("{name}");
        pg.psql("postgres", &format!("CREATE DATABASE check{i} OWNER mgnt"));
        let config = StoreConfig {
            url: format!("postgres://mgnt@127.0.0.1:{}/check{i}", pg.port),
            password: Some(StorePassword::File(password.clone())),
            tls: StoreTls::Disable,
            pool_size: 8,
            reread_interval: std::time::Duration::from_secs(30),
        };
        let store = rt.block_on(async {
            let db = Db::open(&config).await.unwrap();
            let pool = conformance::POOL.parse().unwrap();
            PgSiteStore::open(db, pool, keys.clone(), conformance::LIFETIMES)
        });
        check(Arc::new(store) as Arc<dyn Store>);
    }
}
