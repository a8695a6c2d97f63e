//! `mgnt agent`: runs beside an OpenVPN server started with
//! `--management-client-auth`, answers its logins from a credential cache
//! kept in step with the control plane (and on disk), and ends the sessions
//! of deleted tunnels. With client-auth on, OpenVPN admits nobody while the
//! agent is away: run it supervised.
//!
//! Pure parts: [`config`], [`cache`] (decisions), [`wire`] (the management
//! protocol), `client_list` (the sessions open at a (re)connect); edges:
//! [`sync`] (the control plane), [`session`] (OpenVPN), `outbox` (reports),
//! `latency` (pings), [`metrics`] (`GET /metrics`).

pub mod cache;
mod client_list;
pub mod config;
pub mod firewall;
mod latency;
pub mod metrics;
mod outbox;
pub mod relay;
mod session;
mod sync;
pub mod wire;

use std::{net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, sync::watch};
use tracing::{info, warn};

pub use config::{AgentConfig, AgentConfigError};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] AgentConfigError),
    #[error("{file}: {reason}")]
    Token { file: String, reason: String },
    #[error("control plane client: {0}")]
    Control(String),
    #[error("{file}: {problem}")]
    OpenVpn { file: String, problem: String },
    #[error(
        "firewall: {0} (set `firewall = false` to manage it yourself; `mgnt agent --print-rules` shows the rules)"
    )]
    Firewall(String),
    #[error("metrics listener on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Refuses an OpenVPN server config the agent cannot work beside.
fn check_openvpn(config: &AgentConfig) -> Result<(), AgentError> {
    let Some(file) = &config.openvpn_config else {
        return Ok(());
    };
    let err = |problem: String| AgentError::OpenVpn {
        file: file.display().to_string(),
        problem,
    };
    let text = std::fs::read_to_string(file).map_err(|e| err(e.to_string()))?;
    match firewall::openvpn_problems(&text).first() {
        Some(p) => Err(err((*p).to_owned())),
        None => Ok(()),
    }
}

/// Reads the agent's token: the first line of `token_file` (just the token;
/// the control plane knows it as `NAME:TOKEN`).
fn token(config: &AgentConfig) -> Result<String, AgentError> {
    let err = |reason: String| AgentError::Token {
        file: config.token_file.display().to_string(),
        reason,
    };
    // Made the owner's only when others could read it; best effort, since
    // `--print-rules` may run as another user than the file's owner.
    let _ = crate::durable::tighten(&config.token_file);
    let text = std::fs::read_to_string(&config.token_file).map_err(|e| err(e.to_string()))?;
    let token = text.lines().next().unwrap_or("").trim();
    // A line copied from the control plane's file still works.
    let token = token.rsplit_once(':').map_or(token, |(_, t)| t).to_owned();
    if token.len() < 16 {
        return Err(err(
            "no token of 16 characters or more on its first line".into()
        ));
    }
    Ok(token)
}

/// The firewall rules the agent installs (`mgnt agent --print-rules`), from
/// the control plane, or from the cache when it cannot be reached.
pub fn rules(config: &AgentConfig) -> Result<String, AgentError> {
    let control = sync::Control::new(config, token(config)?).map_err(AgentError::Control)?;
    let mut cache = cache::Cache::default();
    let fetched = control
        .changes(0, std::time::Duration::ZERO)
        .and_then(|changes| cache.apply(changes));
    if let Err(e) = fetched {
        warn!(error = %e, "the control plane did not answer; the rules come from the cache");
        cache = cache::Cache::load(&config.cache_dir)
            .map_err(|e| AgentError::Control(e.to_string()))?;
    }
    let policy = cache.policy().ok_or_else(|| {
        AgentError::Control("no rules known yet: the control plane never answered".into())
    })?;
    policy.rules().map_err(AgentError::Firewall)
}

/// Binds `[agent] metrics` when set (at start: a port taken stops the agent)
/// and prints `listening metrics ADDR`, as `mgnt serve` prints its listeners
/// (port 0 takes a free one).
async fn metrics_listener(config: &AgentConfig) -> Result<Option<TcpListener>, AgentError> {
    let Some(addr) = config.metrics else {
        return Ok(None);
    };
    let bound = TcpListener::bind(addr)
        .await
        .and_then(|l| Ok((l.local_addr()?, l)));
    let (addr, listener) = bound.map_err(|source| AgentError::Metrics { addr, source })?;
    info!(%addr, "serving metrics");
    println!("listening metrics {addr}");
    Ok(Some(listener))
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    tokio::spawn(crate::logging::report_suppressed());
    check_openvpn(&config)?;
    let metrics_listener = metrics_listener(&config).await?;
    let token = token(&config)?;
    let control = sync::Control::new(&config, token.clone()).map_err(AgentError::Control)?;
    let cache = match cache::Cache::load(&config.cache_dir) {
        Ok(c) => {
            info!(tunnels = c.len(), seq = c.seq, "credential cache loaded");
            c
        }
        Err(e) => {
            warn!(error = %e, "starting with an empty credential cache");
            cache::Cache::default()
        }
    };
    // Isolation from the start, with the rules last known (a first start
    // installs them with the first answer).
    let applied = match cache.policy() {
        Some(policy) if config.firewall => {
            firewall::install(policy).map_err(AgentError::Firewall)?;
            info!(pool = %policy.pool, "firewall rules installed from the cache");
            Some(policy.clone())
        }
        None if config.firewall => {
            let probe = firewall::Policy {
                pool: "100.64.0.0/10".parse().expect("a prefix"),
                networks: Vec::new(),
                inbound: Vec::new(),
                outbound: Vec::new(),
            };
            firewall::check(&probe).map_err(AgentError::Firewall)?;
            None
        }
        _ => None,
    };
    let config = Arc::new(config);
    let (tx, rx) = watch::channel(Arc::new(cache));
    let counters = Arc::new(session::Counters::default());
    let control = Arc::new(control);
    let outbox = outbox::start(control.clone(), &config.cache_dir, config.buffer_max);
    let latency_rounds = Arc::default();
    let (targets_tx, targets) = watch::channel(Vec::new());
    // The live view's relay opens only tunnels the management session knows.
    let relay = relay::start(
        &config.control,
        &token,
        config.ca_file.as_deref(),
        targets.clone(),
    )
    .map_err(AgentError::Control)?;
    if let Some(listener) = metrics_listener {
        let m = metrics::Metrics {
            session: counters.clone(),
            control: control.counters.clone(),
            outbox: outbox.counters.clone(),
            latency_rounds: Arc::clone(&latency_rounds),
            cache: rx.clone(),
            edge: Arc::default(),
            relay,
        };
        tokio::spawn(metrics::serve(listener, Arc::new(m)));
    }
    tokio::spawn(sync::run(control, config.clone(), tx, applied));
    tokio::spawn(latency::run(
        config.latency_interval,
        config.latency_pings,
        targets,
        outbox.clone(),
        latency_rounds,
    ));
    tokio::spawn(session::run(
        config.clone(),
        rx,
        counters,
        outbox,
        targets_tx,
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| AgentError::Control(e.to_string()))?;
    // Logins are answered from here on (from the cache until the control
    // plane answers), under the rules last known.
    let systemd = crate::notify::ready("answering logins");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("stopping");
    if let Some(n) = &systemd {
        let _ = n.send("STOPPING=1");
    }
    Ok(())
}
