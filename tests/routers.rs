//! The router endpoint against the real server, with curl as the router:
//! per-site tokens, pull, results, rotation, TLS, and its limits.

mod common;

use std::{
    io::Read,
    net::{SocketAddr, TcpStream},
    process::Command,
    time::Duration,
};

use common::{curl::*, *};
use serde_json::{Value, json};

const PROVISION: &str =
    "\n[provision]\ndata_dir = \"state\"\npool = \"100.64.0.0/24\"\nauth = \"sha1\"\n";

/// A server with provisioning and a router endpoint (`routers` appended to
/// the `[routers]` table).
fn start(routers: &str) -> Server {
    let fixture = Fixture::new();
    fixture.write_config(
        &(config_text("\"127.0.0.1:0\", \"[::1]:0\"")
            + PROVISION
            + "\n[routers]\nlisten = \"127.0.0.1:0\"\nmin_poll_gap = \"1s\"\n"
            + routers),
    );
    Server::start_logging(fixture)
}

/// A router's poll for its job.
fn poll(base: &str, token: &str, extra: &[&str]) -> Got {
    let url = format!("{base}/router/v1/job?version=7.16");
    let auth = bearer(token);
    let mut args = vec![url.as_str(), "-H", auth.as_str()];
    args.extend_from_slice(extra);
    curl(&args)
}

fn report(base: &str, token: &str, job: &str, body: &Value) -> Got {
    let url = format!("{base}/router/v1/jobs/{job}/result");
    let auth = bearer(token);
    let data = body.to_string();
    curl(&[
        &url,
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "--data",
        &data,
    ])
}

/// Creates a site; its UUID, tunnel secret and router token.
fn create(server: &Server) -> (String, String, String) {
    let (status, body) = server.post("/v1/sites", None);
    assert_eq!(status, 201, "{body}");
    (
        body["site"]["uuid"].as_str().unwrap().to_owned(),
        body["secret"].as_str().unwrap().to_owned(),
        body["router_token"].as_str().unwrap().to_owned(),
    )
}

/// `mgnt auth-verify` as OpenVPN runs it: whether `secret` logs `uuid` in.
fn logs_in(server: &Server, uuid: &str, secret: &str) -> bool {
    let file = server.fixture.path("via-file");
    std::fs::write(&file, format!("{uuid}\n{secret}\n")).unwrap();
    let out = server.cli(&["auth-verify", file.to_str().unwrap()]);
    out.status.code() == Some(0)
}

#[test]
fn a_router_pulls_its_job_reports_it_and_only_its_own() {
    let server = start("");
    let base = format!("http://{}", server.routers.expect("a router endpoint"));
    let (uuid, _, token) = create(&server);
    let (_, _, other_token) = create(&server);

    let got = poll(&base, &token, &[]);
    assert_eq!(got.status, 200, "{}", got.body);
    let job = got.header("x-job-id").expect("X-Job-Id").to_owned();
    assert_eq!(
        got.body.lines().next(),
        Some(format!("# mgnt job {job}").as_str())
    );
    assert!(got.body.contains("/interface ovpn-client"), "{}", got.body);
    assert_eq!(got.header("cache-control"), Some("no-store"));

    // Within min_poll_gap: 429 with Retry-After.
    let again = poll(&base, &token, &[]);
    assert_eq!(
        (again.status, again.header("retry-after")),
        (429, Some("1"))
    );

    // Another router cannot report this job; this one can, idempotently.
    let applied = json!({"status": "applied"});
    assert_eq!(report(&base, &other_token, &job, &applied).status, 404);
    assert_eq!(report(&base, &token, &job, &applied).status, 200);
    assert_eq!(
        report(&base, &token, &job, &applied).status,
        200,
        "idempotent"
    );
    let failed = json!({"status": "failed", "error": "late"});
    assert_eq!(report(&base, &token, &job, &failed).status, 409);

    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(poll(&base, &token, &[]).status, 204, "nothing left to do");
    let (_, j) = server.get(&format!("/v1/jobs/{job}"));
    assert_eq!(
        (&j["job"]["state"], &j["job"]["attempts"]),
        (&json!("applied"), &json!(1)),
        "{j}"
    );
    assert!(j["job"]["finished"].is_u64(), "{j}");
    let (_, site) = server.get(&format!("/v1/sites/{uuid}"));
    assert_eq!(site["site"]["uuid"], json!(uuid));
}

#[test]
fn tokens_do_not_cross_between_the_admin_api_and_the_router_endpoint() {
    let server = start("");
    let base = format!("http://{}", server.routers.unwrap());
    let (_, secret, token) = create(&server);
    for wrong in [server.token(), secret, "x".repeat(48), String::new()] {
        assert_eq!(poll(&base, &wrong, &[]).status, 401, "{wrong}");
    }
    assert_eq!(
        curl(&[&format!("{base}/router/v1/job?version=7.16")]).status,
        401,
        "no token"
    );
    let admin = curl(&[
        &format!("http://{}/v1/regions", server.api),
        "-H",
        &bearer(&token),
    ]);
    assert_eq!(admin.status, 401, "a router token on the admin API");
    let bad = poll(&base, &token, &[]).status;
    assert_eq!(bad, 200);
    std::thread::sleep(Duration::from_millis(1100));
    let url = format!("{base}/router/v1/job");
    assert_eq!(
        curl(&[&url, "-H", &bearer(&token)]).status,
        400,
        "no version"
    );
    let (_, m) = server.get("/metrics");
    let m = m.as_str().unwrap();
    assert!(
        m.contains("mgnt_router_polls_total{result=\"unauthorized\"} 5"),
        "{m}"
    );
    assert!(
        m.contains("mgnt_router_polls_total{result=\"job\"} 1"),
        "{m}"
    );
}

#[test]
fn a_recreate_keeps_the_live_tunnel_until_the_router_applied_it() {
    let server = start("");
    let base = format!("http://{}", server.routers.unwrap());
    let (uuid, old, token) = create(&server);
    let install = poll(&base, &token, &[]);
    let job = install.header("x-job-id").unwrap().to_owned();
    assert_eq!(
        report(&base, &token, &job, &json!({"status": "applied"})).status,
        200
    );

    let (status, body) = server.post(&format!("/v1/sites/{uuid}/recreate"), None);
    assert_eq!(status, 201, "{body}");
    assert!(
        logs_in(&server, &uuid, &old),
        "renegotiating with the old secret still works"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let got = poll(&base, &token, &[]);
    assert_eq!(got.status, 200);
    let recreate = got.header("x-job-id").unwrap().to_owned();
    assert_eq!(recreate, body["job"]["id"].as_str().unwrap());
    let new = got
        .body
        .split("password=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the script sets the new password")
        .to_owned();
    assert_ne!(new, old);
    // Each job makes the live-view user again with a password of its own,
    // which only the router endpoint's copy carries.
    let live = |script: &str| {
        script
            .lines()
            .find(|l| l.starts_with("/user add name=\"mgnt-live\""))
            .and_then(|l| l.split("password=\"").nth(1))
            .and_then(|rest| rest.split('"').next())
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("a live-view user in {script}"))
    };
    let (first, second) = (live(&install.body), live(&got.body));
    assert_ne!(first, second, "a recreate rotates it");
    assert_eq!(first.len(), 48);
    let admin = Command::new("curl")
        .args(["-s", "-H"])
        .arg(format!("Authorization: Bearer {}", server.token()))
        .arg(format!("http://{}/v1/jobs/{recreate}/script", server.api))
        .output()
        .unwrap();
    let admin = String::from_utf8_lossy(&admin.stdout);
    assert!(admin.contains("# mgnt job"), "{admin}");
    assert!(
        !admin.contains("/user "),
        "the admin copy leaves it: {admin}"
    );
    assert!(!admin.contains(&second) && !admin.contains(&first));
    assert!(
        logs_in(&server, &uuid, &new),
        "the new secret works at once"
    );
    assert!(logs_in(&server, &uuid, &old));
    assert_eq!(
        report(&base, &token, &recreate, &json!({"status": "applied"})).status,
        200
    );
    assert!(
        !logs_in(&server, &uuid, &old),
        "applied: the old secret is done"
    );
    assert!(logs_in(&server, &uuid, &new));

    let log = server.log();
    assert!(log.contains("router endpoint"), "the log is read: {log}");
    assert!(
        !log.contains(&first) && !log.contains(&second),
        "never logged"
    );
}

#[test]
fn off_the_plain_path_the_endpoint_speaks_tls_and_reloads_its_certificate() {
    let fixture = Fixture::new();
    certificate(fixture.dir.path(), "one");
    certificate(fixture.dir.path(), "two");
    std::fs::copy(fixture.path("one.crt"), fixture.path("server.crt")).unwrap();
    std::fs::copy(fixture.path("one.key"), fixture.path("server.key")).unwrap();
    fixture.write_config(
        &(config_text("\"127.0.0.1:0\", \"[::1]:0\"")
            + PROVISION
            + "\n[routers]\nlisten = \"127.0.0.1:0\"\npublic_url = \"https://localhost\"\n\
               tls_cert = \"server.crt\"\ntls_key = \"server.key\"\nmin_poll_gap = \"1s\"\n"),
    );
    let server = Server::start_with(fixture);
    let port = server.routers.unwrap().port();
    let base = format!("https://localhost:{port}");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let (_, _, token) = create(&server);
    let ca = |n: &str| {
        server
            .fixture
            .path(&format!("{n}-ca.crt"))
            .display()
            .to_string()
    };
    let got = poll(
        &base,
        &token,
        &["--resolve", &resolve, "--cacert", &ca("one")],
    );
    assert_eq!(got.status, 200, "{}", got.body);
    let plain = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:{port}/router/v1/job"),
        ])
        .output()
        .unwrap();
    assert!(
        !plain.status.success(),
        "plain HTTP on the TLS port gets nothing"
    );

    let url = format!("{base}/router/v1/job?version=7.16");
    let auth = bearer(&token);
    let with_ca = |n: &str| {
        let ca = ca(n);
        try_curl(&[&url, "-H", &auth, "--resolve", &resolve, "--cacert", &ca])
    };
    let other = with_ca("two")
        .err()
        .expect("another CA's client refuses the certificate");
    assert!(other.contains("certificate"), "{other}");

    // New certificate files and SIGHUP: the next handshake presents them.
    for ext in ["crt", "key"] {
        let from = server.fixture.path(&format!("two.{ext}"));
        std::fs::copy(from, server.fixture.path(&format!("server.{ext}"))).unwrap();
    }
    server.signal("HUP");
    let reloaded = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        with_ca("two").is_ok()
    });
    assert!(reloaded, "the new certificate was never presented");
    assert!(with_ca("one").is_err(), "nor the old one any more");
}

/// Whether the peer closed the connection (within 2 s); a read that times
/// out means it is still open.
fn closed_by_peer(mut s: &TcpStream) -> bool {
    use std::io::ErrorKind::{TimedOut, WouldBlock};
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    match s.read(&mut [0u8; 64]) {
        Ok(n) => n == 0,
        Err(e) => !matches!(e.kind(), WouldBlock | TimedOut),
    }
}

#[test]
fn one_source_cannot_hold_every_connection() {
    let server = start("max_connections_per_source = 2\n");
    let addr: SocketAddr = server.routers.unwrap();
    let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let third = TcpStream::connect(addr).unwrap();
    assert!(
        closed_by_peer(&third),
        "a third connection from one source is closed"
    );
    for s in &held {
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1];
        assert!(
            matches!((&*s).read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the first two stay open"
        );
    }
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    let (_, _, token) = create(&server);
    assert_eq!(
        poll(&format!("http://{addr}"), &token, &[]).status,
        200,
        "slots come back"
    );
    let (_, m) = server.get("/metrics");
    let m = m.as_str().unwrap();
    assert!(
        m.contains("mgnt_router_connections_total{result=\"refused_source_cap\"} 1"),
        "{m}"
    );
}

#[test]
fn the_cli_issues_a_bootstrap_line_a_router_can_fetch_once() {
    let server = start("");
    let base = format!("http://{}", server.routers.unwrap());
    let (uuid, _, token) = create(&server);
    let out = server.cli(&["site", "bootstrap", &uuid, "--version", "6.40"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("older than 6.48"), "{err}");

    let out = server.cli(&["site", "bootstrap", &uuid, "--version", "6.49.7"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(line.starts_with("/tool fetch url=\""), "{line}");
    assert!(
        line.ends_with("/import file-name=\"mgnt-bootstrap.rsc\""),
        "{line}"
    );
    // The URL as RouterOS reads it (`\?` is an escaped `?`), on the bound port.
    let url = line["/tool fetch url=\"".len()..]
        .split('"')
        .next()
        .unwrap()
        .replace("\\?", "?")
        .replace("http://127.0.0.1:0", &base);
    let got = curl(&[&url]);
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(got.body.contains("(RouterOS 6.49)"), "{}", got.body);
    assert!(
        !got.body.contains("verify-server-certificate"),
        "v6 has none"
    );
    assert_eq!(curl(&[&url]).status, 404, "spent");
    assert_eq!(
        poll(&base, &token, &[]).status,
        401,
        "the router token was rotated"
    );
    let (status, body) = server.post(&format!("/v1/sites/{uuid}/bootstrap"), None);
    assert_eq!(status, 400, "{body}");
}
