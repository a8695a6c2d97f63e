//! A batched DNS load generator: keeps a bounded number of queries
//! outstanding, sends and receives with sendmmsg/recvmmsg, counts answers,
//! losses and latency. One core drives far more than dnsperf, so the server,
//! not the generator, is the bottleneck.
//!
//! `udpload SERVERS MODE SECONDS OUTSTANDING [PREFIXES [SLICE_MS]]`: SERVERS is
//! one address or several separated by commas; MODE one of `geo-ecs`
//! (mgnt.mkcld.io A with an ECS prefix from PREFIXES), `geo` (no ECS) and
//! `static` (ns1.mkcld.io A). Several servers are loaded in turn, SLICE_MS
//! (default 250) each, until each has had SECONDS of load: slow drifts of a
//! shared machine then hit all of them alike. Prints one JSON line per server.

#[path = "mmsg.rs"]
mod mmsg;

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

const BATCH: usize = 32;
const LOST_AFTER: Duration = Duration::from_secs(1);

fn query(id: u16, name: &str, ecs: Option<[u8; 3]>) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0]);
    match ecs {
        Some(a) => {
            q.extend_from_slice(&[0, 11, 0, 8, 0, 7, 0, 1, 24, 0]);
            q.extend_from_slice(&a);
        }
        None => q.extend_from_slice(&[0, 0]),
    }
    q
}

fn prefixes(path: Option<&String>) -> Vec<[u8; 3]> {
    let Some(path) = path else {
        return vec![[81, 240, 7]];
    };
    std::fs::read_to_string(path)
        .expect("prefix file")
        .lines()
        .filter_map(|l| {
            let a: std::net::Ipv4Addr = l.split('/').next()?.parse().ok()?;
            let o = a.octets();
            Some([o[0], o[1], o[2]])
        })
        .collect()
}

/// One server under load: its socket, the queries in flight and the counts.
struct Target {
    server: SocketAddr,
    socket: UdpSocket,
    sent_at: Vec<Option<Instant>>,
    next_id: u16,
    in_flight: usize,
    sent: u64,
    answered: u64,
    lost: u64,
    latency_sum: f64,
    /// Time this server was the one being loaded.
    active: Duration,
}

impl Target {
    fn new(server: SocketAddr) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.connect(server).expect("connect");
        socket.set_nonblocking(true).expect("nonblocking");
        mmsg::big_buffers(socket.as_raw_fd());
        Self {
            server,
            socket,
            sent_at: vec![None; 65536],
            next_id: 0,
            in_flight: 0,
            sent: 0,
            answered: 0,
            lost: 0,
            latency_sum: 0.0,
            active: Duration::ZERO,
        }
    }

    /// Sends queries until `outstanding` are in flight (at most BATCH per call).
    fn send(
        &mut self,
        outstanding: usize,
        out: &mut [Vec<u8>],
        next: &mut impl FnMut(u16) -> Vec<u8>,
    ) {
        let room = outstanding.saturating_sub(self.in_flight).min(BATCH);
        if room == 0 {
            return;
        }
        let mut iov = Vec::with_capacity(room);
        for slot in out.iter_mut().take(room) {
            while self.sent_at[usize::from(self.next_id)].is_some() {
                self.next_id = self.next_id.wrapping_add(1);
            }
            *slot = next(self.next_id);
            self.sent_at[usize::from(self.next_id)] = Some(Instant::now());
            self.next_id = self.next_id.wrapping_add(1);
            iov.push(mmsg::iovec(slot));
        }
        let mut hdrs = mmsg::headers(&mut iov);
        // SAFETY: the headers point at the live buffers above.
        let n = unsafe {
            libc::sendmmsg(
                self.socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                hdrs.len() as u32,
                0,
            )
        };
        let n = n.max(0) as usize;
        // Queries the kernel did not take are not outstanding.
        for slot in out.iter().take(room).skip(n) {
            self.sent_at[usize::from(u16::from_be_bytes([slot[0], slot[1]]))] = None;
        }
        self.sent += n as u64;
        self.in_flight += n;
    }

    /// Takes whatever answers are queued, without waiting.
    fn receive(&mut self, inb: &mut [[u8; 1500]]) {
        let mut iov: Vec<libc::iovec> = inb.iter_mut().map(|b| mmsg::iovec(b)).collect();
        let mut hdrs = mmsg::headers(&mut iov);
        // SAFETY: headers point at the live receive buffers.
        let n = unsafe {
            libc::recvmmsg(
                self.socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                hdrs.len() as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let now = Instant::now();
        for b in inb.iter().take(n.max(0) as usize) {
            let id = usize::from(u16::from_be_bytes([b[0], b[1]]));
            if let Some(t) = self.sent_at[id].take() {
                self.answered += 1;
                self.in_flight -= 1;
                self.latency_sum += now.duration_since(t).as_secs_f64();
            }
        }
    }

    /// Counts queries unanswered for LOST_AFTER as lost.
    fn sweep(&mut self, now: Instant) {
        for s in self.sent_at.iter_mut() {
            if s.is_some_and(|t| now.duration_since(t) > LOST_AFTER) {
                *s = None;
                self.lost += 1;
                self.in_flight -= 1;
            }
        }
    }

    fn report(&self) -> String {
        let secs = self.active.as_secs_f64().max(f64::MIN_POSITIVE);
        let latency_ms = if self.answered > 0 {
            self.latency_sum / self.answered as f64 * 1000.0
        } else {
            0.0
        };
        format!(
            "{{\"server\":\"{}\",\"sent\":{},\"answered\":{},\"lost\":{},\"qps\":{:.0},\"mean_latency_ms\":{latency_ms:.3}}}",
            self.server,
            self.sent,
            self.answered,
            self.lost,
            self.answered as f64 / secs
        )
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, servers, mode, seconds, outstanding, rest @ ..] = args.as_slice() else {
        eprintln!("usage: udpload SERVERS MODE SECONDS OUTSTANDING [PREFIXES [SLICE_MS]]");
        std::process::exit(2);
    };
    let mut targets: Vec<Target> = servers
        .split(',')
        .map(|s| Target::new(s.parse().expect("server address")))
        .collect();
    let each = Duration::from_secs_f64(seconds.parse().expect("seconds"));
    let outstanding: usize = outstanding.parse().expect("outstanding");
    let nets = prefixes(rest.first());
    let slice = Duration::from_millis(rest.get(1).map_or(250, |s| s.parse().expect("slice ms")));
    let mut n_prefix = 0usize;
    let mut next = |id: u16| match mode.as_str() {
        "geo-ecs" => {
            n_prefix = (n_prefix + 1) % nets.len();
            query(id, "mgnt.mkcld.io", Some(nets[n_prefix]))
        }
        "geo" => query(id, "mgnt.mkcld.io", None),
        _ => query(id, "ns1.mkcld.io", None),
    };
    let mut out: Vec<Vec<u8>> = vec![Vec::new(); BATCH];
    let mut inb = vec![[0u8; 1500]; 64];
    let mut last_sweep = Instant::now();
    // The least-loaded server next, for one slice (or what it has left).
    while let Some(k) = (0..targets.len())
        .filter(|&i| targets[i].active < each)
        .min_by_key(|&i| targets[i].active)
    {
        let begin = Instant::now();
        let end = begin + slice.min(each - targets[k].active);
        while Instant::now() < end {
            targets[k].send(outstanding, &mut out, &mut next);
            // Answers of the previous slice's server still count as its own.
            for (i, t) in targets.iter_mut().enumerate() {
                if i == k || t.in_flight > 0 {
                    t.receive(&mut inb);
                }
            }
            let now = Instant::now();
            if now.duration_since(last_sweep) > Duration::from_millis(200) {
                last_sweep = now;
                targets.iter_mut().for_each(|t| t.sweep(now));
            }
        }
        targets[k].active += begin.elapsed();
    }
    // Late answers still count; what is missing after LOST_AFTER is lost.
    let drain_until = Instant::now() + LOST_AFTER;
    while Instant::now() < drain_until && targets.iter().any(|t| t.in_flight > 0) {
        for t in targets.iter_mut() {
            t.receive(&mut inb);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    for t in targets.iter_mut() {
        t.lost += t.in_flight as u64;
        println!("{}", t.report());
    }
}
