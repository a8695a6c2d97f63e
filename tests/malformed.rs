//! Thousands of malformed packets, then the server still answers correctly.

mod common;

use std::{
    io::Write,
    net::{TcpStream, UdpSocket},
    time::Duration,
};

use common::*;
use hickory_proto::{op::ResponseCode, rr::RecordType};

fn corpus() -> Vec<Vec<u8>> {
    let mut rng = Rng(0x6d67_6e74);
    let good = query("mgnt.mkcld.io.", RecordType::A, Some("81.240.0.0/16"))
        .to_vec()
        .unwrap();
    let mut out = Vec::new();
    // Random bytes of every small length.
    for len in 0..600 {
        out.push((0..len % 300).map(|_| rng.next() as u8).collect());
    }
    // Every cut of a good query.
    for n in 0..good.len() {
        out.push(good[..n].to_vec());
    }
    // Random byte flips in a good query (header, question, OPT, ECS).
    for _ in 0..3000 {
        let mut m = good.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(m.len() as u64) as usize;
            m[i] = rng.next() as u8;
        }
        m[2] &= 0x7f; // keep QR=0 so the server must answer or drop by its own rules
        out.push(m);
    }
    // Compression loops: a question name that points at itself, and two names pointing at each other.
    let mut header = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    let mut self_loop = header.clone();
    self_loop.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    out.push(self_loop);
    header[5] = 2;
    let mut mutual = header.clone();
    mutual.extend_from_slice(&[0xc0, 18, 0, 1, 0, 1, 0xc0, 12, 0, 1, 0, 1]);
    out.push(mutual);
    // Label lengths past the end, oversized names, huge counts.
    let mut long = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for _ in 0..200 {
        long.extend_from_slice(&[63]);
        long.extend(std::iter::repeat_n(b'a', 63));
    }
    out.push(long);
    out.push(vec![
        0, 1, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ]);
    // Bad ECS options: every family/source/scope combination in a few shapes.
    for family in [0u16, 1, 2, 3] {
        for source in [0u8, 7, 24, 33, 129, 255] {
            for addr_len in [0usize, 1, 3, 17] {
                let mut q = query("mgnt.mkcld.io.", RecordType::A, None)
                    .to_vec()
                    .unwrap();
                let opt_len_at = q.len() - 2;
                let mut opt = vec![0, 8];
                opt.extend_from_slice(&((4 + addr_len) as u16).to_be_bytes());
                opt.extend_from_slice(&family.to_be_bytes());
                opt.extend_from_slice(&[source, rng.next() as u8 & 1]);
                opt.extend((0..addr_len).map(|_| rng.next() as u8));
                q[opt_len_at..].copy_from_slice(&(opt.len() as u16).to_be_bytes());
                q.extend(opt);
                out.push(q);
            }
        }
    }
    out
}

#[test]
fn survives_malformed_udp_and_tcp_input() {
    let mut server = Server::start();
    let packets = corpus();
    assert!(packets.len() > 3000, "{}", packets.len());
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut answered = 0;
    let mut buf = [0u8; 4096];
    for (i, p) in packets.iter().enumerate() {
        sock.send_to(p, server.v4).unwrap();
        // Drain replies as we go so the socket buffer never overflows.
        if i % 50 == 49 {
            while sock.recv_from(&mut buf).is_ok() {
                answered += 1;
            }
        }
    }
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    while sock.recv_from(&mut buf).is_ok() {
        answered += 1;
    }
    assert!(
        answered > 1000,
        "most malformed queries get FORMERR or an answer: {answered}"
    );

    // The same corpus over TCP, many per connection; broken framing just closes it.
    for chunk in packets.chunks(400) {
        let Ok(mut conn) = TcpStream::connect(server.v4) else {
            panic!("server stopped accepting TCP");
        };
        for p in chunk {
            let mut framed = (p.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(p);
            if conn.write_all(&framed).is_err() {
                break;
            }
        }
    }
    let mut garbage = TcpStream::connect(server.v4).unwrap();
    let _ = garbage.write_all(&[0xff, 0xff, 1, 2, 3]);
    drop(garbage);

    assert!(server.is_running(), "the server process is still up");
    let r = udp(
        server.v4,
        &query("mgnt.mkcld.io.", RecordType::A, Some("177.0.0.0/8")),
    );
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert_eq!(region_of(&r).as_deref(), Some("sa1"));
    let r = tcp(
        server.v6,
        &query("mgnt.mkcld.io.", RecordType::A, Some("1.0.16.0/24")),
    );
    assert_eq!(region_of(&r).as_deref(), Some("asia1"));
}
