//! The syslog UDP socket: a receive buffer sized for bursts, and the
//! datagrams the kernel dropped because it was full (read from
//! `/proc/self/net/udp{,6}`, where Linux counts them per socket).

use std::{io, net::SocketAddr, os::fd::AsRawFd};

use socket2::{Domain, Protocol, Socket, Type};
use tracing::warn;

/// Binds `addr` with a receive buffer of `bytes`; returns the socket and its
/// inode (which names it in `/proc/net/udp`).
pub fn bind(addr: SocketAddr, bytes: usize) -> io::Result<(std::net::UdpSocket, Option<u64>)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Beyond net.core.rmem_max only with CAP_NET_ADMIN (SO_RCVBUFFORCE);
    // without it the plain option gives what the limit allows.
    if force_receive_buffer(&socket, bytes).is_err() {
        socket.set_recv_buffer_size(bytes)?;
    }
    // Linux reports twice what was set (its bookkeeping overhead).
    let got = socket.recv_buffer_size()? / 2;
    if got < bytes {
        warn!(
            wanted = bytes,
            got,
            "the syslog UDP receive buffer is smaller than udp_receive_buffer: raise net.core.rmem_max"
        );
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let socket: std::net::UdpSocket = socket.into();
    let inode = inode(&socket);
    Ok((socket, inode))
}

fn force_receive_buffer(socket: &Socket, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).map_err(|_| io::ErrorKind::InvalidInput)?;
    crate::edge::sockopt::set_int(socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, value)
}

fn inode(socket: &std::net::UdpSocket) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let fd = format!("/proc/self/fd/{}", socket.as_raw_fd());
    std::fs::metadata(fd).ok().map(|m| m.ino())
}

/// Datagrams the kernel dropped for the socket with `inode` (its buffer
/// was full), or `None` when the tables do not list it.
pub fn kernel_drops(inode: u64) -> Option<u64> {
    ["/proc/self/net/udp", "/proc/self/net/udp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .find_map(|table| drops_in(&table, inode))
}

/// The `drops` column of the row whose `inode` column is `inode`.
fn drops_in(table: &str, inode: u64) -> Option<u64> {
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    // The header names `tx_queue rx_queue` and `tr tm->when` as pairs that
    // are one field each in the rows.
    let column = |name: &str| {
        let at = header.iter().position(|h| *h == name)?;
        let pairs = header[..at]
            .iter()
            .filter(|h| **h == "rx_queue" || **h == "tm->when")
            .count();
        Some(at - pairs)
    };
    let (inode_at, drops_at) = (column("inode")?, column("drops")?);
    lines.find_map(|row| {
        let f: Vec<&str> = row.split_whitespace().collect();
        (f.get(inode_at)?.parse::<u64>().ok()? == inode).then(|| f.get(drops_at)?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read off Linux 6.1 (`/proc/net/udp`).
    const TABLE: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops             
  123: 0100007F:157C 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 48121 2 ffff8d1a0b4e0000 0
  999: 00000000:0035 00000000:0000 07 00000000:00034000 00:00000000 00000000   105        0 51234 2 ffff8d1a0b4e4400 1742
";

    #[test]
    fn the_drops_of_one_socket_by_its_inode() {
        assert_eq!(drops_in(TABLE, 51234), Some(1742));
        assert_eq!(drops_in(TABLE, 48121), Some(0));
        assert_eq!(drops_in(TABLE, 7), None);
        assert_eq!(drops_in("", 7), None);
        assert_eq!(drops_in("garbage\nmore garbage here", 7), None);
    }

    #[test]
    fn a_bound_socket_is_found_in_the_kernel_tables() {
        let (socket, inode) = bind("127.0.0.1:0".parse().unwrap(), 1 << 20).unwrap();
        assert!(socket.local_addr().unwrap().port() > 0);
        let inode = inode.expect("the socket's inode");
        assert_eq!(kernel_drops(inode), Some(0));
    }
}
