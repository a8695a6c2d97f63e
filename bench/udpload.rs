//! A batched DNS load generator: keeps a bounded number of queries
//! outstanding, sends and receives with sendmmsg/recvmmsg, counts answers,
//! losses and latency. One core drives far more than dnsperf, so the server,
//! not the generator, is the bottleneck.
//!
//! `udpload SERVER MODE SECONDS OUTSTANDING [PREFIXES]`, MODE one of
//! `geo-ecs` (mgnt.mkcld.io A with an ECS prefix from PREFIXES), `geo`
//! (no ECS) and `static` (ns1.mkcld.io A). Prints one JSON line.

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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, server, mode, seconds, outstanding, rest @ ..] = args.as_slice() else {
        eprintln!("usage: udpload SERVER MODE SECONDS OUTSTANDING [PREFIXES]");
        std::process::exit(2);
    };
    let server: SocketAddr = server.parse().expect("server address");
    let seconds: f64 = seconds.parse().expect("seconds");
    let outstanding: usize = outstanding.parse().expect("outstanding");
    let nets = prefixes(rest.first());
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket.connect(server).expect("connect");
    socket.set_nonblocking(true).expect("nonblocking");
    let fd = socket.as_raw_fd();
    mmsg::big_buffers(fd);
    let mut sent_at: Vec<Option<Instant>> = vec![None; 65536];
    let (mut next_id, mut in_flight) = (0u16, 0usize);
    let (mut sent, mut answered, mut lost, mut latency_sum) = (0u64, 0u64, 0u64, 0f64);
    let mut out: Vec<Vec<u8>> = vec![Vec::new(); BATCH];
    let mut inb = vec![[0u8; 1500]; 64];
    let start = Instant::now();
    let stop = start + Duration::from_secs_f64(seconds);
    let mut last_sweep = start;
    let mut n_prefix = 0usize;
    while Instant::now() < stop {
        // Send up to the window.
        let room = outstanding.saturating_sub(in_flight).min(BATCH);
        if room > 0 {
            let mut iov = Vec::with_capacity(room);
            for slot in out.iter_mut().take(room) {
                while sent_at[usize::from(next_id)].is_some() {
                    next_id = next_id.wrapping_add(1);
                }
                *slot = match mode.as_str() {
                    "geo-ecs" => {
                        n_prefix = (n_prefix + 1) % nets.len();
                        query(next_id, "mgnt.mkcld.io", Some(nets[n_prefix]))
                    }
                    "geo" => query(next_id, "mgnt.mkcld.io", None),
                    _ => query(next_id, "ns1.mkcld.io", None),
                };
                sent_at[usize::from(next_id)] = Some(Instant::now());
                next_id = next_id.wrapping_add(1);
                iov.push(libc::iovec {
                    iov_base: slot.as_mut_ptr().cast(),
                    iov_len: slot.len(),
                });
            }
            let mut hdrs = mmsg::headers(&mut iov);
            // SAFETY: the headers point at the live buffers above.
            let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), hdrs.len() as u32, 0) };
            let n = n.max(0) as usize;
            // Queries the kernel did not take are not outstanding.
            for slot in out.iter().take(room).skip(n) {
                sent_at[usize::from(u16::from_be_bytes([slot[0], slot[1]]))] = None;
            }
            sent += n as u64;
            in_flight += n;
        }
        // Receive whatever is there.
        let mut iov: Vec<libc::iovec> = inb
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut hdrs = mmsg::headers(&mut iov);
        // SAFETY: headers point at the live receive buffers.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                64,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let now = Instant::now();
        for b in inb.iter().take(n.max(0) as usize) {
            let id = usize::from(u16::from_be_bytes([b[0], b[1]]));
            if let Some(t) = sent_at[id].take() {
                answered += 1;
                in_flight -= 1;
                latency_sum += now.duration_since(t).as_secs_f64();
            }
        }
        if now.duration_since(last_sweep) > Duration::from_millis(200) {
            last_sweep = now;
            for s in sent_at.iter_mut() {
                if s.is_some_and(|t| now.duration_since(t) > LOST_AFTER) {
                    *s = None;
                    lost += 1;
                    in_flight -= 1;
                }
            }
        }
    }
    // Late answers still count; what is missing after LOST_AFTER is lost.
    let drain_until = Instant::now() + LOST_AFTER;
    while Instant::now() < drain_until && in_flight > 0 {
        let mut buf = [0u8; 1500];
        match socket.recv(&mut buf) {
            Ok(_) => {
                let id = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                if sent_at[id].take().is_some() {
                    answered += 1;
                    in_flight -= 1;
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    lost += in_flight as u64;
    let elapsed = seconds;
    println!(
        "{{\"sent\":{sent},\"answered\":{answered},\"lost\":{lost},\"qps\":{:.0},\"mean_latency_ms\":{:.3}}}",
        answered as f64 / elapsed,
        if answered > 0 {
            latency_sum / answered as f64 * 1000.0
        } else {
            0.0
        }
    );
}
