//! `GET /v1/nodes`: the nodes on this node's database, each compared with
//! this one.

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{Api, handlers::error};

pub async fn list(State(api): State<Arc<Api>>) -> Response {
    let snapshot = api.cx.state.snapshot();
    let ours = &snapshot.data.config_hash;
    match api.cx.fleet.nodes(ours).await {
        Ok(nodes) => Json(json!({
            "node": api.cx.fleet.me.name,
            "config_hash": ours,
            "nodes": nodes,
        }))
        .into_response(),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the database does not answer: {e}"),
        ),
    }
}
