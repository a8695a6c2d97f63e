//! `GET /metrics` of a running `mgnt serve` and `mgnt agent`, scraped after
//! real traffic (so histograms and labelled counters have samples) and read
//! by the Prometheus project's own parser ([`common::exposition`]).

mod common;

use std::{
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener, UdpSocket},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use common::{
    exposition::{Family, family, parse_and_check},
    *,
};
use hickory_proto::rr::RecordType;

const BELGIUM: &str = "81.240.0.0/16";
const REGIONS: [&str; 4] = ["europe1", "us1", "asia1", "sa1"];
const PROVISION: &str =
    "\n[provision]\ndata_dir = \"state\"\npool = \"100.64.0.0/24\"\nauth = \"sha1\"\n";
const AGENT_TOKEN: &str = "agent-token-for-vpn1-0123456789";

/// Every optional part that adds families: health probes (TCP, of
/// `probe`), provisioning with agents, the router endpoint, log ingestion.
fn full_config(probe: SocketAddr) -> String {
    let mut text = config_text("\"127.0.0.1:0\", \"[::1]:0\"").replace(
        "[api]\nlisten = \"127.0.0.1:0\"\n",
        "[api]\nlisten = \"127.0.0.1:0\"\nagent_token_file = \"agents.token\"\n",
    );
    text.push_str(
        "\n[health]\ninterval = \"2s\"\ntimeout = \"500ms\"\nrecheck = \"1s\"\n\
         state_file = \"state/health.json\"\n",
    );
    for region in REGIONS {
        text.push_str(&format!(
            "\n[regions.{region}.probe]\ntcp = [\"{probe}\"]\n"
        ));
    }
    text + PROVISION
        + "\n[routers]\nlisten = \"127.0.0.1:0\"\n"
        + "\n[vpnlog]\nlisten = \"127.0.0.1:0\"\n\
           servers = [{ host = \"vpn-fra-1\", region = \"europe1\", addresses = [\"127.0.0.1\"] }]\n"
}

/// A server with [`full_config`]; the probe target is the listener returned
/// (the kernel completes the handshakes while it is open).
fn start_server() -> (Server, TcpListener) {
    let probe = TcpListener::bind("127.0.0.1:0").unwrap();
    let fixture = Fixture::new();
    fixture.write_config(&full_config(probe.local_addr().unwrap()));
    std::fs::write(
        fixture.path("agents.token"),
        format!("vpn1:{AGENT_TOKEN}\n"),
    )
    .unwrap();
    (Server::start_with(fixture), probe)
}

/// The value of `series` (name and labels as written) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes the server until `ok` holds (30 s at most).
fn scrape_until(server: &Server, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let body = server.get_until("/metrics", what, |m| m.as_str().is_some_and(&ok));
    body.as_str().unwrap().to_owned()
}

/// The sample of `family` whose labels are `labels`.
fn value(families: &[Family], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    family(families, name)?
        .samples
        .iter()
        .find(|s| {
            s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
        .map(|s| s.value())
}

/// No family carries a unit other than the base one in its name.
fn assert_base_units(families: &[Family]) {
    for f in families {
        assert!(
            !f.name
                .split('_')
                .any(|w| ["ms", "millis", "milliseconds", "us", "microseconds"].contains(&w)),
            "{} is not in a base unit",
            f.name
        );
    }
}

#[test]
fn the_servers_metrics_read_by_prometheus_own_parser() {
    let (server, _probe) = start_server();
    for _ in 0..3 {
        udp(
            server.v4,
            &query("mgnt.mkcld.io.", RecordType::A, Some(BELGIUM)),
        );
    }
    udp(server.v4, &query("nope.mkcld.io.", RecordType::A, None));
    tcp(
        server.v4,
        &query("mgnt.mkcld.io.", RecordType::AAAA, Some(BELGIUM)),
    );
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender
        .send_to(
            b"2026-11-25 18:09:00 1.2.3.4:5 TLS Auth Error: Auth Username/Password verification failed for peer",
            server.syslog.unwrap(),
        )
        .unwrap();
    let rtt_count = "mgnt_probe_rtt_seconds_count{region=\"europe1\",kind=\"tcp\"}";
    let text = scrape_until(&server, "a probe passed and the log line read", |m| {
        let lines = |r| sample(m, &format!("mgnt_vpnlog_lines_total{{result=\"{r}\"}}"));
        sample(m, rtt_count).is_some_and(|n| n >= 1.0)
            && lines("parsed").unwrap_or(0.0) + lines("unparsed").unwrap_or(0.0) >= 1.0
    });

    let families = parse_and_check(&text);
    assert_base_units(&families);
    let rtt = family(&families, "mgnt_probe_rtt_seconds").expect("the RTT histogram");
    assert_eq!(rtt.kind, "histogram");
    let bounds: Vec<&str> = rtt
        .samples
        .iter()
        .filter(|s| s.name == "mgnt_probe_rtt_seconds_bucket" && s.labels["region"] == "europe1")
        .map(|s| s.labels["le"].as_str())
        .collect();
    assert_eq!(
        bounds,
        [
            "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
            "1", "+Inf"
        ],
        "buckets in seconds"
    );
    for name in [
        "mgnt_vpnlog_received_bytes",
        "mgnt_vpnlog_sent_bytes",
        "mgnt_router_connections",
    ] {
        assert_eq!(
            family(&families, name).map(|f| f.kind.as_str()),
            Some("counter"),
            "{name}"
        );
    }
    let queries = |qtype, rcode| {
        value(
            &families,
            "mgnt_dns_queries",
            &[("qtype", qtype), ("rcode", rcode)],
        )
    };
    assert_eq!(queries("A", "NOERROR"), Some(3.0));
    assert_eq!(queries("A", "NXDOMAIN"), Some(1.0));
    assert_eq!(queries("AAAA", "NOERROR"), Some(1.0));
    let nearest = [("region", "europe1"), ("reason", "nearest")];
    assert_eq!(value(&families, "mgnt_geo_answers", &nearest), Some(4.0));
    let passed = [("region", "europe1"), ("kind", "tcp"), ("result", "ok")];
    assert!(value(&families, "mgnt_probes", &passed).is_some_and(|n| n >= 1.0));
    let accepted = [("result", "accepted")];
    assert!(value(&families, "mgnt_api_connections", &accepted).is_some_and(|n| n >= 1.0));
    let late = [("result", "header_timed_out")];
    assert!(value(&families, "mgnt_api_connections", &late).is_some());
}

/// `mgnt agent` beside no OpenVPN server (its management address refuses
/// connections), asking the server for credentials; killed on drop.
struct Agent {
    child: Child,
    metrics: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start(server: &Server) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let token = d.join("token");
        std::fs::write(&token, format!("{AGENT_TOKEN}\n")).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        // A port nothing listens on: the management connection fails and
        // is counted, as beside an OpenVPN server that is down.
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        std::fs::write(
            d.join("agent.toml"),
            format!(
                "[agent]\nmanagement = \"{closed}\"\ncontrol = \"http://{}\"\ntoken_file = \"{}\"\n\
                 cache_dir = \"{}\"\nfirewall = false\nmetrics = \"127.0.0.1:0\"\n",
                server.api,
                token.display(),
                d.join("cache").display(),
            ),
        )
        .unwrap();
        let mut child = mgnt()
            .args(["agent", "--config"])
            .arg(d.join("agent.toml"))
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let metrics = loop {
            let line = lines
                .next()
                .expect("the agent exited before listening")
                .unwrap();
            if let Some(a) = line.strip_prefix("listening metrics ") {
                break a.parse().unwrap();
            }
        };
        // Keep reading, so a later line never meets a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self {
            child,
            metrics,
            _dir: dir,
        }
    }

    /// Scrapes the agent until `ok` holds (30 s at most).
    fn scrape_until(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let url = format!("http://{}/metrics", self.metrics);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = ureq::get(&url)
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .unwrap_or_default();
            if ok(&text) {
                return text;
            }
            assert!(Instant::now() < deadline, "{what}: last scrape:\n{text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_agents_metrics_read_by_prometheus_own_parser() {
    let (server, _probe) = start_server();
    let agent = Agent::start(&server);
    let text = agent.scrape_until("the control plane answered, the management refused", |m| {
        sample(m, "mgnt_agent_last_sync_timestamp_seconds").is_some_and(|t| t > 1.6e9)
            && sample(
                m,
                "mgnt_agent_management_reconnects_total{reason=\"error\"}",
            )
            .is_some_and(|n| n >= 1.0)
    });

    let families = parse_and_check(&text);
    assert_base_units(&families);
    let sync = family(&families, "mgnt_agent_last_sync_timestamp_seconds").unwrap();
    assert_eq!(sync.kind, "gauge");
    let accepted = [("result", "accepted")];
    assert!(
        value(&families, "mgnt_agent_metrics_connections", &accepted).is_some_and(|n| n >= 1.0),
        "this scrape's connection"
    );
    let late = [("result", "header_timed_out")];
    assert!(value(&families, "mgnt_agent_metrics_connections", &late).is_some());
    assert_eq!(
        family(&families, "mgnt_agent_logins").map(|f| f.kind.as_str()),
        Some("counter")
    );
}

/// The checks can fail: what a scraper would misread or drop is refused.
#[test]
fn broken_expositions_are_refused() {
    for broken in [
        // A raw quote in a label value.
        "# HELP a A.\n# TYPE a gauge\na{h=\"x\"y\"} 1\n",
        // Families interleaved: `a`'s sample is read as an untyped family.
        "# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\nb 1\na 1\n",
        "# HELP a A.\n# TYPE a gauge\na 1x\n",
        "# HELP a A.\n# TYPE a counter\na 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
    ] {
        let refused = std::panic::catch_unwind(|| parse_and_check(broken)).is_err();
        assert!(refused, "accepted:\n{broken}");
    }
    parse_and_check("# HELP a_total A.\n# TYPE a_total counter\na_total{h=\"x\\\"y\"} 1\n");
}
