//! Reboots through the live view: `POST /v1/sites/{uuid}/reboot` sends
//! `/system/reboot` on the router's shared API connection (the only command
//! of the live view that changes anything, and no configuration), audited and
//! at most one per `[live] reboot_min_gap` per site; `GET
//! /v1/sites/{uuid}/reboots/{id}` says whether the router came back.

use std::sync::Arc;

use axum::{
    Extension, Json,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;
use tracing::{info, warn};

use super::{
    Api, Caller,
    fail::{Fail, attempt, uuid},
    handlers::error,
    live::{hub, live_config},
    sites::{blocking, store},
};
use crate::{
    clock,
    live::reboot::watch,
    state::audit,
    tunnels::store::reboots::{Claim, Reboot, RebootState},
};

/// `POST /v1/sites/{uuid}/reboot`: 202 once the router took the command,
/// 429 within the gap after the site's last reboot, 502 when the router
/// could not be reached or refused.
pub async fn reboot(
    State(api): State<Arc<Api>>,
    Extension(Caller(user)): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let live = attempt!(live_config(&api));
    let hub = attempt!(hub(&api));
    let store = attempt!(store(&api));
    let site = attempt!(uuid(&id));
    let (now, gap) = (clock::now(), live.reboot_min_gap.as_secs());
    let who = user.clone();
    let claimed = attempt!(
        blocking({
            let store = store.clone();
            move || store.claim_reboot(site, &who, now, gap)
        })
        .await
    );
    let id = match claimed {
        Claim::Claimed(id) => id,
        Claim::NoSite => return error(StatusCode::NOT_FOUND, format!("no site {site}")),
        Claim::TooSoon { retry_after } => {
            let message = format!(
                "site {site} was rebooted less than [live] reboot_min_gap ({}s) ago; again in {retry_after}s",
                live.reboot_min_gap.as_secs()
            );
            let body = Json(json!({ "error": message }));
            let wait = [(header::RETRY_AFTER, retry_after.to_string())];
            return (StatusCode::TOO_MANY_REQUESTS, wait, body).into_response();
        }
    };
    let sent = hub.reboot(site).await;
    let (state, why) = match &sent {
        Ok(()) => (RebootState::Sent, None),
        Err(why) => (RebootState::Failed, Some(why.clone())),
    };
    attempt!(
        blocking({
            let (store, why) = (store.clone(), why.clone());
            move || store.set_reboot(id, state, clock::now(), why.as_deref())
        })
        .await
    );
    audit_reboot(&api, &user, site, now, why.as_deref()).await;
    let reboot = attempt!(read(&store, site, id).await);
    match sent {
        Ok(()) => {
            info!(%site, reboot = %id, by = %user, "reboot sent");
            let (hub, store, timeout) = (hub.clone(), store.clone(), live.reboot_timeout);
            tokio::spawn(watch(hub, store, id, site, now, timeout));
            (StatusCode::ACCEPTED, Json(json!({ "reboot": reboot }))).into_response()
        }
        Err(why) => {
            warn!(%site, reboot = %id, by = %user, error = %why, "reboot not sent");
            let body =
                json!({ "error": format!("the reboot was not sent: {why}"), "reboot": reboot });
            (StatusCode::BAD_GATEWAY, Json(body)).into_response()
        }
    }
}

/// `GET /v1/sites/{uuid}/reboots/{id}`: sent, confirmed, unconfirmed (after
/// `[live] reboot_timeout`) or failed.
pub async fn get(
    State(api): State<Arc<Api>>,
    Path((site, id)): Path<(String, String)>,
) -> Response {
    let live = attempt!(live_config(&api));
    let store = attempt!(store(&api));
    let (site, id) = (attempt!(uuid(&site)), attempt!(uuid(&id)));
    let reboot = attempt!(read(&store, site, id).await);
    let reboot = reboot.at(clock::now(), live.reboot_timeout.as_secs());
    Json(json!({ "reboot": reboot })).into_response()
}

async fn read(
    store: &Arc<dyn crate::tunnels::store::Store>,
    site: uuid::Uuid,
    id: uuid::Uuid,
) -> Result<Reboot, Fail> {
    let store = store.clone();
    let found = blocking(move || store.reboot(id)).await?;
    found.filter(|r| r.site == site).ok_or_else(|| {
        Fail(
            StatusCode::NOT_FOUND,
            format!("no reboot {id} of site {site}"),
        )
    })
}

/// One audit entry per reboot sent or failed; a reboot that went out stays
/// answered even if the audit cannot be written (that is logged).
async fn audit_reboot(api: &Api, user: &str, site: uuid::Uuid, now: u64, failed: Option<&str>) {
    let outcome = failed.map_or_else(|| "sent".to_owned(), |why| format!("not sent: {why}"));
    let mut entry = audit::Entry::new(now, user, "reboot", outcome);
    entry.site = Some(site.to_string());
    if let Err(e) = api.cx.state.record(entry).await {
        warn!(%site, error = %e, "cannot audit a reboot");
    }
}
