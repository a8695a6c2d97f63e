//! Many routers streamed at once through the real server: fifty RouterOS API
//! stand-ins, each on its own site's tunnel address, each with an interface
//! and log lines of its own, one WebSocket viewer per router. Every viewer
//! gets its own router's samples and nothing of another's, each router is
//! reached on one connection, and the hub's gauges say so.
//!
//! The server and everything else run in a network namespace this test
//! creates, with 100.64.0.0/10 routed to its loopback (so the stand-ins can
//! listen on any tunnel address and nothing leaves the machine). Needs root:
//! ignored for other users, run as root by `scripts/test` (CI).

mod common;

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{
    lab::{in_netns, ip, require_root},
    routeros::{Config, Interface, RouterOs},
    *,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message as Frame;

const ROUTERS: usize = 50;
/// What a streamed router (one viewer) may add to the server's memory, with
/// room to spare: each viewer's WebSocket read buffer alone was 128 KiB.
const KIB_PER_ROUTER: u64 = 100;
/// The stand-ins' API port (the namespace is ours: nothing else listens).
const API_PORT: u16 = 8728;

/// A network namespace whose loopback is up and takes all of 100.64.0.0/10
/// as local addresses; deleted on drop.
struct Routed(String);

impl Routed {
    fn new() -> Self {
        let name = format!("mgnt-lm-{}", std::process::id() % 100_000);
        ip(&["netns", "add", &name]);
        let routed = Self(name);
        ip(&["-n", &routed.0, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &routed.0,
            "route",
            "add",
            "local",
            "100.64.0.0/10",
            "dev",
            "lo",
        ]);
        routed
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

struct Site {
    uuid: String,
    address: String,
    password: String,
}

/// A site whose router applied its install job (run inside the namespace).
fn applied_site(server: &Server, agent: &ureq::Agent) -> Site {
    let (status, body) = server.post("/v1/sites", None);
    assert_eq!(status, 201, "{body}");
    let site = &body["site"];
    let token = body["router_token"].as_str().unwrap();
    let base = format!("http://{}", server.routers.unwrap());
    let password = common::routeros::apply_first_job(agent, &base, token);
    Site {
        uuid: site["uuid"].as_str().unwrap().to_owned(),
        address: site["address"].as_str().unwrap().to_owned(),
        password,
    }
}

/// The stand-in of router `k`: its only interface is `wan{k}`.
fn stand_in(k: usize, site: &Site) -> RouterOs {
    let mut config = Config::default().with_live_user(&site.password, true);
    config.interfaces = vec![Interface {
        name: Box::leak(format!("wan{k}").into_boxed_str()),
        kind: "ether",
        running: true,
    }];
    let addr: SocketAddr = format!("{}:{API_PORT}", site.address).parse().unwrap();
    RouterOs::spawn_on(addr, config)
}

/// The hub's gauges on `/metrics`.
fn gauges(server: &Server) -> HashMap<String, i64> {
    let (status, body) = server.get("/metrics");
    assert_eq!(status, 200, "{body}");
    let text = body.as_str().expect("the exposition, as text").to_owned();
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(name, _)| {
            [
                "mgnt_live_routers",
                "mgnt_live_viewers",
                "mgnt_live_streams",
            ]
            .contains(name)
        })
        .map(|(name, v)| (name.to_owned(), v.parse().unwrap()))
        .collect()
}

fn until_gauges(server: &Server, want: [(&str, i64); 3]) {
    let want: HashMap<String, i64> = want.iter().map(|(n, v)| (n.to_string(), *v)).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = gauges(server);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "gauges {got:?}, not {want:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The server's resident memory.
fn rss_kib(server: &Server) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// What one viewer received: traffic samples by interface, log messages.
#[derive(Default, Debug)]
struct Seen {
    traffic: HashMap<String, u64>,
    logs: Vec<String>,
    other: Vec<Value>,
}

#[test]
#[ignore = "needs root (network namespaces); scripts/test runs it as root"]
fn fifty_routers_stream_each_to_its_own_viewer_only() {
    require_root(&[]);
    let started = Instant::now();
    let ns = Routed::new();
    let fixture = Fixture::new();
    fixture.write_config(
        &(config_text("\"127.0.0.1:0\", \"[::1]:0\"")
            + "\n[provision]\ndata_dir = \"state\"\npool = \"100.64.0.0/24\"\nauth = \"sha1\"\n"
            + "\n[routers]\nlisten = \"127.0.0.1:0\"\nmin_poll_gap = \"1s\"\n"
            + &format!(
                "\n[live]\napi_port = {API_PORT}\nlinger = \"200ms\"\nmax_streams_per_user = {ROUTERS}\n"
            )),
    );
    let server = Server::start_in_netns(fixture, &ns.0);
    let sites: Vec<Site> = in_netns(&ns.0, || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        (0..ROUTERS)
            .map(|_| applied_site(&server, &agent))
            .collect()
    });
    let tickets: Vec<String> = sites
        .iter()
        .map(|site| {
            let (status, body) = server.post(&format!("/v1/sites/{}/live/ticket", site.uuid), None);
            assert_eq!(status, 201, "{body}");
            body["ticket"].as_str().unwrap().to_owned()
        })
        .collect();

    // The stand-ins and the viewers run on a runtime whose threads are in
    // the namespace (they inherit it from the thread that builds it).
    in_netns(&ns.0, || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let routers: Vec<RouterOs> = sites
                .iter()
                .enumerate()
                .map(|(k, site)| stand_in(k, site))
                .collect();
            let at_rest = rss_kib(&server);
            let mut viewers = Vec::new();
            for (k, (site, ticket)) in sites.iter().zip(&tickets).enumerate() {
                let url = format!(
                    "ws://{}/v1/sites/{}/live?ticket={ticket}&interfaces=wan{k}&log=1",
                    server.api, site.uuid
                );
                let (socket, _) = tokio_tungstenite::connect_async(url)
                    .await
                    .unwrap_or_else(|e| panic!("viewer {k}: {e}"));
                viewers.push(socket);
            }
            // Each router's two streams run (so a log line pushed now is
            // followed), on one connection.
            for (k, router) in routers.iter().enumerate() {
                router
                    .until("streaming traffic and the log", |r| r.active_streams() == 2)
                    .await;
                assert_eq!(router.connections(), 1, "router {k}: one connection");
                router.push_log("system,info", &format!("router {k} says hello"));
            }
            let gauges_at_full = tokio::task::block_in_place(|| {
                until_gauges(
                    &server,
                    [
                        ("mgnt_live_routers", ROUTERS as i64),
                        ("mgnt_live_viewers", ROUTERS as i64),
                        ("mgnt_live_streams", 2 * ROUTERS as i64),
                    ],
                );
                gauges(&server)
            });
            let per_router = rss_kib(&server).saturating_sub(at_rest) / ROUTERS as u64;
            eprintln!("at full: {gauges_at_full:?}, {per_router} KiB more per router");
            assert!(
                per_router < KIB_PER_ROUTER,
                "each streamed router costs the server {per_router} KiB"
            );

            // Every viewer reads until it has its log line and three samples.
            let reads = viewers.iter_mut().map(|socket| async move {
                let mut seen = Seen::default();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                while seen.logs.is_empty() || seen.traffic.values().sum::<u64>() < 3 {
                    let frame = match tokio::time::timeout_at(deadline, socket.next()).await {
                        Ok(Some(Ok(frame))) => frame,
                        other => panic!("viewer ended or went quiet: {other:?}; saw {seen:?}"),
                    };
                    let Frame::Text(text) = frame else { continue };
                    let v: Value = serde_json::from_str(&text).unwrap();
                    match v["type"].as_str() {
                        Some("traffic") => {
                            let name = v["interface"].as_str().unwrap().to_owned();
                            *seen.traffic.entry(name).or_default() += 1;
                        }
                        Some("log") => seen.logs.push(v["message"].as_str().unwrap().to_owned()),
                        _ => seen.other.push(v),
                    }
                }
                seen
            });
            let seen = futures_util::future::join_all(reads).await;
            for (k, seen) in seen.iter().enumerate() {
                let own = format!("wan{k}");
                assert_eq!(
                    seen.traffic.keys().collect::<Vec<_>>(),
                    [&own],
                    "viewer {k}: samples of its router's interface only: {seen:?}"
                );
                assert_eq!(
                    seen.logs,
                    [format!("router {k} says hello")],
                    "viewer {k}: its router's log only"
                );
                assert!(seen.other.is_empty(), "viewer {k}: {:?}", seen.other);
            }

            for (k, mut socket) in viewers.into_iter().enumerate() {
                socket
                    .close(None)
                    .await
                    .unwrap_or_else(|e| panic!("closing viewer {k}: {e}"));
                // Read the server's close, so the socket ends cleanly.
                while let Some(Ok(_)) = socket.next().await {}
                let _ = socket.flush().await;
            }
            tokio::task::block_in_place(|| {
                until_gauges(
                    &server,
                    [
                        ("mgnt_live_routers", 0),
                        ("mgnt_live_viewers", 0),
                        ("mgnt_live_streams", 0),
                    ],
                )
            });
            for router in &routers {
                router
                    .until("cancelled after the viewer left", |r| {
                        r.active_streams() == 0
                    })
                    .await;
            }
        });
    });
    eprintln!("{ROUTERS} routers in {:?}", started.elapsed());
}
