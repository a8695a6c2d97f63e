//! The admin HTTP API: regions, drains, explain, reload, metrics.
//!
//! JSON under `/v1`, bearer-token auth on everything but `GET /healthz`.
//! The router is built from [`routes`], the same table the OpenAPI test
//! compares with `openapi.json`, so no route goes undocumented.

pub mod audit;
pub mod auth;
pub mod client;
mod handlers;
mod metrics_text;

use std::sync::Arc;

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{MethodRouter, get, post},
};
use tracing::error;

use crate::server::Server;
use auth::Tokens;

/// Largest request body accepted; drain reasons are short.
const MAX_BODY: usize = 16 * 1024;

/// Shared by every handler.
pub struct Api {
    pub server: Arc<Server>,
    tokens: Tokens,
}

/// The name of the token a request authenticated with.
#[derive(Clone)]
pub struct Caller(pub String);

type Route = (Method, &'static str, MethodRouter<Arc<Api>>);

/// Every route behind authentication.
pub fn routes() -> Vec<Route> {
    vec![
        (Method::GET, "/v1/regions", get(handlers::regions)),
        (
            Method::POST,
            "/v1/regions/{name}/drain",
            post(handlers::drain),
        ),
        (
            Method::POST,
            "/v1/regions/{name}/undrain",
            post(handlers::undrain),
        ),
        (Method::GET, "/v1/explain", get(handlers::explain)),
        (Method::POST, "/v1/reload", post(handlers::reload)),
        (Method::GET, "/metrics", get(handlers::metrics)),
    ]
}

/// Routes open to anyone.
pub fn public_routes() -> Vec<Route> {
    vec![(Method::GET, "/healthz", get(handlers::healthz))]
}

pub fn router(server: Arc<Server>, tokens: Tokens) -> Router {
    let api = Arc::new(Api { server, tokens });
    let protected = routes()
        .into_iter()
        .fold(Router::new(), |r, (_, path, handler)| {
            r.route(path, handler)
        })
        .route_layer(middleware::from_fn_with_state(api.clone(), authenticate));
    let public = public_routes()
        .into_iter()
        .fold(Router::new(), |r, (_, path, handler)| {
            r.route(path, handler)
        });
    protected
        .merge(public)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

pub async fn serve(listener: tokio::net::TcpListener, server: Arc<Server>, tokens: Tokens) {
    if let Err(e) = axum::serve(listener, router(server, tokens)).await {
        error!(error = %e, "admin API stopped");
    }
}

/// 401 with no detail unless a known token is presented.
async fn authenticate(State(api): State<Arc<Api>>, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(name) = presented.and_then(|p| api.tokens.check(p)) else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
        )
            .into_response();
    };
    req.extensions_mut().insert(Caller(name.to_owned()));
    next.run(req).await
}
