//! Log ingestion end to end: a real OpenVPN log sent over syslog (TCP with
//! both framings, and UDP) becomes sessions and auth attempts in the API.

mod common;

use std::{
    io::Write,
    net::{TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

const CORPUS: &str = include_str!("data/openvpn-2.6-verb3.log");
const CONFIG: &str = "\n[vpnlog]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"state\"\nservers = [{ host = \"vpn-fra-1\", region = \"europe1\" }]\n";

fn get(server: &Server, path: &str) -> Value {
    let token = std::fs::read_to_string(server.fixture.path("state/admin.token")).unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .get(&format!("http://{}{path}", server.api))
        .header("Authorization", &format!("Bearer {}", token.trim()))
        .call()
        .unwrap();
    let status = resp.status();
    let body = resp.body_mut().read_to_string().unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    serde_json::from_str(&body).unwrap_or(Value::String(body))
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_real_log_over_syslog_becomes_sessions_and_attempts() {
    let fixture = Fixture::new();
    fixture.write_config(&(config_text("\"127.0.0.1:0\", \"[::1]:0\"") + CONFIG));
    let server = Server::start_with(fixture);
    let syslog = server.syslog.expect("a syslog listener");

    // RFC 3164 over TCP: odd lines octet-counted, even lines newline-framed.
    let mut tcp = TcpStream::connect(syslog).unwrap();
    let mut sent = 0u64;
    for (i, line) in CORPUS.lines().enumerate() {
        let msg = format!("<29>Nov 25 18:08:05 vpn-fra-1 openvpn[812]: {line}");
        if i % 2 == 0 {
            write!(tcp, "{} {msg}", msg.len()).unwrap();
        } else {
            writeln!(tcp, "{msg}").unwrap();
        }
        sent += 1;
    }
    drop(tcp);
    // And a few bare lines over UDP, one of them garbage.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for line in [
        "2026-11-25 18:09:00 1.2.3.4:5 TLS Auth Error: Auth Username/Password verification failed for peer",
        "garbage \u{1} line",
    ] {
        udp.send_to(line.as_bytes(), syslog).unwrap();
        sent += 1;
    }

    // Every line is accounted for: received = parsed + unparsed, all written.
    let start = Instant::now();
    loop {
        let Value::String(m) = get(&server, "/metrics") else {
            panic!()
        };
        let (p, u) = (
            metric(&m, "mgnt_vpnlog_lines_total{result=\"parsed\"}"),
            metric(&m, "mgnt_vpnlog_lines_total{result=\"unparsed\"}"),
        );
        if p + u == sent {
            assert!(u >= 1, "the garbage line is unparsed");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "only {p} + {u} of {sent} lines:\n{}",
            m.lines()
                .filter(|l| l.contains("vpnlog"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let tunnel = mgnt::tunnels::username::tunnel_of("gfynkzpktrhafbfy5t2uzic2gq").unwrap();
    let start = Instant::now();
    let sessions = loop {
        let v = get(&server, &format!("/v1/tunnels/{tunnel}/sessions"));
        if v["sessions"]
            .as_array()
            .is_some_and(|s| !s.is_empty() && s[0]["end"].is_number())
        {
            break v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no closed session: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let s = &sessions["sessions"][0];
    assert_eq!(s["virtual_addr"], "100.64.0.2");
    assert_eq!(s["peer"], "169.254.89.2:56700");
    assert_eq!(
        (&s["host"], &s["region"]),
        (&Value::from("vpn-fra-1"), &Value::from("europe1"))
    );
    assert!(
        s["end_reason"]
            .as_str()
            .unwrap()
            .contains("connection-reset"),
        "{s}"
    );

    let failures = get(&server, "/v1/auth-attempts?result=failure");
    assert!(
        failures["attempts"].as_array().unwrap().len() >= 3,
        "{failures}"
    );
    let all = get(&server, "/v1/auth-attempts");
    assert!(
        all["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["ok"] == true && a["tunnel"] == tunnel.to_string())
    );
}
