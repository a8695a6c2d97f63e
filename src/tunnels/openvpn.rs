//! The OpenVPN server side of the tunnels: one client-config-dir file per
//! tunnel and the server configuration fragment.
//!
//! RouterOS neither negotiates ciphers nor supports tls-auth, tls-crypt or
//! compression, and OpenVPN does not negotiate the data-channel HMAC; so the
//! server pins AES-256-CBC as the fallback cipher and uses the same `auth` as
//! every router's script. OpenVPN's `server` helper refuses pools larger than
//! /16, so the fragment spells out `mode server` with `ifconfig` for the whole
//! pool and `ifconfig-push` per tunnel from `ccd-exclusive` files.

use std::{fmt::Write as _, net::Ipv4Addr};

use ipnet::Ipv4Net;

/// What the server fragment needs to know.
pub struct Server<'a> {
    pub pool: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub port: u16,
    /// OpenVPN's name for the digest (`sha1` → `SHA1`).
    pub auth: &'a str,
    pub ccd_dir: &'a str,
    /// The command OpenVPN runs to check a username and password (via-file).
    pub verify_command: &'a str,
}

impl Server<'_> {
    pub fn fragment(&self) -> String {
        let mask = self.pool.netmask();
        let mut s = String::with_capacity(1024);
        let lines = [
            "# mgnt management VPN: server fragment (add ca, cert, key and dh of your PKI)"
                .to_owned(),
            format!("port {}", self.port),
            "proto tcp-server".to_owned(),
            "dev tun".to_owned(),
            "mode server".to_owned(),
            "tls-server".to_owned(),
            "topology subnet".to_owned(),
            format!("ifconfig {} {mask}", self.gateway),
            "push \"topology subnet\"".to_owned(),
            format!("push \"route-gateway {}\"", self.gateway),
            format!("client-config-dir {}", self.ccd_dir),
            "ccd-exclusive".to_owned(),
            "data-ciphers AES-256-CBC".to_owned(),
            "data-ciphers-fallback AES-256-CBC".to_owned(),
            format!("auth {}", self.auth.to_ascii_uppercase()),
            "username-as-common-name".to_owned(),
            "verify-client-cert none".to_owned(),
            "script-security 2".to_owned(),
            format!("auth-user-pass-verify \"{}\" via-file", self.verify_command),
            "keepalive 10 60".to_owned(),
        ];
        for l in lines {
            let _ = writeln!(s, "{l}");
        }
        s
    }
}

/// The client-config-dir file of one tunnel (named by its username).
pub fn ccd(address: Ipv4Addr, pool: Ipv4Net) -> String {
    format!("ifconfig-push {address} {}\n", pool.netmask())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> Server<'static> {
        Server {
            pool: "100.64.0.0/10".parse().unwrap(),
            gateway: Ipv4Addr::new(100, 64, 0, 1),
            port: 8443,
            auth: "sha1",
            ccd_dir: "/etc/openvpn/mgnt-ccd",
            verify_command: "/usr/local/bin/mgnt auth-verify",
        }
    }

    #[test]
    fn fragment_covers_the_whole_pool_the_routeros_way() {
        let f = server().fragment();
        for line in [
            "port 8443",
            "proto tcp-server",
            "mode server",
            "ifconfig 100.64.0.1 255.192.0.0",
            "push \"route-gateway 100.64.0.1\"",
            "ccd-exclusive",
            "data-ciphers-fallback AES-256-CBC",
            "auth SHA1",
            "username-as-common-name",
            "verify-client-cert none",
            "auth-user-pass-verify \"/usr/local/bin/mgnt auth-verify\" via-file",
        ] {
            assert!(f.lines().any(|l| l == line), "missing `{line}` in\n{f}");
        }
        for absent in ["tls-auth", "tls-crypt", "comp-lzo", "compress", "\nserver "] {
            assert!(!f.contains(absent), "`{absent}` in\n{f}");
        }
    }

    #[test]
    fn ccd_pushes_the_address_with_the_pool_mask() {
        let pool = "100.64.0.0/10".parse().unwrap();
        assert_eq!(
            ccd(Ipv4Addr::new(100, 64, 3, 7), pool),
            "ifconfig-push 100.64.3.7 255.192.0.0\n"
        );
    }
}
