//! Criterion benchmarks of the per-query work, without sockets:
//! GeoIP lookup + routing decision, the fast-path reply (without and with a
//! DNS cookie), the full path, a replayed answer for a static name, and the
//! replay cache under a random-subdomain flood.
//! Uses the shipped config and GeoIP database. `cargo bench --bench lookup`.

use std::{hint::black_box, net::IpAddr, path::Path};

use criterion::{Criterion, criterion_group, criterion_main};
use hickory_server::net::xfer::Protocol;
use mgnt::{
    config::Config,
    dns::{Data, answer::Responder, cookie, fast},
    locate::Client,
    route::{self, RegionView},
};

/// Addresses on four continents (Belgium, USA, Japan, Brazil).
const CLIENTS: [&str; 4] = ["81.240.7.1", "3.5.7.1", "1.0.16.1", "177.10.7.1"];

fn load() -> Data {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("mgnt.toml");
    Data::load(Config::load(&config).expect("config")).expect("data")
}

/// `mgnt.mkcld.io A` with EDNS and an ECS /24 for `client`.
fn ecs_query(client: IpAddr) -> Vec<u8> {
    let IpAddr::V4(a) = client else {
        unreachable!()
    };
    let o = a.octets();
    let mut q = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    q.extend_from_slice(b"\x04mgnt\x05mkcld\x02io\x00\x00\x01\x00\x01");
    q.extend_from_slice(&[
        0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 11, 0, 8, 0, 7, 0, 1, 24, 0,
    ]);
    q.extend_from_slice(&o[..3]);
    q
}

fn benches(c: &mut Criterion) {
    let data = load();
    let view = RegionView::all_serving(data.config.regions.len());
    let clients: Vec<IpAddr> = CLIENTS.iter().map(|s| s.parse().unwrap()).collect();

    c.bench_function("geoip lookup + routing decision", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % clients.len();
            let at = data.maps.locate(Client::address(black_box(clients[i])));
            black_box(route::decide(data.maps.order(at.orders, 0), &view))
        })
    });

    let queries: Vec<Vec<u8>> = clients.iter().map(|&c| ecs_query(c)).collect();
    let src: IpAddr = "127.0.0.1".parse().unwrap();
    c.bench_function("fast-path reply (geo A + ECS)", |b| {
        let (mut i, mut out) = (0, Vec::with_capacity(512));
        let mut caches = fast::Caches::default();
        b.iter(|| {
            i = (i + 1) % queries.len();
            let q = black_box(&queries[i]);
            black_box(fast::answer(&data, &view, q, src, &mut out, &mut caches))
        })
    });

    // The same queries with a client cookie and the server cookie made for
    // it: judged valid, echoed (one SipHash per query).
    let mut with_cookies = data_with_cookies();
    with_cookies.generation = 1;
    let cookie_queries: Vec<Vec<u8>> = queries
        .iter()
        .map(|q| with_cookie(&with_cookies, q, src))
        .collect();
    c.bench_function("fast-path reply (geo A + ECS + valid cookie)", |b| {
        let (mut i, mut out) = (0, Vec::with_capacity(512));
        let mut caches = fast::Caches::default();
        b.iter(|| {
            i = (i + 1) % cookie_queries.len();
            let q = black_box(&cookie_queries[i]);
            let answered = fast::answer(&with_cookies, &view, q, src, &mut out, &mut caches);
            assert!(answered.is_some());
            black_box(answered)
        })
    });

    let responder = Responder::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let peer = "127.0.0.1:5353".parse().unwrap();
    c.bench_function("full-path reply (geo A + ECS)", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % queries.len();
            black_box(runtime.block_on(responder.respond(
                &data,
                &view,
                black_box(&queries[i]),
                peer,
                Protocol::Udp,
            )))
        })
    });

    // `ns1.mkcld.io A` with EDNS: answered once by the full path, then replayed.
    let mut ns1 = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1];
    ns1.extend_from_slice(b"\x03ns1\x05mkcld\x02io\x00\x00\x01\x00\x01");
    ns1.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    let full = runtime
        .block_on(responder.respond(&data, &view, &ns1, peer, Protocol::Udp))
        .expect("an answer");
    c.bench_function("replayed reply (static A, EDNS)", |b| {
        let (mut out, mut caches) = (Vec::with_capacity(512), fast::Caches::default());
        fast::learn(&data, &ns1, src, &full, &mut caches.answers);
        b.iter(|| {
            let replayed = fast::answer(&data, &view, black_box(&ns1), src, &mut out, &mut caches);
            assert!(replayed.is_some());
            black_box(replayed)
        })
    });
}

/// The shipped data with cookie secrets, as `mgnt serve` loads it.
fn data_with_cookies() -> Data {
    let mut data = load();
    data.cookies = Some(cookie::Secrets::new([0x5a; 16], None));
    data
}

/// `query` (a [`ecs_query`]: `mgnt.mkcld.io A`, then its OPT record) with a
/// COOKIE option added, whose server cookie `data` made for `src` just now.
fn with_cookie(data: &Data, query: &[u8], src: IpAddr) -> Vec<u8> {
    let client = [1, 2, 3, 4, 5, 6, 7, 8];
    let secrets = data.cookies.as_ref().expect("secrets");
    let received = cookie::Received::parse(&client).expect("a client cookie");
    let value = secrets.judge(&received, src, cookie::now()).reply;
    let mut q = query.to_vec();
    // Header, name (15 bytes), type and class; then the OPT record's owner,
    // type, payload and TTL (9 bytes) before its RDATA length.
    let rdlen_at = 12 + 15 + 4 + 9;
    let rdlen = u16::from_be_bytes([q[rdlen_at], q[rdlen_at + 1]]) + 4 + value.len() as u16;
    q[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    q.extend_from_slice(&cookie::CODE.to_be_bytes());
    q.extend_from_slice(&(value.len() as u16).to_be_bytes());
    q.extend_from_slice(&value);
    q
}

criterion_group!(lookup, benches);
criterion_main!(lookup);
