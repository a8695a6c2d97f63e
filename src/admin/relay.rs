//! The agents' side of the live view's relay (see [`crate::live::relay`]):
//! `GET /agent/v1/live`, the channel on which this node asks an agent to
//! open a router's API, and `GET /agent/v1/live/{id}`, the pipe an agent
//! opens for one such request. Both are WebSockets under the agent's token;
//! an agent can only answer what it was asked.

use std::{sync::Arc, time::Duration};

use axum::{
    Extension,
    extract::{
        Path, State,
        ws::{Message, WebSocket, WebSocketUpgrade},
    },
    response::Response,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tracing::{debug, info};

use super::{
    Api, Caller,
    fail::{attempt, uuid},
};
use crate::live::relay::{Channel, Failed};

/// Largest frame either side sends: a chunk of the router's bytes, or a
/// line of the channel.
const MAX_FRAME: usize = 256 * 1024;
/// Bytes buffered between a pipe's WebSocket and the router's client.
const PIPE_BUFFER: usize = 64 * 1024;
/// A WebSocket's read buffer is allocated whole (and zeroed) for each
/// connection: the library's default of 128 KiB would be most of what a
/// relayed router costs. Frames larger than this still arrive, in parts.
const READ_BUFFER: usize = 16 * 1024;
/// A ping keeps middleboxes from timing out a quiet channel, and finds a
/// dead agent.
const PING_EVERY: Duration = Duration::from_secs(30);

/// `GET /agent/v1/live`: the agent's channel to this node.
pub async fn channel(
    State(api): State<Arc<Api>>,
    Extension(Caller(name)): Extension<Caller>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let relays = api.cx.relays.clone();
    upgrade
        .max_message_size(MAX_FRAME)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| async move {
            info!(agent = %name, "agent relay channel open");
            let channel = relays.join(&name);
            serve_channel(socket, channel, &relays).await;
            info!(agent = %name, "agent relay channel closed");
        })
}

async fn serve_channel(
    mut socket: WebSocket,
    mut channel: Channel,
    relays: &crate::live::relay::Relays,
) {
    let agent = channel.agent().to_owned();
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        tokio::select! {
            open = channel.opens.recv() => {
                let Some(open) = open else { return };
                let text = serde_json::to_string(&open).unwrap_or_default();
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<Failed>(&text) {
                    Ok(failed) => relays.failed(&agent, failed),
                    Err(e) => debug!(%agent, error = %e, "an agent's channel line is not a failure"),
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// `GET /agent/v1/live/{id}`: the pipe of the open `id`, carrying the
/// router's API bytes in binary frames.
pub async fn pipe(
    State(api): State<Arc<Api>>,
    Extension(Caller(name)): Extension<Caller>,
    Path(id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let id = attempt!(uuid(&id));
    let relays = api.cx.relays.clone();
    upgrade
        .max_message_size(MAX_FRAME)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| async move {
            let (near, far) = tokio::io::duplex(PIPE_BUFFER);
            if relays.attach(&name, id, near) {
                bridge(socket, far).await;
            }
        })
}

/// Copies between the WebSocket's binary frames and the client's end of
/// the pipe until either side ends.
async fn bridge(mut socket: WebSocket, mut far: DuplexStream) {
    let mut buf = vec![0u8; PIPE_BUFFER];
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Binary(bytes))) => {
                    if far.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            read = far.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let chunk = buf[..n].to_vec();
                    if socket.send(Message::Binary(chunk.into())).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
    let _ = far.shutdown().await;
    let _ = socket.send(Message::Close(None)).await;
}
