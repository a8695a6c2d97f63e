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
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{Api, handlers::error};
use crate::{
    state::now,
    vpnlog::store::{LogStore, LogStoreError},
};

/// Most rows one request returns.
const LIMIT: u32 = 1000;
/// The default window of `since`: the last day.
const DAY: u64 = 24 * 3600;

fn off() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "log ingestion is off: the config has no [vpnlog] table",
    )
}

/// Runs a store query on the blocking pool and answers with `wrap(rows)`.
async fn query<T: Serialize + Send + 'static>(
    api: &Api,
    q: impl FnOnce(&dyn LogStore) -> Result<T, LogStoreError> + Send + 'static,
    wrap: impl FnOnce(T) -> serde_json::Value,
) -> Response {
    let Some(v) = &api.server.vpnlog else {
        return off();
    };
    let store = v.store.clone();
    match tokio::task::spawn_blocking(move || q(&*store)).await {
        Ok(Ok(rows)) => Json(wrap(rows)).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn tunnel(id: &str) -> Result<Uuid, String> {
    Uuid::try_parse(id).map_err(|_| format!("`{id}` is not a UUID"))
}

pub async fn sessions(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let id = match tunnel(&id) {
        Ok(id) => id,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    query(
        &api,
        move |s| s.sessions(id, LIMIT),
        |rows| json!({ "tunnel": id, "sessions": rows }),
    )
    .await
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
    let id = match tunnel(&id) {
        Ok(id) => id,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let since = q.since.unwrap_or_else(|| now().saturating_sub(DAY));
    query(
        &api,
        move |s| s.latency(id, since, LIMIT),
        |rows| json!({ "tunnel": id, "since": since, "samples": rows }),
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptQuery {
    result: Option<String>,
    since: Option<u64>,
}

pub async fn attempts(State(api): State<Arc<Api>>, Query(q): Query<AttemptQuery>) -> Response {
    let failures_only = match q.result.as_deref() {
        None | Some("all") => false,
        Some("failure") => true,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("`result={other}`: use failure or all"),
            );
        }
    };
    let since = q.since.unwrap_or(0);
    query(
        &api,
        move |s| s.attempts(failures_only, since, LIMIT),
        |rows| json!({ "attempts": rows }),
    )
    .await
}

/// Live figures (connected now, counted since start) and stored ones (since `since`).
pub async fn summary(
    State(api): State<Arc<Api>>,
    Path(region): Path<String>,
    Query(q): Query<Since>,
) -> Response {
    if !api
        .server
        .shared
        .responder
        .data
        .load()
        .config
        .regions
        .iter()
        .any(|r| r.name == region)
    {
        return error(StatusCode::NOT_FOUND, format!("no region `{region}`"));
    }
    let Some(v) = &api.server.vpnlog else {
        return off();
    };
    let live = v.ingest.regions().remove(&region).unwrap_or_default();
    let since = q.since.unwrap_or_else(|| now().saturating_sub(DAY));
    let name = region.clone();
    query(
        &api,
        move |s| s.region_activity(&name, since),
        move |stored| {
            json!({
                "region": region,
                "connected_tunnels": live.connected_tunnels,
                "connected_sessions": live.connected_sessions,
                "since_start": live,
                "since": since,
                "stored": stored,
            })
        },
    )
    .await
}
