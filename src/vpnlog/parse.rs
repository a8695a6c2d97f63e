//! OpenVPN server log lines → events, on byte slices and without allocating.
//!
//! A line may carry a syslog prefix (RFC 5424 or RFC 3164, as rsyslog and
//! syslog-ng forward them) and OpenVPN's own timestamp; then comes OpenVPN's
//! client prefix (`IP:PORT`, `CN/IP:PORT`) and the message. Lines we do not
//! know are returned as [`Event::Unknown`] with the raw text: they are
//! counted and kept, never an error.

use std::net::{IpAddr, SocketAddr};

use chrono::{Local, TimeZone};

use super::syslog::{header, in_zone, openvpn_time};

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    /// The syslog HOSTNAME, when the line came through syslog.
    pub host: Option<&'a str>,
    /// When it happened (seconds since 1970): the syslog header's time, or
    /// OpenVPN's own timestamp when the header has none.
    pub time: Option<i64>,
    /// The client the line is about: its common name (the tunnel's username) and address.
    pub common_name: Option<&'a str>,
    pub peer: Option<SocketAddr>,
    pub event: Event<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// `TLS: Initial packet from …`: a connection attempt began.
    Initial,
    /// `TLS: Username/Password authentication succeeded for username 'x'`.
    AuthSucceeded { username: &'a str },
    /// `TLS Auth Error: Auth Username/Password verification failed for peer`.
    AuthFailed,
    /// `Peer Connection Initiated with …`: the TLS session is up.
    PeerConnected,
    /// `MULTI: Learn: 100.64.0.2 -> cn/ip:port`: the tunnel address is in use.
    Learn { virtual_addr: IpAddr },
    /// `MULTI_sva: pool returned IPv4=…`.
    PoolAddress { virtual_addr: IpAddr },
    /// A client instance ended: `SIGTERM[soft,remote-exit] received, client-instance exiting`,
    /// or restarted (`SIGUSR1[soft,connection-reset] …`).
    ClientEnded { signal: &'a str, reason: &'a str },
    /// `Connection reset, restarting`.
    ConnectionReset,
    /// `Inactivity timeout (--ping-restart), restarting`.
    InactivityTimeout,
    /// The server itself got a signal: `SIGTERM[hard,] received, process exiting`.
    ServerSignal { signal: &'a str, reason: &'a str },
    /// A line of a known shape that records nothing we store.
    Other,
    /// Not understood; kept raw.
    Unknown(&'a str),
}

/// Parses one line (without its newline). Never fails. Zone-less times
/// are read in the local time zone.
pub fn parse(line: &str) -> Line<'_> {
    parse_in(line, Local)
}

/// [`parse`], reading zone-less times in `zone`.
pub fn parse_in<Tz: TimeZone + Copy>(line: &str, zone: Tz) -> Line<'_> {
    let syslog = header(line.trim_end_matches(['\r', '\n']), zone);
    let (own_time, rest) = openvpn_time(syslog.msg);
    let (common_name, peer, msg) = client_prefix(rest);
    Line {
        host: syslog.host,
        // Converted only when needed: a zone lookup is most of a line's cost.
        time: syslog
            .time
            .or_else(|| own_time.and_then(|t| in_zone(t, &zone))),
        common_name,
        peer,
        event: event(msg, rest),
    }
}

fn event<'a>(msg: &'a str, whole: &'a str) -> Event<'a> {
    if msg.starts_with("TLS: Initial packet from") {
        return Event::Initial;
    }
    if let Some(r) =
        msg.strip_prefix("TLS: Username/Password authentication succeeded for username '")
        && let Some(end) = r.find('\'')
    {
        return Event::AuthSucceeded {
            username: &r[..end],
        };
    }
    if msg.starts_with("TLS Auth Error: Auth Username/Password verification failed") {
        return Event::AuthFailed;
    }
    if msg.contains("Peer Connection Initiated with") {
        return Event::PeerConnected;
    }
    if let Some(r) = msg.strip_prefix("MULTI: Learn: ")
        && let Some(addr) = r.split(' ').next().and_then(|a| a.parse().ok())
    {
        return Event::Learn { virtual_addr: addr };
    }
    if let Some(r) = msg.strip_prefix("MULTI_sva: pool returned IPv4=")
        && let Some(addr) = r.split(',').next().and_then(|a| a.parse().ok())
    {
        return Event::PoolAddress { virtual_addr: addr };
    }
    if msg.starts_with("Connection reset, restarting") {
        return Event::ConnectionReset;
    }
    if msg.starts_with("Inactivity timeout") {
        return Event::InactivityTimeout;
    }
    if let Some((signal, reason, tail)) = signal(msg) {
        if tail.starts_with("client-instance") {
            return Event::ClientEnded { signal, reason };
        }
        if tail.starts_with("process exiting") || tail.starts_with("process restarting") {
            return Event::ServerSignal { signal, reason };
        }
    }
    if known_noise(msg) {
        return Event::Other;
    }
    Event::Unknown(whole)
}

/// `SIGTERM[soft,remote-exit] received, …` → (`SIGTERM`, `remote-exit`, `…`).
fn signal(msg: &str) -> Option<(&str, &str, &str)> {
    let open = msg.find('[')?;
    let signal = &msg[..open];
    if !signal.starts_with("SIG")
        || !signal
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return None;
    }
    let close = open + msg[open..].find(']')?;
    let inside = &msg[open + 1..close];
    let reason = inside.split_once(',').map_or("", |(_, r)| r);
    let tail = msg[close + 1..].strip_prefix(" received, ")?;
    Some((signal, reason, tail))
}

/// Lines OpenVPN 2.5–2.6 prints at verb 3–4 (server and client side) that
/// carry nothing to record: classified, so "unparsed" means unknown.
fn known_noise(msg: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "/sbin/ip",
        "AUTH: Received control message",
        "Attempting to establish",
        "Authenticate/Decrypt packet error",
        "Capabilities",
        "Closing TUN/TAP",
        "Control Channel",
        "Could not determine IPv4/IPv6 protocol",
        "DCO version",
        "Data Channel",
        "Delayed exit",
        "Diffie-Hellman",
        "ECDH curve",
        "Exiting due to",
        "GID set to",
        "IFCONFIG POOL",
        "Incoming Control Channel",
        "Incoming Data Channel",
        "Incoming dynamic tunnel MTU",
        "Initialization Sequence Completed",
        "Listening for incoming",
        "MANAGEMENT:",
        "MULTI TCP",
        "MULTI: Connection attempt",
        "MULTI: TCP INIT",
        "MULTI: bad source",
        "MULTI: multi_",
        "MULTI: new incoming connection",
        "MULTI: primary virtual IP",
        "MULTI_sva",
        "NOTE:",
        "Need hold release",
        "Note:",
        "OPTIONS IMPORT:",
        "OpenVPN ",
        "Outgoing Control Channel",
        "Outgoing Data Channel",
        "Outgoing dynamic tunnel MTU",
        "PUSH:",
        "PUSH_REQUEST",
        "Preserving recently used",
        "Protocol options:",
        "Re-using SSL/TLS context",
        "Restart pause",
        "ROUTE",
        "SENT CONTROL",
        "Socket Buffers",
        "TCP connection established",
        "TCP/UDP:",
        "TCPv4_",
        "TCPv6_",
        "TLS Error:",
        "TLS: ",
        "TUN/TAP",
        "Timers:",
        "UDPv4 link",
        "UDPv6 link",
        "UID set to",
        "VERIFY",
        "WARNING:",
        "do_ifconfig",
        "event_wait",
        "library versions:",
        "net_",
        "peer info:",
    ];
    msg.is_empty() || PREFIXES.iter().any(|p| msg.starts_with(p))
}

/// `cn/ip:port rest`, `ip:port rest` or `[cn] rest`.
fn client_prefix(s: &str) -> (Option<&str>, Option<SocketAddr>, &str) {
    let Some((first, rest)) = s.split_once(' ') else {
        return (None, None, s);
    };
    let (cn, addr) = match first.rsplit_once('/') {
        Some((cn, addr)) => (Some(cn), addr),
        None => (None, first),
    };
    match parse_peer(addr) {
        Some(peer) => {
            // `ip:port [cn] Peer Connection Initiated …`
            let (cn, rest) = match rest.strip_prefix('[').and_then(|r| r.split_once("] ")) {
                Some((c, r)) if cn.is_none() && c != "UNDEF" => (Some(c), r),
                _ => (cn, rest),
            };
            (cn, Some(peer), rest)
        }
        None => (None, None, s),
    }
}

/// `1.2.3.4:5678`, `[2001:db8::1]:5678` or OpenVPN's `2001:db8::1:5678`.
pub(crate) fn parse_peer(s: &str) -> Option<SocketAddr> {
    let s = s
        .strip_prefix("[AF_INET]")
        .or_else(|| s.strip_prefix("[AF_INET6]"))
        .unwrap_or(s);
    if let Ok(a) = s.parse() {
        return Some(a);
    }
    let (ip, port) = s.rsplit_once(':')?;
    Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(line: &str) -> Event<'_> {
        parse(line).event
    }

    #[test]
    fn openvpn_26_server_lines() {
        let l = parse(
            "2026-11-25 18:08:05 169.254.89.2:56700 TLS: Username/Password authentication succeeded for username 'gfynkzpktrhafbfy5t2uzic2gq' [CN SET]",
        );
        assert_eq!(
            l.event,
            Event::AuthSucceeded {
                username: "gfynkzpktrhafbfy5t2uzic2gq"
            }
        );
        assert_eq!(l.peer, Some("169.254.89.2:56700".parse().unwrap()));
        let l = parse(
            "2026-11-25 18:08:05 169.254.89.2:56700 [gfynkzpktrhafbfy5t2uzic2gq] Peer Connection Initiated with [AF_INET]169.254.89.2:56700",
        );
        assert_eq!(
            (l.common_name, l.event),
            (Some("gfynkzpktrhafbfy5t2uzic2gq"), Event::PeerConnected)
        );
        let l = parse(
            "2026-11-25 18:08:05 gfynkzpktrhafbfy5t2uzic2gq/169.254.89.2:56700 MULTI: Learn: 100.64.0.2 -> gfynkzpktrhafbfy5t2uzic2gq/169.254.89.2:56700",
        );
        assert_eq!(
            l.event,
            Event::Learn {
                virtual_addr: "100.64.0.2".parse().unwrap()
            }
        );
        assert_eq!(l.common_name, Some("gfynkzpktrhafbfy5t2uzic2gq"));
        assert_eq!(
            ev(
                "2026-11-25 18:08:05 169.254.89.2:56714 TLS Auth Error: Auth Username/Password verification failed for peer"
            ),
            Event::AuthFailed
        );
        assert_eq!(
            ev(
                "2026-11-25 18:08:05 u/169.254.89.2:56700 SIGUSR1[soft,connection-reset] received, client-instance restarting"
            ),
            Event::ClientEnded {
                signal: "SIGUSR1",
                reason: "connection-reset"
            }
        );
        assert_eq!(
            ev(
                "Wed Nov 25 18:08:05 2026 u/198.51.100.7:1194 SIGTERM[soft,remote-exit] received, client-instance exiting"
            ),
            Event::ClientEnded {
                signal: "SIGTERM",
                reason: "remote-exit"
            }
        );
        assert_eq!(
            ev("2026-11-25 18:09:00 SIGTERM[hard,] received, process exiting"),
            Event::ServerSignal {
                signal: "SIGTERM",
                reason: ""
            }
        );
        assert_eq!(
            ev("2026-11-25 18:09:00 u/1.2.3.4:5 Inactivity timeout (--ping-restart), restarting"),
            Event::InactivityTimeout
        );
    }

    #[test]
    fn ipv6_peers() {
        let l = parse(
            "2026-11-25 18:08:05 2001:db8::7:40000 TLS Auth Error: Auth Username/Password verification failed for peer",
        );
        assert_eq!(l.peer, Some("[2001:db8::7]:40000".parse().unwrap()));
        let l =
            parse("x/[AF_INET6]2001:db8::7:40000 MULTI: Learn: 100.64.0.9 -> x/2001:db8::7:40000");
        assert_eq!(
            (l.common_name, l.peer.map(|p| p.port())),
            (Some("x"), Some(40000))
        );
    }

    #[test]
    fn syslog_wrapped_lines_keep_the_host() {
        let l = parse(
            "<29>Nov 25 18:08:05 vpn-fra-2 openvpn[812]: 1.2.3.4:5 TLS Auth Error: Auth Username/Password verification failed for peer",
        );
        assert_eq!((l.host, l.event), (Some("vpn-fra-2"), Event::AuthFailed));
        let l = parse(
            "Nov  5 08:00:01 vpn-fra-2 ovpn-server: 1.2.3.4:5 TLS: Initial packet from [AF_INET]1.2.3.4:5, sid=1 2",
        );
        assert_eq!((l.host, l.event), (Some("vpn-fra-2"), Event::Initial));
        let l = parse(
            "<29>1 2026-11-25T18:08:05.123Z vpn-sgp-1 openvpn 812 - [meta x=\"a\\]b\"] u/1.2.3.4:5 MULTI: Learn: 100.64.0.3 -> u/1.2.3.4:5",
        );
        assert_eq!(
            (l.host, l.event),
            (
                Some("vpn-sgp-1"),
                Event::Learn {
                    virtual_addr: "100.64.0.3".parse().unwrap()
                }
            )
        );
        let l =
            parse("<29>1 2026-11-25T18:08:05Z - openvpn - - - Connection reset, restarting [0]");
        assert_eq!((l.host, l.event), (None, Event::ConnectionReset));
    }

    #[test]
    fn unknown_and_broken_lines_are_kept_raw() {
        assert_eq!(
            ev("something else entirely"),
            Event::Unknown("something else entirely")
        );
        assert!(matches!(
            ev("2026-11-25 18:08:05 1.2.3.4:5 MULTI: Learn: not-an-ip -> x"),
            Event::Unknown(_)
        ));
        for s in [
            "",
            "<",
            "<999>",
            "<1>1",
            "SIG[",
            "SIGTERM[soft",
            "1.2.3.4:99999 x",
            "Nov 25 18:08:05",
        ] {
            let _ = parse(s);
        }
    }

    #[test]
    fn random_and_cut_lines_never_panic() {
        let corpus = include_str!("../../tests/data/openvpn-2.6-verb3.log");
        let mut x: u64 = 0x5eed;
        for line in corpus.lines() {
            for cut in 0..=line.len() {
                if line.is_char_boundary(cut) {
                    let _ = parse(&line[..cut]);
                }
            }
            let mut bytes = line.as_bytes().to_vec();
            for _ in 0..8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if !bytes.is_empty() {
                    let i = (x as usize) % bytes.len();
                    let alphabet = b"<>[]:/ 0aZ-,'";
                    bytes[i] = alphabet[(x >> 32) as usize % alphabet.len()];
                }
                let _ = parse(&String::from_utf8_lossy(&bytes));
            }
        }
    }

    #[test]
    fn the_real_corpus_parses_without_unknowns_of_interest() {
        let corpus = include_str!("../../tests/data/openvpn-2.6-verb3.log");
        let events: Vec<_> = corpus.lines().map(parse).collect();
        let count = |f: &dyn Fn(&Event) -> bool| events.iter().filter(|l| f(&l.event)).count();
        assert!(count(&|e| matches!(e, Event::AuthSucceeded { .. })) >= 1);
        assert!(count(&|e| matches!(e, Event::AuthFailed)) >= 2);
        assert!(count(&|e| matches!(e, Event::Learn { .. })) >= 1);
        assert!(count(&|e| matches!(e, Event::PeerConnected)) >= 2);
        assert!(count(&|e| matches!(e, Event::ClientEnded { .. })) >= 1);
        let unknown: Vec<&str> = events
            .iter()
            .filter_map(|l| match l.event {
                Event::Unknown(raw) => Some(raw),
                _ => None,
            })
            .collect();
        assert!(
            unknown.is_empty(),
            "routine lines left unclassified: {unknown:#?}"
        );
    }

    #[test]
    fn the_time_comes_from_the_syslog_header_or_else_from_openvpn() {
        use chrono::Utc;
        const T: i64 = 1_795_630_085; // 2026-11-25T18:08:05Z
        let l = parse_in(
            "2026-11-25 18:08:05 1.2.3.4:5 TLS: Initial packet from x",
            Utc,
        );
        assert_eq!((l.time, l.event), (Some(T), Event::Initial));
        let l = parse_in(
            "<29>1 2026-11-25T18:08:06Z vpn1 openvpn - - - 2026-11-25 18:08:05 1.2.3.4:5 TLS: Initial packet from x",
            Utc,
        );
        assert_eq!((l.time, l.event), (Some(T + 1), Event::Initial));
        assert_eq!(
            parse_in("1.2.3.4:5 TLS: Initial packet from x", Utc).time,
            None
        );
    }
}
