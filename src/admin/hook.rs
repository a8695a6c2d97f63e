//! The route of OpenVPN's via-file hook (`mgnt auth-verify`) on a server
//! beside the control plane: one check and its record, with the hook's token
//! only (it reads nothing else).

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;

use super::{Api, fail::provisioning_off, handlers::error};
use crate::{clock, tunnels::store::Attempt};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    username: String,
    password: String,
    /// The router's address as OpenVPN gave it (`untrusted_ip`).
    source: Option<String>,
}

/// `POST /hook/v1/verify`: whether the username and password belong to a
/// tunnel; the attempt is recorded.
pub async fn verify(State(api): State<Arc<Api>>, Json(body): Json<VerifyBody>) -> Response {
    let Some(store) = api.cx.tunnels.clone() else {
        return provisioning_off(&api).into();
    };
    let checked = tokio::task::spawn_blocking(move || {
        let now = clock::now();
        let site = store.verify(&body.username, &body.password, now)?;
        let attempt = Attempt {
            time: now,
            username: body.username.chars().take(64).collect(),
            site: site.as_ref().map(|s| s.uuid),
            ok: site.is_some(),
            source: body
                .source
                .filter(|s| s.parse::<std::net::IpAddr>().is_ok()),
        };
        store.record_attempt(&attempt)?;
        Ok::<_, crate::tunnels::store::StoreError>(site)
    })
    .await;
    match checked {
        Ok(Ok(site)) => {
            Json(json!({ "ok": site.is_some(), "site": site.map(|s| s.uuid) })).into_response()
        }
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
