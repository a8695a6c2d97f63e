//! Starts log ingestion: the store, the syslog listeners, one watcher per
//! management interface and status file, the latency pinger and retention.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use tracing::{info, warn};

use super::{
    ingest::{self, Ingest},
    latency,
    store::{LogStore, LogStoreError, PgLogStore, SqliteLogStore},
    watch,
};
use crate::{clock::now, config::VpnlogConfig, health::probe::Pingers};

/// How often records past the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Running log ingestion, for the API and metrics.
pub struct VpnLog {
    pub ingest: Arc<Ingest>,
    pub store: Arc<dyn LogStore>,
    /// The management watchers' reconnects, per server.
    pub watchers: watch::Watchers,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{file}: {source}")]
    Store {
        file: PathBuf,
        source: LogStoreError,
    },
    #[error("{dir}: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("binding the syslog listeners: {0}")]
    Listen(crate::edge::bind::BindError),
}

/// Opens the log store — the shared database `db` with `[store]`, else
/// `vpnlog.db` in `data_dir` — and starts every source; returns the syslog
/// address bound.
pub async fn start(
    config: &VpnlogConfig,
    db: Option<&crate::pg::Db>,
) -> Result<(VpnLog, SocketAddr), StartError> {
    let store: Arc<dyn LogStore> = match db {
        Some(db) => PgLogStore::open(db.clone()),
        None => open_file(config)?,
    };
    // Resuming the open sessions reads the store, which blocks.
    let (c, s) = (config.clone(), store.clone());
    let ingest = tokio::task::spawn_blocking(move || Ingest::start(&c, s))
        .await
        .expect("starting log ingestion panicked");
    let addr = ingest::listen(config, ingest.clone())
        .await
        .map_err(|source| {
            StartError::Listen(crate::edge::bind::BindError::new(
                config.listen,
                "vpnlog.listen",
                source,
            ))
        })?;
    let watchers = watch::Watchers::new(&config.servers);
    for server in &config.servers {
        let every = config.poll_interval;
        let reconnects = watchers.of(&server.host);
        tokio::spawn(watch::management(
            server.clone(),
            every,
            ingest.clone(),
            reconnects,
        ));
        tokio::spawn(watch::status_file(server.clone(), every, ingest.clone()));
    }
    let pingers = Pingers::open();
    for why in pingers.unavailable() {
        warn!(problem = %why, "no ICMP socket: tunnel latency is not measured");
    }
    tokio::spawn(latency::pinger(
        config.clone(),
        ingest.clone(),
        Arc::new(pingers),
    ));
    tokio::spawn(prune(store.clone(), config.retention));
    info!(%addr, servers = config.servers.len(), "receiving OpenVPN logs");
    let vpnlog = VpnLog {
        ingest,
        store,
        watchers,
    };
    Ok((vpnlog, addr))
}

fn open_file(config: &VpnlogConfig) -> Result<Arc<dyn LogStore>, StartError> {
    crate::durable::private_dir(&config.data_dir).map_err(|source| StartError::Dir {
        dir: config.data_dir.clone(),
        source,
    })?;
    let file = config.data_dir.join("vpnlog.db");
    // Who connected from where, and when: the owner's only.
    crate::durable::private_file(&file).map_err(|source| StartError::Dir {
        dir: file.clone(),
        source,
    })?;
    let store = SqliteLogStore::open(&file).map_err(|source| StartError::Store { file, source })?;
    Ok(Arc::new(store))
}

async fn prune(store: Arc<dyn LogStore>, retention: Duration) {
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        every.tick().await;
        let before = now().saturating_sub(retention.as_secs());
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.prune(before)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(rows)) => info!(rows, before, "deleted log records past the retention"),
            Ok(Err(e)) => warn!(error = %e, "deleting old log records failed"),
            Err(e) => warn!(error = %e, "deleting old log records failed"),
        }
    }
}
