//! End to end with a real OpenVPN 2.6 server and client: the server is
//! configured only from `mgnt site export`, checks passwords with
//! `mgnt auth-verify`, and a client set up as a RouterOS router is (TCP,
//! AES-256-CBC, the configured auth, no compression, no tls-auth) gets exactly
//! its allocated CGNAT address. Server and client live in network namespaces
//! this test creates. Needs root, `ip`, `openvpn` and `openssl` (CI has them).

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::{curl::*, lab::*, *};
use mgnt::tunnels::routeros::{Version, check::check};
use serde_json::Value;

const SUBNET: &str = "169.254.89";

fn sh(cmd: &str, dir: &Path) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "{cmd}");
}

/// A throwaway PKI: a CA and a server certificate (EC keys, two days).
fn pki(dir: &Path) {
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    sh(
        &format!(
            "openssl req -x509 {ec} -keyout ca.key -out ca.crt -days 2 -subj /CN=mgnt-test-ca 2>/dev/null"
        ),
        dir,
    );
    sh(
        &format!(
            "openssl req {ec} -keyout server.key -out server.csr -subj /CN=mgnt-test-server 2>/dev/null"
        ),
        dir,
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyAgreement\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    sh(
        "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext.cnf 2>/dev/null",
        dir,
    );
}

/// A child process, killed when dropped (also when a test fails half-way).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Runs OpenVPN in `ns`; lines of its output arrive on the returned channel.
fn openvpn(ns: &str, config: &Path) -> (Reaped, mpsc::Receiver<String>) {
    openvpn_logging_to(ns, config, None)
}

/// Like [`openvpn`], and each line is also written to `forward` (a syslog
/// forwarder's input).
fn openvpn_logging_to(
    ns: &str,
    config: &Path,
    mut forward: Option<ChildStdin>,
) -> (Reaped, mpsc::Receiver<String>) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "openvpn", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openvpn");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    // MGNT_OPENVPN_LOG=FILE keeps a copy of everything OpenVPN printed.
    let mut copy = std::env::var_os("MGNT_OPENVPN_LOG").map(|f| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)
            .unwrap()
    });
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(f) = copy.as_mut() {
                let _ = writeln!(f, "{line}");
            }
            if let Some(f) = forward.as_mut() {
                let _ = writeln!(f, "{line}");
            }
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Reaped(child), rx)
}

/// Waits for a line containing one of `wanted`; returns which, or panics with the log.
fn wait_for(rx: &mpsc::Receiver<String>, wanted: &[&str], secs: u64) -> String {
    let mut log = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(w) = wanted.iter().find(|w| line.contains(*w)) {
                    return (*w).to_owned();
                }
                log.push(line);
            }
            Err(_) => break,
        }
    }
    panic!(
        "none of {wanted:?} within {secs} s; output:\n{}",
        log.join("\n")
    );
}

/// A client of the server at `net`.1 (`net`: the lab's first three octets).
fn client_config(dir: &Path, net: &str, name: &str, user: &str, password: &str) -> PathBuf {
    let creds = dir.join(format!("{name}.creds"));
    std::fs::write(&creds, format!("{user}\n{password}\n")).unwrap();
    let path = dir.join(format!("{name}.ovpn"));
    std::fs::write(
        &path,
        format!(
            "client\ndev tun\nproto tcp-client\nremote {net}.1 8443\nnobind\n\
             ca {ca}\nauth-user-pass {creds}\nauth-nocache\nauth-retry none\n\
             data-ciphers AES-256-CBC\ncipher AES-256-CBC\nauth SHA1\n\
             connect-retry-max 1\nverb 3\n",
            ca = dir.join("ca.crt").display(),
            creds = creds.display(),
        ),
    )
    .unwrap();
    path
}

/// Starts a client in `ns`, waits for one of `outcomes`, stops it; returns which.
fn attempt(ns: &str, config: &Path, outcomes: &[&str]) -> String {
    let (mut client, log) = openvpn(ns, config);
    let got = wait_for(&log, outcomes, 30);
    let _ = client.kill();
    let _ = client.wait();
    got
}

fn tun_address(ns: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "-4", "-o", "addr", "show", "dev", "tun0"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the mgnt command line against `server`; its output, or a panic with stderr.
fn cli_ok(server: &Server, args: &[&str]) -> String {
    let out = server.cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A site as `mgnt site create` returned it.
struct Tunnel {
    uuid: String,
    user: String,
    address: String,
    secret: String,
    router_token: String,
}

/// Creates a site and exports the OpenVPN server files for europe1 into
/// `dir/export`; returns the site and that directory.
fn provision(server: &Server, dir: &Path) -> (Tunnel, PathBuf) {
    let tunnel = provision_site(server);
    let export = dir.join("export");
    let to = export.to_str().unwrap();
    cli_ok(server, &["site", "export", to, "--region", "europe1"]);
    (tunnel, export)
}

/// Creates a site with `mgnt site create`.
fn provision_site(server: &Server) -> Tunnel {
    let created: Value = serde_json::from_str(&cli_ok(server, &["site", "create"])).unwrap();
    let field = |v: &Value| v.as_str().unwrap().to_owned();
    Tunnel {
        uuid: field(&created["site"]["uuid"]),
        user: field(&created["site"]["username"]),
        address: field(&created["site"]["address"]),
        secret: field(&created["secret"]),
        router_token: field(&created["router_token"]),
    }
}

/// The OpenVPN server config: listening on `net`.1, the PKI in `dir`, the
/// exported files, and `extra` lines.
fn server_config(dir: &Path, net: &str, export: &Path, extra: &str) -> PathBuf {
    let path = dir.join("server.ovpn");
    std::fs::write(
        &path,
        format!(
            "local {net}.1\nca {d}/ca.crt\ncert {d}/server.crt\nkey {d}/server.key\ndh none\n\
             config {e}/server.conf\nverb 3\n{extra}",
            d = dir.display(),
            e = export.display(),
        ),
    )
    .unwrap();
    path
}

/// Fails unless this machine can run the OpenVPN tests (root, `ip`,
/// `openvpn`, `openssl`).
fn require_tools() {
    require_root(&[
        ("openvpn", "openvpn"),
        ("openssl", "openssl"),
        ("logger", "bsdutils"),
    ]);
}

#[test]
#[ignore = "needs root (network namespaces, OpenVPN); scripts/test runs it as root"]
fn a_routeros_style_client_connects_with_its_tunnel_credentials_only() {
    require_tools();
    // The hook asks the control plane over its loopback: both in the server's namespace.
    let lab = Lab::new("ov", SUBNET);
    let fixture = Fixture::new();
    fixture.write_config(
        &(config_text("\"127.0.0.1:0\", \"[::1]:0\"")
            + "\n[provision]\ndata_dir = \"state\"\npool = \"100.64.0.0/10\"\nauth = \"sha1\"\n"),
    );
    let server = Server::start_in_netns(fixture, &lab.server);
    let dir = server.fixture.path("vpn");
    std::fs::create_dir_all(&dir).unwrap();
    pki(&dir);
    let (t, export) = provision(&server, &dir);

    let server_conf = server_config(&dir, SUBNET, &export, "");
    let (mut vpn_server, server_log) = openvpn(&lab.server, &server_conf);
    wait_for(&server_log, &["Initialization Sequence Completed"], 20);

    // The right secret: connected, holding exactly the allocated address.
    let (mut client, log) = openvpn(
        &lab.region,
        &client_config(&dir, SUBNET, "good", &t.user, &t.secret),
    );
    wait_for(&log, &["Initialization Sequence Completed"], 30);
    assert!(
        tun_address(&lab.region).contains(&format!("inet {}/10", t.address)),
        "{}",
        tun_address(&lab.region)
    );
    let _ = client.kill();
    let _ = client.wait();

    // A wrong secret is refused.
    let outcomes = ["AUTH_FAILED", "Initialization Sequence Completed"];
    let bad = client_config(&dir, SUBNET, "bad", &t.user, "wrong-secret");
    assert_eq!(attempt(&lab.region, &bad, &outcomes), "AUTH_FAILED");

    // After DELETE (and the export that follows) the tunnel can no longer connect.
    cli_ok(&server, &["site", "delete", &t.uuid]);
    cli_ok(&server, &["site", "export", export.to_str().unwrap()]);
    let deleted = client_config(&dir, SUBNET, "deleted", &t.user, &t.secret);
    assert_eq!(attempt(&lab.region, &deleted, &outcomes), "AUTH_FAILED");
    let _ = vpn_server.kill();
    let _ = vpn_server.wait();
}

/// The syslog forwarder of the OpenVPN server: util-linux `logger` reading
/// lines on stdin and sending each as RFC 5424 over TCP (octet-counted), as
/// rsyslog would forward them.
fn syslog_forwarder(ns: &str, to: std::net::SocketAddr) -> Child {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "logger",
            "--tcp",
            "--octet-count",
            "--rfc5424",
        ])
        .args(["-n", &to.ip().to_string(), "-P", &to.port().to_string()])
        .args(["-t", "openvpn"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("util-linux logger")
}

#[test]
#[ignore = "needs root (network namespaces, OpenVPN); scripts/test runs it as root"]
fn a_real_tunnel_is_seen_through_syslog_the_management_interface_and_pings() {
    require_tools();
    const NET: &str = "169.254.93";
    let lab = Lab::new("ol", NET);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let hostname = hostname.trim();
    let fixture = Fixture::new();
    let dir = fixture.path("vpn");
    std::fs::create_dir_all(&dir).unwrap();
    pki(&dir);
    // The management interface asks for a password, as it should on a shared host.
    let password_file = dir.join("management.pw");
    std::fs::write(&password_file, "s3cret-management-pw\n").unwrap();
    fixture.write_config(&(config_text("\"127.0.0.1:0\", \"[::1]:0\"")
        + "\n[provision]\ndata_dir = \"state\"\npool = \"100.64.0.0/10\"\nauth = \"sha1\"\n"
        + &format!(
            "\n[vpnlog]\nlisten = \"127.0.0.1:0\"\npoll_interval = \"1s\"\nlatency_interval = \"1s\"\n\
             latency_pings = 2\nlatency_timeout = \"400ms\"\n\
             [[vpnlog.servers]]\nhost = \"{hostname}\"\nregion = \"europe1\"\naddresses = [\"127.0.0.1\"]\n\
             management = \"127.0.0.1:7505\"\nmanagement_password_file = \"{}\"\n",
            password_file.display()
        )));
    // The service runs beside the OpenVPN server, in its namespace: it reads
    // the management interface there and pings the tunnels through its tun.
    let server = Server::start_in_netns(fixture, &lab.server);
    let (t, export) = provision(&server, &dir);
    let (uuid, address) = (&t.uuid, &t.address);
    let server_conf = server_config(
        &dir,
        NET,
        &export,
        &format!("management 127.0.0.1 7505 {}\n", password_file.display()),
    );
    let mut forwarder = syslog_forwarder(&lab.server, server.syslog.expect("syslog listener"));
    let (mut vpn_server, server_log) =
        openvpn_logging_to(&lab.server, &server_conf, forwarder.stdin.take());
    wait_for(&server_log, &["Initialization Sequence Completed"], 20);

    // A router connects: one open session with its tunnel, source, address and
    // traffic (byte counts come only from the management interface).
    let (mut client, log) = openvpn(
        &lab.region,
        &client_config(&dir, NET, "good", &t.user, &t.secret),
    );
    wait_for(&log, &["Initialization Sequence Completed"], 30);
    let sessions = format!("/v1/tunnels/{uuid}/sessions");
    let body = server.get_until(&sessions, "an open session with traffic", |b| {
        b["sessions"].as_array().is_some_and(|s| {
            s.len() == 1
                && s[0]["bytes_in"].as_u64() > Some(0)
                && s[0]["bytes_out"].as_u64() > Some(0)
                && s[0]["virtual_addr"].is_string()
        })
    });
    let s = &body["sessions"][0];
    assert_eq!(s["tunnel"], uuid.as_str());
    assert_eq!(s["virtual_addr"], address.as_str());
    assert!(
        s["peer"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{NET}.2:")),
        "{s}"
    );
    assert_eq!(
        (&s["host"], &s["region"]),
        (&Value::from(hostname), &Value::from("europe1"))
    );
    assert!(s["end"].is_null(), "{s}");

    // The service pings the tunnel address through the tunnel.
    let latency = format!("/v1/tunnels/{uuid}/latency");
    let body = server.get_until(&latency, "an answered ping", |b| {
        b["samples"]
            .as_array()
            .is_some_and(|s| s.iter().any(|p| p["received"].as_u64() > Some(0)))
    });
    let sample = body["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["received"].as_u64() > Some(0))
        .unwrap();
    assert_eq!(sample["addr"], address.as_str());
    assert!(sample["rtt_ms"]["avg"].as_f64().unwrap() > 0.0, "{sample}");
    let summary = server.get_until("/v1/regions/europe1/summary", "one tunnel connected", |b| {
        b["connected_tunnels"] == 1
    });
    assert!(
        summary["since_start"]["bytes_in"].as_u64() > Some(0),
        "{summary}"
    );
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("mgnt_vpnlog_connected_tunnels{region=\"europe1\"} 1"),
        "{metrics}"
    );

    // The router goes away: the session closes with a reason, and the counts stay.
    // SAFETY: sending SIGTERM to our own child process.
    unsafe { libc::kill(client.id() as i32, libc::SIGTERM) };
    let _ = client.wait();
    let body = server.get_until(&sessions, "the session closed", |b| {
        !b["sessions"][0]["end"].is_null()
    });
    let s = &body["sessions"][0];
    assert!(!s["end_reason"].as_str().unwrap_or("").is_empty(), "{s}");
    assert!(s["bytes_in"].as_u64() > Some(0), "{s}");
    assert_eq!(body["sessions"].as_array().unwrap().len(), 1, "{body}");

    // A wrong secret is refused and recorded as a failure from the router's address.
    let outcomes = ["AUTH_FAILED", "Initialization Sequence Completed"];
    let bad = client_config(&dir, NET, "bad", &t.user, "wrong-secret");
    assert_eq!(attempt(&lab.region, &bad, &outcomes), "AUTH_FAILED");
    server.get_until(
        "/v1/auth-attempts?result=failure",
        "a failed attempt",
        |b| {
            b["attempts"].as_array().is_some_and(|a| {
                a.iter().any(|x| {
                    x["ok"] == false
                        && x["peer"]
                            .as_str()
                            .is_some_and(|p| p.starts_with(&format!("{NET}.2:")))
                        && x["region"] == "europe1"
                })
            })
        },
    );
    let summary = server.get_until("/v1/regions/europe1/summary", "the failure counted", |b| {
        b["stored"]["auth_failures"].as_u64() >= Some(1) && b["connected_tunnels"] == 0
    });
    assert!(
        summary["stored"]["auth_successes"].as_u64() >= Some(1),
        "{summary}"
    );
    let _ = vpn_server.kill();
    let _ = vpn_server.wait();
    let _ = forwarder.kill();
    let _ = forwarder.wait();
}

/// What follows `start` in `text`, up to (not including) `end`.
fn between<'a>(text: &'a str, start: &str, end: char) -> &'a str {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("no `{start}` in\n{text}"))
        + start.len();
    let len = text[from..].find(end).unwrap();
    &text[from..from + len]
}

/// Whether a client with `secret` gets through to `address`.
fn connects(lab: &Lab, dir: &Path, t: &Tunnel, name: &str, secret: &str) -> bool {
    let outcomes = ["AUTH_FAILED", "Initialization Sequence Completed"];
    let config = client_config(dir, ROUTER_NET, name, &t.user, secret);
    let (mut client, log) = openvpn(&lab.region, &config);
    let got = wait_for(&log, &outcomes, 30);
    let ok = got == outcomes[1];
    if ok {
        let tun = tun_address(&lab.region);
        assert!(tun.contains(&format!("inet {}/10", t.address)), "{tun}");
    }
    let _ = client.kill();
    let _ = client.wait();
    ok
}

const ROUTER_NET: &str = "169.254.94";

/// The router's side of the product, with curl and an OpenVPN client in the
/// router's place: the site is created and its first job applied; the portal
/// issues a bootstrap; the router fetches it with the one-time token (a new
/// router token, a new secret, the CA pinned by fingerprint), reports the job
/// and polls; the old secret works until that report and is refused after.
#[test]
#[ignore = "needs root (network namespaces, OpenVPN); scripts/test runs it as root"]
fn a_router_bootstraps_reports_and_its_old_secret_ends_only_then() {
    require_tools();
    let fixture = Fixture::new();
    let dir = fixture.path("vpn");
    std::fs::create_dir_all(&dir).unwrap();
    pki(&dir);
    fixture.write_config(
        &(config_text("\"127.0.0.1:0\", \"[::1]:0\"")
            + "\n[provision]\ndata_dir = \"state\"\npool = \"100.64.0.0/10\"\nauth = \"sha1\"\n\
               ca_file = \"vpn/ca.crt\"\nmanagement_networks = [\"10.20.0.0/16\"]\n\
               [routers]\nlisten = \"127.0.0.1:0\"\nmin_poll_gap = \"1s\"\n"),
    );
    let lab = Lab::new("ob", ROUTER_NET);
    let server = Server::start_in_netns(fixture, &lab.server);
    let base = format!("http://{}", server.routers.expect("a router endpoint"));
    let (t, export) = provision(&server, &dir);
    let poll = |token: &str| {
        let url = format!("{base}/router/v1/job?version=7.16.2%20(stable)");
        curl_in(&lab.server, &[&url, "-H", &bearer(token)])
    };
    let report = |token: &str, job: &str| {
        let url = format!("{base}/router/v1/jobs/{job}/result");
        let auth = bearer(token);
        curl_in(
            &lab.server,
            &[&url, "-H", &auth, "--data", r#"{"status":"applied"}"#],
        )
        .status
    };
    // The first job reaches the router and is applied.
    let first = poll(&t.router_token);
    assert_eq!(first.status, 200, "{}", first.body);
    let job = first.header("x-job-id").unwrap().to_owned();
    assert_eq!(report(&t.router_token, &job), 200);

    let (mut vpn_server, server_log) =
        openvpn(&lab.server, &server_config(&dir, ROUTER_NET, &export, ""));
    wait_for(&server_log, &["Initialization Sequence Completed"], 20);
    assert!(connects(&lab, &dir, &t, "first", &t.secret));

    // The portal asks for a bootstrap; the router runs the one-liner.
    let (status, issued) = server.post(
        &format!("/v1/sites/{}/bootstrap?version=7.16", t.uuid),
        None,
    );
    assert_eq!(status, 201, "{issued}");
    // public_url defaults to `listen` (port 0 here); the router uses the bound port.
    let url = &issued["url"]
        .as_str()
        .unwrap()
        .replace("http://127.0.0.1:0", &base);
    let command = issued["command"].as_str().unwrap();
    assert!(
        command.starts_with("/tool fetch url=") && command.contains("/import file-name="),
        "{command}"
    );
    let got = curl_in(&lab.server, &[url.as_str()]);
    assert_eq!(got.status, 200, "{}", got.body);
    let job = got.header("x-job-id").unwrap().to_owned();
    let script = got.body;
    assert_eq!(
        script.lines().next(),
        Some(format!("# mgnt job {job}").as_str())
    );
    let findings = check(&script, Version::parse("7.16").unwrap());
    assert!(findings.is_empty(), "{findings:#?}");
    assert_eq!(
        curl_in(&lab.server, &[url.as_str()]).status,
        404,
        "a bootstrap token works once"
    );
    let token = between(&script, "Authorization: Bearer ", '\\').to_owned();
    let secret = between(&script, "password=\"", '"').to_owned();
    assert_ne!(secret, t.secret);
    assert_eq!(
        poll(&t.router_token).status,
        401,
        "the old router token ended"
    );

    // The CA the script downloads is the one it pins.
    let ca = curl_in(&lab.server, &[&format!("{base}/router/v1/ca.pem")]);
    assert_eq!(ca.status, 200);
    std::fs::write(dir.join("served-ca.pem"), &ca.body).unwrap();
    let digest = Command::new("sh")
        .arg("-c")
        .arg("openssl x509 -in served-ca.pem -outform DER | sha256sum")
        .current_dir(&dir)
        .output()
        .unwrap();
    let digest = String::from_utf8_lossy(&digest.stdout);
    let pinned = between(&script, "fingerprint=\"", '"');
    assert!(
        digest.starts_with(pinned) && pinned.len() == 64,
        "{digest} vs {pinned}"
    );

    // Until the router reports the job, both secrets work: no lockout.
    assert!(connects(&lab, &dir, &t, "old-in-grace", &t.secret));
    assert!(connects(&lab, &dir, &t, "new", &secret));
    // The poller reports the bootstrap job, then polls: nothing more to do.
    assert_eq!(report(&token, &job), 200);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(poll(&token).status, 204);
    let (_, j) = server.get(&format!("/v1/jobs/{job}"));
    assert_eq!(j["job"]["state"], "applied", "{j}");
    // Now only the new secret works.
    assert!(!connects(&lab, &dir, &t, "old-after", &t.secret));
    assert!(connects(&lab, &dir, &t, "new-after", &secret));

    // A recreate reaches the router by its poll, and rotates once more.
    let (status, _) = server.post(&format!("/v1/sites/{}/recreate", t.uuid), None);
    assert_eq!(status, 201);
    std::thread::sleep(Duration::from_millis(1100));
    let next = poll(&token);
    assert_eq!(next.status, 200, "{}", next.body);
    assert!(check(&next.body, Version::parse("7.16").unwrap()).is_empty());
    let newer = between(&next.body, "password=\"", '"').to_owned();
    assert_eq!(report(&token, next.header("x-job-id").unwrap()), 200);
    assert!(!connects(&lab, &dir, &t, "bootstrap-secret-after", &secret));
    assert!(connects(&lab, &dir, &t, "recreated", &newer));
    let _ = vpn_server.kill();
    let _ = vpn_server.wait();
}

/// `mgnt agent` in `ns` with `config`; its log lines arrive on the channel.
fn agent(ns: &str, config: &Path) -> (Reaped, mpsc::Receiver<String>) {
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            env!("CARGO_BIN_EXE_mgnt"),
            "agent",
            "--config",
        ])
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mgnt agent");
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Reaped(child), rx)
}

/// An OpenVPN server whose logins are answered over its management
/// interface (`--management-client-auth`): no verify script, no ccd files.
fn client_auth_server_config(
    dir: &Path,
    net: &str,
    management: &str,
    password_file: &Path,
) -> PathBuf {
    let path = dir.join("server-agent.ovpn");
    std::fs::write(
        &path,
        format!(
            "local {net}.1\nport 8443\nproto tcp-server\ndev tun\nmode server\ntls-server\n\
             topology subnet\nifconfig 100.64.0.1 255.192.0.0\npush \"topology subnet\"\n\
             push \"route-gateway 100.64.0.1\"\ndata-ciphers AES-256-CBC\n\
             data-ciphers-fallback AES-256-CBC\nauth SHA1\nusername-as-common-name\n\
             verify-client-cert none\nkeepalive 10 60\n\
             ca {d}/ca.crt\ncert {d}/server.crt\nkey {d}/server.key\ndh none\n\
             management {management} {pw}\nmanagement-client-auth\nverb 3\n",
            d = dir.display(),
            pw = password_file.display(),
        ),
    )
    .unwrap();
    path
}

const AGENT_TOKEN: &str = "agent-token-for-vpn1-0123456789";

/// A control plane with an agent token in namespace `ns`, `sites` sites, an
/// OpenVPN server answering logins over its management interface (listening
/// on `net`.1) and the agent's file (not started).
struct AgentLab {
    server: Server,
    dir: PathBuf,
    sites: Vec<Tunnel>,
    agent_conf: PathBuf,
    vpn_server: (Reaped, mpsc::Receiver<String>),
}

impl AgentLab {
    fn start(ns: &str, net: &str, provision: &str, sites: usize) -> Self {
        let fixture = Fixture::new();
        let dir = fixture.path("vpn");
        std::fs::create_dir_all(&dir).unwrap();
        pki(&dir);
        std::fs::write(
            fixture.path("agents.token"),
            format!("vpn1:{AGENT_TOKEN}\n"),
        )
        .unwrap();
        // A fixed API port (the namespace is the test's own): the agent
        // finds the control plane again after a restart.
        let config = config_text("\"127.0.0.1:0\", \"[::1]:0\"").replace(
            "[api]\nlisten = \"127.0.0.1:0\"\n",
            "[api]\nlisten = \"127.0.0.1:18053\"\nagent_token_file = \"agents.token\"\n",
        ) + "\n[provision]\ndata_dir = \"state\"\npool = \"100.64.0.0/10\"\nauth = \"sha1\"\n"
            + provision
            // Not `127.0.0.1:0`: the CLI helper points that at the API's port.
            + "\n[vpnlog]\nlisten = \"127.0.0.1:15514\"\n[[vpnlog.servers]]\nhost = \"vpn1\"\nregion = \"europe1\"\n";
        fixture.write_config(&config);
        let server = Server::start_in_netns(fixture, ns);
        let sites = (0..sites).map(|_| provision_site(&server)).collect();
        let password_file = dir.join("management.pw");
        std::fs::write(&password_file, "management-pw-0123\n").unwrap();
        let conf = client_auth_server_config(&dir, net, "127.0.0.1 7506", &password_file);
        let (vpn, log) = openvpn(ns, &conf);
        wait_for(&log, &["Initialization Sequence Completed"], 20);
        let token_file = dir.join("agent.token");
        std::fs::write(&token_file, format!("{AGENT_TOKEN}\n")).unwrap();
        let agent_conf = dir.join("agent.toml");
        std::fs::write(
            &agent_conf,
            format!(
                "[agent]\nmanagement = \"127.0.0.1:7506\"\nmanagement_password_file = \"{}\"\n\
                 control = \"http://{}\"\ntoken_file = \"{}\"\ncache_dir = \"{}\"\n\
                 openvpn_config = \"{}\"\nlatency_interval = \"1s\"\n",
                password_file.display(),
                server.api,
                token_file.display(),
                dir.join("agent-cache").display(),
                conf.display(),
            ),
        )
        .unwrap();
        Self {
            server,
            dir,
            sites,
            agent_conf,
            vpn_server: (vpn, log),
        }
    }
}

/// The agent beside a real OpenVPN server: logins answered from the control
/// plane's credentials, a deleted tunnel's live session ended, and logins
/// still answered with the control plane stopped and the agent restarted.
#[test]
#[ignore = "needs root (network namespaces, OpenVPN); scripts/test runs it as root"]
fn the_agent_answers_logins_and_keeps_answering_with_the_control_plane_away() {
    require_tools();
    const NET: &str = "169.254.95";
    let lab = Lab::new("oa", NET);
    let AgentLab {
        mut server,
        dir,
        sites,
        agent_conf,
        vpn_server: (mut vpn_server, _server_log),
    } = AgentLab::start(&lab.server, NET, "", 2);
    let [a, b] = <[Tunnel; 2]>::try_from(sites).ok().unwrap();

    // Agent routes take agent tokens only, and admin routes refuse them.
    let (status, _) = server.get("/agent/v1/credentials");
    assert_eq!(status, 401, "an admin token on an agent route");
    let with_agent_token = |path: &str| {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.server,
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .arg(format!("http://{}{path}", server.api))
            .args(["-H", &format!("Authorization: Bearer {AGENT_TOKEN}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        with_agent_token("/v1/regions"),
        "401",
        "an agent token on an admin route"
    );
    assert_eq!(with_agent_token("/agent/v1/credentials"), "200");

    let (mut agent1, agent_log) = agent(&lab.server, &agent_conf);
    wait_for(&agent_log, &["credentials read in full"], 20);

    // The right secret: exactly the site's address, pushed by the agent.
    let (mut client_a, log_a) = openvpn(
        &lab.region,
        &client_config(&dir, NET, "a", &a.user, &a.secret),
    );
    wait_for(&log_a, &["Initialization Sequence Completed"], 30);
    let tun = tun_address(&lab.region);
    assert!(tun.contains(&format!("inet {}/10", a.address)), "{tun}");
    // The agent reports the session under its server's name and region.
    let sessions_a = format!("/v1/tunnels/{}/sessions", a.uuid);
    let body = server.get_until(&sessions_a, "the agent's report of A's session", |b| {
        b["sessions"].as_array().is_some_and(|s| s.len() == 1)
    });
    let s = &body["sessions"][0];
    assert_eq!(
        (&s["host"], &s["region"]),
        (&Value::from("vpn1"), &Value::from("europe1")),
        "{s}"
    );
    assert_eq!(s["virtual_addr"], a.address.as_str(), "{s}");
    assert!(s["end"].is_null(), "{s}");
    // The agent pings the tunnel where its address routes, and reports the round.
    server.get_until(
        &format!("/v1/tunnels/{}/latency", a.uuid),
        "a latency round from the agent",
        |b| {
            b["samples"].as_array().is_some_and(|s| {
                s.iter().any(|x| {
                    x["host"] == "vpn1"
                        && x["received"].as_u64() > Some(0)
                        && x["rtt_ms"]["avg"].is_number()
                })
            })
        },
    );
    // A wrong secret is refused.
    let outcomes = ["AUTH_FAILED", "Initialization Sequence Completed"];
    let wrong = client_config(&dir, NET, "wrong", &b.user, "wrong-secret");
    assert_eq!(attempt(&lab.region, &wrong, &outcomes), "AUTH_FAILED");

    // A rotation: the applied secret works until the new one is applied, then only the new.
    let job_of = |script: &str| script.lines().next().unwrap()["# mgnt job ".len()..].to_owned();
    let install = cli_ok(&server, &["site", "script", &b.uuid, "--version", "7"]);
    let (status, _) = server.post(&format!("/v1/jobs/{}/applied", job_of(&install)), None);
    assert_eq!(status, 200);
    cli_ok(&server, &["site", "recreate", &b.uuid]);
    let script = cli_ok(&server, &["site", "script", &b.uuid, "--version", "7"]);
    let rotated = between(&script, "password=\"", '"').to_owned();
    let new_b = client_config(&dir, NET, "b-new", &b.user, &rotated);
    let old_b = client_config(&dir, NET, "b-old", &b.user, &b.secret);
    let until = |config: &Path, want: &str| {
        // The agent learns of a change by its long poll: give it a few tries.
        (0..10).any(|_| attempt(&lab.region, config, &outcomes) == want)
    };
    assert!(until(&new_b, outcomes[1]), "the new secret works");
    assert_eq!(
        attempt(&lab.region, &old_b, &outcomes),
        outcomes[1],
        "the old one in its grace"
    );
    let (status, _) = server.post(&format!("/v1/jobs/{}/applied", job_of(&script)), None);
    assert_eq!(status, 200);
    assert!(
        until(&old_b, "AUTH_FAILED"),
        "the old secret ends when the new one is applied"
    );
    assert_eq!(attempt(&lab.region, &new_b, &outcomes), outcomes[1]);
    let b = Tunnel {
        secret: rotated,
        ..b
    };

    // Deleting a site ends its live session; it cannot come back.
    cli_ok(&server, &["site", "delete", &a.uuid]);
    wait_for(&log_a, &["AUTH_FAILED"], 30);
    let _ = client_a.kill();
    let _ = client_a.wait();
    server.get_until(&sessions_a, "A's session closed", |b| {
        b["sessions"][0]["end_reason"] == "disconnect"
    });

    // The control plane stops, the agent restarts: logins still work, from the cache.
    server.stop();
    let _ = agent1.kill();
    let _ = agent1.wait();
    let (mut agent2, agent_log) = agent(&lab.server, &agent_conf);
    wait_for(&agent_log, &["answering OpenVPN logins"], 20);
    let good_b = client_config(&dir, NET, "b", &b.user, &b.secret);
    assert_eq!(attempt(&lab.region, &good_b, &outcomes), outcomes[1]);
    let deleted = client_config(&dir, NET, "a-again", &a.user, &a.secret);
    assert_eq!(attempt(&lab.region, &deleted, &outcomes), "AUTH_FAILED");
    // What happened meanwhile waits in the agent's spool, across one more
    // agent restart; the control plane gets it when it is back.
    let away = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let spool = dir.join("agent-cache/reports.jsonl");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&spool).map_or(0, |t| t.lines().count()) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing spooled in {}",
            spool.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = agent2.kill();
    let _ = agent2.wait();
    let (mut agent2, agent_log) = agent(&lab.server, &agent_conf);
    wait_for(&agent_log, &["reports kept from before a restart"], 20);
    server.restart();
    let sessions_b = format!("/v1/tunnels/{}/sessions", b.uuid);
    server.get_until(
        &sessions_b,
        "B's session from while the control plane was away",
        |body| {
            body["sessions"].as_array().is_some_and(|s| {
                s.iter().any(|s| {
                    s["start"].as_u64() >= Some(away - 60) && s["end_reason"] == "disconnect"
                })
            })
        },
    );
    server.get_until(
        &format!("/v1/auth-attempts?result=failure&since={}", away - 60),
        "the refused login",
        |body| {
            body["attempts"].as_array().is_some_and(|a| {
                a.iter().any(|x| {
                    x["ok"] == false
                        && x["region"] == "europe1"
                        && x["peer"]
                            .as_str()
                            .is_some_and(|p| p.starts_with(&format!("{NET}.2:")))
                })
            })
        },
    );
    let _ = agent2.kill();
    let _ = agent2.wait();
    let _ = vpn_server.kill();
    let _ = vpn_server.wait();
}

/// The value of `series` (name and labels, as written) in a scrape.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Scrapes `url` in `ns` until `ok` holds (60 s at most); the last scrape.
fn scrape_until(ns: &str, url: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = try_curl_in(Some(ns), &[url]);
        if let Ok(g) = &got
            && g.status == 200
            && ok(&g.body)
        {
            return g.body.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 60 s; last scrape: {}",
            got.map_or_else(|e| e, |g| g.body)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sends `signal` (`STOP`, `CONT`) to a process.
fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
}

/// The agent's metrics: a login counted, and an OpenVPN server that stops
/// answering (SIGSTOP: its kernel still holds and even accepts management
/// connections) noticed within `management_timeout`, counted as a silent
/// reconnect, and answering again once it continues.
#[test]
#[ignore = "needs root (network namespaces, OpenVPN); scripts/test runs it as root"]
fn the_agent_counts_logins_and_notices_a_management_interface_gone_silent() {
    require_tools();
    const NET: &str = "169.254.97";
    let lab = Lab::new("om", NET);
    let AgentLab {
        server: _server,
        dir,
        sites,
        agent_conf,
        vpn_server: (mut vpn_server, _server_log),
    } = AgentLab::start(&lab.server, NET, "", 1);
    let mut conf = std::fs::read_to_string(&agent_conf).unwrap();
    conf.push_str("metrics = \"127.0.0.1:19105\"\nmanagement_timeout = \"3s\"\n");
    std::fs::write(&agent_conf, conf).unwrap();
    let (mut agent1, agent_log) = agent(&lab.server, &agent_conf);
    wait_for(&agent_log, &["credentials read in full"], 20);
    let url = "http://127.0.0.1:19105/metrics";
    let has = |m: &str, series: &str, want: f64| sample(m, series) == Some(want);

    let t = &sites[0];
    let (mut client, log) = openvpn(
        &lab.region,
        &client_config(&dir, NET, "m", &t.user, &t.secret),
    );
    wait_for(&log, &["Initialization Sequence Completed"], 30);
    let m = scrape_until(&lab.server, url, "the login counted", |m| {
        has(m, "mgnt_agent_logins_total{result=\"allowed\"}", 1.0)
            && has(m, "mgnt_agent_sessions_live", 1.0)
    });
    assert_eq!(
        sample(&m, "mgnt_agent_logins_total{result=\"denied\"}"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(sample(&m, "mgnt_agent_management_up"), Some(1.0), "{m}");
    assert_eq!(
        sample(&m, "mgnt_agent_credential_tunnels"),
        Some(1.0),
        "{m}"
    );
    assert!(
        sample(&m, "mgnt_agent_last_sync_timestamp_seconds").is_some_and(|t| t > 1.6e9),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "mgnt_agent_management_reconnects_total{reason=\"silent\"}"
        ),
        Some(0.0),
        "{m}"
    );

    // `ip netns exec` runs OpenVPN in its own place: the child is OpenVPN.
    let pid = vpn_server.id();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "openvpn");
    signal(pid, "STOP");
    scrape_until(&lab.server, url, "a silent reconnect", |m| {
        sample(
            m,
            "mgnt_agent_management_reconnects_total{reason=\"silent\"}",
        )
        .is_some_and(|n| n >= 1.0)
            && has(m, "mgnt_agent_management_up", 0.0)
    });
    signal(pid, "CONT");
    scrape_until(&lab.server, url, "the interface answering again", |m| {
        has(m, "mgnt_agent_management_up", 1.0)
    });

    let _ = client.kill();
    let _ = client.wait();
    let _ = agent1.kill();
    let _ = agent1.wait();
    let _ = vpn_server.kill();
    let _ = vpn_server.wait();
}

/// An agent started again learns the sessions opened before from OpenVPN's
/// client list: it counts and pings them, leaves those of known tunnels
/// alone, and ends the session of a site deleted afterwards.
#[test]
#[ignore = "needs root (network namespaces, OpenVPN); scripts/test runs it as root"]
fn an_agent_started_again_follows_the_sessions_opened_before_and_ends_a_deleted_sites() {
    require_tools();
    const NET: &str = "169.254.98";
    let lab = Lab::new("or", NET);
    let AgentLab {
        server,
        dir,
        sites,
        agent_conf,
        vpn_server: (mut vpn_server, _server_log),
    } = AgentLab::start(&lab.server, NET, "", 1);
    let mut conf = std::fs::read_to_string(&agent_conf).unwrap();
    conf.push_str("metrics = \"127.0.0.1:19106\"\n");
    std::fs::write(&agent_conf, conf).unwrap();
    let url = "http://127.0.0.1:19106/metrics";
    let has = |m: &str, series: &str, want: f64| sample(m, series) == Some(want);
    let (mut agent1, agent_log) = agent(&lab.server, &agent_conf);
    wait_for(&agent_log, &["credentials read in full"], 20);

    // The client logs in by the site's UUID: the list names it so, too.
    let t = &sites[0];
    let (mut client, log) = openvpn(
        &lab.region,
        &client_config(&dir, NET, "r", &t.uuid, &t.secret),
    );
    wait_for(&log, &["Initialization Sequence Completed"], 30);
    scrape_until(&lab.server, url, "the session live", |m| {
        has(m, "mgnt_agent_sessions_live", 1.0)
    });

    // A new agent heard none of the notifications about that session.
    let _ = agent1.kill();
    let _ = agent1.wait();
    let (mut agent2, agent_log) = agent(&lab.server, &agent_conf);
    wait_for(&agent_log, &["sessions from OpenVPN's client list"], 30);
    let m = scrape_until(
        &lab.server,
        url,
        "the listed session live and pinged",
        |m| {
            has(m, "mgnt_agent_sessions_live", 1.0)
                && sample(m, "mgnt_agent_latency_rounds_total").is_some_and(|n| n >= 1.0)
        },
    );
    assert_eq!(
        sample(&m, "mgnt_agent_sessions_killed_total"),
        Some(0.0),
        "{m}"
    );
    // A known tunnel's session was left alone.
    while let Ok(line) = log.try_recv() {
        assert!(
            !line.contains("restarting"),
            "the session was ended: {line}"
        );
    }

    cli_ok(&server, &["site", "delete", &t.uuid]);
    wait_for(&log, &["AUTH_FAILED"], 60);
    scrape_until(&lab.server, url, "the deleted site's session ended", |m| {
        has(m, "mgnt_agent_sessions_killed_total", 1.0) && has(m, "mgnt_agent_sessions_live", 0.0)
    });

    let _ = client.kill();
    let _ = client.wait();
    let _ = agent2.kill();
    let _ = agent2.wait();
    let _ = vpn_server.kill();
    let _ = vpn_server.wait();
}

/// Whether `ns` gets an answer to a ping of `addr` (three tries).
fn pings(ns: &str, addr: &str) -> bool {
    Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", addr,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Isolation on the server: with IP forwarding on (the management network
/// behind the server needs it), the agent's rules keep router A from
/// reaching router B while the management network reaches both; without
/// them A reaches B, so the test sees the difference; `--print-rules` gives
/// the same rules to load by hand.
#[test]
#[ignore = "needs root (network namespaces, OpenVPN, nftables); scripts/test runs it as root"]
fn tunnels_cannot_reach_each_other_while_the_management_network_reaches_both() {
    require_root(&[
        ("openvpn", "openvpn"),
        ("openssl", "openssl"),
        ("nft", "nftables"),
        ("ping", "iputils-ping"),
    ]);
    const BASE: &str = "169.254.96";
    let star = Star::new("oi", BASE, 3);
    let (hub, a_ns, b_ns, mgmt) = (&star.hub, &star.leaves[0], &star.leaves[1], &star.leaves[2]);
    let mgmt_net = format!("{BASE}.8/30");
    let lab = AgentLab::start(
        hub,
        BASE,
        &format!("management_networks = [\"{mgmt_net}\"]\n"),
        2,
    );
    let (dir, sites) = (&lab.dir, &lab.sites);
    ip(&[
        "netns",
        "exec",
        hub,
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ip_forward=1",
    ]);
    // B reaches the server's address through the hub; the management host
    // reaches the tunnels through it.
    ip(&[
        "-n",
        b_ns,
        "route",
        "add",
        &format!("{BASE}.0/30"),
        "via",
        &star.hub_addr(1),
    ]);
    ip(&[
        "-n",
        mgmt,
        "route",
        "add",
        "100.64.0.0/10",
        "via",
        &star.hub_addr(2),
    ]);

    let (mut agent1, agent_log) = agent(hub, &lab.agent_conf);
    wait_for(&agent_log, &["firewall rules installed"], 20);
    wait_for(&agent_log, &["credentials read in full"], 20);
    let mut clients = Vec::new();
    for (i, (ns, t)) in [(a_ns, &sites[0]), (b_ns, &sites[1])]
        .into_iter()
        .enumerate()
    {
        let config = client_config(dir, BASE, &format!("r{i}"), &t.user, &t.secret);
        let (client, log) = openvpn(ns, &config);
        wait_for(&log, &["Initialization Sequence Completed"], 30);
        ip(&["-n", ns, "route", "add", &mgmt_net, "dev", "tun0"]);
        clients.push(client);
    }
    let (a, b) = (&sites[0].address, &sites[1].address);
    assert!(
        pings(mgmt, a) && pings(mgmt, b),
        "the management network reaches both"
    );
    assert!(!pings(a_ns, b), "router A must not reach router B");
    assert!(!pings(b_ns, a), "nor B reach A");

    // Without the rules A reaches B: the test can tell.
    ip(&[
        "netns", "exec", hub, "nft", "delete", "table", "inet", "mgnt",
    ]);
    assert!(pings(a_ns, b), "forwarding works without the rules");
    // The printed rules, loaded by hand, isolate again.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            hub,
            env!("CARGO_BIN_EXE_mgnt"),
            "agent",
            "--print-rules",
            "--config",
        ])
        .arg(&lab.agent_conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = dir.join("printed.nft");
    std::fs::write(&rules, &out.stdout).unwrap();
    ip(&["netns", "exec", hub, "nft", "-f", rules.to_str().unwrap()]);
    assert!(!pings(a_ns, b), "isolated again");
    assert!(pings(mgmt, a));

    for mut c in clients {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = agent1.kill();
    let _ = agent1.wait();
    let (mut vpn, _) = lab.vpn_server;
    let _ = vpn.kill();
    let _ = vpn.wait();
}

/// The live view through the agent: the router's tunnel is up on a real
/// OpenVPN server, its RouterOS API stand-in listens on the tunnel address
/// in the router's namespace, and the control plane reaches it by asking
/// the agent holding the session to open it and pipe the bytes (the agent
/// passes on only allowlisted sentences). A reboot goes the same way and is
/// confirmed over a new pipe.
#[test]
#[ignore = "needs root (network namespaces, OpenVPN); scripts/test runs it as root"]
fn the_agent_holding_the_tunnel_relays_the_routers_api() {
    use common::routeros::{Config, RouterOs};
    require_tools();
    const NET: &str = "169.254.91";
    const API_PORT: u16 = 18728;
    let lab = Lab::new("lr", NET);
    let live = format!(
        "\n[routers]\nlisten = \"127.0.0.1:0\"\nmin_poll_gap = \"1s\"\n\
         \n[live]\napi_port = {API_PORT}\nlinger = \"1s\"\nreboot_timeout = \"30s\"\n"
    );
    let AgentLab {
        server,
        dir,
        sites,
        agent_conf,
        vpn_server: (_vpn, _vpn_log),
    } = AgentLab::start(&lab.server, NET, &live, 1);
    let site = &sites[0];

    // The live-view password, from the job as the router fetches it.
    let job = curl_in(
        &lab.server,
        &[
            &format!(
                "http://{}/router/v1/job?version=7.16",
                server.routers.unwrap()
            ),
            "-H",
            &bearer(&site.router_token),
        ],
    );
    assert_eq!(job.status, 200, "{}", job.body);
    let password = common::routeros::live_password(&job.body);

    let (_agent, agent_log) = agent(&lab.server, &agent_conf);
    // Logins are answered once the credentials are in; the relay once its
    // channel is open (in either order).
    let ready = ["credentials read in full", "relay channel open"];
    let first = wait_for(&agent_log, &ready, 20);
    let second = if first == ready[0] {
        ready[1]
    } else {
        ready[0]
    };
    wait_for(&agent_log, &[second], 20);
    let client = client_config(&dir, NET, "router", &site.user, &site.secret);
    let (_client, client_log) = openvpn(&lab.region, &client);
    wait_for(&client_log, &["Initialization Sequence Completed"], 30);
    let config = Config::default().with_live_user(&password, true);
    let at = format!("{}:{API_PORT}", site.address).parse().unwrap();
    let router = in_netns(&lab.region, move || RouterOs::start_on(at, config));
    server.get_until(
        &format!("/v1/tunnels/{}/sessions", site.uuid),
        "the control plane knows vpn1 holds the session",
        |b| b["sessions"][0]["end"].is_null() && b["sessions"][0]["host"] == "vpn1",
    );

    let resource = format!("/v1/sites/{}/resource", site.uuid);
    let body = server.get_until(&resource, "the router's resources", |b| {
        b["resource"]["version"] == "7.18 (stable)"
    });
    assert!(
        body["resource"]["uptime"].as_u64().unwrap() > 86_400,
        "{body}"
    );
    assert_eq!(router.logins(), 1, "one login, as the live-view user");
    let metrics = || {
        let url = format!("http://{}/metrics", server.api);
        curl_in(&lab.server, &[&url, "-H", &bearer(&server.token())]).body
    };
    let scraped = metrics();
    let opened = "mgnt_live_relays_total{result=\"opened\"}";
    assert_eq!(sample(&scraped, opened), Some(1.0), "{scraped}");

    let (status, body) = server.post(&format!("/v1/sites/{}/reboot", site.uuid), None);
    assert_eq!(status, 202, "{body}");
    assert_eq!(router.reboots(), 1);
    let id = body["reboot"]["id"].as_str().unwrap();
    server.get_until(
        &format!("/v1/sites/{}/reboots/{id}", site.uuid),
        "the reboot confirmed over a new pipe",
        |b| b["reboot"]["state"] == "confirmed",
    );
    assert!(
        router.connections() >= 2,
        "a new connection after the reboot"
    );
    let scraped = metrics();
    let relayed = sample(&scraped, opened).unwrap_or(0.0);
    assert!(relayed >= 2.0, "the new connection relayed too: {scraped}");
}
