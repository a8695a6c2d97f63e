//! Route handlers: parse, act through [`crate::server::Server`], answer JSON.

use std::{net::IpAddr, sync::Arc, time::SystemTime};

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{info, warn};

use super::{Api, Caller, audit, metrics_text};
use crate::{
    explain::{HealthLine, explain as explain_client},
    metrics::REASONS,
    state::{self, DrainRecord, Drains},
};

/// Longest drain reason kept.
const MAX_REASON: usize = 500;

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Serialize)]
struct RegionReport {
    name: String,
    host: String,
    location: crate::route::Coord,
    serving: bool,
    health: HealthLine,
    probe_results: Vec<crate::health::probe::TargetResult>,
    drain: Option<DrainRecord>,
    answers: serde_json::Map<String, serde_json::Value>,
}

pub async fn regions(State(api): State<Arc<Api>>) -> Response {
    let shared = &api.server.shared;
    let data = shared.responder.data.load();
    let view = shared.responder.view.load();
    let health = shared.health.load();
    let drains = shared.drains.load();
    let now = state::now();
    let regions: Vec<RegionReport> = data
        .config
        .regions
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let counters = &data.counters[i];
            let mut answers = serde_json::Map::new();
            answers.insert("total".into(), counters.total().into());
            for reason in REASONS {
                let key = serde_json::to_value(reason).unwrap_or_default();
                let key = key.as_str().unwrap_or_default().to_owned();
                answers.insert(key, counters.get(reason).into());
            }
            RegionReport {
                name: r.name.clone(),
                host: r.host.to_string(),
                location: r.location,
                serving: view.states.get(i).is_none_or(|s| s.serving),
                health: HealthLine::of(&health, i),
                probe_results: health.regions[i]
                    .last
                    .as_ref()
                    .map(|l| l.results.clone())
                    .unwrap_or_default(),
                drain: drains.0.get(&r.name).filter(|d| d.active(now)).cloned(),
                answers,
            }
        })
        .collect();
    Json(json!({ "regions": regions })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    reason: String,
    until: Option<String>,
}

#[derive(Deserialize)]
pub struct Force {
    #[serde(default)]
    force: bool,
}

fn parse_drain(body: &[u8], now: u64) -> Result<(String, Option<u64>), String> {
    let body: DrainBody =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    let reason = body.reason.trim().to_owned();
    if reason.is_empty() {
        return Err("`reason` must not be empty".into());
    }
    if reason.chars().count() > MAX_REASON {
        return Err(format!("`reason` is longer than {MAX_REASON} characters"));
    }
    let until = match body.until {
        None => None,
        Some(t) => {
            let at = humantime::parse_rfc3339_weak(&t)
                .map_err(|e| format!("`until` is not an RFC 3339 time: {e}"))?;
            let secs = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if secs <= now {
                return Err("`until` is in the past".into());
            }
            Some(secs)
        }
    };
    Ok((reason, until))
}

pub async fn drain(
    State(api): State<Arc<Api>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(force): Query<Force>,
    body: Bytes,
) -> Response {
    let server = &api.server;
    let shared = &server.shared;
    let data = shared.responder.data.load();
    let Some(index) = data.config.region_index(&name) else {
        return error(StatusCode::NOT_FOUND, format!("no region `{name}`"));
    };
    let now = state::now();
    let (reason, until) = match parse_drain(&body, now) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let _one_at_a_time = server.admin_lock.lock().await;
    let previous = shared.drains.load_full();
    let mut drains = Drains::clone(&previous);
    let record = DrainRecord {
        reason: reason.clone(),
        by: caller.0.clone(),
        since: now,
        until,
    };
    drains.0.insert(name.clone(), record.clone());
    let view = state::compose(&shared.health.load(), &drains, now);
    let geo_regions: Vec<&[usize]> = data.geo.iter().map(|g| g.spec.regions.as_slice()).collect();
    let stranded: Vec<String> = state::stranded(&geo_regions, &view)
        .into_iter()
        .filter(|&g| data.geo[g].spec.regions.contains(&index))
        .map(|g| data.geo[g].spec.name.to_string())
        .collect();
    let audit_entry = |outcome| audit::Entry {
        time: now,
        token: &caller.0,
        action: "drain",
        region: Some(&name),
        reason: Some(&reason),
        until,
        force: force.force,
        outcome,
    };
    if !stranded.is_empty() && !force.force {
        record_audit(&api, &audit_entry("refused: last serving region"));
        let message = format!(
            "`{name}` is the last serving region of {}; add ?force=true to drain it anyway (answers then fail open)",
            stranded.join(", ")
        );
        return (
            StatusCode::CONFLICT,
            Json(json!({ "error": message, "geo_names": stranded })),
        )
            .into_response();
    }
    if let Err(e) = commit_drains(shared, drains, previous).await {
        record_audit(&api, &audit_entry("failed: state file not written"));
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("drain not applied: {e}"),
        );
    }
    record_audit(&api, &audit_entry("drained"));
    info!(region = %name, by = %caller.0, %reason, ?until, "region drained");
    Json(json!({ "region": name, "drained": true, "drain": record })).into_response()
}

pub async fn undrain(
    State(api): State<Arc<Api>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    let server = &api.server;
    let shared = &server.shared;
    if shared
        .responder
        .data
        .load()
        .config
        .region_index(&name)
        .is_none()
    {
        return error(StatusCode::NOT_FOUND, format!("no region `{name}`"));
    }
    let _one_at_a_time = server.admin_lock.lock().await;
    let previous = shared.drains.load_full();
    let mut drains = Drains::clone(&previous);
    let was = drains.0.remove(&name);
    let now = state::now();
    let entry = |outcome| audit::Entry {
        time: now,
        token: &caller.0,
        action: "undrain",
        region: Some(&name),
        reason: None,
        until: None,
        force: false,
        outcome,
    };
    if let Err(e) = commit_drains(shared, drains, previous).await {
        record_audit(&api, &entry("failed: state file not written"));
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("undrain not applied: {e}"),
        );
    }
    record_audit(
        &api,
        &entry(if was.is_some() {
            "undrained"
        } else {
            "was not drained"
        }),
    );
    info!(region = %name, by = %caller.0, "region undrained");
    Json(json!({ "region": name, "drained": false, "was_drained": was.is_some() })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    ip: Option<String>,
    ecs: Option<String>,
}

pub async fn explain(State(api): State<Arc<Api>>, Query(q): Query<ExplainQuery>) -> Response {
    let client = match (&q.ecs, &q.ip) {
        (Some(ecs), _) => ecs
            .parse::<IpNet>()
            .map(|n| n.trunc())
            .map_err(|_| format!("`ecs` {ecs:?} is not a prefix like 81.240.0.0/16")),
        (None, Some(ip)) => ip
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| format!("`ip` {ip:?} is not an IP address")),
        (None, None) => Err("give `ip` (the resolver's address) or `ecs` (a client prefix)".into()),
    };
    let client = match client {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let shared = &api.server.shared;
    let data = shared.responder.data.load();
    let report = explain_client(
        &data,
        &shared.health.load(),
        &shared.responder.view.load(),
        client,
    );
    Json(report).into_response()
}

pub async fn reload(State(api): State<Arc<Api>>, Extension(caller): Extension<Caller>) -> Response {
    let result = api.server.reload().await;
    let outcome = match &result {
        Ok(_) => "reloaded".to_owned(),
        Err(e) => format!("failed: {e}"),
    };
    record_audit(
        &api,
        &audit::Entry {
            time: state::now(),
            token: &caller.0,
            action: "reload",
            region: None,
            reason: None,
            until: None,
            force: false,
            outcome: &outcome,
        },
    );
    match result {
        Ok(report) => Json(json!({ "reloaded": true, "report": report })).into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "reloaded": false, "error": e.to_string(), "serving": "the previous data" })),
        )
            .into_response(),
    }
}

pub async fn metrics(State(api): State<Arc<Api>>) -> Response {
    let body = metrics_text::render(&api.server);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Makes `drains` current only once the state file holds them; on a write
/// error the previous drains are restored, so nothing unpersisted is served.
async fn commit_drains(
    shared: &state::Shared,
    drains: Drains,
    previous: Arc<Drains>,
) -> Result<(), String> {
    shared.drains.store(Arc::new(drains));
    if let Err(e) = shared.publish().await {
        shared.drains.store(previous);
        let _ = shared.publish().await;
        return Err(format!("cannot write the state file: {e}"));
    }
    Ok(())
}

fn record_audit(api: &Api, entry: &audit::Entry) {
    let path = &api.server.shared.responder.data.load().config.api.audit_log;
    if let Err(e) = audit::append(path, entry) {
        warn!(file = %path.display(), error = %e, "cannot append to the audit log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_bodies_are_checked() {
        let now = 1_800_000_000;
        let ok = parse_drain(br#"{"reason":" maintenance "}"#, now).unwrap();
        assert_eq!(ok, ("maintenance".into(), None));
        let (_, until) =
            parse_drain(br#"{"reason":"x","until":"2030-01-01T00:00:00Z"}"#, now).unwrap();
        assert_eq!(until, Some(1_893_456_000));
        for bad in [
            &b"{"[..],
            br#"{"reason":""}"#,
            br#"{"reason":"x","until":"tomorrow"}"#,
            br#"{"reason":"x","until":"2020-01-01T00:00:00Z"}"#,
            br#"{"reason":"x","extra":1}"#,
        ] {
            assert!(
                parse_drain(bad, now).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!(r#"{{"reason":"{}"}}"#, "x".repeat(501));
        assert!(parse_drain(long.as_bytes(), now).is_err());
    }
}
