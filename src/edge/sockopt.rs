//! Socket options socket2 does not offer, set through libc.

use std::{io, os::fd::AsRawFd};

/// Sets an integer socket option (`level`, `name`) on `socket`.
pub fn set_int(socket: &impl AsRawFd, level: i32, name: i32, value: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt on an open socket with a valid int option value.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
