//! Routes for agents (`/agent/v1/…`), beside every OpenVPN server; agent
//! tokens only. An agent is known by its token's name; its region comes from
//! the `[[vpnlog.servers]]` entry of that name, never from what it says.

use std::{sync::Arc, time::Duration};

use axum::{
    Extension, Json,
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;

use super::{Api, Caller, fail::provisioning_off, handlers::error};
use crate::{
    tunnels::{
        ports::{INBOUND, OUTBOUND},
        store::{Attempt, Credentials, StoreError},
        username::tunnel_of,
    },
    vpnlog::report::{Batch, MAX_BATCH, Report},
};

/// The port table as agents read it.
fn ports(table: &[(&str, &str)]) -> serde_json::Value {
    table
        .iter()
        .map(|(protocol, ports)| json!({ "protocol": protocol, "ports": ports }))
        .collect()
}

/// Longest a credentials request waits for a change.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// How often a waiting request looks for changes (one indexed query), when
/// the store does not announce them.
const LOOK_EVERY: Duration = Duration::from_millis(250);
/// How often it looks anyway when the store announces them (without
/// `[store] reread_interval`).
const RECHECK: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsQuery {
    /// The last change the agent has (0: everything).
    since: Option<u64>,
    /// Seconds to wait for a change when there is none yet.
    wait: Option<u64>,
}

/// `GET /agent/v1/credentials?since=SEQ&wait=SECS`: what logins are checked
/// against, changed after `since` (a long poll when `wait` is given), with
/// the digest key, the pool's netmask and who the agent is.
pub async fn credentials(
    State(api): State<Arc<Api>>,
    Extension(Caller(name)): Extension<Caller>,
    Query(q): Query<CredentialsQuery>,
) -> Response {
    let Some(store) = api.cx.tunnels.clone() else {
        return provisioning_off(&api).into();
    };
    let since = q.since.unwrap_or(0);
    let wait = Duration::from_secs(q.wait.unwrap_or(0)).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    let mut announced = store.changes();
    // With [store], announcements come by notification; the re-read interval
    // is the safety net for one missed while disconnected.
    let recheck =
        (api.cx.state.snapshot().data.config.store.as_ref()).map_or(RECHECK, |s| s.reread_interval);
    let changes = loop {
        let s = store.clone();
        let got = tokio::task::spawn_blocking(move || s.credentials(since)).await;
        let changes: Credentials = match got {
            Ok(Ok(c)) => c,
            Ok(Err(e @ StoreError::Unavailable(_))) => {
                return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            }
            Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        let changed = !changes.sites.is_empty() || !changes.deleted.is_empty();
        let now = tokio::time::Instant::now();
        if since == 0 || changed || now >= deadline {
            break changes;
        }
        match announced.as_mut() {
            // Woken by the announcement of a newer change (made on any node),
            // or after a while anyway, in case an announcement was missed.
            Some(rx) => {
                let wait = (deadline - now).min(recheck);
                let newer = tokio::time::timeout(wait, rx.wait_for(|&seq| seq > changes.seq));
                let follower_gone = matches!(newer.await, Ok(Err(_)));
                if follower_gone {
                    tokio::time::sleep(LOOK_EVERY).await;
                }
            }
            None => tokio::time::sleep(LOOK_EVERY).await,
        }
    };
    let snapshot = api.cx.state.snapshot();
    let config = &snapshot.data.config;
    let Some(provision) = config.provision.as_ref() else {
        return error(StatusCode::NOT_FOUND, "provisioning is off");
    };
    let region = config
        .vpnlog
        .as_ref()
        .and_then(|v| v.servers.iter().find(|s| s.host == name))
        .map(|s| s.region.clone());
    Json(json!({
        "server": name,
        "region": region,
        "seq": changes.seq,
        "full": since == 0,
        "sites": changes.sites,
        "deleted": changes.deleted,
        "netmask": provision.pool.netmask().to_string(),
        "policy": {
            "pool": provision.pool.trunc().to_string(),
            "networks": provision.management_networks,
            "inbound": ports(INBOUND),
            "outbound": ports(OUTBOUND),
        },
        "digest_key": store.digests().to_hex(),
    }))
    .into_response()
}

/// `POST /agent/v1/reports`: what the agent saw of its server (logins,
/// sessions, counters), fed to that server's session tracker under the
/// agent's name; logins are also recorded with the tunnels' attempts.
pub async fn reports(
    State(api): State<Arc<Api>>,
    Extension(Caller(name)): Extension<Caller>,
    Json(batch): Json<Batch>,
) -> Response {
    if batch.reports.len() > MAX_BATCH {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {MAX_BATCH} reports per batch"),
        );
    }
    if let Some(vpnlog) = &api.cx.vpnlog
        && vpnlog.ingest.full()
    {
        // The agent keeps the batch and sends it again.
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the log writer's queue is full: send again later",
        );
    }
    if batch.dropped > 0 {
        // Per request: a token holder could send it as fast as it likes.
        crate::throttled!(
            warn,
            "an agent dropped reports: its buffer was full",
            server = %name,
            dropped = batch.dropped
        );
    }
    let attempts: Vec<Attempt> = batch
        .reports
        .iter()
        .filter_map(|r| match r {
            Report::Login {
                time,
                user,
                peer,
                ok,
            } => Some(Attempt {
                time: *time,
                username: user.chars().take(64).collect(),
                site: tunnel_of(user).ok(),
                ok: *ok,
                source: peer.map(|p| p.ip().to_string()),
            }),
            _ => None,
        })
        .collect();
    if let (Some(store), false) = (api.cx.tunnels.clone(), attempts.is_empty()) {
        let recorded = tokio::task::spawn_blocking(move || {
            attempts.iter().try_for_each(|a| store.record_attempt(a))
        })
        .await;
        match recorded {
            Ok(Ok(())) => {}
            // Not stored: the agent keeps the batch and sends it again.
            Ok(Err(e)) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
    let accepted = batch.reports.len();
    if let Some(vpnlog) = &api.cx.vpnlog {
        let ingest = &vpnlog.ingest;
        ingest.mark_agent(&name);
        let (latency, records): (Vec<Report>, Vec<Report>) = batch
            .reports
            .into_iter()
            .partition(|r| matches!(r, Report::Latency { .. }));
        for l in latency.iter().filter_map(Report::latency) {
            ingest.agent_latency(&name, l);
        }
        ingest.track(Some(&name), |tracker| {
            records
                .into_iter()
                .filter_map(|r| r.feed(tracker))
                .collect::<Vec<_>>()
        });
    }
    Json(json!({ "accepted": accepted })).into_response()
}
