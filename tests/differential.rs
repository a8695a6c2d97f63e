//! The fast path must answer exactly as the full path does, byte for byte.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query},
    rr::{
        DNSClass, Name, RecordType,
        rdata::opt::{ClientSubnet, EdnsCode, EdnsOption, NSIDPayload},
    },
};
use hickory_server::net::xfer::Protocol;
use mgnt::{
    config::Config,
    dns::{
        Data, RouteCache,
        answer::Responder,
        cookie::{self, Received, Secrets},
        fast,
    },
    locate::Client,
    route::{RegionState, RegionView},
};

fn random_case(rng: &mut Rng, s: &str) -> String {
    s.chars()
        .map(|c| {
            if rng.coin(50) {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

fn random_addr(rng: &mut Rng) -> IpAddr {
    let (net, _, _) = rng.pick(NETWORKS);
    let net: ipnet::IpNet = net.parse().unwrap();
    match net {
        ipnet::IpNet::V4(n) => {
            let host = rng.next() as u32 & !u32::from(n.netmask());
            IpAddr::V4((u32::from(n.network()) | host).into())
        }
        ipnet::IpNet::V6(n) => {
            let host =
                (u128::from(rng.next()) << 64 | u128::from(rng.next())) & !u128::from(n.netmask());
            IpAddr::V6((u128::from(n.network()) | host).into())
        }
    }
}

/// A COOKIE option value: a client cookie alone, with a valid server
/// cookie for `src` (when there are secrets), with a foreign one, or malformed.
fn random_cookie(rng: &mut Rng, secrets: Option<&Secrets>, src: IpAddr) -> Vec<u8> {
    let client = rng.next().to_be_bytes();
    match rng.below(4) {
        0 => client.to_vec(),
        1 => match secrets {
            Some(s) => {
                let first = s.judge(&Received::parse(&client).unwrap(), src, cookie::now());
                first.reply.to_vec()
            }
            None => client.to_vec(),
        },
        2 => [client, rng.next().to_be_bytes(), rng.next().to_be_bytes()].concat(),
        _ => client[..rng.below(8) as usize].to_vec(),
    }
}

fn random_query(rng: &mut Rng, secrets: Option<&Secrets>, src: IpAddr) -> Vec<u8> {
    let names = [
        "mgnt.mkcld.io.",
        "direct.mkcld.io.",
        "ns1.mkcld.io.",
        "nope.mkcld.io.",
        "example.com.",
    ];
    let name = if rng.coin(80) {
        names[rng.below(2) as usize]
    } else {
        *rng.pick(&names)
    };
    let qtypes = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::TXT,
        RecordType::ANY,
        RecordType::CNAME,
        RecordType::MX,
    ];
    let qtype = if rng.coin(80) {
        *rng.pick(&qtypes[..2])
    } else {
        *rng.pick(&qtypes)
    };
    let mut m = Message::new(rng.next() as u16, MessageType::Query, OpCode::Query);
    // Mostly lower case, so questions repeat and replayed answers are tested.
    let name = if rng.coin(30) {
        random_case(rng, name)
    } else {
        name.to_owned()
    };
    let mut query = Query::query(Name::from_ascii(name).unwrap(), qtype);
    // CHAOS: the node's identity names (answered by the full path only),
    // and other names in that class (refused).
    if rng.coin(3) {
        let chaos = *rng.pick(&[
            "id.server.",
            "hostname.bind.",
            "version.bind.",
            "mgnt.mkcld.io.",
        ]);
        query = Query::query(Name::from_ascii(chaos).unwrap(), qtype);
        query.set_query_class(DNSClass::CH);
    }
    m.add_query(query);
    m.metadata.recursion_desired = rng.coin(50);
    m.metadata.checking_disabled = rng.coin(20);
    m.metadata.authentic_data = rng.coin(20);
    if rng.coin(75) {
        let mut e = Edns::new();
        e.set_max_payload(*rng.pick(&[0u16, 512, 1232, 4096, 65535]));
        e.set_version(if rng.coin(95) { 0 } else { 1 });
        e.set_dnssec_ok(rng.coin(30));
        if rng.coin(70) {
            let src = random_addr(rng);
            let max = if src.is_ipv4() { 32 } else { 128 };
            let prefix = *rng
                .pick(&[0u8, 8, 13, 16, 20, 24, 32, 48, 56, 64, 128])
                .min(&max);
            let net = ipnet::IpNet::new(src, prefix).unwrap().trunc();
            e.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(net.addr(), prefix, 0)));
        }
        if rng.coin(40) {
            let code = u16::from(EdnsCode::Cookie);
            e.options_mut()
                .insert(EdnsOption::Unknown(code, random_cookie(rng, secrets, src)));
            if rng.coin(3) {
                let again = EdnsOption::Unknown(code, random_cookie(rng, secrets, src));
                e.options_mut().insert(again);
            }
        }
        if rng.coin(5) {
            e.options_mut().insert(EdnsOption::Unknown(65001, vec![9]));
        }
        if rng.coin(5) {
            let asked = NSIDPayload::new(Vec::new()).unwrap();
            e.options_mut().insert(EdnsOption::NSID(asked));
        }
        m.edns = Some(e);
    }
    let mut raw = m.to_vec().unwrap();
    if rng.coin(15) {
        for _ in 0..=rng.below(3) {
            let i = rng.below(raw.len() as u64) as usize;
            raw[i] = rng.next() as u8;
        }
    }
    if rng.coin(3) {
        raw.truncate(rng.below(raw.len() as u64) as usize);
    }
    raw
}

/// The test config with `max_udp_payload` set, loaded as load `generation`.
fn load(fixture: &Fixture, max_udp_payload: u16, generation: u64) -> Data {
    let text = config_text("\"127.0.0.1:0\"").replace(
        "udp_sockets = 2",
        &format!("udp_sockets = 2\nmax_udp_payload = {max_udp_payload}"),
    );
    fixture.write_config(&text);
    let mut data = Data::load(Config::load(&fixture.config()).unwrap()).unwrap();
    data.generation = generation;
    // Every other load answers cookies.
    if generation % 2 == 1 {
        data.cookies = Some(Secrets::new([7; 16], Some([8; 16])));
    }
    data
}

/// Random region states: sometimes all serving, sometimes none (fail-open).
fn random_view(rng: &mut Rng, regions: usize) -> RegionView {
    let serving = match rng.below(4) {
        0 => 100,
        1 => 0,
        _ => 60,
    };
    RegionView {
        states: (0..regions)
            .map(|_| RegionState {
                serving: rng.coin(serving),
            })
            .collect(),
    }
}

#[tokio::test]
async fn fast_and_full_paths_answer_identically() {
    let fixture = Fixture::new();
    let responder = Responder::default();
    let mut rng = Rng(0x6d67_6e74_6661_7374);
    let (mut fast_count, mut total, mut replayed, mut cookies) = (0, 0, 0, 0);
    let mut out = Vec::new();
    // One thread's caches live across loads, as in the server.
    let mut caches = fast::Caches::default();
    // Payload limits below, at and above common answer sizes; region states
    // change every 1,000 queries, through warm caches.
    for (round, max_udp) in [1232u16, 512, 4096, 600].into_iter().enumerate() {
        let data = load(&fixture, max_udp, round as u64 + 1);
        let mut view = random_view(&mut rng, data.config.regions.len());
        for i in 0..5_000 {
            if i % 1_000 == 0 {
                view = random_view(&mut rng, data.config.regions.len());
            }
            let src: SocketAddr = (random_addr(&mut rng), 5353).into();
            let raw = random_query(&mut rng, data.cookies.as_ref(), src.ip());
            total += 1;
            // A server cookie carries the second it was made in: both paths
            // must answer within one second for their bytes to agree.
            let (full, fast) = loop {
                let second = cookie::now();
                let full = responder
                    .respond(&data, &view, &raw, src, Protocol::Udp)
                    .await;
                let fast = fast::answer(&data, &view, &raw, src.ip(), &mut out, &mut caches);
                if cookie::now() == second {
                    break (full, fast);
                }
            };
            if fast.is_none() {
                // As the server does: keep what the full path said, for replay.
                if let Some(full) = &full {
                    fast::learn(&data, &raw, src.ip(), full, &mut caches.answers);
                }
                continue;
            }
            fast_count += 1;
            let is_geo = Message::from_vec(&raw)
                .ok()
                .and_then(|m| {
                    m.queries
                        .first()
                        .map(|q| q.name().to_ascii().to_lowercase())
                })
                .is_some_and(|n| n.starts_with("mgnt.") || n.starts_with("direct."));
            replayed += usize::from(!is_geo);
            let answered = Message::from_vec(&out).ok().and_then(|m| m.edns);
            cookies += usize::from(answered.is_some_and(|e| e.option(EdnsCode::Cookie).is_some()));
            assert_eq!(
                Some(&out),
                full.as_ref(),
                "max_udp_payload {max_udp}, query {raw:02x?}\nfast {:?}\nfull {:?}",
                Message::from_vec(&out),
                full.as_deref().map(Message::from_vec)
            );
        }
    }
    eprintln!(
        "fast path answered {fast_count} of {total}, {replayed} of them replayed, {cookies} with a cookie"
    );
    assert!(cookies > 300, "only {cookies} fast answers with a cookie");
    assert!(
        fast_count > total / 3,
        "the fast path took only {fast_count} of {total}"
    );
    // Each of the four loads starts the replay cache over.
    assert!(replayed > 600, "only {replayed} replayed answers");
    assert!(caches.answers.len() <= mgnt::dns::replay::MAX_ENTRIES);
}

/// The route cache (by /24 and /16 block) must never change a client's
/// region orders or its scope, next to override prefixes too, for any
/// source prefix.
#[test]
fn cached_routing_agrees_with_uncached() {
    let fixture = Fixture::new();
    let data = Data::load(Config::load(&fixture.config()).unwrap()).unwrap();
    let mut rng = Rng(0x6361_6368_6521);
    let mut cache = RouteCache::default();
    for i in 0..50_000 {
        let ip = match rng.below(10) {
            // Around the override prefix 81.241.7.0/24, inside 81.240.0.0/14.
            0..=2 => IpAddr::from([81, 241, rng.below(16) as u8, rng.next() as u8]),
            // Anywhere, mostly where the database has no record.
            3 => IpAddr::from((rng.next() as u32).to_be_bytes()),
            4 => IpAddr::from([127, 0, 0, 1 + rng.below(3) as u8]),
            _ => random_addr(&mut rng),
        };
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = *rng.pick(&[0u8, 8, 13, 16, 20, 24, 32, 48, 56, 128]);
        let client = Client::of(ip, (i % 3 != 0).then_some((ip, prefix.min(width))));
        let cached = cache.locate(&data.maps, 1, client);
        let plain = data.maps.locate(client);
        assert_eq!(
            (cached.orders, cached.scope),
            (plain.orders, plain.scope),
            "{ip} {client:?}"
        );
    }
}
