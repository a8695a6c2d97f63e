//! Response codes, sections and transport limits of the real server.

mod common;

use std::{io::Read, net::TcpStream, time::Duration};

use common::*;
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{DNSClass, Name, RecordType},
};

fn code(m: &Message) -> ResponseCode {
    m.response_code
}

#[test]
fn zone_data_is_authoritative_and_negative_answers_carry_the_soa() {
    let s = Server::start();
    let r = udp(s.v4, &query("ns1.mkcld.io.", RecordType::A, None));
    assert_eq!((code(&r), r.authoritative), (ResponseCode::NoError, true));
    assert_eq!(addresses(&r).len(), 1);

    let r = udp(s.v4, &query("missing.mkcld.io.", RecordType::A, None));
    assert_eq!(code(&r), ResponseCode::NXDomain);
    assert!(r.authoritative);
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(r.authorities[0].ttl, 60, "RFC 2308: min(SOA TTL, MINIMUM)");

    let r = udp(s.v4, &query("ns1.mkcld.io.", RecordType::MX, None));
    assert_eq!(code(&r), ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);

    let r = udp(s.v4, &query("mkcld.io.", RecordType::NS, None));
    assert_eq!(r.answers.len(), 2);
}

#[test]
fn names_outside_our_zones_are_refused() {
    let s = Server::start();
    let r = udp(s.v4, &query("example.com.", RecordType::A, None));
    assert_eq!(code(&r), ResponseCode::Refused);
}

#[test]
fn zone_transfers_are_refused() {
    let s = Server::start();
    for t in [RecordType::AXFR, RecordType::IXFR] {
        let r = tcp(s.v4, &query("mkcld.io.", t, None));
        assert_eq!(code(&r), ResponseCode::Refused, "{t}");
        assert!(r.answers.is_empty());
    }
    let out = run(
        "dig",
        &["@127.0.0.1", "-p", &port_arg(s.v4), "mkcld.io", "AXFR"],
    );
    assert!(!out.contains("192.0.2.11"), "{out}");
}

#[test]
fn unknown_opcodes_are_notimp_and_update_is_refused() {
    let s = Server::start();
    let mut q = query("mkcld.io.", RecordType::SOA, None);
    q.metadata.op_code = OpCode::Notify;
    assert_eq!(code(&udp(s.v4, &q)), ResponseCode::NotImp);
    q.metadata.op_code = OpCode::Status;
    assert_eq!(code(&udp(s.v4, &q)), ResponseCode::NotImp);
    q.metadata.op_code = OpCode::Update;
    assert_eq!(code(&udp(s.v4, &q)), ResponseCode::Refused);
}

#[test]
fn edns_versions_above_zero_get_badvers() {
    let s = Server::start();
    let mut q = query("mkcld.io.", RecordType::SOA, None);
    q.edns.as_mut().unwrap().set_version(1);
    let r = udp(s.v4, &q);
    // RCODE 16 is BADVERS with an OPT record (hickory's decoder names it BADSIG).
    assert_eq!(u16::from(code(&r)), 16);
    assert_eq!(r.edns.as_ref().unwrap().version(), 0);
}

#[test]
fn malformed_queries_get_formerr() {
    let s = Server::start();
    // Two questions.
    let mut q = query("mkcld.io.", RecordType::SOA, None);
    q.add_query(Query::query(
        Name::from_ascii("ns1.mkcld.io.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(code(&udp(s.v4, &q)), ResponseCode::FormErr);
    // No question.
    let empty = Message::new(7, MessageType::Query, OpCode::Query);
    assert_eq!(code(&udp(s.v4, &empty)), ResponseCode::FormErr);
    // A question cut in the middle: header-only FORMERR with the ID echoed.
    let mut raw = query("mkcld.io.", RecordType::SOA, None).to_vec().unwrap();
    raw.truncate(16);
    let r = Message::from_vec(&udp_raw(s.v4, &raw).unwrap()).unwrap();
    assert_eq!((code(&r), r.id), (ResponseCode::FormErr, 0x4d47));
}

#[test]
fn malformed_ecs_gets_formerr() {
    let s = Server::start();
    let good = query("mgnt.mkcld.io.", RecordType::A, Some("81.240.0.0/16"))
        .to_vec()
        .unwrap();
    // The ECS option is the last 4+4+2 bytes: family 1, source 16, scope 0, 2 address octets.
    let n = good.len();
    assert_eq!(&good[n - 6..n - 2], &[0, 1, 16, 0]);
    let mut scope = good.clone();
    scope[n - 3] = 8;
    let mut family = good.clone();
    family[n - 5] = 9;
    let mut host_bits = good.clone();
    host_bits[n - 4] = 10; // 81.240 has bits set past /10
    for (what, bytes) in [
        ("scope", scope),
        ("family", family),
        ("host bits", host_bits),
    ] {
        let r = Message::from_vec(&udp_raw(s.v4, &bytes).unwrap()).unwrap();
        assert_eq!(code(&r), ResponseCode::FormErr, "{what}");
    }
}

#[test]
fn question_case_is_echoed_and_matching_ignores_case() {
    let s = Server::start();
    let q = query("NS1.MkClD.iO.", RecordType::A, None);
    let raw = udp_raw(s.v4, &q.to_vec().unwrap()).unwrap();
    let r = Message::from_vec(&raw).unwrap();
    assert_eq!(code(&r), ResponseCode::NoError);
    assert_eq!(r.queries[0].name().to_ascii(), "NS1.MkClD.iO.");
    let r = udp(
        s.v4,
        &query("MGNT.mkcld.IO.", RecordType::A, Some("177.0.0.0/8")),
    );
    assert_eq!(region_of(&r).as_deref(), Some("sa1"));
}

#[test]
fn responses_that_do_not_fit_are_truncated_and_complete_over_tcp() {
    let s = Server::start();
    // Without EDNS the limit is 512 bytes; a zone with many records at one name
    // would be needed to pass it, so shrink the buffer instead: 512 is the floor,
    // and the ANY answer at the apex (SOA + 2 NS + ...) is small. Use a big TXT set.
    let fixture = Fixture::new();
    let mut zone = ZONE.to_owned();
    for i in 0..40 {
        zone.push_str(&format!(
            "big IN TXT \"record number {i} with some padding text to grow\"\n"
        ));
    }
    std::fs::write(fixture.path("zones/mkcld.io.zone"), zone).unwrap();
    drop(s);
    let s = Server::start_with(fixture);
    let mut q = query("big.mkcld.io.", RecordType::TXT, None);
    q.edns = None;
    let r = udp(s.v4, &q);
    assert!(r.truncation, "TC=1 over UDP without EDNS");
    assert!(r.answers.is_empty(), "no partial RRset");
    assert_eq!(r.queries.len(), 1);
    let r = udp(s.v4, &query("big.mkcld.io.", RecordType::TXT, None));
    assert!(r.truncation, "still larger than 1232");
    assert!(r.edns.is_some(), "OPT kept in the truncated reply");
    let r = tcp(s.v4, &q);
    assert!(!r.truncation);
    assert_eq!(r.answers.len(), 40);
}

#[test]
fn tcp_serves_several_queries_per_connection_and_closes_idle_ones() {
    let s = Server::start();
    let mut conn = TcpStream::connect(s.v4).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for i in 0..5u16 {
        let mut q = query("mgnt.mkcld.io.", RecordType::A, Some("1.0.16.0/24"));
        q.metadata.id = i;
        let r = Message::from_vec(&tcp_exchange(&mut conn, &q.to_vec().unwrap())).unwrap();
        assert_eq!((r.id, region_of(&r).as_deref()), (i, Some("asia1")));
    }
    // tcp_idle_timeout is 2s in the test config: the server closes the connection.
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1];
    assert_eq!(conn.read(&mut buf).unwrap(), 0, "closed by the server");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn tcp_connections_beyond_the_limit_are_closed() {
    let s = Server::start();
    // tcp_max_connections = 8 in the test config.
    let held: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(s.v4).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(s.v4).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 1];
    assert!(
        matches!(extra.read(&mut buf), Ok(0) | Err(_)),
        "over the limit: closed"
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    let r = tcp(s.v4, &query("ns1.mkcld.io.", RecordType::A, None));
    assert_eq!(
        code(&r),
        ResponseCode::NoError,
        "served again once connections close"
    );
}

/// `dig +nsid` and `dig CH TXT id.server` tell which node answered; other
/// CHAOS names (version.bind) stay refused.
#[test]
fn the_node_tells_its_name_by_nsid_and_chaos_txt() {
    let fixture = Fixture::new();
    fixture.write_config(
        &(config_text("\"127.0.0.1:0\", \"[::1]:0\"") + "\n[node]\nname = \"dns-a.fra\"\n"),
    );
    let s = Server::start_with(fixture);
    let port = port_arg(s.v4);
    let dig = |args: &[&str]| {
        let mut all = vec!["@127.0.0.1", "-p", &port];
        all.extend_from_slice(args);
        run("dig", &all)
    };
    // Over the fast path's usual question, and for zone data.
    for name in ["mgnt.mkcld.io", "ns1.mkcld.io"] {
        let out = dig(&["+nsid", name]);
        assert!(out.contains("status: NOERROR"), "{out}");
        assert!(
            out.contains("NSID: 64 6e 73 2d 61 2e 66 72 61 (\"dns-a.fra\")"),
            "{out}"
        );
        let out = dig(&[name]);
        assert!(!out.contains("NSID"), "only when asked: {out}");
    }
    for name in ["id.server", "hostname.bind", "ID.Server"] {
        let out = dig(&["CH", "TXT", name, "+norec"]);
        assert!(out.contains("status: NOERROR"), "{out}");
        assert!(out.contains("flags: qr aa;"), "{out}");
        assert!(out.contains("CH\tTXT\t\"dns-a.fra\""), "{out}");
    }
    let out = dig(&["CH", "A", "id.server"]);
    assert!(
        out.contains("status: NOERROR") && out.contains("ANSWER: 0"),
        "{out}"
    );
    let out = dig(&["CH", "TXT", "version.bind"]);
    assert!(out.contains("status: REFUSED"), "{out}");
    // And the metrics say which node they come from.
    let (_, metrics) = s.get("/metrics");
    let text = metrics.as_str().unwrap_or_default();
    assert!(
        text.contains("mgnt_node_info{node=\"dns-a.fra\"} 1"),
        "{text}"
    );
}

#[test]
fn non_in_classes_are_refused() {
    let s = Server::start();
    let mut q = query("mkcld.io.", RecordType::SOA, None);
    let mut ch = q.queries[0].clone();
    ch.set_query_class(DNSClass::CH);
    q.queries = vec![ch];
    assert_eq!(code(&udp(s.v4, &q)), ResponseCode::Refused);
}
