//! Geo answers from the real server, by ECS and by source address, over UDP and TCP.

mod common;

use common::*;
use hickory_proto::{
    op::ResponseCode,
    rr::{DNSClass, Name, RecordType},
};
use hickory_server::net::{
    client::{Client, ClientHandle},
    runtime::TokioRuntimeProvider,
    tcp::TcpClientStream,
    udp::UdpClientStream,
};

/// (ECS prefix, expected region) across six countries on four continents, IPv4 and IPv6.
const CASES: &[(&str, &str)] = &[
    ("81.240.0.0/16", "europe1"),     // Belgium, city coordinates
    ("41.40.0.0/16", "europe1"),      // Egypt: Frankfurt is nearer than São Paulo
    ("3.5.0.0/16", "us1"),            // USA
    ("24.1.0.0/16", "us1"),           // Canada, country centroid only
    ("1.0.16.0/24", "asia1"),         // Japan
    ("1.130.0.0/16", "asia1"),        // Australia
    ("177.10.0.0/16", "sa1"),         // Brazil
    ("181.1.0.0/16", "sa1"),          // Argentina, country centroid only
    ("2a02:1800:10::/48", "europe1"), // Belgium, IPv6
    ("2400:4000::/32", "asia1"),      // Japan, IPv6
    ("2804:14c::/32", "sa1"),         // Brazil, IPv6
];

#[test]
fn ecs_routes_each_country_to_its_nearest_region_over_udp_and_tcp() {
    let server = Server::start();
    for &(net, want) in CASES {
        for (addr, transport) in [(server.v4, "udp4"), (server.v6, "udp6")] {
            let r = udp(addr, &query("mgnt.mkcld.io.", RecordType::A, Some(net)));
            assert_eq!(r.response_code, ResponseCode::NoError, "{net} {transport}");
            assert!(r.authoritative, "{net}");
            assert_eq!(
                region_of(&r).as_deref(),
                Some(want),
                "{net} over {transport}"
            );
        }
        let r = tcp(
            server.v4,
            &query("mgnt.mkcld.io.", RecordType::AAAA, Some(net)),
        );
        assert_eq!(region_of(&r).as_deref(), Some(want), "{net} over tcp");
        assert!(addresses(&r).iter().all(|a| a.is_ipv6()), "{net}: {r:?}");
        assert_eq!(
            addresses(&r).len(),
            1,
            "{net}: AAAA of the region follows the CNAME"
        );
    }
}

#[test]
fn cname_answer_carries_the_region_address_and_ttls() {
    let server = Server::start();
    let r = udp(
        server.v4,
        &query("mgnt.mkcld.io.", RecordType::A, Some("81.240.0.0/16")),
    );
    assert_eq!(r.answers.len(), 2);
    assert_eq!(r.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(r.answers[0].ttl, 60);
    assert_eq!(
        r.answers[1].name,
        Name::from_ascii("europe1.mkcld.io.").unwrap()
    );
    assert_eq!(
        addresses(&r),
        ["192.0.2.11".parse::<std::net::IpAddr>().unwrap()]
    );
}

#[test]
fn ecs_scope_is_the_deciding_network_even_past_the_source_prefix() {
    let server = Server::start();
    let scope = |net: &str| {
        let r = udp(
            server.v4,
            &query("mgnt.mkcld.io.", RecordType::A, Some(net)),
        );
        ecs_echo(&r).expect("ECS echoed")
    };
    // The database network is 81.240.0.0/14, but 81.241.7.0/24 is an override inside it.
    assert_eq!(scope("81.240.0.0/16"), (16, 16));
    // RFC 7871 §7.2.1: longer than the source prefix when more bits decided.
    assert_eq!(scope("81.240.0.0/12"), (12, 16));
    assert_eq!(
        scope("81.241.0.0/16"),
        (16, 22),
        "the /22 that excludes the override"
    );
    assert_eq!(scope("3.5.0.0/16"), (16, 9), "US network is a /9");
    assert_eq!(scope("3.5.7.0/24"), (24, 9));
    // Non-geo names echo scope 0 (RFC 7871 §7.2.1).
    let r = udp(
        server.v4,
        &query("ns1.mkcld.io.", RecordType::A, Some("3.5.0.0/16")),
    );
    assert_eq!(ecs_echo(&r), Some((16, 0)));
}

#[test]
fn overrides_win_over_distance() {
    let server = Server::start();
    let region = |net: &str| {
        region_of(&udp(
            server.v4,
            &query("mgnt.mkcld.io.", RecordType::A, Some(net)),
        ))
        .unwrap()
    };
    assert_eq!(region("49.224.0.0/16"), "us1", "country override NZ → us1");
    assert_eq!(
        region("81.241.7.0/24"),
        "sa1",
        "prefix override inside Belgium"
    );
    assert_eq!(
        region("81.241.8.0/24"),
        "europe1",
        "outside the override prefix"
    );
    let r = udp(
        server.v4,
        &query("mgnt.mkcld.io.", RecordType::A, Some("81.241.7.0/24")),
    );
    assert_eq!(ecs_echo(&r), Some((24, 24)));
}

#[test]
fn without_ecs_the_source_address_locates_the_client() {
    // Loopback is in no database: the configured order answers, europe1 first.
    let server = Server::start();
    let r = udp(server.v4, &query("mgnt.mkcld.io.", RecordType::A, None));
    assert_eq!(region_of(&r).as_deref(), Some("europe1"));
    assert_eq!(
        ecs_echo(&r),
        None,
        "no ECS in the query, none in the answer"
    );
    // A zero source prefix also means "use the packet's source".
    let r = udp(
        server.v4,
        &query("mgnt.mkcld.io.", RecordType::A, Some("0.0.0.0/0")),
    );
    assert_eq!(region_of(&r).as_deref(), Some("europe1"));
    assert_eq!(ecs_echo(&r), Some((0, 0)));
}

#[test]
fn address_mode_answers_with_the_region_addresses_directly() {
    let server = Server::start();
    let r = udp(
        server.v4,
        &query("direct.mkcld.io.", RecordType::AAAA, Some("2804::/16")),
    );
    assert_eq!(r.answers.len(), 1);
    assert_eq!(
        r.answers[0].name,
        Name::from_ascii("direct.mkcld.io.").unwrap()
    );
    assert_eq!(r.answers[0].ttl, 30);
    assert_eq!(
        addresses(&r),
        ["2001:db8::41".parse::<std::net::IpAddr>().unwrap()]
    );
    let r = udp(
        server.v4,
        &query("direct.mkcld.io.", RecordType::MX, Some("2804::/16")),
    );
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
}

#[test]
fn other_types_at_a_geo_name_get_the_cname_and_nodata() {
    let server = Server::start();
    let r = udp(
        server.v4,
        &query("mgnt.mkcld.io.", RecordType::TXT, Some("177.0.0.0/8")),
    );
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert_eq!(region_of(&r).as_deref(), Some("sa1"));
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(r.authorities[0].ttl, 60, "negative TTL");
    let r = udp(server.v4, &query("mgnt.mkcld.io.", RecordType::CNAME, None));
    assert_eq!(r.answers.len(), 1);
    assert!(r.authorities.is_empty(), "the CNAME answers a CNAME query");
}

#[tokio::test]
async fn hickory_client_over_udp_and_tcp() {
    let server = Server::start();
    let name = Name::from_ascii("mgnt.mkcld.io.").unwrap();

    let udp = UdpClientStream::builder(server.v4, TokioRuntimeProvider::default()).build();
    let (mut client, bg) = Client::<TokioRuntimeProvider>::from_sender(udp);
    tokio::spawn(bg);
    let r = client
        .query(name.clone(), DNSClass::IN, RecordType::A)
        .await
        .unwrap();
    assert_eq!(region_of(&r).as_deref(), Some("europe1"));
    assert_eq!(addresses(&r).len(), 1);

    let (stream, sender) =
        TcpClientStream::new(server.v6, None, None, TokioRuntimeProvider::default());
    let (mut client, bg) = Client::<TokioRuntimeProvider>::new(stream.await.unwrap(), sender);
    tokio::spawn(bg);
    for _ in 0..3 {
        let r = client
            .query(name.clone(), DNSClass::IN, RecordType::AAAA)
            .await
            .unwrap();
        assert_eq!(region_of(&r).as_deref(), Some("europe1"));
    }
}

/// Without `dig` or `kdig` a test says which package to install, in one line.
#[test]
fn a_missing_dns_client_names_its_package() {
    let empty = tempfile::tempdir().unwrap();
    for (cmd, package) in DNS_CLIENTS {
        let failed = std::panic::catch_unwind(|| run_on_path(cmd, &["-v"], Some(empty.path())));
        let panic = failed.expect_err("ran without being installed");
        let said = panic.downcast_ref::<String>().unwrap();
        assert_eq!(
            said,
            &format!(
                "`{cmd}` is not installed: the tests query the server with it; install the Debian package {package} (`apt-get install {package}`; scripts/test does)"
            )
        );
    }
}

#[test]
fn dig_and_kdig_see_the_geo_answer() {
    let server = Server::start();
    let port = port_arg(server.v4);
    let out = run(
        "dig",
        &[
            "@127.0.0.1",
            "-p",
            &port,
            "+subnet=81.240.0.0/16",
            "mgnt.mkcld.io",
            "+noall",
            "+answer",
            "+comments",
        ],
    );
    assert!(out.contains("status: NOERROR"), "{out}");
    assert!(out.contains("CLIENT-SUBNET: 81.240.0.0/16/16"), "{out}");
    assert!(out.contains("CNAME\teurope1.mkcld.io."), "{out}");
    assert!(out.contains("192.0.2.11"), "{out}");
    let out = run(
        "kdig",
        &[
            "@::1",
            "-p",
            &port_arg(server.v6),
            "+tcp",
            "+subnet=2400:4000::/32",
            "mgnt.mkcld.io",
            "AAAA",
        ],
    );
    assert!(out.contains("asia1.mkcld.io."), "{out}");
    assert!(out.contains("2001:db8::31"), "{out}");
}

/// The GeoIP file rewritten in place (truncated, then written again) while
/// queries run: the server answers on from the copy it holds; a reload reads
/// the file as it is then (refusing a broken one, keeping the old).
#[test]
fn a_geoip_file_rewritten_in_place_disturbs_no_lookup_and_a_reload_reads_it() {
    let mut server = Server::start();
    let file = server.fixture.path("test-city.mmdb");
    let good = std::fs::read(&file).unwrap();
    let v4 = server.v4;
    let belgium = || {
        region_of(&udp(
            v4,
            &query("mgnt.mkcld.io.", RecordType::A, Some("81.240.0.0/16")),
        ))
    };
    assert_eq!(belgium().as_deref(), Some("europe1"));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let asking = {
        let (v4, stop) = (server.v4, stop.clone());
        std::thread::spawn(move || {
            let mut answered = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let m = udp(
                    v4,
                    &query("mgnt.mkcld.io.", RecordType::A, Some("81.240.0.0/16")),
                );
                assert_eq!(region_of(&m).as_deref(), Some("europe1"));
                answered += 1;
            }
            answered
        })
    };
    for _ in 0..50 {
        // What `cp` does: truncate, then write.
        std::fs::write(&file, &good[..good.len() / 3]).unwrap();
        std::fs::write(&file, &good).unwrap();
    }
    std::fs::write(&file, &good[..good.len() / 3]).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(asking.join().unwrap() > 0);
    assert!(server.is_running(), "the server died");
    // A reload now reads the truncated file: refused, the old data kept.
    let (status, body) = server.post("/v1/reload", None);
    assert_ne!(status, 200, "{body}");
    assert!(body.to_string().contains("test-city.mmdb"), "{body}");
    assert_eq!(belgium().as_deref(), Some("europe1"));
    std::fs::write(&file, &good).unwrap();
    let (status, body) = server.post("/v1/reload", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(belgium().as_deref(), Some("europe1"));
}
