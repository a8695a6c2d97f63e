//! A listener that cannot bind, said in words that name the address, the
//! config key and what to do about it.

use std::{io, net::SocketAddr};

/// Binding `addr` (from the config key `key`) failed.
#[derive(Debug, thiserror::Error)]
#[error("{addr} ({key}): {}", advice(.addr, .source))]
pub struct BindError {
    pub addr: SocketAddr,
    pub key: &'static str,
    pub source: io::Error,
}

impl BindError {
    pub fn new(addr: SocketAddr, key: &'static str, source: io::Error) -> Self {
        Self { addr, key, source }
    }
}

/// The ports below this one are privileged (Linux's default
/// `net.ipv4.ip_unprivileged_port_start`).
const FIRST_UNPRIVILEGED_PORT: u16 = 1024;

/// What went wrong binding `addr`, and the fix where there is a usual one.
pub fn advice(addr: &SocketAddr, error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::PermissionDenied if addr.port() < FIRST_UNPRIVILEGED_PORT => format!(
            "permission denied: ports below {FIRST_UNPRIVILEGED_PORT} need CAP_NET_BIND_SERVICE (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE) or pick a port ≥ {FIRST_UNPRIVILEGED_PORT}"
        ),
        io::ErrorKind::AddrInUse => format!(
            "address in use: another process holds it (`ss -ltnup 'sport = :{}'` names it); stop it or pick another port",
            addr.port()
        ),
        io::ErrorKind::AddrNotAvailable => {
            "address not available: no interface of this machine has it".to_owned()
        }
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(addr: &str, kind: io::ErrorKind) -> String {
        let addr: SocketAddr = addr.parse().unwrap();
        BindError::new(addr, "dns.listen", io::Error::from(kind)).to_string()
    }

    #[test]
    fn a_privileged_port_names_the_capability_and_the_alternative() {
        assert_eq!(
            said("127.0.0.1:53", io::ErrorKind::PermissionDenied),
            "127.0.0.1:53 (dns.listen): permission denied: ports below 1024 need CAP_NET_BIND_SERVICE (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE) or pick a port ≥ 1024"
        );
        // Above 1024 the capability would not help: the plain reason.
        assert!(!said("127.0.0.1:5300", io::ErrorKind::PermissionDenied).contains("CAP_"));
    }

    #[test]
    fn a_taken_address_says_another_process_holds_it() {
        let text = said("[::1]:8053", io::ErrorKind::AddrInUse);
        assert!(
            text.starts_with("[::1]:8053 (dns.listen): address in use: another process holds it"),
            "{text}"
        );
        assert!(text.contains("sport = :8053"), "{text}");
    }
}
