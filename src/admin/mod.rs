//! The admin HTTP API: regions, drains, explain, reload, metrics, nodes.
//!
//! JSON under `/v1`, bearer-token auth on everything but `GET /healthz`.
//! The router is built from [`routes`], the same table the OpenAPI test
//! compares with `openapi.json`, so no route goes undocumented.

mod agents;
pub mod auth;
pub mod client;
mod fail;
mod handlers;
mod hook;
mod live;
mod live_relay;
mod logs;
mod metrics_text;
mod nodes;
mod reboot;
mod relay;
mod sites;

use std::sync::Arc;

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{MethodRouter, delete, get, post, put},
};

use crate::{dns::answer::Responder, state, tunnels::store::Store, vpnlog::service::VpnLog};
use auth::Tokens;

/// Largest request body accepted; drain reasons are short.
const MAX_BODY: usize = 16 * 1024;
/// Largest body on agent routes (a batch of reports).
const AGENT_MAX_BODY: usize = 1 << 20;

/// What the API reads and acts on; built by `mgnt serve`.
pub struct Context {
    /// Region state: snapshots to read, the owner to send drains and reloads to.
    pub state: state::Handle,
    /// The DNS responder, for its query counters.
    pub responder: Arc<Responder>,
    /// Provisioning's store, when `[provision]` is configured.
    pub tunnels: Option<Arc<dyn Store>>,
    /// Log ingestion and its store, when `[vpnlog]` is configured.
    pub vpnlog: Option<VpnLog>,
    /// The router endpoint, when `[routers]` is configured (for its counters).
    pub routers: Option<Arc<crate::routers::Routers>>,
    /// The OpenVPN file exporter, when `[provision] export_dir` is set.
    pub exporter: Option<crate::tunnels::export::Exporter>,
    /// The API's own accept loop, for its counters.
    pub api_edge: Arc<crate::edge::EdgeCounters>,
    /// Whether `[store]`'s database answers, when there is one.
    pub store: Option<Arc<crate::pg::Reach>>,
    /// This node among the others on the database.
    pub fleet: Arc<crate::fleet::Fleet>,
    /// The live view's routers and viewers, with provisioning.
    pub live: Option<Arc<crate::live::hub::Hub>>,
    /// The agents' relay channels to this node.
    pub relays: Arc<crate::live::relay::Relays>,
}

/// Shared by every handler.
pub struct Api {
    pub cx: Context,
    tokens: Tokens,
    /// Agents' tokens: accepted on agent routes only.
    agents: Tokens,
    /// The via-file hook's token: accepted on the hook's route only.
    hook: Tokens,
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
        (Method::GET, "/v1/nodes", get(nodes::list)),
        (Method::POST, "/v1/sites", post(sites::create)),
        (Method::PUT, "/v1/sites/{uuid}", put(sites::put)),
        (Method::GET, "/v1/sites/{uuid}", get(sites::get)),
        (Method::DELETE, "/v1/sites/{uuid}", delete(sites::delete)),
        (
            Method::GET,
            "/v1/sites/{uuid}/routeros.rsc",
            get(sites::routeros),
        ),
        (
            Method::POST,
            "/v1/sites/{uuid}/recreate",
            post(sites::recreate),
        ),
        (
            Method::POST,
            "/v1/sites/{uuid}/router-token",
            post(sites::router_token),
        ),
        (
            Method::POST,
            "/v1/sites/{uuid}/bootstrap",
            post(sites::bootstrap),
        ),
        (
            Method::POST,
            "/v1/sites/{uuid}/live/ticket",
            post(live::ticket),
        ),
        (
            Method::GET,
            "/v1/sites/{uuid}/resource",
            get(live::resource),
        ),
        (
            Method::POST,
            "/v1/sites/{uuid}/reboot",
            post(reboot::reboot),
        ),
        (
            Method::GET,
            "/v1/sites/{uuid}/reboots/{id}",
            get(reboot::get),
        ),
        (Method::GET, "/v1/jobs/{id}", get(sites::job)),
        (Method::GET, "/v1/jobs/{id}/script", get(sites::job_script)),
        (
            Method::POST,
            "/v1/jobs/{id}/applied",
            post(sites::job_applied),
        ),
        (
            Method::GET,
            "/v1/tunnels/{uuid}/sessions",
            get(logs::sessions),
        ),
        (Method::GET, "/v1/auth-attempts", get(logs::attempts)),
        (
            Method::GET,
            "/v1/tunnels/{uuid}/latency",
            get(logs::latency),
        ),
        (
            Method::GET,
            "/v1/regions/{name}/summary",
            get(logs::summary),
        ),
    ]
}

/// Routes for agents, behind agent tokens only.
pub fn agent_routes() -> Vec<Route> {
    vec![
        (
            Method::GET,
            "/agent/v1/credentials",
            get(agents::credentials),
        ),
        (Method::POST, "/agent/v1/reports", post(agents::reports)),
        (Method::GET, "/agent/v1/live", get(relay::channel)),
        (Method::GET, "/agent/v1/live/{id}", get(relay::pipe)),
    ]
}

/// The via-file hook's route, behind its token only.
pub fn hook_routes() -> Vec<Route> {
    vec![(Method::POST, "/hook/v1/verify", post(hook::verify))]
}

/// Routes open to anyone.
pub fn public_routes() -> Vec<Route> {
    vec![
        (Method::GET, "/healthz", get(handlers::healthz)),
        // Authenticated by its single-use ticket: a browser cannot send a
        // bearer header on a WebSocket.
        (Method::GET, "/v1/sites/{uuid}/live", get(live::stream)),
    ]
}

/// The tokens the API accepts, each set on its own routes.
pub struct AllTokens {
    pub admin: Tokens,
    pub agents: Tokens,
    pub hook: Tokens,
}

/// A router serving `routes`.
fn table(routes: Vec<Route>) -> Router<Arc<Api>> {
    routes
        .into_iter()
        .fold(Router::new(), |r, (_, path, handler)| {
            r.route(path, handler)
        })
}

pub fn router(cx: Context, tokens: AllTokens) -> Router {
    let api = Arc::new(Api {
        cx,
        tokens: tokens.admin,
        agents: tokens.agents,
        hook: tokens.hook,
    });
    let hook = table(hook_routes()).route_layer(middleware::from_fn_with_state(
        api.clone(),
        authenticate_hook,
    ));
    let agent = table(agent_routes())
        .route_layer(middleware::from_fn_with_state(
            api.clone(),
            authenticate_agent,
        ))
        // Report batches are larger than anything an operator sends.
        .layer(DefaultBodyLimit::max(AGENT_MAX_BODY));
    let protected =
        table(routes()).route_layer(middleware::from_fn_with_state(api.clone(), authenticate));
    let public = table(public_routes());
    protected
        .merge(agent)
        .merge(hook)
        .merge(public)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(api)
}

/// Serves the API on `listener` behind the bounded accept loop (TLS with
/// `tls`): `api.max_connections` in all and per source; a connection lasts
/// at most two minutes (an agent's long poll is 25 s).
pub async fn serve(
    listener: tokio::net::TcpListener,
    cx: Context,
    tokens: AllTokens,
    tls: Option<Arc<crate::edge::tls::Certificate>>,
) {
    let counters = cx.api_edge.clone();
    let api = &cx.state.snapshot().data.config.api;
    let limits = crate::edge::Limits {
        max_connections: api.max_connections,
        max_per_source: api.max_connections_per_source,
        connection_time: std::time::Duration::from_secs(120),
        header_time: std::time::Duration::from_secs(10),
    };
    crate::edge::serve(listener, router(cx, tokens), limits, tls, counters).await;
}

/// 401 with no detail unless a known admin token is presented.
async fn authenticate(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    check(&api.tokens, req, next).await
}

/// 401 with no detail unless the hook's token is presented.
async fn authenticate_hook(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    check(&api.hook, req, next).await
}

/// 401 with no detail unless a known agent token is presented.
async fn authenticate_agent(State(api): State<Arc<Api>>, req: Request, next: Next) -> Response {
    check(&api.agents, req, next).await
}

async fn check(tokens: &Tokens, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(name) = presented.and_then(|p| tokens.check(p)) else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
        )
            .into_response();
    };
    req.extensions_mut().insert(Caller(name.to_owned()));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The router is built from `routes()` and `public_routes()` only, so
    /// comparing those with `openapi.json` covers every route it serves.
    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let spec: serde_json::Value =
            serde_json::from_str(include_str!("../../openapi.json")).unwrap();
        let documented: BTreeSet<(String, String)> = spec["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .unwrap()
                    .keys()
                    .map(move |m| (m.to_uppercase(), path.clone()))
            })
            .collect();
        let routers: BTreeSet<(String, String)> = crate::routers::routes()
            .into_iter()
            .map(|(m, p, _)| (m.to_string(), p.to_owned()))
            .collect();
        let tokened: BTreeSet<&str> = crate::routers::routes()
            .into_iter()
            .filter_map(|(_, p, token)| token.then_some(p))
            .collect();
        let served: BTreeSet<(String, String)> = routes()
            .into_iter()
            .chain(public_routes())
            .chain(agent_routes())
            .chain(hook_routes())
            .map(|(m, p, _)| (m.to_string(), p.to_owned()))
            .chain(routers.iter().cloned())
            .collect();
        assert_eq!(served, documented);
        for (method, path) in &routers {
            let op = &spec["paths"][path][method.to_lowercase()];
            let security = if tokened.contains(path.as_str()) {
                serde_json::json!([{"routerToken": []}])
            } else {
                serde_json::json!([])
            };
            assert_eq!(op["security"], security, "{path}");
            assert_eq!(op["tags"], serde_json::json!(["router endpoint"]), "{path}");
        }
        let public: Vec<_> = public_routes().into_iter().map(|(_, p, _)| p).collect();
        for (method, path) in documented.difference(&routers) {
            let open =
                spec["paths"][path][method.to_lowercase()]["security"] == serde_json::json!([]);
            assert_eq!(
                open,
                public.contains(&path.as_str()),
                "{method} {path}: security"
            );
        }
    }
}
