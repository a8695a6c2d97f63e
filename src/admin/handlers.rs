//! Route handlers: parse, read a state snapshot or ask the state owner, answer JSON.

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

use super::{Api, Caller, metrics_text};
use crate::{
    explain::{HealthLine, explain as explain_client},
    metrics::REASONS,
    state::{self, DrainRequest, StateError},
};

/// Longest drain reason kept.
const MAX_REASON: usize = 500;

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Liveness: 200 while the process serves. With `[store]` the body also
/// says whether the database answers (DNS goes on either way, from the
/// state last known).
pub async fn healthz(State(api): State<Arc<Api>>) -> Response {
    match &api.cx.store {
        None => "ok\n".into_response(),
        Some(reach) => Json(match reach.lost_since() {
            None => json!({"status": "ok", "store": "available"}),
            Some(since) => json!({"status": "ok", "store": "unavailable", "since": since}),
        })
        .into_response(),
    }
}

#[derive(Serialize)]
struct RegionReport<'a> {
    name: &'a str,
    host: String,
    location: crate::route::Coord,
    serving: bool,
    health: HealthLine,
    /// How the nodes' votes stand: why a probed region is in or out.
    votes: &'a Option<crate::health::quorum::Tally>,
    probe_results: Vec<crate::health::probe::TargetResult>,
    drain: &'a Option<state::DrainRecord>,
    answers: serde_json::Map<String, serde_json::Value>,
}

pub async fn regions(State(api): State<Arc<Api>>) -> Response {
    let snapshot = api.cx.state.snapshot();
    let data = &snapshot.data;
    let regions: Vec<RegionReport> = data
        .config
        .regions
        .iter()
        .zip(&snapshot.regions)
        .enumerate()
        .map(|(i, (r, status))| {
            let counters = &data.counters[i];
            let mut answers = serde_json::Map::new();
            answers.insert("total".into(), counters.total().into());
            for reason in REASONS {
                let key = serde_json::to_value(reason).unwrap_or_default();
                let key = key.as_str().unwrap_or_default().to_owned();
                answers.insert(key, counters.get(reason).into());
            }
            RegionReport {
                name: &status.name,
                host: r.host.to_string(),
                location: r.location,
                serving: status.serving,
                health: HealthLine::of(&status.health),
                votes: &status.votes,
                probe_results: status
                    .health
                    .last
                    .as_ref()
                    .map(|l| l.results.clone())
                    .unwrap_or_default(),
                drain: &status.drain,
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
    if api
        .cx
        .state
        .snapshot()
        .data
        .config
        .region_index(&name)
        .is_none()
    {
        return error(StatusCode::NOT_FOUND, format!("no region `{name}`"));
    }
    let (reason, until) = match parse_drain(&body, state::now()) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let request = DrainRequest {
        reason,
        until,
        force: force.force,
        by: caller.0,
    };
    match api.cx.state.drain(&name, request).await {
        Ok(record) => {
            Json(json!({ "region": name, "drained": true, "drain": record })).into_response()
        }
        Err(StateError::LastServing { region, geo_names }) => {
            let message = format!(
                "`{region}` is the last serving region of {}; add ?force=true to drain it anyway (answers then fail open)",
                geo_names.join(", ")
            );
            (
                StatusCode::CONFLICT,
                Json(json!({ "error": message, "geo_names": geo_names })),
            )
                .into_response()
        }
        Err(e) => state_error(&e),
    }
}

pub async fn undrain(
    State(api): State<Arc<Api>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Response {
    match api.cx.state.undrain(&name, &caller.0).await {
        Ok(was) => Json(json!({ "region": name, "drained": false, "was_drained": was.is_some() }))
            .into_response(),
        Err(e) => state_error(&e),
    }
}

/// The status for an error of the state owner.
fn state_error(e: &StateError) -> Response {
    let status = match e {
        StateError::NoRegion(_) => StatusCode::NOT_FOUND,
        StateError::LastServing { .. } => StatusCode::CONFLICT,
        StateError::Load(_) => StatusCode::UNPROCESSABLE_ENTITY,
        StateError::Persist(_) => StatusCode::SERVICE_UNAVAILABLE,
        StateError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.to_string())
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
    let report = explain_client(&api.cx.state.snapshot(), client);
    Json(report).into_response()
}

pub async fn reload(State(api): State<Arc<Api>>, Extension(caller): Extension<Caller>) -> Response {
    match api.cx.state.reload(&caller.0).await {
        Ok(report) => Json(json!({ "reloaded": true, "report": report })).into_response(),
        Err(StateError::Load(e)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "reloaded": false, "error": e.to_string(), "serving": "the previous data" })),
        )
            .into_response(),
        Err(e) => state_error(&e),
    }
}

pub async fn metrics(State(api): State<Arc<Api>>) -> Response {
    let body = metrics_text::render(&api.cx);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
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
