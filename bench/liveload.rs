//! The live view with many routers: ROUTERS RouterOS API stand-ins (tasks of
//! one runtime, `tests/common/routeros.rs`), a site each, VIEWERS WebSocket
//! viewers on each router (`interfaces=ether1&log=1`), and what the server
//! spends on them: CPU seconds per second (`/proc/PID/stat`) and RSS
//! (`/proc/PID/status`) at rest (sites made, stand-ins listening, no viewer)
//! and streaming, over a fixed window, ROUNDS times. Also the messages the
//! viewers received against what the stand-ins sent, and the viewers that
//! got nothing in a window (there must be none).
//!
//! Runs where the sites' tunnel addresses are local (bench/live.sh: a
//! throwaway network namespace with the pool routed to loopback), next to
//! the server whose pid it is given.
//!
//! `liveload API_ADDR ROUTERS_ADDR TOKEN_FILE MGNT_PID [KEY=VALUE ...]`
//!
//! keys (defaults): `routers` (1000), `viewers` (2 per router), `rounds` (3),
//! `window` (20, seconds measured), `interval_ms` (1000: the stand-ins'
//! monitor-traffic period, RouterOS's own default), `log_every` (5: seconds
//! between two log lines of one router), `api_port` (8728), `opening` (32:
//! viewers opened at once, under `[api] max_connections_per_source`).
//!
//! Prints one JSON line per round and a Markdown table at the end.

#[path = "../tests/common"]
mod common {
    pub mod limits;
    #[allow(dead_code)]
    pub mod routeros;
}

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use common::routeros::{Config, RouterOs};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message as Frame;

struct Args {
    api: String,
    routers_endpoint: String,
    token: String,
    pid: u32,
    routers: usize,
    viewers: usize,
    rounds: usize,
    window: Duration,
    interval: Duration,
    log_every: u64,
    api_port: u16,
    opening: usize,
}

fn args() -> Args {
    let all: Vec<String> = std::env::args().collect();
    let [_, api, routers_endpoint, token_file, pid, rest @ ..] = all.as_slice() else {
        eprintln!("usage: liveload API_ADDR ROUTERS_ADDR TOKEN_FILE MGNT_PID [KEY=VALUE ...]");
        std::process::exit(2);
    };
    let mut keys: HashMap<&str, u64> = HashMap::new();
    for kv in rest {
        let (k, v) = kv
            .split_once('=')
            .unwrap_or_else(|| panic!("`{kv}`: say KEY=VALUE"));
        let known = [
            "routers",
            "viewers",
            "rounds",
            "window",
            "interval_ms",
            "log_every",
            "api_port",
            "opening",
        ];
        assert!(known.contains(&k), "unknown key `{k}` (known: {known:?})");
        keys.insert(k, v.parse().unwrap_or_else(|_| panic!("`{kv}`: a number")));
    }
    let key = |k: &str, default: u64| keys.get(k).copied().unwrap_or(default);
    let token = std::fs::read_to_string(token_file)
        .unwrap_or_else(|e| panic!("token file {token_file}: {e}"));
    Args {
        api: api.clone(),
        routers_endpoint: routers_endpoint.clone(),
        token: token.trim().to_owned(),
        pid: pid.parse().expect("MGNT_PID"),
        routers: key("routers", 1000) as usize,
        viewers: key("viewers", 2) as usize,
        rounds: key("rounds", 3) as usize,
        window: Duration::from_secs(key("window", 20)),
        interval: Duration::from_millis(key("interval_ms", 1000)),
        log_every: key("log_every", 5).max(1),
        api_port: key("api_port", 8728) as u16,
        opening: key("opening", 32) as usize,
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

struct Site {
    uuid: String,
    address: String,
    password: String,
}

/// Creates a site and lets its router apply the install job (as
/// tests/live.rs does), learning the live-view user's password from it.
fn applied_site(args: &Args, agent: &ureq::Agent) -> Site {
    let auth = format!("Bearer {}", args.token);
    let mut created = agent
        .post(&format!("http://{}/v1/sites", args.api))
        .header("Authorization", &auth)
        .send_empty()
        .expect("POST /v1/sites");
    let text = created.body_mut().read_to_string().unwrap();
    assert_eq!(created.status().as_u16(), 201, "POST /v1/sites: {text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    let base = format!("http://{}", args.routers_endpoint);
    let token = body["router_token"].as_str().unwrap();
    let password = common::routeros::apply_first_job(agent, &base, token);
    Site {
        uuid: body["site"]["uuid"].as_str().unwrap().to_owned(),
        address: body["site"]["address"].as_str().unwrap().to_owned(),
        password,
    }
}

/// All sites, made by four clients at once.
fn make_sites(args: &Args) -> Vec<Site> {
    let next = AtomicUsize::new(0);
    let made = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let agent = agent();
                while next.fetch_add(1, Relaxed) < args.routers {
                    let site = applied_site(args, &agent);
                    made.lock().unwrap().push(site);
                }
            });
        }
    });
    made.into_inner().unwrap()
}

/// A process's CPU seconds so far (user and system).
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e} (did the server exit?)"));
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15; these start at field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e} (did the server exit?)"))
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// CPU seconds per second of the server and of this driver, and the
/// server's largest RSS sampled (each second) over `window`.
struct Measured {
    cpu: f64,
    driver_cpu: f64,
    rss_kib: u64,
}

async fn measure(pid: u32, window: Duration) -> Measured {
    let pid = pid.to_string();
    let (cpu0, own0, t0) = (cpu_seconds(&pid), cpu_seconds("self"), Instant::now());
    let mut rss = rss_kib(&pid);
    while t0.elapsed() < window {
        let left = window.saturating_sub(t0.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        rss = rss.max(rss_kib(&pid));
    }
    let secs = t0.elapsed().as_secs_f64();
    Measured {
        cpu: (cpu_seconds(&pid) - cpu0) / secs,
        driver_cpu: (cpu_seconds("self") - own0) / secs,
        rss_kib: rss,
    }
}

/// The server's `/metrics`, sample by name (labels included).
async fn metrics(args: &Arc<Args>) -> HashMap<String, f64> {
    let (api, token) = (args.api.clone(), args.token.clone());
    tokio::task::spawn_blocking(move || {
        let mut resp = agent()
            .get(&format!("http://{api}/metrics"))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .expect("GET /metrics");
        let text = resp.body_mut().read_to_string().unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(name, v)| Some((name.to_owned(), v.parse().ok()?)))
            .collect()
    })
    .await
    .unwrap()
}

/// Waits (`limit` at most) until the hub's gauges are `routers`, `viewers`
/// and `streams`.
async fn until_gauges(args: &Arc<Args>, want: [f64; 3], limit: Duration) {
    let names = [
        "mgnt_live_routers",
        "mgnt_live_viewers",
        "mgnt_live_streams",
    ];
    let deadline = Instant::now() + limit;
    loop {
        let m = metrics(args).await;
        let got: Vec<f64> = names
            .iter()
            .map(|n| m.get(*n).copied().unwrap_or(-1.0))
            .collect();
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {limit:?} the hub's gauges {names:?} are {got:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What one viewer has received so far.
#[derive(Default)]
struct Tally {
    /// Its WebSocket is open (or failed to open).
    opened: AtomicBool,
    traffic: AtomicU64,
    log: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    fn messages(&self) -> u64 {
        self.traffic.load(Relaxed) + self.log.load(Relaxed)
    }
}

/// Opens one viewer (a ticket, then the WebSocket) and counts its messages
/// until `stop`; an error the server sends, or a failure, is kept.
async fn viewer(
    args: Arc<Args>,
    uuid: String,
    tally: Arc<Tally>,
    opening: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let fail = |why: String| {
        tally.opened.store(true, Relaxed);
        tally.errors.fetch_add(1, Relaxed);
        tally.first_error.lock().unwrap().get_or_insert(why);
    };
    let permit = opening.acquire().await.unwrap();
    let (api, token, site) = (args.api.clone(), args.token.clone(), uuid.clone());
    let ticket = tokio::task::spawn_blocking(move || {
        let mut resp = agent()
            .post(&format!("http://{api}/v1/sites/{site}/live/ticket"))
            .header("Authorization", &format!("Bearer {token}"))
            .send_empty()
            .map_err(|e| e.to_string())?;
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        if resp.status().as_u16() != 201 {
            return Err(format!("ticket: {} {text}", resp.status()));
        }
        let body: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        Ok(body["ticket"].as_str().unwrap_or_default().to_owned())
    })
    .await
    .unwrap();
    let ticket = match ticket {
        Ok(t) => t,
        Err(why) => return fail(why),
    };
    let url = format!(
        "ws://{}/v1/sites/{uuid}/live?ticket={ticket}&interfaces=ether1&log=1",
        args.api
    );
    let opened = tokio::time::timeout(
        Duration::from_secs(60),
        tokio_tungstenite::connect_async(url),
    )
    .await;
    drop(permit);
    tally.opened.store(true, Relaxed);
    let mut socket = match opened {
        Ok(Ok((socket, _))) => socket,
        Ok(Err(e)) => return fail(format!("opening the WebSocket: {e}")),
        Err(_) => return fail("opening the WebSocket: no answer within 60 s".to_owned()),
    };
    loop {
        tokio::select! {
            frame = socket.next() => match frame {
                Some(Ok(Frame::Text(text))) => {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    match v["type"].as_str() {
                        Some("traffic") => tally.traffic.fetch_add(1, Relaxed),
                        Some("log") => tally.log.fetch_add(1, Relaxed),
                        _ => {
                            fail(text.to_string());
                            0
                        }
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return fail(format!("the WebSocket failed: {e}")),
                None => return fail("the server closed the WebSocket".to_owned()),
            },
            _ = stop.changed() => break,
        }
    }
    let _ = socket.close(None).await;
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = socket.next().await {}
    });
    let _ = drained.await;
    let _ = socket.flush().await;
}

/// One round's figures.
struct Round {
    rest: Measured,
    streaming: Measured,
    opened_s: f64,
    steady_s: f64,
    received_per_s: f64,
    /// What the stand-ins sent in the window (samples and log lines), times
    /// the viewers of each router.
    sent_per_s: f64,
    /// What they would send at exactly one sample per interval.
    expected_per_s: f64,
    silent: usize,
    failed: usize,
    skipped: f64,
    /// Router API connections the server opened, and those that failed, this round.
    connects: f64,
    connect_failures: f64,
}

async fn round(
    args: &Arc<Args>,
    sites: &[Site],
    stand_ins: &[RouterOs],
    pushed: &AtomicU64,
    n: usize,
) -> Result<Round, String> {
    let (routers, per) = (args.routers, args.viewers);
    let total = routers * per;
    until_gauges(args, [0.0, 0.0, 0.0], Duration::from_secs(120)).await;
    let (tried, failed_key) = (
        "mgnt_live_connects_total{result=\"tried\"}",
        "mgnt_live_connects_total{result=\"failed\"}",
    );
    let m = metrics(args).await;
    let connects0 = (
        m.get(tried).copied().unwrap_or(0.0),
        m.get(failed_key).copied().unwrap_or(0.0),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!("round {n}: at rest for {:?}", args.window);
    let rest = measure(args.pid, args.window).await;

    eprintln!("round {n}: opening {total} viewers");
    let t0 = Instant::now();
    let (stop, stopped) = watch::channel(false);
    let opening = Arc::new(Semaphore::new(args.opening));
    let tallies: Vec<Arc<Tally>> = (0..total).map(|_| Arc::default()).collect();
    let tasks: Vec<_> = tallies
        .iter()
        .enumerate()
        .map(|(i, tally)| {
            tokio::spawn(viewer(
                args.clone(),
                sites[i % routers].uuid.clone(),
                tally.clone(),
                opening.clone(),
                stopped.clone(),
            ))
        })
        .collect();
    // Every viewer has a sample (or failed), three minutes at most.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut opened_s = None;
    loop {
        let waiting = tallies
            .iter()
            .filter(|t| t.traffic.load(Relaxed) == 0 && t.errors.load(Relaxed) == 0)
            .count();
        if opened_s.is_none() && tallies.iter().all(|t| t.opened.load(Relaxed)) {
            opened_s = Some(t0.elapsed().as_secs_f64());
        }
        if waiting == 0 {
            break;
        }
        if Instant::now() > deadline {
            let _ = stop.send(true);
            return Err(format!(
                "round {n}: after 180 s {waiting} of {total} viewers have no traffic sample"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let steady_s = t0.elapsed().as_secs_f64();
    let failed: Vec<&Arc<Tally>> = tallies
        .iter()
        .filter(|t| t.errors.load(Relaxed) > 0)
        .collect();
    if let Some(first) = failed.first() {
        let why = first.first_error.lock().unwrap().clone();
        let _ = stop.send(true);
        return Err(format!(
            "round {n}: {} of {total} viewers failed; the first: {why:?}",
            failed.len()
        ));
    }
    let full = [routers as f64, total as f64, 2.0 * routers as f64];
    until_gauges(args, full, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    eprintln!("round {n}: streaming for {:?}", args.window);
    let skipped_key = "mgnt_live_dropped_total{reason=\"sample_skipped\"}";
    let skipped0 = metrics(args).await.get(skipped_key).copied().unwrap_or(0.0);
    let sent = || stand_ins.iter().map(RouterOs::samples).sum::<u64>() + pushed.load(Relaxed);
    let before: Vec<u64> = tallies.iter().map(|t| t.messages()).collect();
    let sent0 = sent();
    let t1 = Instant::now();
    let streaming = measure(args.pid, args.window).await;
    let after: Vec<u64> = tallies.iter().map(|t| t.messages()).collect();
    let sent = sent() - sent0;
    let secs = t1.elapsed().as_secs_f64();
    let m = metrics(args).await;
    let skipped = m.get(skipped_key).copied().unwrap_or(0.0) - skipped0;
    let connects = m.get(tried).copied().unwrap_or(0.0) - connects0.0;
    let connect_failures = m.get(failed_key).copied().unwrap_or(0.0) - connects0.1;
    let received: u64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
    let silent = after.iter().zip(&before).filter(|(a, b)| a == b).count();
    let failed = tallies
        .iter()
        .filter(|t| t.errors.load(Relaxed) > 0)
        .count();
    let per_viewer = 1.0 / args.interval.as_secs_f64() + 1.0 / args.log_every as f64;

    let _ = stop.send(true);
    for task in tasks {
        task.await.map_err(|e| format!("a viewer panicked: {e}"))?;
    }
    Ok(Round {
        rest,
        streaming,
        opened_s: opened_s.unwrap_or(steady_s),
        steady_s,
        received_per_s: received as f64 / secs,
        sent_per_s: (sent * per as u64) as f64 / secs,
        expected_per_s: total as f64 * per_viewer,
        silent,
        failed,
        skipped,
        connects,
        connect_failures,
    })
}

fn main() {
    let args = Arc::new(args());
    let nofile = common::limits::raise_open_files();
    eprintln!(
        "liveload: {} routers, {} viewers each, {} rounds of {:?}; open files up to {nofile}",
        args.routers, args.viewers, args.rounds, args.window
    );
    let t0 = Instant::now();
    let sites = make_sites(&args);
    eprintln!(
        "{} sites made and applied in {:.1} s",
        sites.len(),
        t0.elapsed().as_secs_f64()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let code = runtime.block_on(async {
        let stand_ins: Vec<RouterOs> = sites
            .iter()
            .map(|site| {
                let config = Config {
                    interval: args.interval,
                    ..Config::default()
                }
                .with_live_user(&site.password, true);
                let addr: SocketAddr = format!("{}:{}", site.address, args.api_port)
                    .parse()
                    .unwrap();
                RouterOs::spawn_on(addr, config)
            })
            .collect();
        let stand_ins = Arc::new(stand_ins);
        // Each router logs a line every `log_every` seconds, the routers
        // spread over those seconds.
        let logging = stand_ins.clone();
        let every = args.log_every;
        let pushed = Arc::new(AtomicU64::new(0));
        let pushing = pushed.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            for second in 0u64.. {
                tick.tick().await;
                for (k, router) in logging.iter().enumerate() {
                    if k as u64 % every == second % every {
                        router.push_log("system,info", &format!("bench line {second}"));
                        pushing.fetch_add(1, Relaxed);
                    }
                }
            }
        });
        let mut rounds = Vec::new();
        for n in 1..=args.rounds {
            match round(&args, &sites, &stand_ins, &pushed, n).await {
                Ok(r) => {
                    println!(
                        "{{\"round\":{n},\"routers\":{},\"viewers\":{},\"rest_cpu\":{:.4},\"rest_rss_kib\":{},\
                         \"cpu\":{:.4},\"rss_kib\":{},\"driver_cpu\":{:.3},\"opened_s\":{:.1},\"steady_s\":{:.1},\
                         \"received_per_s\":{:.0},\"sent_per_s\":{:.0},\"expected_per_s\":{:.0},\"silent\":{},\"failed\":{},\"skipped\":{},\
                         \"connects\":{},\"connect_failures\":{}}}",
                        args.routers,
                        args.routers * args.viewers,
                        r.rest.cpu,
                        r.rest.rss_kib,
                        r.streaming.cpu,
                        r.streaming.rss_kib,
                        r.streaming.driver_cpu,
                        r.opened_s,
                        r.steady_s,
                        r.received_per_s,
                        r.sent_per_s,
                        r.expected_per_s,
                        r.silent,
                        r.failed,
                        r.skipped,
                        r.connects,
                        r.connect_failures,
                    );
                    rounds.push(r);
                }
                Err(why) => {
                    eprintln!("liveload: {why}");
                    return 1;
                }
            }
        }
        report(&args, &rounds);
        let bad = rounds.iter().any(|r| r.silent > 0 || r.failed > 0);
        i32::from(bad)
    });
    // The stand-ins' tasks end with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(1));
    std::process::exit(code);
}

fn report(args: &Args, rounds: &[Round]) {
    let n = args.routers as f64;
    let first_rest = rounds[0].rest.rss_kib as f64;
    println!();
    println!(
        "| round | server CPU at rest | streaming | per router (% of a core) | µs per message | RSS at rest (KiB) | streaming | per router (KiB) | messages/s received | sent | received/sent | silent viewers | skipped | driver CPU |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, r) in rounds.iter().enumerate() {
        let busy = r.streaming.cpu - r.rest.cpu;
        println!(
            "| {} | {:.1} % | {:.1} % | {:.4} | {:.1} | {} | {} | {:.1} | {:.0} | {:.0} | {:.3} | {} | {} | {:.0} % |",
            i + 1,
            r.rest.cpu * 100.0,
            r.streaming.cpu * 100.0,
            busy / n * 100.0,
            busy / r.received_per_s.max(1.0) * 1e6,
            r.rest.rss_kib,
            r.streaming.rss_kib,
            (r.streaming.rss_kib as f64 - first_rest) / n,
            r.received_per_s,
            r.sent_per_s,
            r.received_per_s / r.sent_per_s.max(1.0),
            r.silent,
            r.skipped,
            r.streaming.driver_cpu * 100.0,
        );
    }
    println!();
    for (i, r) in rounds.iter().enumerate() {
        // At rest the server may spend nothing measurable in a window.
        let against_rest = if r.rest.cpu >= 0.001 {
            format!(
                "streaming took {:.1}x the CPU at rest",
                r.streaming.cpu / r.rest.cpu
            )
        } else {
            format!(
                "no measurable CPU at rest ({:.2} % of a core)",
                r.rest.cpu * 100.0
            )
        };
        println!(
            "round {}: {against_rest}; the stand-ins sent {:.3} of one sample per interval; memory per router against this round's rest {:.1} KiB; {} API connections opened ({} failed); viewers open in {:.1} s, all with a sample in {:.1} s",
            i + 1,
            r.sent_per_s / r.expected_per_s,
            (r.streaming.rss_kib as f64 - r.rest.rss_kib as f64) / n,
            r.connects,
            r.connect_failures,
            r.opened_s,
            r.steady_s,
        );
    }
}
