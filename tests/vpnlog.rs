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
const CONFIG: &str = "\n[vpnlog]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"state\"\nservers = [{ host = \"vpn-fra-1\", region = \"europe1\", addresses = [\"127.0.0.1\"] }]\n";

fn get(server: &Server, path: &str) -> Value {
    let (status, body) = server.get(path);
    assert_eq!(status, 200, "{path}: {body}");
    body
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
    // A sender in no server's `addresses` is not believed, whatever HOSTNAME it writes.
    let stranger = UdpSocket::bind("127.0.0.2:0").unwrap();
    let forged = "<29>Nov 25 18:09:01 vpn-fra-1 openvpn[812]: 1.2.3.4:5 TLS Auth Error: Auth Username/Password verification failed for peer";
    stranger.send_to(forged.as_bytes(), syslog).unwrap();

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
        let unknown = metric(&m, "mgnt_vpnlog_lines_total{result=\"unknown_sender\"}");
        if p + u == sent && unknown == 1 {
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
    let sessions = server.get_until(
        &format!("/v1/tunnels/{tunnel}/sessions"),
        "a closed session",
        |v| {
            v["sessions"]
                .as_array()
                .is_some_and(|s| !s.is_empty() && s[0]["end"].is_number())
        },
    );
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

/// A status file as OpenVPN 2.6 writes it with `status-version 2` or 3.
fn status_v2_v3(sep: char, now: u64, clients: &[(&str, &str, u64, u64)]) -> String {
    let mut text = format!(
        "TITLE{sep}OpenVPN 2.6.14 x86_64-pc-linux-gnu\nTIME{sep}2026-11-25 18:51:07{sep}{now}\n\
         HEADER{sep}CLIENT_LIST{sep}Common Name{sep}Real Address{sep}Virtual Address{sep}Virtual IPv6 Address{sep}\
         Bytes Received{sep}Bytes Sent{sep}Connected Since{sep}Connected Since (time_t){sep}Username{sep}\
         Client ID{sep}Peer ID{sep}Data Channel Cipher\n"
    );
    for (i, (cn, peer, rx, tx)) in clients.iter().enumerate() {
        let since = now - 100;
        text += &format!(
            "CLIENT_LIST{sep}{cn}{sep}{peer}{sep}100.64.0.{}{sep}{sep}{rx}{sep}{tx}{sep}2026-11-25 18:49:27{sep}{since}{sep}{cn}{sep}{i}{sep}0{sep}AES-256-CBC\n",
            i + 2
        );
    }
    text + &format!("GLOBAL_STATS{sep}Max bcast/mcast queue length{sep}1\nEND\n")
}

fn write_atomically(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn status_files_of_every_version_open_count_and_close_sessions() {
    let fixture = Fixture::new();
    fixture.write_config(
        &(config_text("\"127.0.0.1:0\", \"[::1]:0\"")
            + "\n[vpnlog]\nlisten = \"127.0.0.1:0\"\npoll_interval = \"100ms\"\n\
               servers = [{ host = \"vpn-fra-1\", region = \"europe1\", status_file = \"status.txt\" }]\n"),
    );
    let file = fixture.path("status.txt");
    let now = mgnt::state::now();
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let (a_name, b_name) = (a.to_string(), b.to_string());
    let v2 = status_v2_v3(
        ',',
        now,
        &[
            (&a_name, "198.51.100.7:4000", 1000, 2000),
            (&b_name, "[AF_INET6]2001:db8::7:4001", 5, 6),
        ],
    );
    write_atomically(&file, &v2);
    let server = Server::start_with(fixture);
    let sessions = |t: uuid::Uuid| format!("/v1/tunnels/{t}/sessions");
    let v = server.get_until(&sessions(a), "a session from the v2 file", |v| {
        v["sessions"].as_array().is_some_and(|s| s.len() == 1)
    });
    let s = &v["sessions"][0];
    assert_eq!(
        (&s["bytes_in"], &s["bytes_out"]),
        (&Value::from(1000), &Value::from(2000))
    );
    assert_eq!(
        (&s["start"], &s["virtual_addr"]),
        (&Value::from(now - 100), &Value::from("100.64.0.2"))
    );
    let v = server.get(&sessions(b)).1;
    assert_eq!(v["sessions"][0]["peer"], "[2001:db8::7]:4001", "{v}");

    // Version 3 (tabs), later counters: the same session grows.
    write_atomically(
        &file,
        &status_v2_v3(
            '\t',
            now + 1,
            &[
                (&a_name, "198.51.100.7:4000", 1500, 2500),
                (&b_name, "[AF_INET6]2001:db8::7:4001", 5, 6),
            ],
        ),
    );
    server.get_until(&sessions(a), "new counters from the v3 file", |v| {
        v["sessions"][0]["bytes_in"] == 1500
    });

    // Version 1 without `a`: its session ends; `b` stays open.
    let v1 = format!(
        "OpenVPN CLIENT LIST\nUpdated,2026-11-25 18:51:09\nCommon Name,Real Address,Bytes Received,Bytes Sent,Connected Since\n\
         {b_name},2001:db8::7:4001,7,8,2026-11-25 18:49:27\nROUTING TABLE\nVirtual Address,Common Name,Real Address,Last Ref\n\
         100.64.0.3,{b_name},2001:db8::7:4001,2026-11-25 18:49:27\nGLOBAL STATS\nMax bcast/mcast queue length,1\nEND\n"
    );
    write_atomically(&file, &v1);
    let v = server.get_until(&sessions(a), "the session closed by the v1 file", |v| {
        v["sessions"][0]["end"].is_number()
    });
    assert_eq!(v["sessions"][0]["end_reason"], "no-longer-listed");
    let v = server.get_until(&sessions(b), "b's counters from the v1 file", |v| {
        v["sessions"][0]["bytes_in"] == 7
    });
    assert!(v["sessions"][0]["end"].is_null(), "{v}");
    let summary = server.get("/v1/regions/europe1/summary").1;
    assert_eq!(summary["connected_tunnels"], 1, "{summary}");

    // A broken file closes nothing.
    write_atomically(&file, "TITLE,x\nCLIENT_LIST,r,not-an-address,1,2\nEND\n");
    std::thread::sleep(Duration::from_millis(500));
    let v = server.get(&sessions(b)).1;
    assert!(v["sessions"][0]["end"].is_null(), "{v}");
}

/// Syslog over TCP is bounded: beyond `tcp_max_per_source` a connection is
/// closed at once, and a silent one after `tcp_idle_timeout`; both counted.
#[test]
fn syslog_tcp_is_capped_per_source_and_silent_senders_are_closed() {
    use std::io::Read;
    let fixture = Fixture::new();
    fixture.write_config(
        &(config_text("\"127.0.0.1:0\", \"[::1]:0\"")
            + &CONFIG.replace(
                "data_dir = \"state\"\n",
                "data_dir = \"state\"\ntcp_max_per_source = 2\ntcp_idle_timeout = \"1s\"\n",
            )),
    );
    let server = Server::start_with(fixture);
    let syslog = server.syslog.expect("a syslog listener");
    let closed = |s: &mut TcpStream, within: Duration| {
        s.set_read_timeout(Some(within)).unwrap();
        matches!(s.read(&mut [0u8; 16]), Ok(0))
    };
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(syslog).unwrap())
        .collect();
    let mut third = TcpStream::connect(syslog).unwrap();
    assert!(
        closed(&mut third, Duration::from_secs(5)),
        "a third from one source is closed at once"
    );
    // The two held ones stay until they have been silent for a second.
    assert!(!closed(&mut held[0], Duration::from_millis(300)));
    assert!(
        closed(&mut held[1], Duration::from_secs(5)),
        "a silent sender is closed"
    );
    let Value::String(m) = get(&server, "/metrics") else {
        panic!()
    };
    assert!(
        metric(&m, "mgnt_vpnlog_tcp_closed_total{reason=\"cap\"}") >= 1,
        "{m}"
    );
    assert!(
        metric(&m, "mgnt_vpnlog_tcp_closed_total{reason=\"idle\"}") >= 1,
        "{m}"
    );
}
