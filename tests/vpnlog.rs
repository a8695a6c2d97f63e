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
    becomes_sessions_and_attempts(Server::start_with(fixture));
}

#[test]
#[ignore = "needs root (runs a PostgreSQL cluster as the postgres user); scripts/test runs it as root"]
fn a_real_log_over_syslog_becomes_sessions_and_attempts_in_postgresql() {
    let pg = common::pg::Postgres::start();
    let fixture = Fixture::new();
    let store = pg.store_toml(&fixture.path("db.password"), "30s");
    let config = CONFIG.replace("data_dir = \"state\"\n", "");
    fixture.write_config(&(config_text("\"127.0.0.1:0\", \"[::1]:0\"") + &config + &store));
    becomes_sessions_and_attempts(Server::start_with(fixture));
    let days = pg.psql(
        "mgnt",
        "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'vpn_auth'",
    );
    assert!(
        days.trim() != "0",
        "the attempts went into a day's partition"
    );
}

/// Feeds the real log to `server` over syslog; checks what it made of it.
fn becomes_sessions_and_attempts(server: Server) {
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
            + "\n[vpnlog]\nlisten = \"127.0.0.1:0\"\npoll_interval = \"100ms\"\nstale_after = 2\n\
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

    // Version 1 without `a`, twice (`stale_after = 2`): its session ends as
    // stale; `b` stays open.
    let v1 = |b_in: u64| {
        format!(
            "OpenVPN CLIENT LIST\nUpdated,2026-11-25 18:51:09\nCommon Name,Real Address,Bytes Received,Bytes Sent,Connected Since\n\
         {b_name},2001:db8::7:4001,{b_in},8,2026-11-25 18:49:27\nROUTING TABLE\nVirtual Address,Common Name,Real Address,Last Ref\n\
         100.64.0.3,{b_name},2001:db8::7:4001,2026-11-25 18:49:27\nGLOBAL STATS\nMax bcast/mcast queue length,1\nEND\n"
        )
    };
    write_atomically(&file, &v1(7));
    server.get_until(&sessions(b), "b's counters from the v1 file", |v| {
        v["sessions"][0]["bytes_in"] == 7
    });
    let v = server.get(&sessions(a)).1;
    assert!(v["sessions"][0]["end"].is_null(), "one list missed: {v}");
    // Caught mid-rewrite (no END line): not counted at all.
    let full = v1(8);
    write_atomically(&file, &full[..full.find("GLOBAL STATS").unwrap()]);
    std::thread::sleep(Duration::from_millis(500));
    let v = server.get(&sessions(b)).1;
    assert_eq!(v["sessions"][0]["bytes_in"], 7, "{v}");
    let v = server.get(&sessions(a)).1;
    assert!(
        v["sessions"][0]["end"].is_null(),
        "a cut list counts no miss: {v}"
    );
    write_atomically(&file, &full);
    let v = server.get_until(&sessions(a), "the session closed as stale", |v| {
        v["sessions"][0]["end"].is_number()
    });
    assert_eq!(v["sessions"][0]["end_reason"], "stale");
    let v = server.get(&sessions(b)).1;
    assert_eq!(v["sessions"][0]["bytes_in"], 8, "{v}");
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

/// The `/metrics` text.
fn metrics(server: &Server) -> String {
    let Value::String(m) = get(server, "/metrics") else {
        panic!("metrics are text")
    };
    m
}

/// Polls `/metrics` until `done` holds (10 s at most).
fn metrics_until(server: &Server, what: &str, done: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let m = metrics(server);
        if done(&m) {
            return m;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}:\n{}",
            m.lines()
                .filter(|l| l.starts_with("mgnt_vpnlog"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// With the database locked by another writer, the writer's queue fills:
/// UDP lines beyond it are dropped and counted, a TCP sender is held back
/// (nothing it sent is lost), and all of it is written once the lock goes.
#[test]
fn a_full_queue_drops_udp_lines_and_holds_tcp_senders_until_the_writer_catches_up() {
    let fixture = Fixture::new();
    fixture.write_config(
        &(config_text("\"127.0.0.1:0\", \"[::1]:0\"") + CONFIG + "queue_capacity = 1000\n"),
    );
    let server = Server::start_with(fixture);
    let syslog = server.syslog.expect("a syslog listener");
    let m = metrics(&server);
    assert_eq!(metric(&m, "mgnt_vpnlog_queue_capacity"), 1000, "{m}");
    assert!(m.contains("mgnt_vpnlog_udp_kernel_drops_total 0"), "{m}");

    let db = rusqlite::Connection::open(server.fixture.path("state/vpnlog.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    // Unknown lines: one record each.
    const TCP_LINES: u64 = 20_000;
    let mut tcp = TcpStream::connect(syslog).unwrap();
    let sender = std::thread::spawn(move || {
        for i in 0..TCP_LINES {
            writeln!(
                tcp,
                "<29>Nov 25 18:08:05 vpn-fra-1 openvpn[1]: unknown line {i}"
            )
            .unwrap();
        }
    });
    let accounted = |m: &str| {
        metric(m, "mgnt_vpnlog_lines_total{result=\"parsed\"}")
            + metric(m, "mgnt_vpnlog_lines_total{result=\"unparsed\"}")
    };
    metrics_until(&server, "the queue full", |m| {
        metric(m, "mgnt_vpnlog_queue_items") >= 1000
    });
    // The read in hand is finished (the queue may pass its capacity by one
    // read's lines); then nothing more is read while the queue stays full.
    let mut held = accounted(&metrics(&server));
    for look in 0.. {
        std::thread::sleep(Duration::from_millis(300));
        let now = accounted(&metrics(&server));
        if now == held {
            break;
        }
        assert!(look < 20, "reading never stops: {now} lines of {TCP_LINES}");
        held = now;
    }
    std::thread::sleep(Duration::from_millis(500));
    let m = metrics(&server);
    assert_eq!(accounted(&m), held, "the TCP sender is held back");
    assert!(held < TCP_LINES, "{held} lines read of {TCP_LINES}");

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..50 {
        udp.send_to(format!("unknown datagram {i}").as_bytes(), syslog)
            .unwrap();
    }
    metrics_until(&server, "50 datagrams dropped at the full queue", |m| {
        metric(m, "mgnt_vpnlog_lines_total{result=\"queue_full\"}") == 50
    });

    db.execute_batch("COMMIT").unwrap();
    drop(db);
    sender.join().unwrap();
    let m = metrics_until(&server, "every TCP line written", |m| {
        accounted(m) == TCP_LINES
            && metric(m, "mgnt_vpnlog_records_written_total")
                == metric(m, "mgnt_vpnlog_records_queued_total")
    });
    assert_eq!(metric(&m, "mgnt_vpnlog_records_written_total"), TCP_LINES);
}

/// A session's times are when the log says it happened, not when the lines
/// arrived (RFC 5424 headers with their zone).
#[test]
fn session_times_come_from_the_messages() {
    let fixture = Fixture::new();
    fixture.write_config(&(config_text("\"127.0.0.1:0\", \"[::1]:0\"") + CONFIG));
    let server = Server::start_with(fixture);
    let syslog = server.syslog.expect("a syslog listener");
    let id = uuid::Uuid::new_v4();
    let now = mgnt::state::now() as i64;
    let (opened, reset) = (now - 600, now - 120);
    let at = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .unwrap()
            .with_timezone(&chrono::FixedOffset::east_opt(3 * 3600).unwrap())
            .to_rfc3339()
    };
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for line in [
        format!(
            "<29>1 {} vpn-fra-1 openvpn - - - 198.51.100.9:40000 [{id}] Peer Connection Initiated with [AF_INET]198.51.100.9:40000",
            at(opened)
        ),
        format!(
            "<29>1 {} vpn-fra-1 openvpn - - - {id}/198.51.100.9:40000 Connection reset, restarting [0]",
            at(reset)
        ),
    ] {
        udp.send_to(line.as_bytes(), syslog).unwrap();
        // In order: one datagram, then the next.
        std::thread::sleep(Duration::from_millis(50));
    }
    let v = server.get_until(&format!("/v1/tunnels/{id}/sessions"), "the session", |v| {
        v["sessions"][0]["end"].is_number()
    });
    let s = &v["sessions"][0];
    assert_eq!(
        (s["start"].as_i64(), s["end"].as_i64()),
        (Some(opened), Some(reset)),
        "{s}"
    );
}
