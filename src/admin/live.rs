//! Routes of the read-only live view (`[live]`): tickets, which a browser
//! page redeems once to open a router's live view without holding a token,
//! and the live view itself, a WebSocket of JSON messages.

use std::sync::Arc;

use axum::{
    Extension, Json,
    extract::{
        Path, Query, State,
        ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade, close_code},
    },
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::json;

use super::{
    Api, Caller,
    fail::{Fail, attempt, uuid},
    handlers::error,
    sites::{blocking, store},
};
use uuid::Uuid;

use crate::{
    clock,
    config::LiveConfig,
    live::{
        api::{Command, Interfaces},
        hub::{Hub, Refused, View, Want},
        message::Message,
        resource::Resource,
    },
};

/// The running `[live]` table, or why the live view is off.
pub(super) fn live_config(api: &Api) -> Result<LiveConfig, Fail> {
    (api.cx.state.snapshot().data.config.live.clone()).ok_or_else(|| {
        Fail(
            StatusCode::NOT_FOUND,
            "the live view is off: the config has no [live] table".to_owned(),
        )
    })
}

/// The hub that reaches routers (there is one with `[provision]`).
pub(super) fn hub(api: &Api) -> Result<Arc<Hub>, Fail> {
    (api.cx.live.clone()).ok_or_else(|| {
        Fail(
            StatusCode::NOT_FOUND,
            "the live view needs [provision]".to_owned(),
        )
    })
}

/// `POST /v1/sites/{uuid}/live/ticket`: a single-use ticket for the site's
/// live view, issued to the calling token's name, valid `[live] ticket_ttl`.
pub async fn ticket(
    State(api): State<Arc<Api>>,
    Extension(Caller(user)): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let live = attempt!(live_config(&api));
    let store = attempt!(store(&api));
    let id = attempt!(uuid(&id));
    let now = clock::now();
    let expires = now + live.ticket_ttl.as_secs();
    let issued = attempt!(blocking(move || store.new_live_ticket(id, &user, now, expires)).await);
    match issued {
        Some(ticket) => (
            StatusCode::CREATED,
            Json(json!({ "ticket": ticket, "site": id, "expires": expires })),
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no site {id}")),
    }
}

/// Largest message a viewer may send (it has nothing to say; pings aside).
const MAX_VIEWER_MESSAGE: usize = 1024;

/// A viewer's read buffer. The WebSocket's default, 128 KiB (zeroed, so
/// resident, for every viewer), was most of the memory a streamed router
/// cost; what a viewer sends fits in a few bytes.
const VIEWER_READ_BUFFER: usize = 4 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    ticket: Option<String>,
    /// Comma-separated interface names.
    interfaces: Option<String>,
    log: Option<String>,
}

/// `GET /v1/sites/{uuid}/live?ticket=T&interfaces=ether1,ether2&log=1`: the
/// live view as a WebSocket of JSON messages, opened with a ticket.
pub async fn stream(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
    Query(q): Query<StreamQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let live = attempt!(live_config(&api));
    let hub = attempt!(hub(&api));
    let store = attempt!(store(&api));
    let id = attempt!(uuid(&id));
    if let Err(why) = same_origin(&headers, &live.allowed_origins) {
        return error(StatusCode::FORBIDDEN, why);
    }
    let want = match want(&q) {
        Ok(w) => w,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    let Some(ticket) = q.ticket else {
        return error(
            StatusCode::UNAUTHORIZED,
            "a ticket is required (POST /v1/sites/{uuid}/live/ticket)",
        );
    };
    let now = clock::now();
    let redeemed = attempt!(blocking(move || store.redeem_live_ticket(&ticket, now)).await);
    let Some(ticket) = redeemed.filter(|t| t.site == id) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "no such ticket for this site: it was used, has expired or is another site's",
        );
    };
    if let Some(holder) = hub.elsewhere(id).await {
        let query = super::live_relay::query(q.interfaces.as_deref(), q.log.as_deref());
        return attempt!(
            super::live_relay::relayed(&api, id, ticket.user, query, holder, upgrade).await
        );
    }
    hub.set_limits(crate::live::limits(&live));
    let view = match hub.view(id, &ticket.user, want) {
        Ok(v) => v,
        Err(e @ Refused::TooManyStreams { .. }) => {
            return error(StatusCode::TOO_MANY_REQUESTS, e.to_string());
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    upgrade
        .max_message_size(MAX_VIEWER_MESSAGE)
        .read_buffer_size(VIEWER_READ_BUFFER)
        .on_upgrade(move |socket| relay(socket, view))
}

/// What the query asks to watch.
fn want(q: &StreamQuery) -> Result<Want, String> {
    let interfaces = match q.interfaces.as_deref() {
        None | Some("") => None,
        Some(list) => Some(Interfaces::new(list.split(',')).map_err(|e| e.to_string())?),
    };
    let log = match q.log.as_deref() {
        None | Some("0") | Some("false") => false,
        Some("1") | Some("true") => true,
        Some(other) => return Err(format!("log={other}: say 1 or 0")),
    };
    if interfaces.is_none() && !log {
        return Err("nothing to watch: give interfaces=ether1,… or log=1".to_owned());
    }
    Ok(Want { interfaces, log })
}

/// A browser's `Origin` must be the API's own (its `Host`) or one of
/// `allowed`; a client that is no browser sends none.
fn same_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default().to_ascii_lowercase();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let authority = origin.split_once("://").map_or("", |(_, a)| a);
    if (!host.is_empty() && authority == host) || allowed.contains(&origin) {
        return Ok(());
    }
    Err(format!(
        "origin `{origin}` may not open a live view: only the API's own and [live] allowed_origins"
    ))
}

/// Relays the view's messages until either side ends it; the view is left
/// when this returns.
async fn relay(mut socket: WebSocket, mut view: View) {
    let close = loop {
        tokio::select! {
            message = view.messages.recv() => match message {
                Some(m) => {
                    let final_code = match &m {
                        Message::Error { code: "too_many_viewers" | "moved", message } => {
                            Some((close_code::AGAIN, message.clone()))
                        }
                        _ => None,
                    };
                    let text = serde_json::to_string(&m).unwrap_or_default();
                    if socket.send(WsMessage::Text(text.into())).await.is_err() {
                        return;
                    }
                    if let Some(close) = final_code {
                        break close;
                    }
                }
                None => break (close_code::ERROR, "the live view ended".to_owned()),
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    };
    let frame = CloseFrame {
        code: close.0,
        reason: close.1.into(),
    };
    let _ = socket.send(WsMessage::Close(Some(frame))).await;
}

/// `GET /v1/sites/{uuid}/resource`: one `/system/resource/print` of the
/// site's router, on its shared API connection.
pub async fn resource(State(api): State<Arc<Api>>, Path(id): Path<String>) -> Response {
    attempt!(live_config(&api));
    let hub = attempt!(hub(&api));
    let id = attempt!(uuid(&id));
    attempt!(known_site(&api, id).await);
    let rows = match hub.call(id, Command::ResourcePrint).await {
        Ok(rows) => rows,
        Err(why) => return error(StatusCode::BAD_GATEWAY, why),
    };
    match rows.first().and_then(Resource::parse) {
        Some(r) => Json(json!({ "site": id, "resource": r, "time": clock::now() })).into_response(),
        None => error(
            StatusCode::BAD_GATEWAY,
            "the router's /system/resource/print lacked uptime, version, cpu-load or memory",
        ),
    }
}

/// Fails unless `id` is a site.
pub(super) async fn known_site(api: &Api, id: Uuid) -> Result<(), Fail> {
    let store = store(api)?;
    match blocking(move || store.get(id)).await? {
        Some(_) => Ok(()),
        None => Err(Fail(StatusCode::NOT_FOUND, format!("no site {id}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(interfaces: Option<&str>, log: Option<&str>) -> StreamQuery {
        StreamQuery {
            ticket: None,
            interfaces: interfaces.map(str::to_owned),
            log: log.map(str::to_owned),
        }
    }

    #[test]
    fn the_query_names_what_to_watch() {
        let w = want(&query(Some("ether1,ether2"), Some("1"))).unwrap();
        assert_eq!(w.interfaces.unwrap().names(), ["ether1", "ether2"]);
        assert!(w.log);
        assert!(
            want(&query(None, Some("true")))
                .unwrap()
                .interfaces
                .is_none()
        );
        assert!(want(&query(None, None)).is_err(), "nothing");
        assert!(want(&query(Some(""), Some("0"))).is_err(), "nothing");
        assert!(want(&query(Some("ether1,=x=1"), None)).is_err(), "smuggled");
        assert!(want(&query(Some("ether1"), Some("yes"))).is_err());
    }

    #[test]
    fn only_the_apis_own_origin_and_the_allowed_ones_pass() {
        let headers = |origin: Option<&str>| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, "mgnt.example:8053".parse().unwrap());
            if let Some(o) = origin {
                h.insert(header::ORIGIN, o.parse().unwrap());
            }
            h
        };
        let allowed = ["https://portal.example".to_owned()];
        assert!(same_origin(&headers(None), &[]).is_ok(), "not a browser");
        assert!(same_origin(&headers(Some("https://mgnt.example:8053")), &[]).is_ok());
        assert!(same_origin(&headers(Some("https://Portal.Example")), &allowed).is_ok());
        assert!(same_origin(&headers(Some("https://portal.example")), &[]).is_err());
        assert!(same_origin(&headers(Some("https://evil.example")), &allowed).is_err());
        assert!(same_origin(&headers(Some("null")), &allowed).is_err());
    }
}
