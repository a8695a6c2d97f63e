//! A zero-work UDP "DNS server": flips the QR bit and sends each datagram
//! back. Its throughput is the ceiling any server can reach on this machine
//! (the kernel's per-packet cost). `reflector ADDR`.

#[path = "mmsg.rs"]
mod mmsg;

use std::{net::UdpSocket, os::fd::AsRawFd};

const BATCH: usize = 64;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5399".into());
    let socket = UdpSocket::bind(&addr).expect("bind");
    println!("listening {}", socket.local_addr().expect("address"));
    let fd = socket.as_raw_fd();
    mmsg::big_buffers(fd);
    let mut bufs = vec![[0u8; 512]; BATCH];
    // SAFETY: plain C structs, zero is a valid initial value.
    let mut names: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    let mut hdrs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    loop {
        iov.clear();
        iov.extend(bufs.iter_mut().map(|b| mmsg::iovec(b)));
        for i in 0..BATCH {
            let h = &mut hdrs[i].msg_hdr;
            h.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as u32;
            h.msg_iov = &mut iov[i];
            h.msg_iovlen = 1;
        }
        // SAFETY: headers point at live buffers of the stated sizes.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        for i in 0..n as usize {
            bufs[i][2] |= 0x80;
            iov[i].iov_len = hdrs[i].msg_len as usize;
        }
        // SAFETY: the same live buffers and the peers recvmmsg filled in.
        unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n as u32, 0) };
    }
}
