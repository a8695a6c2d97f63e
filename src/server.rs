//! `mgnt serve`: wires the DNS listeners, health checks, state and admin API
//! together, and reloads them on request.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use serde::Serialize;
use tracing::{error, info, warn};

use crate::{
    admin::{self, auth::Tokens},
    config::{Config, ConfigError},
    dns::{Data, LoadError, answer::Responder, listen},
    health::{Health, HealthTable},
    state::{self, RegionView, Shared},
    tunnels::store::{SqliteStore, Store, StoreError},
    vpnlog::service::VpnLog,
};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("binding DNS listeners: {0}")]
    Dns(std::io::Error),
    #[error("binding the admin API on {addr}: {source}")]
    Api {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Auth(#[from] admin::auth::AuthError),
    #[error("log ingestion: {0}")]
    Vpnlog(#[from] crate::vpnlog::service::StartError),
    #[error("{file}: tunnel store: {source}")]
    Store {
        file: PathBuf,
        source: crate::tunnels::store::StoreError,
    },
}

/// A running server: what the admin API and signals act on.
pub struct Server {
    pub config_path: PathBuf,
    pub shared: Arc<Shared>,
    pub health: Arc<Health>,
    /// Serialises reloads and drain changes: operator actions apply one at a time.
    pub admin_lock: tokio::sync::Mutex<()>,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// Provisioning's store, when `[provision]` is configured.
    pub tunnels: Option<Arc<dyn Store>>,
    /// Log ingestion and its store, when `[vpnlog]` is configured.
    pub vpnlog: Option<VpnLog>,
}

/// What a successful reload loaded.
#[derive(Debug, Serialize)]
pub struct ReloadReport {
    pub zones: usize,
    pub geo_names: usize,
    pub regions: usize,
    pub geoip_build_epoch: u64,
    /// Changed settings that only take effect after a restart.
    pub needs_restart: Vec<String>,
}

fn load(path: &std::path::Path) -> Result<Data, LoadError> {
    Data::load(Config::load(path)?)
}

impl Server {
    pub fn responder(&self) -> &Arc<Responder> {
        &self.shared.responder
    }

    /// Re-reads config, zones and GeoIP database; everything is validated before
    /// anything is swapped, so on any error the old data keeps serving.
    pub async fn reload(&self) -> Result<ReloadReport, LoadError> {
        let _one_at_a_time = self.admin_lock.lock().await;
        let path = self.config_path.clone();
        let loaded = tokio::task::spawn_blocking(move || load(&path))
            .await
            .unwrap_or_else(|e| {
                Err(LoadError::Config(ConfigError::Parse {
                    file: self.config_path.clone(),
                    message: format!("reload task failed: {e}"),
                }))
            });
        let mut data = match loaded {
            Ok(d) => d,
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                error!(error = %e, "reload failed; still serving the previous data");
                return Err(e);
            }
        };
        let responder = self.responder();
        let old = responder.data.load_full();
        data.inherit_counters(&old);
        let needs_restart = restart_only_changes(&old.config, &data.config);
        for key in &needs_restart {
            warn!(key, "changed in the config; takes effect after a restart");
        }
        let report = ReloadReport {
            zones: data.zones.zones.len(),
            geo_names: data.geo.len(),
            regions: data.config.regions.len(),
            geoip_build_epoch: data.geodb.build_epoch(),
            needs_restart,
        };
        let config = data.config.clone();
        self.health.restart(&config);
        let view = state::compose(
            &self.shared.health.load(),
            &self.shared.drains.load(),
            state::now(),
        );
        // Data and view of the same region list, stored back to back.
        responder.data.store(Arc::new(data));
        responder.view.store(Arc::new(view));
        let _ = self.shared.publish().await;
        self.reloads.fetch_add(1, Ordering::Relaxed);
        info!(?report, "reloaded");
        Ok(report)
    }
}

fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if old.dns.listen != new.dns.listen {
        out.push("dns.listen".to_owned());
    }
    if old.api.listen != new.api.listen {
        out.push("api.listen".to_owned());
    }
    if old.health.state_file != new.health.state_file {
        out.push("health.state_file".to_owned());
    }
    if old.vpnlog != new.vpnlog {
        out.push("vpnlog".to_owned());
    }
    out
}

/// Opens the tunnel store in `[provision] data_dir`, if provisioning is on.
fn open_store(config: &Config) -> Result<Option<Arc<dyn Store>>, ServeError> {
    let Some(p) = &config.provision else {
        return Ok(None);
    };
    let file = p.data_dir.join("tunnels.db");
    let err = |source| ServeError::Store {
        file: file.clone(),
        source,
    };
    std::fs::create_dir_all(&p.data_dir).map_err(|e| err(StoreError::Corrupt(e.to_string())))?;
    let store = SqliteStore::open(&file, p.pool, p.quarantine.as_secs()).map_err(err)?;
    Ok(Some(Arc::new(store)))
}

/// Starts log ingestion, if `[vpnlog]` is set.
async fn start_vpnlog(config: &Config) -> Result<Option<VpnLog>, ServeError> {
    let Some(v) = &config.vpnlog else {
        return Ok(None);
    };
    let (vpnlog, addr) = crate::vpnlog::service::start(v).await?;
    println!("listening syslog {addr}");
    Ok(Some(vpnlog))
}

/// Writes the OpenVPN files once at start when `[provision] export_dir` is set.
fn export_at_start(config: &Config, config_path: &std::path::Path, store: Option<&dyn Store>) {
    let p = config.provision.as_ref();
    let Some((store, p, dir)) = store
        .zip(p)
        .and_then(|(s, p)| Some((s, p, p.export_dir.as_ref()?)))
    else {
        return;
    };
    match crate::tunnels::export::export_store(store, p, config_path, dir) {
        Ok(e) => info!(dir = %dir.display(), tunnels = e.tunnels, "exported the OpenVPN files"),
        Err(e) => warn!(error = %e, "exporting the OpenVPN files failed"),
    }
}

/// Serves until SIGINT or SIGTERM; SIGHUP reloads.
pub async fn run(config_path: PathBuf) -> Result<(), ServeError> {
    let path = config_path.clone();
    let data = tokio::task::spawn_blocking(move || load(&path))
        .await
        .expect("loading task panicked")?;
    let config = data.config.clone();
    let (tokens, origin) = Tokens::load(&config.api, true)?;
    if let admin::auth::Origin::Created(file) = origin {
        info!(file = %file.display(), "created an admin API token");
    }
    let saved = state::file::load(&config.health.state_file);
    let health_table = HealthTable::initial(&config, saved.as_ref());
    let drains = saved.map(|s| s.drains).unwrap_or_default();
    let responder = Arc::new(Responder::new(
        data,
        RegionView::all_serving(config.regions.len()),
    ));
    let shared = Shared::start(
        responder.clone(),
        health_table,
        drains,
        config.health.state_file.clone(),
    );
    let (bound, _dns_tasks) = listen::start(&config.dns, responder).map_err(ServeError::Dns)?;
    let health = Health::start(&config, shared.clone());
    let tunnels = open_store(&config)?;
    export_at_start(&config, &config_path, tunnels.as_deref());
    let vpnlog = start_vpnlog(&config).await?;
    let server = Arc::new(Server {
        config_path,
        shared,
        health,
        admin_lock: tokio::sync::Mutex::new(()),
        reloads: AtomicU64::new(0),
        reload_failures: AtomicU64::new(0),
        tunnels,
        vpnlog,
    });
    let api = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .map_err(|source| ServeError::Api {
            addr: config.api.listen,
            source,
        })?;
    let api_addr = api.local_addr().map_err(|source| ServeError::Api {
        addr: config.api.listen,
        source,
    })?;
    tokio::spawn(admin::serve(api, server.clone(), tokens));
    for addr in &bound {
        info!(%addr, "serving DNS over UDP and TCP");
        println!("listening dns {addr}");
    }
    info!(addr = %api_addr, "serving the admin API");
    println!("listening api {api_addr}");
    signals(server).await;
    info!("shutting down");
    Ok(())
}

async fn signals(server: Arc<Server>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hup.recv() => {
                info!("SIGHUP: reloading");
                let _ = server.reload().await;
            }
        }
    }
}
