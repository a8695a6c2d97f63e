//! `mgnt serve`: starts the state owner, the DNS listeners, the admin API and
//! log ingestion, and turns signals into commands.

use std::{path::PathBuf, sync::Arc};

use tracing::{error, info, warn};

use crate::{
    admin::{self, auth::Tokens},
    config::{Config, Named},
    dns::{LoadError, answer::Responder},
    edge::bind::BindError,
    fleet::{Claim, ClaimError, Fleet, Me},
    listen,
    pg::Db,
    state::{
        self, StateError,
        pg::{LocalCopy, PgStore},
        store::{FileStore, StateStore},
    },
    tunnels::{export::Exporter, store::Store},
    vpnlog::service::VpnLog,
};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("binding the DNS listeners: {0}")]
    Dns(BindError),
    #[error("binding the admin API: {0}")]
    Api(BindError),
    #[error(transparent)]
    Auth(#[from] Named<admin::auth::AuthError>),
    #[error("log ingestion: {0}")]
    Vpnlog(#[from] crate::vpnlog::service::StartError),
    #[error("the state owner stopped: {0}")]
    StateOwner(String),
    #[error("admin API TLS: {0}")]
    ApiTls(#[from] Named<crate::edge::tls::TlsError>),
    #[error(transparent)]
    Routers(#[from] crate::routers::RoutersError),
    #[error("[store]: {0}")]
    Store(#[from] crate::pg::DbError),
    #[error(transparent)]
    Name(#[from] ClaimError),
}

/// Where region state lives: the database every node shares (`[store]`),
/// or the state file and audit log of a single machine.
fn state_store(config: &Config, db: Option<&Db>) -> Box<dyn StateStore> {
    let (Some(store), Some(db)) = (&config.store, db) else {
        return Box::new(FileStore {
            state_file: config.health.state_file.clone(),
            audit_log: config.api.audit_log.clone(),
        });
    };
    info!("region state in the shared database");
    let node = config.node.name.clone();
    let copy = LocalCopy::new(config.health.state_file.clone());
    Box::new(PgStore::start(
        db.clone(),
        node,
        store.reread_interval,
        copy,
    ))
}

/// With `[store]`: the database, this node's name claimed in it (refused
/// if a live node holds it). A database that does not answer does not stop
/// the node: it answers by its last-known state, and the schema is checked
/// and the name claimed once the database answers (`None`: not yet).
async fn join(
    config: &Config,
    me: &Me,
    hash: &str,
) -> Result<Option<(Db, Option<Claim>)>, ServeError> {
    let Some(store) = &config.store else {
        return Ok(None);
    };
    let db = Db::connect(store)?;
    match db.migrate().await {
        Ok(()) => {}
        Err(error) if error.unavailable() => {
            warn!(%error, "the database does not answer at start: answering by the last-known state; the schema is checked and this node's name claimed once it answers");
            db.reach.lost(state::now());
            tokio::spawn(migrate_once_back(db.clone()));
            return Ok(Some((db, None)));
        }
        Err(error) => return Err(error.into()),
    }
    let claim = crate::fleet::claim::claim(&db, me, hash).await?;
    info!("this node's name is claimed in the shared database");
    Ok(Some((db, Some(claim))))
}

/// Brings the schema up to date once the database answers.
async fn migrate_once_back(db: Db) {
    let mut wait = std::time::Duration::from_secs(1);
    loop {
        tokio::time::sleep(wait).await;
        match db.migrate().await {
            Ok(()) => return info!("the database answers; its schema is up to date"),
            Err(error) if error.unavailable() => {}
            Err(error) => {
                return error!(%error, "the database answers, but its schema cannot be used: this node keeps answering by its last-known state");
            }
        }
        wait = (wait * 2).min(std::time::Duration::from_secs(30));
    }
}

/// Opens the tunnel store, if provisioning is on: in the shared database
/// with `[store]`, else in `[provision] data_dir`. A store that cannot open
/// (its pool no longer holds every address, say) turns provisioning off with
/// an error in the log: DNS must keep serving.
async fn open_store(config: &Config, db: Option<&Db>) -> Option<Arc<dyn Store>> {
    let opened = match db {
        Some(db) => crate::tunnels::open_shared(config, db.clone())
            .map(|s| s.map(|s| Arc::new(s) as Arc<dyn Store>)),
        None => crate::tunnels::open_store(config, false)
            .map(|s| s.map(|s| Arc::new(s) as Arc<dyn Store>)),
    };
    let store = match opened {
        Ok(store) => store?,
        Err(error) => {
            error!(%error, "provisioning is off: the tunnel store cannot be opened");
            return None;
        }
    };
    if db.is_some_and(|db| db.reach.lost_since().is_none()) {
        // SQLite checks this as it rebuilds its pool; the database, here
        // (when it answers: a reload checks again).
        let (s, c) = (store.clone(), config.clone());
        let held = tokio::task::spawn_blocking(move || crate::tunnels::pool_holds(s.as_ref(), &c))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(error) = held {
            error!(%error, "provisioning is off");
            return None;
        }
    }
    Some(store)
}

/// Starts log ingestion, if `[vpnlog]` is set.
async fn start_vpnlog(config: &Config, db: Option<&Db>) -> Result<Option<VpnLog>, ServeError> {
    let Some(v) = &config.vpnlog else {
        return Ok(None);
    };
    let (vpnlog, addr) = crate::vpnlog::service::start(v, db).await?;
    println!("listening syslog {addr}");
    Ok(Some(vpnlog))
}

/// Starts the OpenVPN file exporter when `[provision] export_dir` is set.
async fn start_exporter(config: &Config, store: Option<&Arc<dyn Store>>) -> Option<Exporter> {
    let p = config.provision.as_ref()?;
    let dir = p.export_dir.as_ref()?;
    match Exporter::start(store?.clone(), p, &config.file, dir).await {
        Ok(e) => Some(e),
        Err(error) => {
            error!(%error, "the OpenVPN files are not exported");
            None
        }
    }
}

/// Serves until SIGINT or SIGTERM; SIGHUP reloads. Fails if the state owner
/// ever stops, rather than leave the API waiting on it.
pub async fn run(config_path: PathBuf) -> Result<(), ServeError> {
    tokio::spawn(crate::logging::report_suppressed());
    let path = config_path.clone();
    let data = tokio::task::spawn_blocking(move || state::load_checked(&path, None))
        .await
        .expect("loading task panicked")?;
    let config = data.config.clone();
    let file = config.file.as_path();
    let named = |key: &'static str| move |e| Named::new(file, key, e);
    let (tokens, origin) = Tokens::load(&config.api, true).map_err(named("api.token_file"))?;
    let agents = Tokens::load_agents(config.api.agent_token_file.as_deref())
        .map_err(named("api.agent_token_file"))?;
    // The via-file hook's token, for an OpenVPN server beside this one.
    let hook = match &config.provision {
        Some(p) => {
            Tokens::load_hook(&p.hook_token_file).map_err(named("provision.hook_token_file"))?
        }
        None => Tokens::none(),
    };
    if let admin::auth::Origin::Created(file) = origin {
        info!(file = %file.display(), "created an admin API token");
    }
    let me = Me {
        name: config.node.name.clone(),
        started: state::now(),
        version: env!("CARGO_PKG_VERSION"),
    };
    let hash = data.config_hash.to_string();
    info!(config_hash = %hash, version = %me.version, "configuration loaded");
    let joined = join(&config, &me, &hash).await?;
    let db = joined.as_ref().map(|(db, _)| db.clone());
    let store = state_store(&config, db.as_ref());
    let tunnels = open_store(&config, db.as_ref()).await;
    let (mut state, mut owner) =
        state::start(data, config_path, store, true, state::system_clock()).await;
    let fleet = Arc::new(Fleet {
        me: me.clone(),
        db: joined.as_ref().map(|(db, _)| db.clone()),
        view: Arc::default(),
    });
    if let Some((db, claim)) = joined {
        let (reader, view) = (state.reader(), fleet.view.clone());
        tokio::spawn(crate::fleet::claim::keep(db, claim, me, reader, view));
    }
    if let Some(tunnels) = tunnels.clone() {
        let check = move |c: &Config| crate::tunnels::pool_holds(tunnels.as_ref(), c);
        state = state.with_reload_check(Arc::new(check));
    }
    let responder = Arc::new(Responder::default());
    let (bound, _dns_tasks) =
        listen::start(&config.dns, state.reader(), responder.clone()).map_err(ServeError::Dns)?;
    let exporter = start_exporter(&config, tunnels.as_ref()).await;
    let routers = match (&config.routers, &tunnels) {
        (Some(r), Some(store)) => {
            let (routers, addr) = crate::routers::start(r, store.clone(), state.reader()).await?;
            info!(%addr, "serving the router endpoint");
            if config.provision.as_ref().is_some_and(|p| p.ca.is_none()) {
                warn!(
                    "[provision] ca_file is not set: routers will not verify the OpenVPN servers, and their pollers trust the router endpoint only if they already trust its certificate"
                );
            }
            println!("listening routers {addr}");
            Some(Arc::new(routers))
        }
        _ => None,
    };
    let vpnlog = start_vpnlog(&config, db.as_ref()).await?;
    let api_bind =
        |source| ServeError::Api(BindError::new(config.api.listen, "api.listen", source));
    let api = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .map_err(api_bind)?;
    let api_addr = api.local_addr().map_err(api_bind)?;
    let relays = Arc::new(crate::live::relay::Relays::default());
    let live = tunnels.clone().map(|store| {
        let logs = vpnlog.as_ref().map(|v| v.store.clone());
        Arc::new(crate::live::hub(
            store,
            logs,
            relays.clone(),
            state.reader(),
        ))
    });
    let cx = admin::Context {
        state: state.clone(),
        responder,
        live,
        relays,
        tunnels,
        vpnlog,
        routers: routers.clone(),
        api_edge: Arc::new(crate::edge::EdgeCounters::default()),
        exporter,
        store: fleet.db.as_ref().map(|db| db.reach.clone()),
        fleet,
    };
    let tokens = admin::AllTokens {
        admin: tokens,
        agents,
        hook,
    };
    let api_tls = match &config.api.tls {
        Some(files) => Some(
            crate::edge::tls::Certificate::load(files)
                .map_err(|e| Named::new(&config.file, e.key("api", files), e))?,
        ),
        None => None,
    };
    tokio::spawn(admin::serve(api, cx, tokens, api_tls.clone()));
    for addr in &bound {
        info!(%addr, "serving DNS over UDP and TCP");
        println!("listening dns {addr}");
    }
    info!(addr = %api_addr, "serving the admin API");
    println!("listening api {api_addr}");
    let systemd = crate::notify::ready(&format!("serving, config {hash}"));
    tokio::select! {
        () = signals(&state, routers.as_deref(), api_tls.as_deref()) => {
            info!("shutting down");
            if let Some(n) = &systemd {
                let _ = n.send("STOPPING=1");
            }
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

async fn signals(
    state: &state::Handle,
    routers: Option<&crate::routers::Routers>,
    api_tls: Option<&crate::edge::tls::Certificate>,
) {
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
                if let Some(Err(error)) = api_tls.map(|c| c.reload()) {
                    error!(%error, "admin API certificate not reloaded; the old one stays");
                }
                match state.reload("SIGHUP").await {
                    Ok(_) | Err(StateError::Load(_)) => {} // logged by the owner
                    Err(error) => error!(%error, "reload failed"),
                }
            }
        }
    }
}
