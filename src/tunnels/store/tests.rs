use std::{net::Ipv4Addr, path::Path, sync::Arc};

use rusqlite::Connection;
use uuid::Uuid;

use super::*;
use crate::tunnels::{keys::Keys, username::username};

use conformance::LIFETIMES;

fn keys(dir: &Path) -> Arc<Keys> {
    Arc::new(Keys::load_or_create(&dir.join("secret.key")).unwrap())
}

fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open(
        &dir.join("tunnels.db"),
        conformance::POOL.parse().unwrap(),
        keys(dir),
        LIFETIMES,
    )
    .unwrap()
}

fn ok(store: &SqliteStore, site: &Site, secret: &str, now: u64) -> bool {
    store.verify(&site.username, secret, now).unwrap().is_some()
}

#[test]
fn the_sqlite_store_keeps_every_promise() {
    for (name, check) in conformance::ALL {
        let dir = tempfile::tempdir().unwrap();
        eprintln!("{name}");
        check(Arc::new(open(dir.path())));
    }
}

#[test]
fn nothing_secret_is_stored_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (_, created) = store.ensure(Uuid::new_v4(), 0).unwrap();
    let created = created.unwrap();
    drop(store);
    let mut bytes = std::fs::read(dir.path().join("tunnels.db")).unwrap();
    bytes.extend(std::fs::read(dir.path().join("tunnels.db-wal")).unwrap_or_default());
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains(&created.secret));
    assert!(!text.contains(&created.router_token));
}

#[test]
fn everything_survives_a_reopen_and_deleted_addresses_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let (site_a, site_b, secret_b) = {
        let store = open(dir.path());
        let (sa, _) = store.ensure(a, 0).unwrap();
        let (sb, cb) = store.ensure(b, 0).unwrap();
        assert!(store.delete(a, 100).unwrap());
        assert!(!store.delete(a, 100).unwrap());
        (sa, sb, cb.unwrap().secret)
    };
    let store = open(dir.path());
    assert_eq!(store.get(a).unwrap(), None);
    assert_eq!(store.get(b).unwrap(), Some(site_b.clone()));
    assert!(
        ok(&store, &site_b, &secret_b, 150),
        "same key file, same digests"
    );
    let (c, _) = store.ensure(Uuid::new_v4(), 200).unwrap();
    assert_ne!(c.address, site_a.address, "quarantined for an hour");
    assert_ne!(c.address, site_b.address);
    let (d, _) = store.ensure(Uuid::new_v4(), 100 + 3600).unwrap();
    assert_eq!(d.address, site_a.address, "reused after the quarantine");
}

#[test]
fn renumber_moves_only_the_sites_outside_the_new_pool() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    for (i, id) in ids.iter().enumerate() {
        store.ensure(*id, 10 + i as u64).unwrap();
    }
    store.delete(ids[3], 20).unwrap(); // 100.64.0.5, quarantined
    let net: ipnet::Ipv4Net = "100.64.0.0/29".parse().unwrap(); // hosts .2-.6
    drop(store);
    let store =
        SqliteStore::open_for_checks(&dir.path().join("tunnels.db"), keys(dir.path()), LIFETIMES)
            .unwrap();
    assert_eq!(store.renumber(net, 30).unwrap(), vec![], "every site fits");
    let small: ipnet::Ipv4Net = "10.9.0.0/30".parse().unwrap(); // one host: .2
    assert!(
        matches!(store.renumber(small, 30), Err(StoreError::Pool(_))),
        "three sites, one address"
    );
    let other: ipnet::Ipv4Net = "10.9.0.0/24".parse().unwrap();
    let moved = store.renumber(other, 30).unwrap();
    let to: Vec<String> = moved.iter().map(|m| m.to.to_string()).collect();
    assert_eq!(to, ["10.9.0.2", "10.9.0.3", "10.9.0.4"]);
    assert_eq!(moved[0].from, Ipv4Addr::new(100, 64, 0, 2));
    drop(store);
    // The store opens on the new pool, and allocates after the moved sites.
    let store = SqliteStore::open(
        &dir.path().join("tunnels.db"),
        other,
        keys(dir.path()),
        LIFETIMES,
    )
    .unwrap();
    assert_eq!(
        store.get(ids[1]).unwrap().unwrap().address,
        Ipv4Addr::new(10, 9, 0, 3)
    );
    let (fresh, _) = store.ensure(Uuid::new_v4(), 40).unwrap();
    assert_eq!(fresh.address, Ipv4Addr::new(10, 9, 0, 5));
    assert!(
        store.addresses().unwrap().iter().all(|a| other.contains(a)),
        "no quarantined address left outside"
    );
}

#[test]
fn an_older_database_is_sealed_and_its_hashes_migrate_on_use() {
    use argon2::PasswordHasher;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tunnels.db");
    let db = Connection::open(&path).unwrap();
    for sql in &super::sqlite::MIGRATIONS[..3] {
        db.execute_batch(sql).unwrap();
    }
    db.pragma_update(None, "user_version", 3).unwrap();
    let id = Uuid::new_v4();
    let hash = argon2::Argon2::default()
        .hash_password(b"old-secret")
        .unwrap()
        .to_string();
    db.execute(
        "INSERT INTO sites VALUES (?1, ?2, '100.64.0.2', ?3, 0)",
        rusqlite::params![id.to_string(), username(&id), hash],
    )
    .unwrap();
    db.execute(
        "INSERT INTO jobs (id, site, kind, secret, created) VALUES ('11111111-1111-4111-8111-111111111111', ?1, 'install', 'old-secret', 0)",
        [id.to_string()],
    )
    .unwrap();
    drop(db);

    let store = open(dir.path());
    let site = store.get(id).unwrap().unwrap();
    let job = store.pending_job(id, 1).unwrap().unwrap();
    assert_eq!(
        job.secret.as_deref(),
        Some("old-secret"),
        "sealed, and opens"
    );
    assert!(ok(&store, &site, "old-secret", 1), "argon2 still checks");
    let stored: (String, String) = Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT s.secret_hash, j.secret FROM sites s, jobs j",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        stored.0.starts_with("hmac-sha256:"),
        "migrated on use: {}",
        stored.0
    );
    assert!(stored.1.starts_with("sealed-v1:"), "{}", stored.1);
    assert!(ok(&store, &site, "old-secret", 2));
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
    let checks =
        SqliteStore::open_for_checks(&dir.path().join("tunnels.db"), keys(dir.path()), LIFETIMES)
            .unwrap();
    checks.record_attempt(&attempt).unwrap();
    let n: i64 = Connection::open(dir.path().join("tunnels.db"))
        .unwrap()
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
        keys(dir.path()),
        LIFETIMES,
    );
    assert!(matches!(err, Err(StoreError::Corrupt(_))));
}
