//! The live view's WebSocket, as a portal page opens it.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

use super::Server;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the live view at `path` of `server`'s API; the HTTP status when
/// it is refused.
pub async fn open(server: &Server, path: &str, origin: Option<&str>) -> Result<Socket, u16> {
    let mut request = format!("ws://{}{path}", server.api)
        .into_client_request()
        .unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("origin", origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

/// The next JSON message of `kind`, within 20 s.
pub async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .unwrap_or_else(|_| panic!("no {kind} message in time"))
            .expect("open")
            .unwrap();
        if let tungstenite::Message::Text(text) = frame {
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["type"] == kind {
                return v;
            }
        }
    }
}

/// A ticket for `uuid`'s live view from `server`.
pub fn ticket(server: &Server, uuid: &str) -> String {
    let (status, body) = server.post(&format!("/v1/sites/{uuid}/live/ticket"), None);
    assert_eq!(status, 201, "{body}");
    body["ticket"].as_str().unwrap().to_owned()
}
