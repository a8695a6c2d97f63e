//! The agent's `GET /metrics`, in Prometheus text format (version 0.0.4):
//! logins, sessions, the management connection, the credential cache, the
//! control plane, the reports on their way to it and the connections to this
//! listener. Served on loopback only (the agent has no TLS server), behind the
//! bounded accept loop.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::{net::TcpListener, sync::watch};

use super::{cache::Cache, outbox::OutboxCounters, session, sync::ControlCounters};
use crate::{
    edge::{EdgeCounters, Limits},
    metrics::{families_out, single},
};

/// A scraper or two, and an operator's curl: the listener is network-fed,
/// so it holds a few connections, each for a few seconds.
const LIMITS: Limits = Limits {
    max_connections: 8,
    max_per_source: 4,
    connection_time: Duration::from_secs(10),
    header_time: Duration::from_secs(5),
};

/// Everything the agent counts, read at each scrape.
pub struct Metrics {
    pub session: Arc<session::Counters>,
    pub control: Arc<ControlCounters>,
    pub outbox: Arc<OutboxCounters>,
    pub latency_rounds: Arc<AtomicU64>,
    pub cache: watch::Receiver<Arc<Cache>>,
    /// This listener's accept loop.
    pub edge: Arc<EdgeCounters>,
    /// The live view's relay.
    pub relay: Arc<super::relay::Counters>,
}

impl Metrics {
    /// The text a scrape gets: each family whole, one after the other.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.logins(&mut out);
        self.management(&mut out);
        self.control(&mut out);
        self.reports(&mut out);
        self.relay(&mut out);
        families_out(
            &mut out,
            [(
                "mgnt_agent_metrics_connections_total",
                "Connections to this metrics listener, by what became of them.",
                "result",
                self.edge.by_result(),
            )],
        );
        out
    }

    fn logins(&self, out: &mut String) {
        let s = &self.session;
        families_out(
            out,
            [(
                "mgnt_agent_logins_total",
                "Logins answered, by result.",
                "result",
                vec![("allowed", &s.allowed), ("denied", &s.denied)],
            )],
        );
        single(
            out,
            "mgnt_agent_sessions_killed_total",
            "counter",
            "Sessions ended because their tunnel was deleted.",
            s.killed.load(Relaxed),
        );
        single(
            out,
            "mgnt_agent_sessions_live",
            "gauge",
            "Sessions OpenVPN has open, as the management connection knows them.",
            s.live.load(Relaxed),
        );
    }

    fn management(&self, out: &mut String) {
        let s = &self.session;
        single(
            out,
            "mgnt_agent_management_up",
            "gauge",
            "1 while the management connection is open and answering (OpenVPN admits nobody otherwise).",
            s.management_up.load(Relaxed),
        );
        families_out(
            out,
            [(
                "mgnt_agent_management_reconnects_total",
                "Management connections ended and made again, by reason (closed; silent: nothing heard for management_timeout; error, failed connects included).",
                "reason",
                s.reconnects.by_reason().collect(),
            )],
        );
    }

    fn relay(&self, out: &mut String) {
        let r = &self.relay;
        single(
            out,
            "mgnt_agent_relay_pipes",
            "gauge",
            "Router API connections relayed to the control plane now.",
            r.pipes.load(Relaxed),
        );
        families_out(
            out,
            [(
                "mgnt_agent_relay_opens_total",
                "Router API connections the control plane asked for, by result (failed: no such live tunnel, the router did not answer, or too many).",
                "result",
                vec![("opened", &r.opened), ("failed", &r.failed)],
            )],
        );
        single(
            out,
            "mgnt_agent_relay_refused_sentences_total",
            "counter",
            "Sentences from the control plane outside the allowlist (each ended its connection).",
            r.refused_sentences.load(Relaxed),
        );
    }

    fn control(&self, out: &mut String) {
        single(
            out,
            "mgnt_agent_credential_tunnels",
            "gauge",
            "Tunnels in the credential cache.",
            self.cache.borrow().len(),
        );
        single(
            out,
            "mgnt_agent_last_sync_timestamp_seconds",
            "gauge",
            "Unix time of the control plane's last answer (credentials or reports); 0 before the first.",
            self.control.answered_at.load(Relaxed),
        );
        single(
            out,
            "mgnt_agent_control_failures_total",
            "counter",
            "Requests to the control plane that no control URL answered.",
            self.control.failures.load(Relaxed),
        );
    }

    fn reports(&self, out: &mut String) {
        let o = &self.outbox;
        let families = [
            (
                "mgnt_agent_reports_buffered",
                "gauge",
                "Reports waiting for the control plane, in memory (at most buffer_max).",
                &o.buffered,
            ),
            (
                "mgnt_agent_reports_spooled",
                "gauge",
                "Of the reports waiting, those also in the spool file.",
                &o.spooled,
            ),
            (
                "mgnt_agent_reports_dropped_total",
                "counter",
                "Reports dropped because buffer_max was full (the oldest go).",
                &o.dropped,
            ),
            (
                "mgnt_agent_reports_sent_total",
                "counter",
                "Reports the control plane took.",
                &o.sent,
            ),
            (
                "mgnt_agent_latency_rounds_total",
                "counter",
                "Latency rounds (pings of one live tunnel) reported.",
                &*self.latency_rounds,
            ),
        ];
        for (name, kind, text, value) in families {
            single(out, name, kind, text, value.load(Relaxed));
        }
    }
}

/// Serves `GET /metrics` on `listener` for as long as the agent runs.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let counters = metrics.edge.clone();
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics);
    crate::edge::serve(listener, app, LIMITS, None, counters).await;
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::management::Ending;

    fn metrics() -> Metrics {
        Metrics {
            session: Arc::default(),
            control: Arc::default(),
            outbox: Arc::default(),
            latency_rounds: Arc::default(),
            cache: watch::channel(Arc::new(Cache::default())).1,
            edge: Arc::default(),
            relay: Arc::default(),
        }
    }

    #[test]
    fn every_family_is_rendered_whole_and_well_formed() {
        let m = metrics();
        m.session.allowed.fetch_add(3, Relaxed);
        m.session.denied.fetch_add(1, Relaxed);
        m.session.reconnects.count(Ending::Silent);
        m.session.management_up.store(1, Relaxed);
        m.control.answered_at.store(1_700_000_000, Relaxed);
        m.outbox.dropped.fetch_add(2, Relaxed);
        let text = m.render();
        crate::metrics::check_exposition(&text).unwrap();
        for line in [
            "mgnt_agent_logins_total{result=\"allowed\"} 3",
            "mgnt_agent_logins_total{result=\"denied\"} 1",
            "mgnt_agent_sessions_killed_total 0",
            "mgnt_agent_sessions_live 0",
            "mgnt_agent_management_up 1",
            "mgnt_agent_management_reconnects_total{reason=\"silent\"} 1",
            "mgnt_agent_management_reconnects_total{reason=\"closed\"} 0",
            "mgnt_agent_management_reconnects_total{reason=\"error\"} 0",
            "mgnt_agent_credential_tunnels 0",
            "mgnt_agent_last_sync_timestamp_seconds 1700000000",
            "mgnt_agent_control_failures_total 0",
            "mgnt_agent_reports_buffered 0",
            "mgnt_agent_reports_spooled 0",
            "mgnt_agent_reports_dropped_total 2",
            "mgnt_agent_reports_sent_total 0",
            "mgnt_agent_latency_rounds_total 0",
            "mgnt_agent_metrics_connections_total{result=\"refused_source_cap\"} 0",
            "mgnt_agent_metrics_connections_total{result=\"header_timed_out\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[tokio::test]
    async fn the_listener_serves_metrics_and_nothing_else() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let m = Arc::new(metrics());
        m.session.allowed.fetch_add(1, Relaxed);
        tokio::spawn(serve(listener, m));
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(request.as_bytes()).await.unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).await.unwrap();
            answer
        };
        let answer = get("/metrics").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("text/plain; version=0.0.4"), "{answer}");
        assert!(answer.contains("mgnt_agent_logins_total{result=\"allowed\"} 1"));
        assert!(
            answer.contains("mgnt_agent_metrics_connections_total{result=\"accepted\"} 1"),
            "this scrape's own connection: {answer}"
        );
        assert!(get("/").await.starts_with("HTTP/1.1 404"));
    }
}
