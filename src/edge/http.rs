//! HTTP/1.1 over a bounded accept loop, optionally TLS, for an axum router.
//!
//! Beyond `max_connections` in total or `max_per_source` from one address a
//! connection is closed at once; every connection ends after
//! `connection_time` whatever it does, and must send each request head
//! within `header_time`, so slow or idle clients cannot hold the slots.
//! Every connection closed by us is counted ([`EdgeCounters`]).

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
    /// Closed at `connection_time`.
    pub timed_out: AtomicU64,
    /// Closed because a request head (the first, or the next on a kept-alive
    /// connection) was not in within `header_time`.
    pub header_timed_out: AtomicU64,
}

impl EdgeCounters {
    /// Each counter by the `result` label it is exposed under.
    pub fn by_result(&self) -> Vec<(&'static str, &AtomicU64)> {
        vec![
            ("accepted", &self.accepted),
            ("refused_total_cap", &self.refused_total),
            ("refused_source_cap", &self.refused_source),
            ("tls_failed", &self.tls_failed),
            ("timed_out", &self.timed_out),
            ("header_timed_out", &self.header_timed_out),
        ]
    }
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
        let (stream, peer) = super::accept::next(&listener, |error| {
            crate::throttled!(warn, "http accept failed", %error);
        })
        .await;
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
                    None => http1(stream, app, peer, limits, &counters).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(limits.header_time, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(tls)) => http1(tls, app, peer, limits, &counters).await,
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
async fn http1<S>(io: S, app: Router, peer: SocketAddr, limits: Limits, counters: &EdgeCounters)
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
        // The live view's WebSocket: the upgraded stream leaves this
        // connection (and its time limit); the live view's own limits bound it.
        .with_upgrades()
        .await;
    if let Err(error) = served {
        if error.is_timeout() {
            counters.header_timed_out.fetch_add(1, Relaxed);
        }
        debug!(%peer, %error, "connection ended");
    }
}

#[cfg(test)]
mod tests {
    use std::{future::pending, net::SocketAddr};

    use axum::routing::get;
    use tokio::{
        io::AsyncWriteExt,
        net::{TcpSocket, TcpStream},
    };

    use super::*;

    /// A listener on loopback that lets one connection per source and two in
    /// all in, wants a request head within a second, and whose `/hang` never
    /// answers.
    async fn listener() -> (SocketAddr, Arc<EdgeCounters>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/hang", get(pending::<()>));
        let limits = Limits {
            max_connections: 2,
            max_per_source: 1,
            connection_time: Duration::from_millis(1500),
            header_time: Duration::from_secs(1),
        };
        let counters = Arc::new(EdgeCounters::default());
        tokio::spawn(serve(listener, app, limits, None, counters.clone()));
        (addr, counters)
    }

    /// A connection to `addr` from `source` (any 127.0.0.0/8 address is
    /// loopback's).
    async fn connect(source: &str, addr: SocketAddr) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap()
    }

    /// Waits (10 s at most) until `counter` reaches `n`.
    async fn until(counter: &AtomicU64, n: u64, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while counter.load(Relaxed) < n {
            assert!(tokio::time::Instant::now() < deadline, "{what}: never {n}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn every_connection_closed_by_us_is_counted_by_why() {
        let (addr, counters) = listener().await;
        let _first = connect("127.0.0.1", addr).await;
        until(&counters.accepted, 1, "accepted").await;
        let _same_source = connect("127.0.0.1", addr).await;
        until(&counters.refused_source, 1, "over the per-source cap").await;
        let mut hung = connect("127.0.0.2", addr).await;
        hung.write_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        until(&counters.accepted, 2, "accepted").await;
        let _third_source = connect("127.0.0.3", addr).await;
        until(&counters.refused_total, 1, "over the total cap").await;
        // The first sent nothing: its head is late; the hung request
        // outlives the connection's time.
        until(&counters.header_timed_out, 1, "the silent connection").await;
        until(&counters.timed_out, 1, "the hung request").await;
        let by_result: Vec<(&str, u64)> = counters
            .by_result()
            .into_iter()
            .map(|(result, n)| (result, n.load(Relaxed)))
            .collect();
        assert_eq!(
            by_result,
            [
                ("accepted", 2),
                ("refused_total_cap", 1),
                ("refused_source_cap", 1),
                ("tls_failed", 0),
                ("timed_out", 1),
                ("header_timed_out", 1),
            ]
        );
    }
}
