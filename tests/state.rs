//! Region state under concurrency, against the real server: reloads, probe
//! rounds, drains and drain expiry interleaved with queries and API calls.
//! Whatever the interleaving, every answer and every report comes from one
//! load's data with the region view built for it, and nothing an operator was
//! told is done gets undone.

mod common;

use std::{
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use common::*;
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};

const BELGIUM: &str = "81.240.0.0/16";
const ALL: [&str; 4] = ["europe1", "us1", "asia1", "sa1"];

/// The test config limited to the `keep` regions (without overrides, which
/// name others), plus `extra`.
fn config_of(keep: &[&str], extra: &str) -> String {
    let full = config_text("\"127.0.0.1:0\", \"[::1]:0\"");
    let base = full.split("[overrides]").next().unwrap();
    let mut out = String::new();
    let mut skipping = false;
    for line in base.lines() {
        if let Some(name) = line
            .strip_prefix("[regions.")
            .and_then(|l| l.strip_suffix(']'))
        {
            skipping = !keep.contains(&name);
        } else if line.starts_with('[') {
            skipping = false;
        }
        if skipping {
            continue;
        }
        if line.starts_with("regions = ") {
            out.push_str(&format!("regions = {keep:?}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out + extra
}

fn start(config: &str) -> Server {
    let fixture = Fixture::new();
    fixture.write_config(config);
    Server::start_with(fixture)
}

fn reload(server: &Server, config: &str) {
    server.fixture.write_config(config);
    let (status, body) = server.post("/v1/reload", None);
    assert_eq!(status, 200, "{body}");
}

fn region_named<'a>(regions: &'a Value, name: &str) -> &'a Value {
    regions["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {regions}"))
}

/// us1 is drained. Reloads add and remove regions, which moves every region's
/// index; a query answered from the new data with the old view would see
/// europe1's new index as not serving and fail over to us1, the drained one.
#[test]
fn queries_during_reloads_never_mix_new_data_with_an_old_view() {
    let small = config_of(&["europe1", "us1"], "");
    let large = config_of(&ALL, "");
    let server = start(&small);
    let (status, body) = server.post("/v1/regions/us1/drain", Some(json!({"reason": "t"})));
    assert_eq!(status, 200, "{body}");

    let stop = Arc::new(AtomicBool::new(false));
    let (answers, wrong) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let queries: Vec<_> = [server.v4, server.v6]
        .into_iter()
        .map(|addr| {
            let (stop, answers, wrong) = (stop.clone(), answers.clone(), wrong.clone());
            std::thread::spawn(move || {
                let q = query("mgnt.mkcld.io.", RecordType::A, Some(BELGIUM));
                while !stop.load(Ordering::Relaxed) {
                    let region = region_of(&udp(addr, &q));
                    answers.fetch_add(1, Ordering::Relaxed);
                    if region.as_deref() != Some("europe1") {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for i in 0..40 {
        reload(&server, if i % 2 == 0 { &large } else { &small });
    }
    stop.store(true, Ordering::Relaxed);
    queries.into_iter().for_each(|t| t.join().unwrap());
    let (answers, wrong) = (
        answers.load(Ordering::Relaxed),
        wrong.load(Ordering::Relaxed),
    );
    assert!(answers > 100, "only {answers} answers");
    assert_eq!(wrong, 0, "{wrong} of {answers} answers were not europe1");
}

/// A drain answered 200 must hold, even when it is committed just as an
/// older drain reaches its `until` and ends: nothing else is sent until
/// 100 ms after that moment, so the expiry runs on its own timer.
#[test]
fn a_drain_committed_while_an_older_drain_expires_is_kept() {
    let server = Server::start();
    let sent = Instant::now();
    let until = SystemTime::now() + Duration::from_secs(2);
    let until = humantime::format_rfc3339_seconds(until).to_string();
    let body = json!({"reason": "short", "until": until});
    let (status, got) = server.post("/v1/regions/europe1/drain", Some(body));
    assert_eq!(status, 200, "{got}");
    std::thread::sleep(
        (sent + Duration::from_millis(2100)).saturating_duration_since(Instant::now()),
    );
    for round in 0..10 {
        let (status, got) = server.post("/v1/regions/us1/drain", Some(json!({"reason": "t"})));
        assert_eq!(status, 200, "{got}");
        let (_, regions) = server.get("/v1/regions");
        let us1 = region_named(&regions, "us1");
        assert_eq!(
            us1["drain"]["reason"], "t",
            "round {round}: an acknowledged drain was lost: {us1}"
        );
        let state = std::fs::read_to_string(server.fixture.path("state/health.json")).unwrap();
        let state: Value = serde_json::from_str(&state).unwrap();
        assert!(
            state["drains"]["us1"].is_object(),
            "round {round}: not persisted: {state}"
        );
        assert_eq!(server.post("/v1/regions/us1/undrain", None).0, 200);
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, regions) = server.get("/v1/regions");
    assert!(
        region_named(&regions, "europe1")["drain"].is_null(),
        "the short drain ended"
    );
}

/// Probe rounds keep arriving while reloads remove us1 and add it back and
/// drains come and go: every report matches the configuration it is read
/// with, and us1's probes count again once it is back.
#[test]
fn reloads_removing_and_adding_a_region_amid_probe_rounds_and_drains() {
    let targets: Vec<TcpListener> = ALL
        .iter()
        .enumerate()
        .map(|(i, _)| TcpListener::bind(format!("127.0.0.{}:0", 11 + 10 * i)).unwrap())
        .collect();
    let probes = |keep: &[&str]| {
        let mut text = "\n[health]\ninterval = \"300ms\"\ntimeout = \"200ms\"\nrecheck = \"300ms\"\nfall = 2\nrise = 2\n".to_owned();
        for (name, t) in ALL.iter().zip(&targets) {
            if keep.contains(name) {
                let addr = t.local_addr().unwrap();
                text.push_str(&format!("[regions.{name}.probe]\ntcp = [\"{addr}\"]\n"));
            }
        }
        text
    };
    let without = ["europe1", "asia1", "sa1"];
    let (full, small) = (
        config_of(&ALL, &probes(&ALL)),
        config_of(&without, &probes(&without)),
    );
    let server = start(&full);
    for i in 0..30 {
        reload(&server, if i % 2 == 0 { &small } else { &full });
        let path = format!(
            "/v1/regions/asia1/{}",
            if i % 3 == 0 { "drain" } else { "undrain" }
        );
        let (status, got) = server.post(&path, Some(json!({"reason": "t"})));
        assert_eq!(status, 200, "{got}");
        let (status, regions) = server.get("/v1/regions");
        assert_eq!(status, 200, "{regions}");
        let names: Vec<&str> = regions["regions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = if i % 2 == 0 {
            vec!["asia1", "europe1", "sa1"]
        } else {
            vec!["asia1", "europe1", "sa1", "us1"]
        };
        assert_eq!(names, want, "round {i}");
        for r in regions["regions"].as_array().unwrap() {
            assert_eq!(r["health"]["probed"], true, "round {i}: {r}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // us1 is back (the last reload had it): its rounds are applied again.
    server.get_until("/v1/regions", "us1 probed and confirmed up", |v| {
        let us1 = region_named(v, "us1");
        us1["health"]["confirmed"] == true
            && us1["health"]["status"] == "up"
            && us1["serving"] == true
    });
    let (_, explain) = server.get("/v1/explain?ecs=81.240.0.0/16");
    assert_eq!(
        explain["names"][0]["regions"].as_array().unwrap().len(),
        4,
        "{explain}"
    );
}
