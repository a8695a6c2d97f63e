//! `mgnt serve`: starts the state owner, the DNS listeners, the admin API and
//! log ingestion, and turns signals into commands.

use std::{path::PathBuf, sync::Arc};

use tracing::{error, info, warn};

use crate::{
    admin::{self, auth::Tokens},
    config::Config,
    dns::{LoadError, answer::Responder},
    listen,
    state::{self, StateError, store::FileStore},
    tunnels::store::Store,
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
    #[error("tunnel store: {0}")]
    Store(#[from] crate::tunnels::OpenError),
    #[error("the state owner stopped: {0}")]
    StateOwner(String),
    #[error(transparent)]
    Routers(#[from] crate::routers::RoutersError),
}

/// Opens the tunnel store in `[provision] data_dir`, if provisioning is on.
fn open_store(config: &Config) -> Result<Option<Arc<dyn Store>>, ServeError> {
    let store = crate::tunnels::open_store(config, false)?;
    Ok(store.map(|s| Arc::new(s) as Arc<dyn Store>))
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
fn export_at_start(config: &Config, store: Option<&dyn Store>) {
    let p = config.provision.as_ref();
    let Some((store, p, dir)) = store
        .zip(p)
        .and_then(|(s, p)| Some((s, p, p.export_dir.as_ref()?)))
    else {
        return;
    };
    match crate::tunnels::export::export_store(store, p, &config.file, dir) {
        Ok(e) => info!(dir = %dir.display(), tunnels = e.tunnels, "exported the OpenVPN files"),
        Err(e) => warn!(error = %e, "exporting the OpenVPN files failed"),
    }
}

/// Serves until SIGINT or SIGTERM; SIGHUP reloads. Fails if the state owner
/// ever stops, rather than leave the API waiting on it.
pub async fn run(config_path: PathBuf) -> Result<(), ServeError> {
    let path = config_path.clone();
    let data = tokio::task::spawn_blocking(move || state::load(&path))
        .await
        .expect("loading task panicked")?;
    let config = data.config.clone();
    let (tokens, origin) = Tokens::load(&config.api, true)?;
    if let admin::auth::Origin::Created(file) = origin {
        info!(file = %file.display(), "created an admin API token");
    }
    let store = FileStore {
        state_file: config.health.state_file.clone(),
        audit_log: config.api.audit_log.clone(),
    };
    let (state, mut owner) = state::start(
        data,
        config_path,
        Box::new(store),
        true,
        state::system_clock(),
    )
    .await;
    let responder = Arc::new(Responder::default());
    let (bound, _dns_tasks) =
        listen::start(&config.dns, state.reader(), responder.clone()).map_err(ServeError::Dns)?;
    let tunnels = open_store(&config)?;
    export_at_start(&config, tunnels.as_deref());
    let routers = match (&config.routers, &tunnels) {
        (Some(r), Some(store)) => {
            let (routers, addr) = crate::routers::start(r, store.clone(), state.reader()).await?;
            info!(%addr, "serving the router endpoint");
            println!("listening routers {addr}");
            Some(Arc::new(routers))
        }
        _ => None,
    };
    let vpnlog = start_vpnlog(&config).await?;
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
    let cx = admin::Context {
        state: state.clone(),
        responder,
        tunnels,
        vpnlog,
        routers: routers.clone(),
    };
    tokio::spawn(admin::serve(api, cx, tokens));
    for addr in &bound {
        info!(%addr, "serving DNS over UDP and TCP");
        println!("listening dns {addr}");
    }
    info!(addr = %api_addr, "serving the admin API");
    println!("listening api {api_addr}");
    tokio::select! {
        () = signals(&state, routers.as_deref()) => {
            info!("shutting down");
            Ok(())
        }
        ended = &mut owner => {
            let why = match ended {
                Ok(()) => "it returned".to_owned(),
                Err(e) => e.to_string(),
            };
            error!(%why, "the state owner stopped; exiting");
            Err(ServeError::StateOwner(why))
        }
    }
}

async fn signals(state: &state::Handle, routers: Option<&crate::routers::Routers>) {
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
                if let Some(Err(error)) = routers.map(|r| r.reload_certificate()) {
                    error!(%error, "router endpoint certificate not reloaded; the old one stays");
                }
                match state.reload("SIGHUP").await {
                    Ok(report) => info!(?report, "reloaded"),
                    Err(StateError::Load(_)) => {} // logged by the owner
                    Err(error) => error!(%error, "reload failed"),
                }
            }
        }
    }
}
