//! VPN log routes: a tunnel's sessions and latency, authentication attempts,
//! and a region's summary. Queries run on the blocking pool: SQLite is
//! synchronous and must not stall the API's workers.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;

use super::{
    Api,
    fail::{Fail, attempt, uuid},
};
use crate::{
    clock::now,
    vpnlog::{
        service::VpnLog,
        store::{LogStore, LogStoreError},
    },
};

/// Most rows one request returns.
const LIMIT: u32 = 1000;
/// The default window of `since`: the last day.
const DAY: u64 = 24 * 3600;

/// Log ingestion, or the reason it cannot answer.
fn vpnlog(api: &Api) -> Result<&VpnLog, Fail> {
    api.cx.vpnlog.as_ref().ok_or_else(|| {
        Fail(
            StatusCode::NOT_FOUND,
            "log ingestion is off: the server started without a [vpnlog] table (a reload does not start it; restart)".into(),
        )
    })
}

/// Runs a store query off the async threads.
async fn blocking<T: Send + 'static>(
    store: Arc<dyn LogStore>,
    q: impl FnOnce(&dyn LogStore) -> Result<T, LogStoreError> + Send + 'static,
) -> Result<T, Fail> {
    match tokio::task::spawn_blocking(move || q(&*store)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        Err(e) => Err(Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

pub async fn sessions(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let store = attempt!(vpnlog(&api)).store.clone();
    let id = attempt!(uuid(&id));
    let rows = attempt!(blocking(store, move |s| s.sessions(id, LIMIT)).await);
    Json(json!({ "tunnel": id, "sessions": rows })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Since {
    since: Option<u64>,
}

pub async fn latency(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    Query(q): Query<Since>,
) -> Response {
    let store = attempt!(vpnlog(&api)).store.clone();
    let id = attempt!(uuid(&id));
    let since = q.since.unwrap_or_else(|| now().saturating_sub(DAY));
    let rows = attempt!(blocking(store, move |s| s.latency(id, since, LIMIT)).await);
    Json(json!({ "tunnel": id, "since": since, "samples": rows })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptQuery {
    result: Option<String>,
    since: Option<u64>,
}

pub async fn attempts(State(api): State<Arc<Api>>, Query(q): Query<AttemptQuery>) -> Response {
    let store = attempt!(vpnlog(&api)).store.clone();
    let failures_only = match q.result.as_deref() {
        None | Some("all") => false,
        Some("failure") => true,
        Some(other) => {
            return Fail(
                StatusCode::BAD_REQUEST,
                format!("`result={other}`: use failure or all"),
            )
            .into();
        }
    };
    let since = q.since.unwrap_or(0);
    let rows = attempt!(blocking(store, move |s| s.attempts(failures_only, since, LIMIT)).await);
    Json(json!({ "attempts": rows })).into_response()
}

/// Live figures (connected now, counted since start) and stored ones (since `since`).
pub async fn summary(
    State(api): State<Arc<Api>>,
    Path(region): Path<String>,
    Query(q): Query<Since>,
) -> Response {
    let known = api.cx.state.snapshot().data.config.region_index(&region);
    if known.is_none() {
        return Fail(StatusCode::NOT_FOUND, format!("no region `{region}`")).into();
    }
    let v = attempt!(vpnlog(&api));
    let live = v.ingest.regions().remove(&region).unwrap_or_default();
    let since = q.since.unwrap_or_else(|| now().saturating_sub(DAY));
    let name = region.clone();
    let stored =
        attempt!(blocking(v.store.clone(), move |s| s.region_activity(&name, since)).await);
    Json(json!({
        "region": region,
        "connected_tunnels": live.connected_tunnels,
        "connected_sessions": live.connected_sessions,
        "since_start": live,
        "since": since,
        "stored": stored,
    }))
    .into_response()
}
