//! Socket helpers shared by the bench tools (`#[path]`-included, not a crate).
// Each tool includes this file and uses a subset of it.
#![allow(dead_code)]

use std::os::fd::RawFd;

/// Asks for 4 MiB socket buffers so 200 outstanding datagrams never overflow them.
pub fn big_buffers(fd: RawFd) {
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        let size: libc::c_int = 4 << 20;
        // SAFETY: setsockopt with a pointer to a live c_int of the stated size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                4,
            );
        }
    }
}

/// An iovec over all of `buf`.
pub fn iovec(buf: &mut [u8]) -> libc::iovec {
    libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }
}

/// One message header per iovec, without addresses (connected socket or filled in later).
pub fn headers(iov: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    iov.iter_mut()
        .map(|v| {
            // SAFETY: mmsghdr is plain data; zero is a valid empty header.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect()
}
