//! A WebSocket client over our own TCP and TLS (rustls on ring): the
//! agent's relay to the control plane, and a node relaying a live view from
//! the node that holds the router.

use std::time::Duration;

use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig},
};

/// No connection within this is an error.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// A byte stream: TCP, or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// What [`connect`] needs for `url`: a TLS client trusting `ca` (or the
/// public roots) for `https://`, nothing for `http://`.
pub fn tls_for(
    url: &str,
    ca: Option<&std::path::Path>,
) -> Result<Option<tokio_rustls::TlsConnector>, String> {
    if !url.starts_with("https://") {
        return Ok(None);
    }
    let config = super::tls::client_config(ca)?;
    Ok(Some(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    ))))
}

/// A WebSocket to `url` (`http://` or `https://`, turned into `ws://` or
/// `wss://`), with `bearer` as its `Authorization` when given; `tls` for
/// `https://`.
pub async fn connect(
    url: &str,
    bearer: Option<&str>,
    tls: Option<&tokio_rustls::TlsConnector>,
    config: WebSocketConfig,
) -> Result<WebSocketStream<Box<dyn Io>>, String> {
    let secure = url.starts_with("https://");
    let ws_url = url
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1);
    let mut request = ws_url.into_client_request().map_err(|e| e.to_string())?;
    if let Some(token) = bearer {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
        request.headers_mut().insert("authorization", value);
    }
    let uri = request.uri().clone();
    let host = uri.host().ok_or_else(|| format!("{url}: no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = tokio::time::timeout(CONNECT_WAIT, TcpStream::connect((host.as_str(), port)))
        .await
        .map_err(|_| format!("{url}: no connection within {CONNECT_WAIT:?}"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = match (secure, tls) {
        (false, _) => Box::new(tcp),
        (true, None) => return Err(format!("{url}: https without a TLS client")),
        (true, Some(tls)) => {
            let name =
                rustls_pki_types::ServerName::try_from(host).map_err(|e| format!("{url}: {e}"))?;
            Box::new(
                tls.connect(name, tcp)
                    .await
                    .map_err(|e| format!("{url}: {e}"))?,
            )
        }
    };
    let (socket, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(socket)
}
