//! The server's log under floods: no line per packet, at most one line per
//! kind per interval with a count; and `--log-format json`.

mod common;

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use common::*;
use hickory_proto::rr::RecordType;
use serde_json::Value;

/// `mgnt::logging::INTERVAL`: at most one line per kind in this time.
const INTERVAL: Duration = Duration::from_secs(10);

/// The JSON lines a server started with `--log-format json` has written.
fn lines(server: &Server) -> Vec<Value> {
    server
        .log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A query for mgnt.mkcld.io with `id`, whose OPT record carries `option`
/// (code, then the bytes after its length); `opt_len`: the OPT's RDLENGTH
/// to claim instead of the true one (a truncated OPT).
fn with_option(id: u16, option: &[u8], opt_len: Option<u16>) -> Vec<u8> {
    let mut q = query("mgnt.mkcld.io.", RecordType::A, None)
        .to_vec()
        .unwrap();
    q[..2].copy_from_slice(&id.to_be_bytes());
    let len_at = q.len() - 2;
    let len = opt_len.unwrap_or(option.len() as u16);
    q[len_at..].copy_from_slice(&len.to_be_bytes());
    q.extend_from_slice(option);
    q
}

/// An ECS option (RFC 7871): family, source and scope prefix, address.
fn ecs(family: u16, source: u8, scope: u8, address: &[u8]) -> Vec<u8> {
    let mut o = vec![0, 8];
    o.extend_from_slice(&((4 + address.len()) as u16).to_be_bytes());
    o.extend_from_slice(&family.to_be_bytes());
    o.extend_from_slice(&[source, scope]);
    o.extend_from_slice(address);
    o
}

/// Malformed queries, by what is wrong with them.
fn malformed() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "ECS family 3",
            with_option(1, &ecs(3, 24, 0, &[81, 240, 0]), None),
        ),
        (
            "ECS scope in a query",
            with_option(2, &ecs(1, 24, 16, &[81, 240, 0]), None),
        ),
        (
            "ECS source /33 for IPv4",
            with_option(3, &ecs(1, 33, 0, &[81, 240, 0, 0, 0]), None),
        ),
        (
            "ECS address longer than its source",
            with_option(4, &ecs(1, 8, 0, &[81, 240, 0, 0]), None),
        ),
        (
            "ECS bits past the source",
            with_option(5, &ecs(1, 20, 0, &[81, 240, 255]), None),
        ),
        // The protocol library wrote a warning for each of these.
        (
            "ECS option past the OPT's end",
            with_option(6, &ecs(1, 24, 0, &[81, 240, 0])[..7], None),
        ),
        (
            "OPT longer than the packet",
            with_option(7, &ecs(1, 24, 0, &[81, 240, 0]), Some(40)),
        ),
    ]
}

/// The RCODE of `server`'s answer to `packet`, `None` without one.
fn rcode(server: SocketAddr, packet: &[u8]) -> Option<u8> {
    udp_raw(server, packet).map(|r| r[3] & 0x0f)
}

/// The lines `server` wrote after its first `skip`, counted by kind
/// (target and message); panics on any line of the protocol library.
fn kinds_after(server: &Server, skip: usize) -> BTreeMap<String, usize> {
    let mut kinds = BTreeMap::new();
    for line in lines(server).into_iter().skip(skip) {
        let target = line["target"].as_str().unwrap().to_owned();
        assert!(!target.starts_with("hickory"), "{line}");
        let kind = format!("{target}: {}", line["message"].as_str().unwrap());
        *kinds.entry(kind).or_insert(0) += 1;
    }
    kinds
}

/// Sends `marker` from `sock` until its answer comes (every answer before
/// it read and dropped; sent again after 200 ms of silence or 2 s of other
/// answers): then the server has read what `sock` sent before.
fn answered_after(sock: &UdpSocket, server: SocketAddr, marker: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    'send: loop {
        assert!(Instant::now() < deadline, "the server stopped answering");
        sock.send_to(marker, server).unwrap();
        let resend = Instant::now() + Duration::from_secs(2);
        while Instant::now() < resend {
            match sock.recv_from(&mut buf) {
                Ok((n, _)) if n >= 2 && buf[..2] == marker[..2] => return,
                Ok(_) => {}
                Err(_) => continue 'send,
            }
        }
    }
}

#[test]
fn a_malformed_ecs_flood_writes_no_line_per_packet() {
    let server = Server::start_logging_json(Fixture::new());
    let shapes = malformed();
    for (what, q) in &shapes {
        assert_eq!(rcode(server.v4, q), Some(1), "{what}: FORMERR");
    }
    let before = lines(&server).len();
    let began = Instant::now();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..20_000 {
        // Spoofable: sent without waiting for any answer.
        let _ = sock.send_to(&shapes[i % shapes.len()].1, server.v4);
    }
    let mut marker = query("mgnt.mkcld.io.", RecordType::A, Some("81.240.0.0/16"))
        .to_vec()
        .unwrap();
    marker[..2].copy_from_slice(&0xbeefu16.to_be_bytes());
    answered_after(&sock, server.v4, &marker);
    let took = began.elapsed();

    let kinds = kinds_after(&server, before);
    let allowed = 1 + (took.as_secs() / INTERVAL.as_secs()) as usize;
    assert!(
        kinds.values().all(|&n| n <= allowed),
        "at most {allowed} lines per kind in {took:?}: {kinds:#?}"
    );
    assert!(kinds.len() <= 3, "no line per packet: {kinds:#?}");
    // Still answering, the malformed ones as before.
    for (what, q) in &shapes {
        assert_eq!(rcode(server.v4, q), Some(1), "{what}: FORMERR");
    }
    let r = udp(
        server.v4,
        &query("mgnt.mkcld.io.", RecordType::A, Some("177.0.0.0/8")),
    );
    assert_eq!(region_of(&r).as_deref(), Some("sa1"));
}

/// A fixture whose API takes the agent token of `srv1`.
fn with_agent() -> Fixture {
    let fixture = Fixture::new();
    std::fs::write(fixture.path("agents.token"), "srv1:agent-token-of-srv1\n").unwrap();
    fixture.write_config(
        &config_text("\"127.0.0.1:0\", \"[::1]:0\"")
            .replace("[api]\n", "[api]\nagent_token_file = \"agents.token\"\n"),
    );
    fixture
}

/// An agent that says, with every batch, that it dropped reports: a
/// warning per request, written once and then counted.
#[test]
fn a_repeated_warning_is_written_once_then_counted() {
    const WARNING: &str = "an agent dropped reports: its buffer was full";
    const SENT: u64 = 300;
    let server = Server::start_logging_json(with_agent());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://{}/agent/v1/reports", server.api);
    let began = Instant::now();
    for _ in 0..SENT {
        let resp = agent
            .post(&url)
            .header("Authorization", "Bearer agent-token-of-srv1")
            .send_json(serde_json::json!({"reports": [], "dropped": 3}))
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    // Every request is either written (with its fields) or counted in a
    // later line's `suppressed`, which comes once the interval is over.
    let deadline = Instant::now() + INTERVAL * 3;
    let warned = loop {
        let warned: Vec<Value> = lines(&server)
            .into_iter()
            .filter(|l| l["message"] == WARNING)
            .collect();
        let written = warned
            .iter()
            .filter(|l| l["fields"]["server"] == "srv1")
            .count() as u64;
        let counted: u64 = warned
            .iter()
            .filter_map(|l| l["fields"]["suppressed"].as_u64())
            .sum();
        if written + counted == SENT {
            break warned;
        }
        assert!(
            Instant::now() < deadline,
            "{written} written and {counted} counted of {SENT}: {warned:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = began.elapsed();
    let allowed = 2 + (took.as_secs() / INTERVAL.as_secs()) as usize;
    assert!(warned.len() <= allowed, "{took:?}: {warned:#?}");
    let first = &warned[0]["fields"];
    assert_eq!(first["dropped"], 3, "a number: {first}");
    assert_eq!(first["server"], "srv1");
    assert!(first.get("suppressed").is_none(), "{first}");
    assert_eq!(warned[0]["level"], "WARN");
    let last = &warned[warned.len() - 1];
    assert!(last["fields"]["suppressed"].as_u64() > Some(0), "{last}");
}

#[test]
fn json_lines_carry_values_and_escape_control_characters() {
    let server = Server::start_logging_json(Fixture::new());
    let reason = "maintenance\n2026-01-01T00:00:00Z ERROR forged\u{1b}[31m";
    let (status, body) = server.post(
        "/v1/regions/europe1/drain",
        Some(serde_json::json!({"reason": reason, "until": "2099-01-01T00:00:00Z"})),
    );
    assert_eq!(status, 200, "{body}");
    let log = server.log();
    assert!(!log.contains('\u{1b}'), "escaped: {log}");
    let lines = lines(&server);
    for line in &lines {
        let time = line["timestamp"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{line}");
        assert!(
            ["ERROR", "WARN", "INFO"].contains(&line["level"].as_str().unwrap()),
            "{line}"
        );
        assert!(line["node"].is_string(), "{line}");
        assert!(
            line["target"].as_str().unwrap().starts_with("mgnt"),
            "{line}"
        );
        assert!(!line["message"].as_str().unwrap().is_empty(), "{line}");
    }
    let find = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("no `{message}` in {log}"))
    };
    let dns = find("serving DNS over UDP and TCP");
    assert_eq!(dns["fields"]["addr"], server.v4.to_string());
    let drained = &find("region drained")["fields"];
    assert_eq!(drained["region"], "europe1");
    assert_eq!(drained["reason"], reason);
    assert_eq!(drained["until"], "2099-01-01T00:00:00Z");
}

/// `mgnt agent --log-format json`, with neither its control plane nor its
/// OpenVPN server there: both say so, as JSON with their values.
#[test]
fn the_agent_writes_json_lines_too() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("token"), "agent-token-of-srv1\n").unwrap();
    std::fs::set_permissions(d.join("token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    // Ports nothing listens on: bound here, then closed.
    let closed = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    std::fs::write(
        d.join("agent.toml"),
        format!(
            "[agent]\nmanagement = \"{}\"\ncontrol = \"http://{}\"\ntoken_file = \"{}\"\n\
             cache_dir = \"{}\"\nfirewall = false\n",
            closed(),
            closed(),
            d.join("token").display(),
            d.join("cache").display(),
        ),
    )
    .unwrap();
    let log = d.join("agent.log");
    let mut child = mgnt()
        .args(["agent", "--log-format", "json", "--config"])
        .arg(d.join("agent.toml"))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let wanted = [
        "cannot reach the control plane; logins are answered from the cache",
        "OpenVPN management interface",
    ];
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        // Only whole lines: the last may be half written.
        let lines: Vec<Value> = text
            .lines()
            .take(text.matches('\n').count())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if wanted
            .iter()
            .all(|w| lines.iter().any(|l| l["message"] == *w))
        {
            break lines;
        }
        let exited = child.try_wait().unwrap();
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "{exited:?}: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    for line in &lines {
        assert!(
            line.get("node").is_none(),
            "the agent has no node name: {line}"
        );
        let time = line["timestamp"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{line}");
    }
    for w in wanted {
        let line = lines.iter().find(|l| l["message"] == w).unwrap();
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["fields"]["retry_in"], "1s", "a duration: {line}");
    }
}
