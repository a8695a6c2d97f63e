//! The admin API against the real server: auth, drains across restarts,
//! 409 on the last region, reloads that fail safe or swap cleanly, metrics.

mod common;

use std::{
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

struct Api {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(server: &Server) -> Self {
        let token = std::fs::read_to_string(server.fixture.path("state/admin.token"))
            .expect("the server created its token file");
        Self {
            base: format!("http://{}", server.api),
            token: token.trim().to_owned(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, String) {
        let url = format!("{}{path}", self.base);
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut resp = if method == "GET" {
            let mut r = self.agent.get(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            r.call()
        } else {
            let mut r = self.agent.post(&url);
            if let Some(a) = &auth {
                r = r.header("Authorization", a);
            }
            match body {
                Some(b) => r.send_json(b),
                None => r.send_empty(),
            }
        }
        .unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let (s, b) = self.call("GET", path, Some(&self.token), None);
        (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
    }

    fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let (s, b) = self.call("POST", path, Some(&self.token), body);
        (s, serde_json::from_str(&b).unwrap_or(Value::String(b)))
    }
}

fn region_for(server: &Server, ecs: &str) -> String {
    region_of(&udp(
        server.v4,
        &query("mgnt.mkcld.io.", RecordType::A, Some(ecs)),
    ))
    .unwrap()
}

#[test]
fn every_route_needs_the_token_except_healthz() {
    let server = Server::start();
    let api = Api::new(&server);
    assert_eq!(api.call("GET", "/healthz", None, None).0, 200);
    for (method, path) in [
        ("GET", "/v1/regions"),
        ("POST", "/v1/regions/europe1/drain"),
        ("POST", "/v1/regions/europe1/undrain"),
        ("GET", "/v1/explain?ip=192.0.2.1"),
        ("POST", "/v1/reload"),
        ("GET", "/metrics"),
    ] {
        let (status, body) = api.call(method, path, None, None);
        assert_eq!(status, 401, "{method} {path} without a token");
        assert!(body.is_empty(), "no detail: {body}");
        let wrong = format!("{}x", api.token);
        assert_eq!(
            api.call(method, path, Some(&wrong), None).0,
            401,
            "{method} {path}"
        );
        assert_eq!(api.call(method, path, Some(&api.token[..20]), None).0, 401);
    }
    assert_eq!(api.get("/v1/regions").0, 200);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(server.fixture.path("state/admin.token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "token file is private");
}

#[test]
fn drain_moves_the_answer_survives_a_restart_and_undrain_brings_it_back() {
    let server = Server::start();
    let api = Api::new(&server);
    assert_eq!(region_for(&server, BELGIUM), "europe1");
    let (status, body) = api.post(
        "/v1/regions/europe1/drain",
        Some(json!({"reason": "maintenance"})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["drain"]["by"], "admin");
    assert_eq!(region_for(&server, BELGIUM), "us1", "at once");
    let (_, regions) = api.get("/v1/regions");
    let eu = &regions["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "europe1")
        .unwrap()
        .clone();
    assert_eq!(eu["serving"], false);
    assert_eq!(eu["drain"]["reason"], "maintenance");

    // Restart on the same files: still drained.
    let mut server = server;
    server.restart();
    assert_eq!(region_for(&server, BELGIUM), "us1", "drain persisted");
    let api = Api::new(&server);
    let (status, body) = api.post("/v1/regions/europe1/undrain", None);
    assert_eq!(
        (status, &body["was_drained"]),
        (200, &json!(true)),
        "{body}"
    );
    assert_eq!(region_for(&server, BELGIUM), "europe1");

    let audit = std::fs::read_to_string(server.fixture.path("state/audit.log")).unwrap();
    let lines: Vec<Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{audit}");
    assert_eq!(
        (&lines[0]["action"], &lines[0]["token"]),
        (&json!("drain"), &json!("admin"))
    );
    assert_eq!(lines[0]["reason"], "maintenance");
    assert_eq!(lines[1]["action"], "undrain");
}

#[test]
fn the_last_serving_region_needs_force_and_then_fails_open() {
    let server = Server::start();
    let api = Api::new(&server);
    for r in ["us1", "asia1", "sa1"] {
        assert_eq!(
            api.post(
                &format!("/v1/regions/{r}/drain"),
                Some(json!({"reason": "t"}))
            )
            .0,
            200
        );
    }
    let (status, body) = api.post("/v1/regions/europe1/drain", Some(json!({"reason": "t"})));
    assert_eq!(status, 409, "{body}");
    assert!(
        body["geo_names"]
            .as_array()
            .unwrap()
            .contains(&json!("mgnt.mkcld.io."))
    );
    assert_eq!(
        region_for(&server, "177.0.0.0/8"),
        "europe1",
        "still the one serving"
    );
    let (status, _) = api.post(
        "/v1/regions/europe1/drain?force=true",
        Some(json!({"reason": "t"})),
    );
    assert_eq!(status, 200);
    assert_eq!(
        region_for(&server, "177.0.0.0/8"),
        "sa1",
        "fail open: nearest"
    );
    let (_, m) = api.call("GET", "/metrics", Some(&api.token), None);
    // Both geo names of the test config (mgnt and direct) entered fail-open.
    assert!(m.contains("mgnt_fail_open_total 2"), "{m}");
}

#[test]
fn bad_requests_get_precise_errors_and_change_nothing() {
    let server = Server::start();
    let api = Api::new(&server);
    let cases: [(&str, Option<Value>, u16, &str); 5] = [
        (
            "/v1/regions/mars1/drain",
            Some(json!({"reason": "x"})),
            404,
            "no region",
        ),
        (
            "/v1/regions/europe1/drain",
            Some(json!({"reason": ""})),
            400,
            "reason",
        ),
        (
            "/v1/regions/europe1/drain",
            Some(json!({"reason": "x", "until": "soon"})),
            400,
            "RFC 3339",
        ),
        (
            "/v1/regions/europe1/drain",
            Some(json!({"reason": "x", "until": "2001-01-01T00:00:00Z"})),
            400,
            "past",
        ),
        (
            "/v1/regions/europe1/drain",
            Some(json!({"why": "x"})),
            400,
            "invalid JSON",
        ),
    ];
    for (path, body, want, needle) in cases {
        let (status, got) = api.post(path, body);
        assert_eq!(status, want, "{path}: {got}");
        assert!(got["error"].as_str().unwrap().contains(needle), "{got}");
    }
    let huge = json!({"reason": "x".repeat(20_000)});
    assert_eq!(
        api.post("/v1/regions/europe1/drain", Some(huge)).0,
        413,
        "body limit"
    );
    let (status, got) = api.get("/v1/explain?ip=not-an-ip");
    assert_eq!(status, 400, "{got}");
    assert_eq!(region_for(&server, BELGIUM), "europe1", "nothing drained");
    assert!(
        !server.fixture.path("state/audit.log").exists() || {
            let a = std::fs::read_to_string(server.fixture.path("state/audit.log")).unwrap();
            !a.contains("\"drained\"")
        }
    );
}

#[test]
fn a_drain_with_until_ends_by_itself() {
    let server = Server::start();
    let api = Api::new(&server);
    let until =
        humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(2)).to_string();
    let (status, body) = api.post(
        "/v1/regions/europe1/drain",
        Some(json!({"reason": "short", "until": until})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(region_for(&server, BELGIUM), "us1");
    let start = Instant::now();
    while region_for(&server, BELGIUM) != "europe1" {
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "drain did not expire"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn explain_matches_lookup() {
    let server = Server::start();
    let api = Api::new(&server);
    let (status, v) = api.get("/v1/explain?ecs=81.240.0.0/16");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["location"]["country"], "BE");
    assert_eq!(v["names"][0]["region"], "europe1");
    assert_eq!(v["names"][0]["ecs_scope"], 16);
    let (_, v) = api.get("/v1/explain?ip=177.1.2.3");
    assert_eq!(v["names"][0]["region"], "sa1");
}

#[test]
fn reload_keeps_the_old_data_on_errors_and_swaps_on_success() {
    let server = Server::start();
    let api = Api::new(&server);
    let zone_path = server.fixture.path("zones/mkcld.io.zone");
    let a_of = |server: &Server| {
        addresses(&udp(
            server.v4,
            &query("mgnt.mkcld.io.", RecordType::A, Some(BELGIUM)),
        ))
    };

    std::fs::write(&zone_path, format!("{ZONE}broken IN A 999.1.1.1\n")).unwrap();
    let (status, body) = api.post("/v1/reload", None);
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("mkcld.io.zone:"),
        "{body}"
    );
    assert_eq!(
        a_of(&server),
        ["192.0.2.11".parse::<std::net::IpAddr>().unwrap()]
    );

    std::fs::write(&zone_path, ZONE).unwrap();
    let db = server.fixture.path("test-city.mmdb");
    let good_db = std::fs::read(&db).unwrap();
    // Replace (rename), as the README says databases must be updated.
    let tmp = server.fixture.path("new.mmdb");
    std::fs::write(&tmp, &good_db[..good_db.len() / 2]).unwrap();
    std::fs::rename(&tmp, &db).unwrap();
    let (status, body) = api.post("/v1/reload", None);
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("test-city.mmdb"),
        "{body}"
    );
    assert_eq!(
        region_for(&server, BELGIUM),
        "europe1",
        "old database still answers"
    );

    std::fs::write(&tmp, &good_db).unwrap();
    std::fs::rename(&tmp, &db).unwrap();
    std::fs::write(&zone_path, ZONE.replace("192.0.2.11", "192.0.2.111")).unwrap();
    let (status, body) = api.post("/v1/reload", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        a_of(&server),
        ["192.0.2.111".parse::<std::net::IpAddr>().unwrap()]
    );
    let (_, m) = api.call("GET", "/metrics", Some(&api.token), None);
    assert!(
        m.contains("mgnt_reloads_total 1") && m.contains("mgnt_reload_failures_total 2"),
        "{m}"
    );
}

#[test]
fn reloads_under_load_lose_no_query_and_mix_no_data() {
    let server = Arc::new(Server::start());
    let api = Api::new(&server);
    let zone_path = server.fixture.path("zones/mkcld.io.zone");
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let querier = {
        let (server, stop, answered) = (server.clone(), stop.clone(), answered.clone());
        std::thread::spawn(move || {
            let old: std::net::IpAddr = "192.0.2.11".parse().unwrap();
            let new: std::net::IpAddr = "192.0.2.111".parse().unwrap();
            while !stop.load(Ordering::Relaxed) {
                let q = query("mgnt.mkcld.io.", RecordType::A, Some(BELGIUM));
                let r = udp(server.v4, &q); // panics on a lost query (no reply in 1.5 s)
                let a = addresses(&r);
                assert!(a == [old] || a == [new], "mixed or missing data: {a:?}");
                answered.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for i in 0..10 {
        let zone = if i % 2 == 0 {
            ZONE.replace("192.0.2.11", "192.0.2.111")
        } else {
            ZONE.to_owned()
        };
        std::fs::write(&zone_path, zone).unwrap();
        let (status, body) = api.post("/v1/reload", None);
        assert_eq!(status, 200, "{body}");
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    querier
        .join()
        .expect("every query answered with old or new data");
    assert!(answered.load(Ordering::Relaxed) > 50);
}

#[test]
fn sighup_reloads() {
    let server = Server::start();
    std::fs::write(
        server.fixture.path("zones/mkcld.io.zone"),
        ZONE.replace("192.0.2.11", "192.0.2.112"),
    )
    .unwrap();
    server.signal("HUP");
    let start = Instant::now();
    loop {
        let a = addresses(&udp(
            server.v4,
            &query("mgnt.mkcld.io.", RecordType::A, Some(BELGIUM)),
        ));
        if a == ["192.0.2.112".parse::<std::net::IpAddr>().unwrap()] {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "SIGHUP did not reload"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_count_queries_and_answers() {
    let server = Server::start();
    let api = Api::new(&server);
    for _ in 0..3 {
        region_for(&server, BELGIUM);
    }
    udp(server.v4, &query("nope.mkcld.io.", RecordType::A, None));
    let (status, m) = api.call("GET", "/metrics", Some(&api.token), None);
    assert_eq!(status, 200);
    for needle in [
        "mgnt_dns_queries_total{qtype=\"A\",rcode=\"NOERROR\"} 3",
        "mgnt_dns_queries_total{qtype=\"A\",rcode=\"NXDOMAIN\"} 1",
        "mgnt_geo_answers_total{region=\"europe1\",reason=\"nearest\"} 3",
        "mgnt_region_serving{region=\"us1\"} 1",
        "mgnt_geoip_build_epoch_seconds ",
        "# TYPE mgnt_probe_rtt_seconds histogram",
    ] {
        assert!(m.contains(needle), "{needle} missing:\n{m}");
    }
    let (_, regions) = api.get("/v1/regions");
    let eu = regions["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "europe1")
        .cloned();
    assert_eq!(eu.unwrap()["answers"]["total"], 3);
}

#[test]
fn the_cli_drains_and_undrains_through_the_api() {
    let server = Server::start();
    let run = |args: &[&str]| {
        let out = server.cli(args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, out) = run(&["drain", "europe1", "--reason", "cli test"]);
    assert!(ok, "{out}");
    assert_eq!(region_for(&server, BELGIUM), "us1");
    let (ok, out) = run(&["status"]);
    assert!(ok && out.contains("cli test"), "{out}");
    let (ok, out) = run(&["drain", "mars1", "--reason", "x"]);
    assert!(!ok && out.contains("no region `mars1`"), "{out}");
    let (ok, out) = run(&["undrain", "europe1"]);
    assert!(ok, "{out}");
    assert_eq!(region_for(&server, BELGIUM), "europe1");
}

/// `mgnt status`: a table with one aligned row per region, the drain's
/// reason, who and until when in RFC 3339; `--json` the API's answer.
#[test]
fn status_is_a_table_and_json_on_request() {
    let server = Server::start();
    let ok = |args: &[&str]| {
        let out = server.cli(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {err}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let until = "2099-01-01T00:00:00Z";
    ok(&[
        "drain",
        "europe1",
        "--reason",
        "maintenance",
        "--until",
        until,
    ]);
    ok(&["drain", "us1", "--reason", "fibre cut"]);
    let table = ok(&["status"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(lines[0].starts_with("REGION"), "{table}");
    let column = |line: &str| line.find("unprobed");
    assert!(
        lines[1..].iter().all(|l| column(l) == column(lines[1])),
        "aligned: {table}"
    );
    let row = |name: &str| *lines.iter().find(|l| l.starts_with(name)).unwrap();
    assert!(
        row("europe1").contains(&format!("\"maintenance\" by admin until {until}")),
        "{table}"
    );
    assert!(
        row("us1").contains("\"fibre cut\" by admin, no end"),
        "{table}"
    );
    assert!(row("asia1").contains(" yes "), "{table}");
    let json: Value = serde_json::from_str(&ok(&["status", "--json"])).unwrap();
    let regions = json["regions"].as_array().unwrap();
    let europe1 = regions.iter().find(|r| r["name"] == "europe1").unwrap();
    assert_eq!(
        europe1["drain"]["until"], 4_070_908_800u64,
        "epoch seconds in JSON"
    );
}

/// `mgnt lookup` says why a region is out: drained, by whom, why, until when.
#[test]
fn lookup_shows_the_drain() {
    let server = Server::start();
    let out = server.cli(&["drain", "europe1", "--reason", "maintenance"]);
    assert!(out.status.success());
    let out = server.cli(&["lookup", "81.240.0.0/16"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let europe1 = text
        .lines()
        .find(|l| l.trim_start().starts_with("europe1"))
        .unwrap();
    assert!(
        europe1.contains("not serving: drained \"maintenance\" by admin, no end"),
        "{text}"
    );
}

/// The command line's errors in its own words: the flag, the config key,
/// the command to run; never the HTTP exchange.
#[test]
fn cli_errors_speak_of_flags_keys_and_commands() {
    let server = Server::start();
    let err = |args: &[&str]| {
        let out = server.cli(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    for region in ["us1", "asia1", "sa1"] {
        assert!(
            server
                .cli(&["drain", region, "--reason", "x"])
                .status
                .success()
        );
    }
    let said = err(&["drain", "europe1", "--reason", "x"]);
    assert!(said.contains("use --force to drain it anyway"), "{said}");
    assert!(
        !said.contains("force=true") && !said.contains("409"),
        "{said}"
    );
    std::fs::write(
        server.fixture.path("state/admin.token"),
        "not-the-servers-token-at-all\n",
    )
    .unwrap();
    let said = err(&["status"]);
    assert!(said.contains("the token was refused"), "{said}");
    assert!(said.contains("api.token_file"), "{said}");
}

#[test]
fn the_cli_says_when_no_server_listens() {
    let server = {
        let mut s = Server::start();
        s.cli(&["status"]); // points the config at the bound port
        s.stop();
        s
    };
    let out = server.cli(&["status"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains(&format!(
            "no server at {} (is `mgnt serve` running?",
            server.api
        )),
        "{said}"
    );
}

/// Without the router's version there is no script: the supported ones are listed.
#[test]
fn site_script_without_a_version_lists_the_supported_ones() {
    let f = Fixture::new();
    let out = mgnt()
        .args([
            "site",
            "script",
            "00000000-0000-0000-0000-000000000000",
            "--config",
        ])
        .arg(f.config())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    for needle in ["--version", "6.48", "7.1 or later", "7.8"] {
        assert!(said.contains(needle), "{needle}: {said}");
    }
    assert!(!said.contains("7.99"), "{said}");
}

#[test]
fn curl_drains_as_the_readme_shows() {
    let server = Server::start();
    let token = std::fs::read_to_string(server.fixture.path("state/admin.token")).unwrap();
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
            "-X",
            "POST",
        ])
        .arg(format!("http://{}/v1/regions/europe1/drain", server.api))
        .args(["-d", "{\"reason\":\"maintenance\"}"])
        .output()
        .expect("curl is required (Debian: curl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"drained\":true"));
    assert_eq!(region_for(&server, BELGIUM), "us1");
}

/// The admin API over TLS (what a listener off loopback must use): HTTPS
/// with the configured certificate, nothing in clear, and the command line
/// trusting `tls_ca_file`.
#[test]
fn the_api_speaks_tls_when_configured_and_the_cli_follows() {
    let fixture = Fixture::new();
    certificate(fixture.dir.path(), "api");
    fixture.write_config(&config_text("\"127.0.0.1:0\", \"[::1]:0\"").replace(
        "[api]\nlisten = \"127.0.0.1:0\"\n",
        "[api]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"api.crt\"\ntls_key = \"api.key\"\n\
         tls_ca_file = \"api-ca.crt\"\n",
    ));
    let server = Server::start_with(fixture);
    let (ca, port) = (server.fixture.path("api-ca.crt"), server.api.port());
    let curl = |url: &str, extra: &[&str]| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
                url,
            ])
            .args(extra)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let https = format!("https://localhost:{port}/healthz");
    assert_eq!(curl(&https, &["--cacert", ca.to_str().unwrap()]), "200");
    assert_ne!(curl(&https, &[]), "200", "an unknown CA is not trusted");
    assert_ne!(
        curl(&format!("http://127.0.0.1:{port}/healthz"), &[]),
        "200",
        "nothing in clear"
    );
    let out = server.cli(&["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("europe1"));
}
