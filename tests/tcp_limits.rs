//! DNS over TCP under a flood from one source: its connections count against
//! its own share (`[dns] tcp_max_per_source`), so another source is answered.

mod common;

use std::net::{SocketAddr, TcpStream};

use common::*;

/// A TCP connection to `server` from `source`.
fn connect_from(source: &str, server: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let from: SocketAddr = format!("{source}:0").parse().unwrap();
    socket.bind(&from.into())?;
    socket.connect(&server.into())?;
    Ok(socket.into())
}

#[test]
fn a_flood_from_one_source_leaves_room_for_another() {
    common::limits::raise_open_files();
    let fixture = Fixture::new();
    fixture.write_config(
        &config_text("\"127.0.0.1:0\", \"[::1]:0\"")
            .replace("tcp_max_connections = 8", "tcp_max_connections = 1024"),
    );
    let server = Server::start_with(fixture);
    // 1,100 connections from 127.0.0.2, held open: more than every slot.
    let flood: Vec<TcpStream> = (0..1100)
        .filter_map(|_| connect_from("127.0.0.2", server.v4).ok())
        .collect();
    assert!(flood.len() > 1024, "only {} connections made", flood.len());
    // Another source is answered meanwhile.
    let out = run(
        "dig",
        &[
            "@127.0.0.1",
            "-b",
            "127.0.0.3",
            "-p",
            &port_arg(server.v4),
            "+tcp",
            "+tries=1",
            "+time=5",
            "mgnt.mkcld.io",
            "SOA",
        ],
    );
    assert!(out.contains("status: NOERROR"), "{out}");
    // What the flood lost is counted: all but the source's share (64).
    let closed = server.get_until("/metrics", "the flood counted", |m| {
        m.as_str().is_some_and(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("mgnt_dns_tcp_closed_total{reason=\"per_source\"} "))
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n == flood.len() - 64)
        })
    });
    assert!(
        closed
            .as_str()
            .unwrap()
            .contains("mgnt_dns_tcp_closed_total{reason=\"cap\"} 0")
    );
    drop(flood);
}
