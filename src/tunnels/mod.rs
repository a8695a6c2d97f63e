//! Tunnel provisioning: a UUID tunnel per site with a CGNAT address.
//!
//! Pure parts first: [`username`] (UUID ↔ the 26-character OpenVPN user),
//! [`pool`] (the CGNAT allocator), [`routeros`] (the router's script) and
//! [`openvpn`] (the server's ccd files and config fragment); [`keys`] (the
//! secret key file: digests and sealing); [`store`] keeps sites and jobs.
//! Storage, the RouterOS and OpenVPN renderers and the HTTP API build on them.

pub mod export;
pub mod keys;
pub mod openvpn;
pub mod pool;
pub mod ports;
pub mod routeros;
pub mod scripts;
pub mod store;
pub mod username;

use std::{path::PathBuf, sync::Arc};

use crate::config::{Config, DEFAULT_ROTATION_GRACE};
use store::{Lifetimes, PgSiteStore, SqliteStore, StoreError};

/// A store that could not be opened, and its file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {source}")]
pub struct OpenError {
    pub file: PathBuf,
    pub source: StoreError,
}

/// The lifetimes `config` sets for credentials, jobs and addresses.
pub fn lifetimes(config: &Config) -> Lifetimes {
    let p = config.provision.as_ref();
    let secs = |d: std::time::Duration| d.as_secs();
    Lifetimes {
        quarantine: p.map_or(0, |p| secs(p.quarantine)),
        rotation_grace: secs(p.map_or(DEFAULT_ROTATION_GRACE, |p| p.rotation_grace)),
        job_expiry: secs(
            config
                .routers
                .as_ref()
                .map_or(DEFAULT_ROTATION_GRACE, |r| r.job_expiry),
        ),
    }
}

/// Whether `config`'s pool still holds every address `store` allocated (a
/// reload must not accept a pool the next start would refuse).
pub fn pool_holds(store: &dyn store::Store, config: &Config) -> Result<(), String> {
    let Some(p) = &config.provision else {
        return Ok(());
    };
    let addresses = store.addresses().map_err(|e| e.to_string())?;
    let outside: Vec<_> = addresses.iter().filter(|a| !p.pool.contains(*a)).collect();
    match outside.first() {
        None => Ok(()),
        Some(first) => Err(format!(
            "[provision] pool {} does not hold {} allocated address(es), {first} among them; keep the old pool until they are moved",
            p.pool,
            outside.len()
        )),
    }
}

/// The key file of `p`, created when missing.
fn load_keys(p: &crate::config::ProvisionConfig) -> Result<Arc<keys::Keys>, OpenError> {
    keys::Keys::load_or_create(&p.secret_key_file)
        .map(Arc::new)
        .map_err(|e| OpenError {
            file: p.secret_key_file.clone(),
            source: e.into(),
        })
}

/// Opens `[provision]`'s store (with its key file), if provisioning is on:
/// for allocating, or only for checking credentials (`checks_only`: no pool).
pub fn open_store(config: &Config, checks_only: bool) -> Result<Option<SqliteStore>, OpenError> {
    let Some(p) = &config.provision else {
        return Ok(None);
    };
    let file = p.data_dir.join("tunnels.db");
    let err = |source| OpenError {
        file: file.clone(),
        source,
    };
    let keys = load_keys(p)?;
    if !checks_only {
        // Digests, sealed secrets and tokens: the owner's only.
        crate::durable::private_dir(&p.data_dir)
            .and_then(|()| crate::durable::private_file(&file))
            .map_err(|e| err(StoreError::Corrupt(e.to_string())))?;
    }
    let lifetimes = lifetimes(config);
    let store = if checks_only {
        SqliteStore::open_for_checks(&file, keys, lifetimes)
    } else {
        SqliteStore::open(&file, p.pool, keys, lifetimes)
    };
    store.map(Some).map_err(err)
}

/// Opens `[provision]`'s store in the database every node shares
/// (`[store]`), if provisioning is on. Every node needs the same
/// `secret_key_file`: digests made on one are checked on the others.
pub fn open_shared(config: &Config, db: crate::pg::Db) -> Result<Option<PgSiteStore>, OpenError> {
    let Some(p) = &config.provision else {
        return Ok(None);
    };
    let keys = load_keys(p)?;
    Ok(Some(PgSiteStore::open(db, p.pool, keys, lifetimes(config))))
}
