//! systemd's service notification protocol ([sd_notify(3)]): one datagram
//! of `KEY=VALUE` lines to the socket named by `NOTIFY_SOCKET`.
//!
//! A `Type=notify` unit is started only once `READY=1` arrives, so
//! dependent units (and `systemctl start`) wait until every listener is bound
//! and the first snapshot is served; `WATCHDOG=1` at half of
//! `WATCHDOG_USEC` lets systemd restart a process whose runtime hangs.
//! Without `NOTIFY_SOCKET` (not under systemd) every call does nothing.
//!
//! [sd_notify(3)]: https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html

use std::{
    io,
    os::unix::net::{SocketAddr, UnixDatagram},
    sync::Arc,
    time::Duration,
};

use tracing::warn;

/// Where notifications go: the socket systemd passed in `NOTIFY_SOCKET`.
pub struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
}

impl Notifier {
    /// The notifier of this process, if systemd (or a test) asked for one.
    pub fn from_env() -> io::Result<Option<Self>> {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        let path = path.to_string_lossy().into_owned();
        Ok(Some(Self {
            socket: UnixDatagram::unbound()?,
            to: address(&path)?,
        }))
    }

    /// Sends `state` (lines such as `READY=1`).
    pub fn send(&self, state: &str) -> io::Result<()> {
        self.socket.send_to_addr(state.as_bytes(), &self.to)?;
        Ok(())
    }
}

/// Tells systemd (when it started us with `Type=notify`) that we serve,
/// with `status` for `systemctl status`, and keeps its watchdog fed from the
/// runtime, so a hung runtime is restarted. The notifier, for `STOPPING=1`.
pub fn ready(status: &str) -> Option<Arc<Notifier>> {
    let notifier = match Notifier::from_env() {
        Ok(n) => Arc::new(n?),
        Err(error) => {
            warn!(%error, "NOTIFY_SOCKET is set but unusable; systemd is not told we are ready");
            return None;
        }
    };
    if let Err(error) = notifier.send(&format!("READY=1\nSTATUS={status}")) {
        warn!(%error, "systemd not told we are ready");
    }
    if let Some(every) = watchdog_interval() {
        let n = notifier.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let _ = n.send("WATCHDOG=1");
            }
        });
    }
    Some(notifier)
}

/// A socket path, or with a leading `@` a name in the abstract namespace.
fn address(path: &str) -> io::Result<SocketAddr> {
    match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => SocketAddr::from_pathname(path),
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when it is set
/// for this process (`WATCHDOG_PID`, if present, names it).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?;
    interval(
        &usec,
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn interval(usec: &str, pid: Option<&str>, me: u32) -> Option<Duration> {
    if pid.is_some_and(|p| p.parse::<u32>().ok() != Some(me)) {
        return None;
    }
    let usec = usec.parse::<u64>().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_pinged_at_half_its_timeout_and_only_for_its_process() {
        assert_eq!(interval("30000000", None, 7), Some(Duration::from_secs(15)));
        assert_eq!(
            interval("30000000", Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            interval("30000000", Some("8"), 7),
            None,
            "another process's"
        );
        assert_eq!(interval("0", None, 7), None);
        assert_eq!(interval("soon", None, 7), None);
    }

    #[test]
    fn notifications_reach_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: UnixDatagram::unbound().unwrap(),
            to: address(path.to_str().unwrap()).unwrap(),
        };
        n.send("READY=1\nSTATUS=serving").unwrap();
        let mut buf = [0u8; 64];
        let got = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..got], b"READY=1\nSTATUS=serving");

        let name = format!("@mgnt-notify-test-{}", std::process::id());
        let abstract_addr = address(&name).unwrap();
        let listener = UnixDatagram::bind_addr(&abstract_addr).unwrap();
        let n = Notifier {
            socket: UnixDatagram::unbound().unwrap(),
            to: abstract_addr,
        };
        n.send("WATCHDOG=1").unwrap();
        let got = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..got], b"WATCHDOG=1");
    }
}
