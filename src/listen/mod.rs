//! DNS over UDP and TCP: bytes between sockets and the answering code in
//! [`crate::dns`], against the state's current [`Snapshot`](crate::state::Snapshot)
//! (loaded once per UDP batch or TCP query, so data and view always match).
//!
//! UDP: several sockets per address with SO_REUSEPORT, so the kernel spreads
//! queries over receive threads without a shared queue ([`batch`]). TCP (RFC 7766): two-byte
//! length framing, many queries per connection, an idle timeout between
//! queries and an I/O timeout within one, and caps on open connections in all
//! and per source (an address, an IPv6 /64; checked first), so a flood of idle
//! clients cannot exhaust file descriptors nor one source deny the others.

use std::{
    io,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use hickory_server::net::xfer::Protocol;
use socket2::{Domain, Socket, Type};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    task::JoinSet,
    time::timeout,
};
use tracing::debug;

mod batch;

use crate::{
    config::DnsConfig,
    dns::answer::Responder,
    edge::{bind::BindError, sources::Sources},
    state::Reader,
};

/// Binds every listen address (UDP and TCP on the same port) and starts serving.
///
/// Returns the bound addresses (a configured port 0 becomes the kernel's choice)
/// and the set of tasks, which run until aborted.
pub fn start(
    config: &DnsConfig,
    state: Reader,
    responder: Arc<Responder>,
) -> Result<(Vec<SocketAddr>, JoinSet<()>), BindError> {
    let mut tasks = JoinSet::new();
    let mut bound = Vec::with_capacity(config.listen.len());
    let connections = Arc::new(Semaphore::new(config.tcp_max_connections));
    let sources = Arc::new(Sources::default());
    for &addr in &config.listen {
        let failed = |source| BindError::new(addr, "dns.listen", source);
        let (addr, udp, tcp) = bind_all(addr, config.udp_sockets).map_err(failed)?;
        for socket in udp {
            socket.set_nonblocking(false).map_err(failed)?;
            let (state, responder) = (state.clone(), responder.clone());
            let runtime = tokio::runtime::Handle::current();
            std::thread::Builder::new()
                .name(format!("udp {addr}"))
                .spawn(move || batch::serve(socket, &state, &responder, &runtime))
                .map_err(failed)?;
        }
        let answering = (state.clone(), responder.clone());
        let limits = TcpLimits {
            connections: connections.clone(),
            sources: sources.clone(),
            per_source: config.tcp_max_per_source,
            idle: config.tcp_idle_timeout,
            io: config.tcp_io_timeout,
        };
        tasks.spawn(serve_tcp(tcp, answering, limits));
        bound.push(addr);
    }
    Ok((bound, tasks))
}

/// Binds `udp_sockets` UDP sockets and a TCP listener on one port. With port 0
/// the kernel picks a UDP port that TCP may already use, so a few picks are tried.
fn bind_all(
    addr: SocketAddr,
    udp_sockets: usize,
) -> io::Result<(SocketAddr, Vec<std::net::UdpSocket>, TcpListener)> {
    let attempts = if addr.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let first = udp_socket(addr)?;
        let bound = first.local_addr()?;
        let mut udp = vec![first];
        let rest: io::Result<()> = (1..udp_sockets).try_for_each(|_| {
            udp.push(udp_socket(bound)?);
            Ok(())
        });
        match rest.and_then(|()| tcp_listener(bound)) {
            Ok(tcp) => return Ok((bound, udp, tcp)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AddrInUse)))
}

fn socket_for(addr: SocketAddr, ty: Type) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, None)?;
    if addr.is_ipv6() {
        // Lets "0.0.0.0:53" and "[::]:53" both be configured.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Socket buffers for UDP: bursts from many resolvers must not overflow the
/// default ~200 KB (the kernel caps this at net.core.rmem_max).
const UDP_SOCKET_BUFFER: usize = 4 << 20;

fn udp_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = socket_for(addr, Type::DGRAM)?;
    socket.set_reuse_port(true)?;
    // Best effort: a smaller buffer only means drops under extreme bursts.
    let _ = socket.set_recv_buffer_size(UDP_SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_SOCKET_BUFFER);
    omit_path_mtu_discovery(&socket, addr)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Answers go out without DF and ignore learned path MTUs (as gdnsd and Knot
/// do): a forged ICMP "fragmentation needed" cannot shrink our answers, a
/// resolver behind a small-MTU link still gets them (fragmented), and the
/// kernel skips the per-packet path-MTU bookkeeping.
fn omit_path_mtu_discovery(socket: &Socket, addr: SocketAddr) -> io::Result<()> {
    let (level, name, value) = if addr.is_ipv4() {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_OMIT,
        )
    } else {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_OMIT,
        )
    };
    crate::edge::sockopt::set_int(socket, level, name, value)
}

fn tcp_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket_for(addr, Type::STREAM)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// What bounds DNS over TCP, shared by every listener.
#[derive(Clone)]
struct TcpLimits {
    connections: Arc<Semaphore>,
    sources: Arc<Sources>,
    per_source: usize,
    idle: Duration,
    io: Duration,
}

/// Whose share a connection from `ip` counts against: the address for
/// IPv4, its /64 for IPv6 (one subscriber's or one server's network).
fn source_of(ip: IpAddr) -> IpAddr {
    match crate::geo::canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !0xffff_ffff_ffff_ffffu128)),
        v4 => v4,
    }
}

async fn serve_tcp(listener: TcpListener, answering: (Reader, Arc<Responder>), limits: TcpLimits) {
    loop {
        let (stream, peer) = crate::edge::accept::next(&listener, |error| {
            crate::throttled!(warn, "tcp accept failed", %error);
        })
        .await;
        let counters = &answering.1.tcp;
        // Per source first: one source's flood must not spend the shared slots.
        let Some(slot) = limits.sources.take(source_of(peer.ip()), limits.per_source) else {
            counters.per_source.fetch_add(1, Relaxed);
            continue;
        };
        let Ok(permit) = limits.connections.clone().try_acquire_owned() else {
            counters.cap.fetch_add(1, Relaxed);
            continue;
        };
        let (state, responder) = answering.clone();
        let (idle, io) = (limits.idle, limits.io);
        tokio::spawn(async move {
            let _held = (permit, slot);
            let served = tcp_connection(stream, peer, (&state, &responder), idle, io).await;
            if let Err(error) = served {
                if error.kind() == io::ErrorKind::TimedOut {
                    responder.tcp.io_timeout.fetch_add(1, Relaxed);
                }
                debug!(%error, %peer, "tcp connection closed");
            }
        });
    }
}

/// Serves one connection until the peer closes it, goes idle (no query
/// begun within `idle`), is too slow (a begun query or a reply not through
/// within `io`), or breaks framing.
async fn tcp_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    (state, responder): (&Reader, &Responder),
    idle: Duration,
    io: Duration,
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    loop {
        let mut len = [0u8; 2];
        match timeout(idle, stream.read_u8()).await {
            Ok(Ok(first)) => len[0] = first,
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        }
        len[1] = timeout(io, stream.read_u8())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "query length timed out"))??;
        buf.resize(usize::from(u16::from_be_bytes(len)), 0);
        timeout(io, stream.read_exact(&mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "query body timed out"))??;
        let snapshot = state.load_full();
        let (data, view) = (&snapshot.data, &snapshot.view);
        let Some(reply) = responder
            .respond(data, view, &buf, peer, Protocol::Tcp)
            .await
        else {
            continue;
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&(reply.len() as u16).to_be_bytes());
        out.extend_from_slice(&reply);
        timeout(io, stream.write_all(&out))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "reply write timed out"))??;
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn a_source_is_an_ipv4_address_or_an_ipv6_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(source_of(ip("198.51.100.7")), ip("198.51.100.7"));
        assert_eq!(source_of(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
        assert_eq!(source_of(ip("::ffff:198.51.100.7")), ip("198.51.100.7"));
    }

    fn option(socket: &std::net::UdpSocket, level: i32, name: i32) -> i32 {
        let (mut value, mut len) = (0i32, std::mem::size_of::<i32>() as libc::socklen_t);
        // SAFETY: getsockopt into a c_int of the size we pass.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                level,
                name,
                (&raw mut value).cast(),
                &raw mut len,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        value
    }

    #[test]
    fn udp_answers_go_without_path_mtu_discovery() {
        let v4 = udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(
            option(&v4, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER),
            libc::IP_PMTUDISC_OMIT
        );
        let v6 = udp_socket("[::1]:0".parse().unwrap()).unwrap();
        assert_eq!(
            option(&v6, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER),
            libc::IPV6_PMTUDISC_OMIT
        );
    }
}
