//! UDP receive loops on dedicated threads, batched with recvmmsg/sendmmsg.
//!
//! One thread per SO_REUSEPORT socket: the kernel spreads queries over the
//! sockets, each thread takes up to [`BATCH`] datagrams per system call,
//! answers them (fast path first, the full path through the tokio runtime
//! otherwise) and sends every reply with one more call. Buffers are allocated
//! once per thread and reused.

use std::{
    io,
    mem::MaybeUninit,
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
};

use hickory_server::net::xfer::Protocol;
use tracing::debug;

use crate::{
    dns::{
        answer::Responder,
        fast,
        guard::{self, Action},
    },
    state::Reader,
};

/// Datagrams taken per system call.
const BATCH: usize = 64;
/// Largest query read; longer datagrams are cut and then fail to parse (FORMERR).
const QUERY_BUFFER: usize = 4096;

/// Buffers for one batch, reused for the life of the thread.
///
/// The receive headers point at `queries` and `names` once and for all (the
/// kernel only writes lengths into them), so a receive resets just the address
/// lengths of the datagrams it took last time; replies get their own headers.
struct Batch {
    queries: Vec<[u8; QUERY_BUFFER]>,
    names: Vec<MaybeUninit<libc::sockaddr_storage>>,
    recv_iov: Vec<libc::iovec>,
    recv_headers: Vec<libc::mmsghdr>,
    /// How many datagrams the last receive took.
    received: usize,
    replies: Vec<Vec<u8>>,
    /// Whether `replies[i]` goes back to the sender of datagram `i`.
    ready: Vec<bool>,
    send_iov: Vec<libc::iovec>,
    send_headers: Vec<libc::mmsghdr>,
    /// Each datagram's sender (`None`: unusable) and its fast-path parse.
    sources: Vec<Option<SocketAddr>>,
    parsed: Vec<Option<fast::Query>>,
}

impl Batch {
    fn new() -> Self {
        let mut b = Self {
            queries: vec![[0; QUERY_BUFFER]; BATCH],
            names: vec![MaybeUninit::zeroed(); BATCH],
            recv_iov: Vec::with_capacity(BATCH),
            // SAFETY: mmsghdr is plain data; all-zero is a valid (empty) value.
            recv_headers: vec![unsafe { std::mem::zeroed() }; BATCH],
            received: BATCH,
            replies: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
            ready: vec![false; BATCH],
            send_iov: Vec::with_capacity(BATCH),
            // SAFETY: as above.
            send_headers: vec![unsafe { std::mem::zeroed() }; BATCH],
            sources: vec![None; BATCH],
            parsed: vec![None; BATCH],
        };
        // The vectors never grow, so these pointers stay valid for the Batch's life.
        for q in &mut b.queries {
            b.recv_iov.push(libc::iovec {
                iov_base: q.as_mut_ptr().cast(),
                iov_len: QUERY_BUFFER,
            });
        }
        for i in 0..BATCH {
            let h = &mut b.recv_headers[i].msg_hdr;
            h.msg_name = b.names[i].as_mut_ptr().cast();
            h.msg_iov = &mut b.recv_iov[i];
            h.msg_iovlen = 1;
        }
        b
    }

    /// Receives up to BATCH datagrams, blocking until at least one arrives.
    fn receive(&mut self, fd: i32) -> io::Result<usize> {
        for h in &mut self.recv_headers[..self.received] {
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
        }
        self.received = 0;
        // SAFETY: every header points at a live buffer and address slot of this
        // Batch, with lengths that match; the kernel writes within them only.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.recv_headers.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.received = n as usize;
        Ok(self.received)
    }

    /// The sender of datagram `i` of the last receive.
    fn peer(&self, i: usize) -> Option<SocketAddr> {
        let len = self.recv_headers[i].msg_hdr.msg_namelen as usize;
        let storage = self.names[i].as_ptr();
        // SAFETY: the kernel wrote a socket address of `len` bytes into
        // `names[i]`; its family says which struct it is, and we read only
        // that struct when `len` covers it.
        unsafe {
            match i32::from((*storage).ss_family) {
                libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
                    let a = &*storage.cast::<libc::sockaddr_in>();
                    let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                    Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
                }
                libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
                    let a = &*storage.cast::<libc::sockaddr_in6>();
                    let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
                    let v6 = std::net::SocketAddrV6::new(
                        ip,
                        u16::from_be(a.sin6_port),
                        a.sin6_flowinfo,
                        a.sin6_scope_id,
                    );
                    Some(SocketAddr::V6(v6))
                }
                _ => None,
            }
        }
    }

    /// Sends every ready reply back to the address its query came from.
    fn send(&mut self, fd: i32, count: usize) {
        self.send_iov.clear();
        let mut ready = 0;
        for i in 0..count {
            if self.ready[i] {
                self.send_iov.push(libc::iovec {
                    iov_base: self.replies[i].as_mut_ptr().cast(),
                    iov_len: self.replies[i].len(),
                });
                let h = &mut self.send_headers[ready].msg_hdr;
                // The sender's address exactly as the kernel gave it.
                h.msg_name = self.names[i].as_mut_ptr().cast();
                h.msg_namelen = self.recv_headers[i].msg_hdr.msg_namelen;
                ready += 1;
            }
        }
        // Pointed at only once every iovec is pushed (a push may move the vector).
        for (h, v) in self.send_headers.iter_mut().zip(self.send_iov.iter_mut()) {
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
        }
        let mut sent = 0;
        while sent < ready {
            // SAFETY: send_headers[sent..ready] point at live replies and peer
            // addresses owned by this Batch for the duration of the call.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.send_headers[sent..].as_mut_ptr(),
                    (ready - sent) as u32,
                    0,
                )
            };
            if n <= 0 {
                debug!(error = %io::Error::last_os_error(), "udp send failed");
                // Skip the datagram that failed; the client retries.
                sent += 1;
            } else {
                sent += n as usize;
            }
        }
    }
}

/// Serves `socket` (blocking) until the process ends.
pub fn serve(
    socket: UdpSocket,
    state: &Reader,
    responder: &Responder,
    runtime: &tokio::runtime::Handle,
) {
    let fd = socket.as_raw_fd();
    let mut batch = Batch::new();
    let mut caches = fast::Caches::default();
    loop {
        let n = match batch.receive(fd) {
            Ok(n) => n,
            Err(error) => {
                debug!(%error, "udp receive failed");
                continue;
            }
        };
        batch.answer(n, state, responder, runtime, &mut caches);
        batch.send(fd, n);
    }
}

impl Batch {
    /// Answers the `n` datagrams received, marking the replies to send.
    ///
    /// The whole batch is answered from one snapshot. All queries are parsed
    /// first and their route-cache entries prefetched, so the cache misses of
    /// a batch overlap instead of following each other.
    fn answer(
        &mut self,
        n: usize,
        state: &Reader,
        responder: &Responder,
        runtime: &tokio::runtime::Handle,
        caches: &mut fast::Caches,
    ) {
        let snapshot = state.load();
        let (data, view) = (&*snapshot.data, &snapshot.view);
        for i in 0..n {
            self.ready[i] = false;
            self.sources[i] = self.peer(i).filter(|s| s.port() != 0);
            self.parsed[i] = None;
            if let Some(src) = self.sources[i] {
                let query = &self.queries[i][..self.len(i)];
                self.parsed[i] = fast::Query::parse(data, query, src.ip());
                if let Some(q) = &self.parsed[i] {
                    q.prefetch(caches);
                }
            }
        }
        for i in 0..n {
            let Some(src) = self.sources[i] else {
                continue;
            };
            let query = &self.queries[i][..self.len(i)];
            let reply = &mut self.replies[i];
            let fast = self.parsed[i]
                .as_ref()
                .and_then(|q| fast::answer_parsed(data, view, query, q, reply, caches));
            if let Some((qtype, rcode)) = fast {
                responder.queries.count(Some(qtype), rcode);
            } else {
                match runtime.block_on(responder.respond(data, view, query, src, Protocol::Udp)) {
                    Some(bytes) => {
                        fast::learn(data, query, src.ip(), &bytes, &mut caches.answers);
                        *reply = bytes;
                    }
                    None => continue,
                }
            }
            let cookies = data.cookies.as_ref();
            match responder
                .guard
                .judge(&data.config.dns, cookies, query, reply, src.ip())
            {
                Action::Send => {}
                Action::Drop => continue,
                action => match guard::shrink(reply, action) {
                    Some(shrunk) => *reply = shrunk,
                    None => continue,
                },
            }
            self.ready[i] = true;
        }
    }

    /// Length of datagram `i` of the last receive, within its buffer.
    fn len(&self, i: usize) -> usize {
        (self.recv_headers[i].msg_len as usize).min(QUERY_BUFFER)
    }
}
