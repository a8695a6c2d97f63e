//! HTTP/1.1 over a bounded accept loop, optionally TLS, for an axum router.
//!
//! Beyond `max_connections` in total or `max_per_source` from one address a
//! connection is closed at once (and counted); every connection ends after
//! `connection_time` whatever it does, and must send its request headers
//! within `header_time`, so slow or idle clients cannot hold the slots.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use axum::{Router, extract::ConnectInfo};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpListener,
    sync::Semaphore,
};
use tower::ServiceExt;
use tracing::debug;

use super::{sources::Sources, tls::Certificate};

/// Largest request head (request line and headers) read.
const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub max_per_source: usize,
    pub connection_time: Duration,
    pub header_time: Duration,
}

/// What the accept loop did, for metrics.
#[derive(Default)]
pub struct EdgeCounters {
    pub accepted: AtomicU64,
    pub refused_total: AtomicU64,
    pub refused_source: AtomicU64,
    pub tls_failed: AtomicU64,
    pub timed_out: AtomicU64,
}

/// Serves `app` on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Arc<Certificate>>,
    counters: Arc<EdgeCounters>,
) {
    let total = Arc::new(Semaphore::new(limits.max_connections));
    let sources = Arc::new(Sources::default());
    let acceptor = tls.map(|c| c.acceptor());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(got) => got,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning on the error.
                crate::throttled!(warn, "http accept failed", %error);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = total.clone().try_acquire_owned() else {
            counters.refused_total.fetch_add(1, Relaxed);
            continue;
        };
        let Some(slot) = sources.take(peer.ip(), limits.max_per_source) else {
            counters.refused_source.fetch_add(1, Relaxed);
            continue;
        };
        counters.accepted.fetch_add(1, Relaxed);
        let (app, acceptor, counters) = (app.clone(), acceptor.clone(), counters.clone());
        tokio::spawn(async move {
            let _held = (permit, slot);
            let work = async {
                match acceptor {
                    None => http1(stream, app, peer, limits).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(limits.header_time, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(tls)) => http1(tls, app, peer, limits).await,
                            Ok(Err(error)) => {
                                debug!(%peer, %error, "TLS handshake failed");
                                counters.tls_failed.fetch_add(1, Relaxed);
                            }
                            Err(_) => {
                                counters.tls_failed.fetch_add(1, Relaxed);
                            }
                        }
                    }
                }
            };
            if tokio::time::timeout(limits.connection_time, work)
                .await
                .is_err()
            {
                counters.timed_out.fetch_add(1, Relaxed);
            }
        });
    }
}

/// One connection: requests carry the peer address as [`ConnectInfo`].
async fn http1<S>(io: S, app: Router, peer: SocketAddr, limits: Limits)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req.map(axum::body::Body::new))
        });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_time)
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(io), service)
        .await;
    if let Err(error) = served {
        debug!(%peer, %error, "connection ended");
    }
}
