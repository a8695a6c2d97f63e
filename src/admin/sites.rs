//! Provisioning routes: sites, their RouterOS scripts and recreate jobs.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{
    Api,
    fail::{Fail, attempt, provisioning_off, uuid},
    handlers::error,
};
use crate::{
    clock,
    tunnels::{
        pool::PoolError,
        routeros::{Version, poller},
        scripts::{JobSecrets, Scripts},
        store::{Created, Finished, Job, Outcome, Site, Store, StoreError},
    },
};

/// The store, or the reason provisioning cannot answer.
pub(super) fn store(api: &Api) -> Result<Arc<dyn Store>, Fail> {
    api.cx.tunnels.clone().ok_or_else(|| provisioning_off(api))
}

/// Runs a store call off the async threads (the store's calls block).
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Fail> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e @ StoreError::Pool(PoolError::Exhausted(_)))) => Err(Fail(
            StatusCode::CONFLICT,
            format!("{e}: delete sites or widen [provision] pool"),
        )),
        Ok(Err(e @ StoreError::Unavailable(_))) => Err(Fail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{e}: nothing was changed; try again when it is back"),
        )),
        Ok(Err(e)) => Err(Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        Err(e) => Err(Fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// Brings the OpenVPN server's file of `site` up to date after a change,
/// when `export_dir` is set, so a new tunnel can connect and a deleted one
/// cannot; returns once it is written.
async fn reexport(api: &Api, site: Uuid) {
    if let Some(exporter) = &api.cx.exporter {
        exporter.site(site).await;
    }
}

/// 201 with the credentials when `created` holds them (the one time they are
/// shown), else 200 with the site.
fn created(site: &Site, created: Option<Created>) -> Response {
    match created {
        Some(c) => (
            StatusCode::CREATED,
            Json(json!({ "site": site, "secret": c.secret, "router_token": c.router_token })),
        )
            .into_response(),
        None => Json(json!({ "site": site })).into_response(),
    }
}

pub async fn create(State(api): State<Arc<Api>>) -> Response {
    ensure(&api, Uuid::new_v4()).await
}

pub async fn put(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let id = attempt!(uuid(&id));
    ensure(&api, id).await
}

async fn ensure(api: &Api, id: Uuid) -> Response {
    let store = attempt!(store(api));
    let (site, credentials) = attempt!(blocking(move || store.ensure(id, clock::now())).await);
    if credentials.is_some() {
        reexport(api, id).await;
    }
    created(&site, credentials)
}

pub async fn get(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let store = attempt!(store(&api));
    let id = attempt!(uuid(&id));
    match attempt!(blocking(move || store.get(id)).await) {
        Some(site) => Json(json!({ "site": site })).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no site {id}")),
    }
}

pub async fn delete(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let store = attempt!(store(&api));
    let id = attempt!(uuid(&id));
    if attempt!(blocking(move || store.delete(id, clock::now())).await) {
        reexport(&api, id).await;
        StatusCode::NO_CONTENT.into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no site {id}"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    version: Option<String>,
}

/// The script installing `job` on a router of `version`.
fn script(api: &Api, site: &Site, job: &Job, version: Option<&str>) -> Response {
    let snapshot = api.cx.state.snapshot();
    let Some(scripts) = Scripts::new(&snapshot.data.config) else {
        return error(StatusCode::NOT_FOUND, "provisioning is off");
    };
    let version = match Version::parse(version.unwrap_or("7")) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let Some(secret) = job.secret.as_deref() else {
        let state = job.state.as_str();
        return error(
            StatusCode::GONE,
            format!(
                "this job is {state}; its secret is gone (POST /v1/sites/{{uuid}}/recreate for a new one)"
            ),
        );
    };
    // The live-view password is for the router endpoint's copy only.
    let secrets = JobSecrets {
        tunnel: secret,
        live: None,
    };
    let rendered = scripts.job(site, job.id, secrets, version);
    match rendered {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// The site `id`, or a 404 saying so.
async fn site(store: &Arc<dyn Store>, id: Uuid) -> Result<Site, Fail> {
    let s = store.clone();
    blocking(move || s.get(id))
        .await?
        .ok_or_else(|| Fail(StatusCode::NOT_FOUND, format!("no site {id}")))
}

pub async fn routeros(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Response {
    let store = attempt!(store(&api));
    let id = attempt!(uuid(&id));
    let site = attempt!(site(&store, id).await);
    let Some(job) = attempt!(blocking(move || store.pending_job(id, clock::now())).await) else {
        return error(
            StatusCode::CONFLICT,
            "no pending job holds this site's secret; POST /v1/sites/{uuid}/recreate for a new one",
        );
    };
    script(&api, &site, &job, q.version.as_deref())
}

pub async fn recreate(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let store = attempt!(store(&api));
    let id = attempt!(uuid(&id));
    match attempt!(blocking(move || store.recreate(id, clock::now())).await) {
        Some(job) => (StatusCode::CREATED, Json(json!({ "job": job }))).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no site {id}")),
    }
}

pub async fn job(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let store = attempt!(store(&api));
    let id = attempt!(uuid(&id));
    match attempt!(blocking(move || store.job(id, clock::now())).await) {
        Some(job) => Json(json!({ "job": job })).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no job {id}")),
    }
}

pub async fn job_script(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Response {
    let store = attempt!(store(&api));
    let id = attempt!(uuid(&id));
    let s = store.clone();
    let Some(job) = attempt!(blocking(move || s.job(id, clock::now())).await) else {
        return error(StatusCode::NOT_FOUND, format!("no job {id}"));
    };
    let site = attempt!(site(&store, job.site).await);
    let response = script(&api, &site, &job, q.version.as_deref());
    if response.status().is_success() {
        attempt!(blocking(move || store.job_fetched(id, clock::now())).await);
    }
    response
}

pub async fn job_applied(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let store = attempt!(store(&api));
    let id = attempt!(uuid(&id));
    let finish = move || store.finish_job(id, None, Outcome::Applied, clock::now());
    finished(attempt!(blocking(finish).await), id)
}

/// The answer to a job's outcome: 200 (also when reported again), 409 when
/// the job had ended otherwise, 404 for no such job.
pub(crate) fn finished(result: Finished, id: Uuid) -> Response {
    match result {
        Finished::Done(job) => Json(json!({ "job": job })).into_response(),
        Finished::Conflict(job) => (
            StatusCode::CONFLICT,
            Json(json!({ "error": format!("job {id} is already {}", job.state.as_str()), "job": job })),
        )
            .into_response(),
        Finished::NotFound => error(StatusCode::NOT_FOUND, format!("no job {id}")),
    }
}

/// A new router token for the site (the old one stops working), shown once.
pub async fn router_token(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    let store = attempt!(store(&api));
    let id = attempt!(uuid(&id));
    match attempt!(blocking(move || store.new_router_token(id)).await) {
        Some(token) => (
            StatusCode::CREATED,
            Json(json!({ "site": id, "router_token": token })),
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no site {id}")),
    }
}

/// `POST /v1/sites/{uuid}/bootstrap?version=V`: a one-time bootstrap token
/// for the site's router and the line to paste into its terminal.
pub async fn bootstrap(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Response {
    let store = attempt!(store(&api));
    let id = attempt!(uuid(&id));
    let config = api.cx.state.snapshot().data.config.clone();
    let Some(routers) = config.routers.as_ref() else {
        return error(
            StatusCode::CONFLICT,
            "no router endpoint: the server started without a [routers] table (a reload does not start it; restart)",
        );
    };
    let Some(text) = q.version.as_deref() else {
        return error(
            StatusCode::BAD_REQUEST,
            "`version` (the router's RouterOS version, like 6.49 or 7.16) is required",
        );
    };
    // Refused here, where the portal can say so, not on the router.
    let auth = config
        .provision
        .as_ref()
        .map_or("sha1", |p| p.auth.as_str());
    let checked = Version::parse(text).and_then(|v| v.supported()?.check_auth(auth));
    if let Err(e) = checked {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let expires = clock::now() + routers.bootstrap_expiry.as_secs();
    let version = text.to_owned();
    let issue = move || store.new_enrollment(id, &version, expires);
    let Some(token) = attempt!(blocking(issue).await) else {
        return error(StatusCode::NOT_FOUND, format!("no site {id}"));
    };
    let url = format!(
        "{}/router/v1/bootstrap.rsc?token={token}",
        routers.public_url
    );
    (
        StatusCode::CREATED,
        Json(json!({
            "site": id,
            "token": token,
            "expires": expires,
            "url": url,
            "command": poller::one_liner(&url),
        })),
    )
        .into_response()
}
