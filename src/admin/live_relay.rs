//! A live view relayed from the node that holds the router's connection
//! (several nodes on one database, `[node] api_url`): this node issues a
//! ticket for the same user in the shared store, opens the holder's live
//! route with it, and passes its messages on. The holder counts the view
//! against the user's streams and the router's viewers.

use axum::{
    extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade, close_code},
    http::StatusCode,
    response::Response,
};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message as Remote, protocol::WebSocketConfig},
};
use uuid::Uuid;

use super::{
    Api,
    fail::Fail,
    sites::{blocking, store},
};
use crate::{
    clock,
    edge::ws::{self, Io},
    live::hub::Elsewhere,
};

/// What the holder sends is small JSON.
const READ_BUFFER: usize = 4 * 1024;
const MAX_MESSAGE: usize = 64 * 1024;

/// Opens `holder`'s live view of `site` for `user` (watching what `query`
/// names) and upgrades the viewer to it.
pub(super) async fn relayed(
    api: &Api,
    site: Uuid,
    user: String,
    query: String,
    holder: Elsewhere,
    upgrade: WebSocketUpgrade,
) -> Result<Response, Fail> {
    let snapshot = api.cx.state.snapshot();
    let config = &snapshot.data.config;
    let ttl = config.live.as_ref().map_or(30, |l| l.ticket_ttl.as_secs());
    let store = store(api)?;
    let now = clock::now();
    let issued = blocking(move || store.new_live_ticket(site, &user, now, now + ttl)).await?;
    let ticket = issued.ok_or_else(|| Fail(StatusCode::NOT_FOUND, format!("no site {site}")))?;
    let unreachable = |why: String| {
        Fail(
            StatusCode::BAD_GATEWAY,
            format!(
                "node {} holds this router's connection and cannot be reached at {}: {why}",
                holder.node, holder.api_url
            ),
        )
    };
    let ca = config.node.api_ca_file.as_deref();
    let tls = ws::tls_for(&holder.api_url, ca).map_err(unreachable)?;
    let url = format!(
        "{}/v1/sites/{site}/live?ticket={ticket}&{query}",
        holder.api_url
    );
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(MAX_MESSAGE));
    let remote = ws::connect(&url, None, tls.as_ref(), config)
        .await
        .map_err(|e| unreachable(e.replace(&ticket, "…")))?;
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| pump(socket, remote)))
}

/// Passes the holder's messages to the viewer, and either side's close to
/// the other.
async fn pump(mut viewer: WebSocket, remote: WebSocketStream<Box<dyn Io>>) {
    let (mut to_remote, mut from_remote) = remote.split();
    let close = loop {
        tokio::select! {
            message = from_remote.next() => match message {
                Some(Ok(Remote::Text(text))) => {
                    if viewer.send(WsMessage::Text(text.as_str().into())).await.is_err() {
                        let _ = to_remote.send(Remote::Close(None)).await;
                        return;
                    }
                }
                Some(Ok(Remote::Close(frame))) => {
                    break frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned()));
                }
                None | Some(Err(_)) => {
                    break Some((close_code::ERROR, "the node holding the router went away".into()));
                }
                Some(Ok(_)) => {}
            },
            incoming = viewer.recv() => match incoming {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => {
                    let _ = to_remote.send(Remote::Close(None)).await;
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    };
    let frame = close.map(|(code, reason)| CloseFrame {
        code,
        reason: reason.into(),
    });
    let _ = viewer.send(WsMessage::Close(frame)).await;
}

/// `interfaces=…&log=…` for the holder, each value percent-encoded.
pub(super) fn query(interfaces: Option<&str>, log: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(list) = interfaces {
        parts.push(format!("interfaces={}", encode(list)));
    }
    if let Some(log) = log {
        parts.push(format!("log={}", encode(log)));
    }
    parts.join("&")
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b',') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::query;

    #[test]
    fn the_holders_query_names_what_the_viewer_asked_for() {
        assert_eq!(
            query(Some("ether1,wan 2&x"), Some("1")),
            "interfaces=ether1,wan%202%26x&log=1"
        );
        assert_eq!(query(None, Some("true")), "log=true");
        assert_eq!(query(Some("é"), None), "interfaces=%C3%A9");
    }
}
