//! The router endpoint: where each site's router pulls its jobs with its own
//! token, over HTTPS on a public name (not through the tunnel, so a router
//! whose tunnel is gone can still fetch the job that recreates it).
//!
//! `GET /router/v1/job?version=V` answers 200 with the open job's script (its
//! id in `X-Job-Id` and in the script's first line) or 204;
//! `POST /router/v1/jobs/{id}/result` records `applied` or `failed`;
//! `GET /router/v1/bootstrap.rsc?token=T` spends a one-time bootstrap token
//! for the script that installs the poller and the tunnel; `GET
//! /router/v1/ca.pem` is the CA routers install (public, pinned by the
//! fingerprints in the scripts). The
//! token names the site: a router sees only its own jobs. Admin tokens are
//! not router tokens (and router tokens are refused by the admin API).

mod handlers;

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    routing::{get, post},
};

use crate::{
    config::RoutersConfig,
    edge::{self, EdgeCounters, Limits, tls::Certificate},
    state::Reader,
    tunnels::{scripts, store::Store},
};

/// Largest request body: a result is a status and a short error text.
const MAX_BODY: usize = 4 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RoutersError {
    #[error("binding the router endpoint: {0}")]
    Bind(edge::bind::BindError),
    #[error("router endpoint TLS: {0}")]
    Tls(#[from] edge::tls::TlsError),
}

/// What the router endpoint counted.
#[derive(Default)]
pub struct RouterCounters {
    pub jobs_served: AtomicU64,
    pub polls_empty: AtomicU64,
    pub unauthorized: AtomicU64,
    pub rate_limited: AtomicU64,
    pub bad_requests: AtomicU64,
    pub results_applied: AtomicU64,
    pub results_failed: AtomicU64,
    pub results_refused: AtomicU64,
    pub bootstraps: AtomicU64,
    pub bootstraps_refused: AtomicU64,
}

/// A running router endpoint.
pub struct Routers {
    pub counters: Arc<RouterCounters>,
    pub edge: Arc<EdgeCounters>,
    certificate: Option<Arc<Certificate>>,
}

impl Routers {
    /// Re-reads the TLS certificate and key (SIGHUP); the old pair stays on error.
    pub fn reload_certificate(&self) -> Result<(), edge::tls::TlsError> {
        self.certificate.as_ref().map_or(Ok(()), |c| c.reload())
    }
}

/// Binds `config.listen` and serves routers from `store`, with the
/// provisioning settings of the current state snapshot.
pub async fn start(
    config: &RoutersConfig,
    store: Arc<dyn Store>,
    state: Reader,
) -> Result<(Routers, SocketAddr), RoutersError> {
    let certificate = config.tls.as_ref().map(Certificate::load).transpose()?;
    let bind = |source| {
        RoutersError::Bind(edge::bind::BindError::new(
            config.listen,
            "routers.listen",
            source,
        ))
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let counters = Arc::new(RouterCounters::default());
    let edge = Arc::new(EdgeCounters::default());
    let cx = Arc::new(handlers::Context::new(
        store,
        state,
        counters.clone(),
        config.min_poll_gap,
    ));
    let limits = Limits {
        max_connections: config.max_connections,
        max_per_source: config.max_connections_per_source,
        connection_time: Duration::from_secs(30),
        header_time: Duration::from_secs(10),
    };
    tokio::spawn(edge::serve(
        listener,
        router(cx),
        limits,
        certificate.clone(),
        edge.clone(),
    ));
    Ok((
        Routers {
            counters,
            edge,
            certificate,
        },
        addr,
    ))
}

/// Every route of the router endpoint and whether it takes a router token
/// (the OpenAPI test reads this table).
pub fn routes() -> Vec<(axum::http::Method, &'static str, bool)> {
    use axum::http::Method;
    vec![
        (Method::GET, "/router/v1/job", true),
        (Method::POST, "/router/v1/jobs/{id}/result", true),
        // The one-time token is in the URL: it is what the one-liner fetches.
        (Method::GET, "/router/v1/bootstrap.rsc", false),
        (Method::GET, "/router/v1/ca.pem", false),
    ]
}

fn router(cx: Arc<handlers::Context>) -> Router {
    Router::new()
        .route("/router/v1/job", get(handlers::job))
        .route("/router/v1/jobs/{id}/result", post(handlers::result))
        .route("/router/v1/bootstrap.rsc", get(handlers::bootstrap))
        .route(scripts::CA_PATH, get(handlers::ca))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(cx)
}
