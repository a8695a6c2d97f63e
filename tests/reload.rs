//! Reload against the real server: what waits for a restart is reported
//! against what runs (API, SIGHUP, `mgnt reload`), every reload and every
//! drain that ends at its `until` is in the audit log.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde_json::{Value, json};

/// The audit log's entries.
fn audit(server: &Server) -> Vec<Value> {
    let text = std::fs::read_to_string(server.fixture.path("state/audit.log")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Polls the audit log until `check` accepts it (30 s at most).
fn audit_until(server: &Server, what: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let entries = audit(server);
        if check(&entries) {
            return entries;
        }
        assert!(Instant::now() < deadline, "{what}: {entries:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn reloads(entries: &[Value]) -> Vec<&Value> {
    entries.iter().filter(|e| e["action"] == "reload").collect()
}

fn api_reload(server: &Server) -> Value {
    let (status, body) = server.post("/v1/reload", None);
    assert_eq!(status, 200, "{body}");
    body["report"]["needs_restart"].clone()
}

#[test]
fn needs_restart_is_against_what_runs_and_every_reload_is_audited() {
    let server = Server::start_logging(Fixture::new());
    let running = std::fs::read_to_string(server.fixture.config()).unwrap();
    let both = "listen = [\"127.0.0.1:0\", \"[::1]:0\"]";
    assert!(running.contains(both));
    let moved = running.replacen(both, "listen = [\"127.0.0.1:0\"]", 1);
    server.fixture.write_config(&moved);

    let listen = json!(["dns.listen"]);
    assert_eq!(api_reload(&server), listen);
    assert_eq!(api_reload(&server), listen, "reloaded twice: still");
    server.signal("HUP");
    let entries = audit_until(&server, "the SIGHUP reload", |e| reloads(e).len() == 3);
    let entries = reloads(&entries);
    let by: Vec<&Value> = entries.iter().map(|e| &e["token"]).collect();
    assert_eq!(by, ["admin", "admin", "SIGHUP"]);
    for e in &entries {
        assert_eq!(
            (&e["outcome"], &e["needs_restart"]),
            (&json!("reloaded"), &listen)
        );
        assert_eq!(e["config_hash"].as_str().map(str::len), Some(16), "{e}");
    }
    assert!(
        server
            .log()
            .lines()
            .any(|l| l.contains("reloaded") && l.contains("needs_restart=\"dns.listen\"")),
        "the reload's log line names it: {}",
        server.log()
    );

    server.fixture.write_config(&running);
    assert_eq!(
        api_reload(&server),
        json!([]),
        "restored: nothing to restart for"
    );
    let last = audit(&server).pop().unwrap();
    assert!(last.get("needs_restart").is_none(), "{last}");

    // The command line points api.listen at the bound port: not what runs.
    let out = server.cli(&["reload"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("reloaded: generation 6 "), "{stdout}");
    assert!(stdout.contains("needs a restart: api.listen"), "{stdout}");
}

#[test]
fn a_refused_reload_is_audited_with_its_error() {
    let server = Server::start();
    server.fixture.write_config("[dns");
    let (status, body) = server.post("/v1/reload", None);
    assert_eq!(status, 422, "{body}");
    let entries = audit(&server);
    let outcome = entries[0]["outcome"].as_str().unwrap();
    assert!(outcome.starts_with("failed: "), "{outcome}");
    assert_eq!(entries[0]["token"], "admin");
}

#[test]
fn provisioning_added_by_a_reload_waits_for_a_restart() {
    let server = Server::start();
    let text = std::fs::read_to_string(server.fixture.config()).unwrap();
    let added =
        format!("{text}\n[provision]\npool = \"100.64.0.0/16\"\nconnect_to = \"vpn.example\"\n");
    server.fixture.write_config(&added);
    assert_eq!(api_reload(&server), json!(["provision"]));
    let (status, body) = server.post("/v1/sites", None);
    assert_eq!(status, 404, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("started without a [provision] table"),
        "{error}"
    );
}

#[test]
fn a_drain_ends_at_its_until_and_the_audit_log_says_so() {
    let server = Server::start();
    let until = SystemTime::now() + Duration::from_secs(2);
    let until = humantime::format_rfc3339_seconds(until).to_string();
    let body = json!({"reason": "short", "until": until});
    let (status, got) = server.post("/v1/regions/europe1/drain", Some(body));
    assert_eq!(status, 200, "{got}");
    let entries = audit_until(&server, "the drain's end", |e| {
        e.iter().any(|e| e["action"] == "drain-ended")
    });
    let ended = entries
        .iter()
        .find(|e| e["action"] == "drain-ended")
        .unwrap();
    assert_eq!(
        (&ended["region"], &ended["reason"]),
        (&json!("europe1"), &json!("short"))
    );
    let (_, regions) = server.get("/v1/regions");
    let europe1 = regions
        .as_array()
        .or_else(|| regions["regions"].as_array())
        .unwrap()
        .iter()
        .find(|r| r["name"] == "europe1")
        .unwrap();
    assert!(europe1["drain"].is_null(), "{europe1}");
}
