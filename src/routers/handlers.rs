//! The router endpoint's two routes.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::RouterCounters;
use crate::{
    clock,
    state::Reader,
    tunnels::{
        routeros::Version,
        scripts::{JobSecrets, Scripts},
        store::{Finished, Outcome, Site, Store, StoreError},
    },
};

/// Polls remembered for the rate limit before old ones are forgotten.
const MAX_REMEMBERED: usize = 100_000;

pub struct Context {
    store: Arc<dyn Store>,
    state: Reader,
    counters: Arc<RouterCounters>,
    min_gap: Duration,
    /// When each site's router last polled.
    polls: Mutex<HashMap<Uuid, Instant>>,
}

impl Context {
    pub fn new(
        store: Arc<dyn Store>,
        state: Reader,
        counters: Arc<RouterCounters>,
        min_gap: Duration,
    ) -> Self {
        Self {
            store,
            state,
            counters,
            min_gap,
            polls: Mutex::new(HashMap::new()),
        }
    }

    fn count(&self, counter: impl Fn(&RouterCounters) -> &AtomicU64) {
        counter(&self.counters).fetch_add(1, Relaxed);
    }

    /// Whether `site` may poll now (no other poll within `min_gap`).
    fn may_poll(&self, site: Uuid) -> bool {
        let now = Instant::now();
        let mut polls = self.polls.lock().unwrap_or_else(|p| p.into_inner());
        if polls
            .get(&site)
            .is_some_and(|&last| now.duration_since(last) < self.min_gap)
        {
            return false;
        }
        if polls.len() >= MAX_REMEMBERED {
            let gap = self.min_gap;
            polls.retain(|_, &mut last| now.duration_since(last) < gap);
        }
        polls.insert(site, now);
        true
    }
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Runs a store call off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        // The router polls again later: nothing was changed.
        Ok(Err(e @ StoreError::Unavailable(_))) => {
            Err(text(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
        }
        Ok(Err(e)) => Err(text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        Err(e) => Err(text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// The site whose router token the request carries, or 401 with no detail.
async fn site(cx: &Context, headers: &HeaderMap) -> Result<Site, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let unauthorized = || {
        cx.count(|c| &c.unauthorized);
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
        )
            .into_response()
    };
    let Some(token) = token else {
        return Err(unauthorized());
    };
    let store = cx.store.clone();
    blocking(move || store.router_site(&token))
        .await?
        .ok_or_else(unauthorized)
}

#[derive(Deserialize)]
pub struct JobQuery {
    version: Option<String>,
}

/// `GET /router/v1/job?version=V`: the site's open job as a script, or 204.
pub async fn job(
    State(cx): State<Arc<Context>>,
    headers: HeaderMap,
    Query(q): Query<JobQuery>,
) -> Response {
    let site = match site(&cx, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let version = match q.version.as_deref().map(Version::parse) {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            cx.count(|c| &c.bad_requests);
            return text(StatusCode::BAD_REQUEST, e.to_string());
        }
        None => {
            cx.count(|c| &c.bad_requests);
            return text(
                StatusCode::BAD_REQUEST,
                "`version` (the router's RouterOS version) is required",
            );
        }
    };
    if !cx.may_poll(site.uuid) {
        cx.count(|c| &c.rate_limited);
        let wait = cx.min_gap.as_secs().max(1).to_string();
        return (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, wait)]).into_response();
    }
    let snapshot = cx.state.load();
    let Some(scripts) = Scripts::new(&snapshot.data.config) else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "provisioning is off");
    };
    let store = cx.store.clone();
    let id = site.uuid;
    let job = match blocking(move || store.fetch_job(id, clock::now())).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    let Some((job, secret)) = job.and_then(|j| j.secret.clone().map(|s| (j, s))) else {
        cx.count(|c| &c.polls_empty);
        return StatusCode::NO_CONTENT.into_response();
    };
    let live = cx.store.live_password(site.uuid, job.id);
    let secrets = JobSecrets {
        tunnel: &secret,
        live: Some(&live),
    };
    let script = scripts.job(&site, job.id, secrets, version);
    match script {
        Ok(body) => {
            cx.count(|c| &c.jobs_served);
            script_response(body, job.id)
        }
        Err(e) => {
            cx.count(|c| &c.bad_requests);
            text(StatusCode::BAD_REQUEST, e.to_string())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultBody {
    status: String,
    error: Option<String>,
}

/// `POST /router/v1/jobs/{id}/result`: `applied` or `failed` (idempotent).
pub async fn result(
    State(cx): State<Arc<Context>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let site = match site(&cx, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let Ok(id) = Uuid::parse_str(&id) else {
        cx.count(|c| &c.bad_requests);
        return text(StatusCode::BAD_REQUEST, format!("`{id}` is not a job id"));
    };
    let outcome = match serde_json::from_slice::<ResultBody>(&body) {
        Ok(b) if b.status == "applied" => Outcome::Applied,
        Ok(b) if b.status == "failed" => Outcome::Failed(b.error.unwrap_or_default()),
        Ok(b) => {
            cx.count(|c| &c.bad_requests);
            let status = b.status;
            return text(
                StatusCode::BAD_REQUEST,
                format!("status `{status}` is neither applied nor failed"),
            );
        }
        Err(e) => {
            cx.count(|c| &c.bad_requests);
            return text(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}"));
        }
    };
    let applied = outcome == Outcome::Applied;
    let store = cx.store.clone();
    let site_id = site.uuid;
    let finished =
        match blocking(move || store.finish_job(id, Some(site_id), outcome, clock::now())).await {
            Ok(f) => f,
            Err(r) => return r,
        };
    match finished {
        Finished::Done(job) => {
            cx.count(|c| {
                if applied {
                    &c.results_applied
                } else {
                    &c.results_failed
                }
            });
            Json(json!({ "job": job.id, "state": job.state })).into_response()
        }
        Finished::Conflict(job) => {
            cx.count(|c| &c.results_refused);
            let state = job.state.as_str();
            text(StatusCode::CONFLICT, format!("job {id} is already {state}"))
        }
        Finished::NotFound => {
            cx.count(|c| &c.results_refused);
            text(
                StatusCode::NOT_FOUND,
                format!("no job {id} for this router"),
            )
        }
    }
}

#[derive(Deserialize)]
pub struct BootstrapQuery {
    token: Option<String>,
}

/// `GET /router/v1/bootstrap.rsc?token=T`: spends the one-time token for the
/// bootstrap script (a new router token, a new tunnel secret, the poller).
pub async fn bootstrap(
    State(cx): State<Arc<Context>>,
    Query(q): Query<BootstrapQuery>,
) -> Response {
    let refused = |cx: &Context| {
        cx.count(|c| &c.bootstraps_refused);
        text(
            StatusCode::NOT_FOUND,
            "no such bootstrap token: it was used, replaced or has expired; issue a new one",
        )
    };
    let Some(token) = q.token else {
        return refused(&cx);
    };
    let store = cx.store.clone();
    let Some(enrolled) = (match blocking(move || store.enroll(&token, clock::now())).await {
        Ok(e) => e,
        Err(r) => return r,
    }) else {
        return refused(&cx);
    };
    let snapshot = cx.state.load();
    let Some(scripts) = Scripts::new(&snapshot.data.config) else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "provisioning is off");
    };
    let (site, job) = (&enrolled.site, &enrolled.job);
    let live = cx.store.live_password(site.uuid, job.id);
    let secrets = JobSecrets {
        tunnel: job.secret.as_deref().unwrap_or_default(),
        live: Some(&live),
    };
    // The version was checked when the token was issued.
    let rendered = Version::parse(&enrolled.version)
        .map(|v| scripts.bootstrap(site, job.id, secrets, &enrolled.router_token, v));
    match rendered {
        Ok(Some(Ok(body))) => {
            cx.count(|c| &c.bootstraps);
            script_response(body, job.id)
        }
        Ok(None) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the config has no [routers] table",
        ),
        Ok(Some(Err(e))) | Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /router/v1/ca.pem`: the CA routers install (public; scripts pin it).
pub async fn ca(State(cx): State<Arc<Context>>) -> Response {
    let snapshot = cx.state.load();
    match snapshot
        .data
        .config
        .provision
        .as_ref()
        .and_then(|p| p.ca.as_ref())
    {
        Some(ca) => (
            [(header::CONTENT_TYPE, "application/x-pem-file")],
            ca.pem.clone(),
        )
            .into_response(),
        None => text(
            StatusCode::NOT_FOUND,
            "no CA: [provision] ca_file is not set",
        ),
    }
}

/// A script as the router gets it: plain text, never cached, its job's id in
/// `X-Job-Id` (and in its first line, which is what a router can read).
fn script_response(body: String, job: Uuid) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&job.to_string()) {
        headers.insert("x-job-id", v);
    }
    response
}
