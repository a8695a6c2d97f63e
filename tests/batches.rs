//! Bursts from many clients at once, so the server takes many datagrams per
//! receive: every reply must reach the sender of its query, whichever path
//! answered it, and dropped datagrams must not shift the others.

mod common;

use std::{
    collections::HashMap,
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use common::*;
use hickory_proto::{op::Message, rr::RecordType};

/// What one query should get back: its question name and, for geo
/// queries, the region.
#[derive(Debug, Clone)]
struct Expect {
    name: String,
    region: Option<&'static str>,
}

/// The `j`th datagram of a client: the answer it expects, `None` if the
/// server must drop it.
fn datagram(id: u16, j: usize) -> (Vec<u8>, Option<Expect>) {
    let with_id = |mut m: Message| {
        m.metadata.id = id;
        m.to_vec().unwrap()
    };
    let expect = |name: &str, region| {
        Some(Expect {
            name: name.to_owned(),
            region,
        })
    };
    match j % 6 {
        // Fast path, two regions.
        0 => (
            with_id(query("mgnt.mkcld.io.", RecordType::A, Some("177.0.0.0/8"))),
            expect("mgnt.mkcld.io.", Some("sa1")),
        ),
        1 => (
            with_id(query("mgnt.mkcld.io.", RecordType::A, Some("1.0.16.0/24"))),
            expect("mgnt.mkcld.io.", Some("asia1")),
        ),
        // Replayed after the first full-path answer.
        2 => (
            with_id(query("ns1.mkcld.io.", RecordType::A, None)),
            expect("ns1.mkcld.io.", None),
        ),
        // Full path only.
        3 => (
            with_id(query("mkcld.io.", RecordType::SOA, None)),
            expect("mkcld.io.", None),
        ),
        // A response (QR=1) and a runt: no reply.
        4 => {
            let mut r = with_id(query("mgnt.mkcld.io.", RecordType::A, None));
            r[2] |= 0x80;
            (r, None)
        }
        _ => (vec![(id >> 8) as u8, id as u8, 0, 0, 0], None),
    }
}

#[test]
fn every_reply_reaches_its_sender_in_bursts() {
    let server = Server::start();
    let clients: Vec<(UdpSocket, SocketAddr)> = (0..16)
        .map(|i| {
            let (bind, to) = if i % 4 == 3 {
                ("[::1]:0", server.v6)
            } else {
                ("127.0.0.1:0", server.v4)
            };
            (UdpSocket::bind(bind).unwrap(), to)
        })
        .collect();
    let per_client = 60;
    let mut expected: Vec<HashMap<u16, Expect>> = vec![HashMap::new(); clients.len()];
    // Round-robin over the clients without reading, so datagrams of all of
    // them queue up together in the server's sockets.
    for j in 0..per_client {
        for (c, (sock, to)) in clients.iter().enumerate() {
            let id = (c * 1000 + j) as u16;
            let (bytes, expect) = datagram(id, j + c);
            sock.send_to(&bytes, to).unwrap();
            if let Some(e) = expect {
                expected[c].insert(id, e);
            }
        }
    }
    let mut buf = [0u8; 4096];
    for (c, (sock, to)) in clients.iter().enumerate() {
        let mut left = expected[c].clone();
        let deadline = Instant::now() + Duration::from_secs(5);
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        // Until every expected reply came and nothing more arrives.
        while Instant::now() < deadline {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                if left.is_empty() {
                    break;
                }
                continue;
            };
            assert_eq!(from, *to, "client {c}: reply from the server's address");
            let m = Message::from_vec(&buf[..n]).expect("a DNS message");
            let Some(e) = left.remove(&m.metadata.id) else {
                panic!("client {c}: unexpected reply id {}", m.metadata.id);
            };
            assert_eq!(m.queries[0].name().to_ascii(), e.name, "client {c}");
            if let Some(region) = e.region {
                assert_eq!(region_of(&m).as_deref(), Some(region), "client {c}");
            }
        }
        assert!(left.is_empty(), "client {c}: no reply to {left:?}");
    }
}
