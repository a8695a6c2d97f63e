//! DNS Cookies (RFC 7873, RFC 9018) and what they buy under response rate
//! limiting, against a running server, asked with `dig`.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;

/// The test config with `extra` lines added to `[dns]`.
fn config(extra: &str) -> String {
    config_text("\"127.0.0.1:0\", \"[::1]:0\"")
        .replace("udp_sockets = 2", &format!("udp_sockets = 2\n{extra}"))
}

/// A server on `extra`'s config, its cookie secret set to `secret` when given.
fn server(extra: &str, secret: Option<&str>) -> Server {
    let fixture = Fixture::new();
    fixture.write_config(&config(extra));
    if let Some(s) = secret {
        std::fs::create_dir_all(fixture.path("state")).unwrap();
        std::fs::write(fixture.path("state/cookie.secret"), format!("{s}\n")).unwrap();
    }
    Server::start_with(fixture)
}

/// `dig` against `server` over UDP (no retries, no TCP fallback) with `args`.
fn dig(server: SocketAddr, args: &[&str]) -> String {
    let (at, port) = (format!("@{}", server.ip()), port_arg(server));
    let mut all = vec![at.as_str(), "-p", &port, "+tries=1", "+time=3", "+ignore"];
    all.extend_from_slice(args);
    run("dig", &all)
}

/// The COOKIE dig printed for each answer ("; COOKIE: <hex> (good)").
fn cookies(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("; COOKIE: "))
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
        .collect()
}

/// The statuses of each answer dig printed.
fn statuses(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split("status: ").nth(1))
        .map(|l| l.split(',').next().unwrap_or_default().to_owned())
        .collect()
}

/// Whether dig's (first) answer had TC set.
fn truncated(out: &str) -> bool {
    let flags = out
        .lines()
        .find_map(|l| l.split("flags:").nth(1))
        .unwrap_or_default();
    flags
        .split(';')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .any(|f| f == "tc")
}

/// Five queries in a row with the client cookie (and server cookie) `cookie`.
fn burst(server: SocketAddr, cookie: &str) -> Vec<String> {
    let arg = format!("+cookie={cookie}");
    let mut args = vec!["+nobadcookie"];
    for _ in 0..5 {
        args.extend_from_slice(&[arg.as_str(), "mgnt.mkcld.io", "A"]);
    }
    statuses(&dig(server, &args))
}

const RRL: &str = "[dns.rrl]\nrate = 1\nslip = 1";

#[test]
fn a_cookie_round_trip_with_dig_gives_a_server_cookie_that_is_then_kept() {
    let server = server("", None);
    let secret = std::fs::read_to_string(server.fixture.path("state/cookie.secret")).unwrap();
    assert_eq!(secret.trim().len(), 32, "a 128-bit secret was created");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(server.fixture.path("state/cookie.secret"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let out = dig(
        server.v4,
        &["+cookie=0123456789abcdef", "mgnt.mkcld.io", "A"],
    );
    assert!(out.contains("status: NOERROR"), "{out}");
    let first = &cookies(&out)[0];
    assert!(
        out.contains("(good)"),
        "dig checks its client cookie: {out}"
    );
    assert_eq!(
        first.len(),
        48,
        "client (8) and server (16) cookie: {first}"
    );
    assert!(first.starts_with("0123456789abcdef01000000"), "{first}");
    // Sent back, the server cookie is valid and young: the same comes back.
    let out = dig(
        server.v4,
        &[&format!("+cookie={first}"), "mgnt.mkcld.io", "A"],
    );
    assert_eq!(&cookies(&out)[0], first, "{out}");
    // Over TCP too, and for names outside the geo names.
    let out = dig(
        server.v4,
        &["+tcp", &format!("+cookie={first}"), "mkcld.io", "SOA"],
    );
    assert_eq!(&cookies(&out)[0], first, "{out}");
    // From another address the cookie is not valid: a fresh one.
    let out = dig(
        server.v6,
        &[&format!("+cookie={first}"), "mgnt.mkcld.io", "A"],
    );
    assert_ne!(&cookies(&out)[0], first, "{out}");
    // A malformed COOKIE option is a FORMERR.
    let out = dig(server.v4, &["+cookie=0123", "mgnt.mkcld.io", "A"]);
    assert!(out.contains("status: FORMERR"), "{out}");
    // Without a cookie, no cookie.
    let out = dig(server.v4, &["+nocookie", "mgnt.mkcld.io", "A"]);
    assert!(cookies(&out).is_empty(), "{out}");
}

#[test]
fn over_the_rate_a_client_cookie_gets_badcookie_and_a_valid_cookie_passes() {
    let server = server(RRL, None);
    // Five queries in a second with a client cookie alone: over the rate of
    // one per second, each is answered BADCOOKIE (slip = 1) with a cookie.
    let got = burst(server.v4, "00112233445566ff");
    assert!(got.iter().any(|s| s == "BADCOOKIE"), "{got:?}");
    // dig's own retry with the cookie from BADCOOKIE is answered.
    let out = dig(
        server.v4,
        &[
            "+cookie=00112233445566ff",
            "+badcookie",
            "mgnt.mkcld.io",
            "A",
        ],
    );
    assert!(out.contains("status: NOERROR"), "{out}");
    let valid = cookies(&out).pop().unwrap();
    // With that cookie no answer is ever limited.
    assert_eq!(burst(server.v4, &valid), ["NOERROR"; 5]);
    // Without any cookie the answers over the rate go out truncated.
    let mut args = vec!["+nocookie"];
    for _ in 0..5 {
        args.extend_from_slice(&["mgnt.mkcld.io", "A"]);
    }
    let out = dig(server.v4, &args);
    let flags = out.lines().filter(|l| l.contains("flags:"));
    assert!(flags.filter(|l| truncated(l)).count() >= 1, "{out}");
    let metrics = server.get_until("/metrics", "limited answers counted", |m| {
        let m = m.as_str().unwrap_or_default();
        let value = |series: &str| {
            m.lines()
                .find_map(|l| l.strip_prefix(series))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        value("mgnt_dns_rrl_answers_total{action=\"badcookie\"}") >= 1
            && value("mgnt_dns_rrl_answers_total{action=\"slipped\"}") >= 1
    });
    assert!(metrics.as_str().is_some());
}

#[test]
fn over_the_rate_without_slip_answers_are_dropped_and_counted() {
    let server = server("[dns.rrl]\nrate = 5\nslip = 0", None);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let q = query("mgnt.mkcld.io.", hickory_proto::rr::RecordType::A, None)
        .to_vec()
        .unwrap();
    for _ in 0..50 {
        socket.send_to(&q, server.v4).unwrap();
    }
    let mut answered = 0;
    let mut buf = [0u8; 2048];
    while socket.recv_from(&mut buf).is_ok() {
        answered += 1;
    }
    // Five per second: the 50 sent within a second or two get at most 15.
    assert!((5..=15).contains(&answered), "{answered} answered");
    server.get_until("/metrics", "drops counted", |m| {
        m.as_str().unwrap_or_default().lines().any(|l| {
            l.strip_prefix("mgnt_dns_rrl_answers_total{action=\"dropped\"} ")
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n + answered >= 50)
        })
    });
}

#[test]
fn large_answers_without_a_valid_cookie_are_truncated() {
    let server = server("truncate_without_cookie = 128", None);
    // The zone's NS set with glue and the node's NSID is over 128 bytes.
    let plain = dig(server.v4, &["+nocookie", "+nsid", "mkcld.io", "NS"]);
    assert!(truncated(&plain), "{plain}");
    // With a cookie option (28 bytes) it is, too; a client cookie alone is no proof.
    let first = dig(server.v4, &["+cookie=a1b2c3d4e5f60718", "mkcld.io", "NS"]);
    assert!(truncated(&first), "{first}");
    let valid = &cookies(&first)[0];
    let proven = dig(server.v4, &[&format!("+cookie={valid}"), "mkcld.io", "NS"]);
    assert!(!truncated(&proven), "{proven}");
    assert!(proven.contains("ANSWER: 2"), "{proven}");
    let counted = server.get_until("/metrics", "truncations counted", |m| {
        m.as_str().unwrap_or_default().lines().any(|l| {
            l.strip_prefix("mgnt_dns_truncated_without_cookie_total ")
                .is_some_and(|n| n == "2")
        })
    });
    assert!(counted.as_str().is_some());
    // Small answers are never truncated.
    let small = dig(server.v4, &["+nocookie", "mgnt.mkcld.io", "A"]);
    assert!(!truncated(&small), "{small}");
}

#[test]
fn nodes_sharing_a_secret_accept_each_others_cookies_and_a_rotation_keeps_them() {
    const A: &str = "e5e973e5a6b2a43f48e7dc849e37bfcf";
    const B: &str = "445536bcd2513298075a5d379663c962";
    let one = server(RRL, Some(A));
    let two = server(RRL, Some(A));
    let other = server(RRL, Some(B));
    let out = dig(one.v4, &["+cookie=1122334455667788", "mgnt.mkcld.io", "A"]);
    let from_one = cookies(&out)[0].clone();
    // The second node finds it valid and young: sent back unchanged.
    let out = dig(
        two.v4,
        &[&format!("+cookie={from_one}"), "mgnt.mkcld.io", "A"],
    );
    assert_eq!(cookies(&out)[0], from_one, "{out}");
    assert_eq!(burst(two.v4, &from_one), ["NOERROR"; 5]);
    // A node with another secret does not.
    assert!(burst(other.v4, &from_one).iter().any(|s| s == "BADCOOKIE"));

    // Rotation on node two: B becomes the secret, A the previous one.
    let f = &two.fixture;
    std::fs::write(f.path("state/cookie.secret"), format!("{B}\n")).unwrap();
    std::fs::write(f.path("state/cookie.previous"), format!("{A}\n")).unwrap();
    f.write_config(&config(&format!(
        "cookie_previous_secret_file = \"state/cookie.previous\"\n{RRL}"
    )));
    reload(&two);
    // A's cookie still passes, and is renewed under B.
    assert_eq!(burst(two.v4, &from_one), ["NOERROR"; 5]);
    let out = dig(
        two.v4,
        &[&format!("+cookie={from_one}"), "mgnt.mkcld.io", "A"],
    );
    let renewed = cookies(&out)[0].clone();
    assert_ne!(renewed, from_one);
    // The previous secret retired: only B's cookies pass.
    f.write_config(&config(RRL));
    reload(&two);
    assert!(burst(two.v4, &from_one).iter().any(|s| s == "BADCOOKIE"));
    assert_eq!(burst(two.v4, &renewed), ["NOERROR"; 5]);
}

/// Reloads through the admin API (as SIGHUP does) and checks it took.
fn reload(server: &Server) {
    let (status, body) = server.post("/v1/reload", None);
    assert_eq!(status, 200, "{body}");
}
