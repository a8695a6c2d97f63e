//! VPN log routes: a tunnel's sessions and authentication attempts.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{Api, handlers::error};
use crate::vpnlog::store::LogStore;

fn store(api: &Api) -> Option<Arc<LogStore>> {
    api.server.vpnlog.as_ref().map(|(_, s)| s.clone())
}

fn off() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "log ingestion is off: the config has no [vpnlog] table",
    )
}

pub async fn sessions(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let Some(store) = store(&api) else {
        return off();
    };
    let Ok(id) = Uuid::try_parse(&id) else {
        return error(StatusCode::BAD_REQUEST, format!("`{id}` is not a UUID"));
    };
    match tokio::task::spawn_blocking(move || store.sessions(id)).await {
        Ok(Ok(rows)) => Json(json!({ "tunnel": id, "sessions": rows })).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptQuery {
    result: Option<String>,
    since: Option<u64>,
}

pub async fn attempts(State(api): State<Arc<Api>>, Query(q): Query<AttemptQuery>) -> Response {
    let Some(store) = store(&api) else {
        return off();
    };
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
    match tokio::task::spawn_blocking(move || store.attempts(failures_only, since)).await {
        Ok(Ok(rows)) => Json(json!({ "attempts": rows })).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
