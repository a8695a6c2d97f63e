//! Parsed log events → session and authentication records (pure).
//!
//! A session opens when OpenVPN reports the peer connected, learns its tunnel
//! address from `MULTI: Learn`, and closes when the client instance ends
//! (signal and reason), the connection resets or the peer times out. Usernames
//! and common names resolve to the tunnel's UUID (compact or UUID form); a name
//! that is neither is kept as it is. The tracker is fed one event at a time
//! with the time it happened and returns what is complete.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use uuid::Uuid;

use super::parse::{Event, Line};
use crate::tunnels::username::tunnel_of;

/// A finished (or still open) tunnel session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub tunnel: Option<Uuid>,
    pub common_name: String,
    pub peer: SocketAddr,
    pub virtual_addr: Option<IpAddr>,
    pub start: u64,
    pub end: Option<u64>,
    pub end_reason: Option<String>,
}

/// One authentication attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthAttempt {
    pub time: u64,
    pub peer: Option<SocketAddr>,
    /// Known when it succeeded (OpenVPN logs the name only then).
    pub username: Option<String>,
    pub tunnel: Option<Uuid>,
    pub ok: bool,
}

/// What one event completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Opened(Session),
    Closed(Session),
    Auth(AuthAttempt),
}

/// Open sessions by client address (OpenVPN's key for a client instance).
#[derive(Default)]
pub struct Tracker {
    open: HashMap<SocketAddr, Session>,
}

impl Tracker {
    pub fn open_sessions(&self) -> usize {
        self.open.len()
    }

    /// Feeds one line that happened at `time`; returns the records it completed.
    pub fn feed(&mut self, line: &Line, time: u64) -> Option<Record> {
        let peer = line.peer;
        match &line.event {
            Event::AuthSucceeded { username } => Some(Record::Auth(AuthAttempt {
                time,
                peer,
                username: Some((*username).to_owned()),
                tunnel: tunnel_of(username).ok(),
                ok: true,
            })),
            Event::AuthFailed => Some(Record::Auth(AuthAttempt {
                time,
                peer,
                username: line.common_name.map(str::to_owned),
                tunnel: line.common_name.and_then(|n| tunnel_of(n).ok()),
                ok: false,
            })),
            Event::PeerConnected => {
                let (peer, cn) = (peer?, line.common_name?);
                let session = Session {
                    tunnel: tunnel_of(cn).ok(),
                    common_name: cn.to_owned(),
                    peer,
                    virtual_addr: None,
                    start: time,
                    end: None,
                    end_reason: None,
                };
                self.open.insert(peer, session.clone());
                Some(Record::Opened(session))
            }
            Event::Learn { virtual_addr } => {
                if let Some(s) = peer.and_then(|p| self.open.get_mut(&p)) {
                    s.virtual_addr = Some(*virtual_addr);
                }
                None
            }
            Event::ClientEnded { signal, reason } => {
                let why = if reason.is_empty() {
                    (*signal).to_owned()
                } else {
                    format!("{signal}: {reason}")
                };
                self.close(peer?, time, why)
            }
            Event::ConnectionReset => self.close(peer?, time, "connection-reset".into()),
            Event::InactivityTimeout => self.close(peer?, time, "inactivity-timeout".into()),
            _ => None,
        }
    }

    fn close(&mut self, peer: SocketAddr, time: u64, reason: String) -> Option<Record> {
        let mut s = self.open.remove(&peer)?;
        s.end = Some(time);
        s.end_reason = Some(reason);
        Some(Record::Closed(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vpnlog::parse::parse;

    #[test]
    fn the_real_log_gives_one_session_and_its_auth_attempts() {
        let corpus = include_str!("../../tests/data/openvpn-2.6-verb3.log");
        let mut t = Tracker::default();
        let records: Vec<Record> = corpus
            .lines()
            .enumerate()
            .filter_map(|(i, l)| t.feed(&parse(l), i as u64))
            .collect();
        let closed: Vec<&Session> = records
            .iter()
            .filter_map(|r| {
                if let Record::Closed(s) = r {
                    Some(s)
                } else {
                    None
                }
            })
            .collect();
        let good = closed
            .iter()
            .find(|s| s.common_name == "gfynkzpktrhafbfy5t2uzic2gq")
            .expect("the good client's session");
        assert_eq!(good.virtual_addr, Some("100.64.0.2".parse().unwrap()));
        assert_eq!(good.peer.ip(), "169.254.89.2".parse::<IpAddr>().unwrap());
        assert!(
            good.tunnel.is_some(),
            "compact username resolves to the UUID"
        );
        assert!(good.end_reason.is_some() && good.end >= Some(good.start));
        let auth: Vec<&AuthAttempt> = records
            .iter()
            .filter_map(|r| {
                if let Record::Auth(a) = r {
                    Some(a)
                } else {
                    None
                }
            })
            .collect();
        assert!(auth.iter().any(|a| a.ok && a.tunnel == good.tunnel));
        assert!(
            auth.iter().filter(|a| !a.ok).count() >= 2,
            "wrong secret and deleted site"
        );
    }

    #[test]
    fn uuid_form_names_resolve_and_unknown_names_are_kept() {
        let mut t = Tracker::default();
        let id = Uuid::new_v4();
        let line = format!("{id}/198.51.100.7:40000 MULTI: Learn: 100.64.0.9 -> x");
        let connected = format!(
            "198.51.100.7:40000 [{id}] Peer Connection Initiated with [AF_INET]198.51.100.7:40000"
        );
        let Some(Record::Opened(s)) = t.feed(&parse(&connected), 10) else {
            panic!()
        };
        assert_eq!(s.tunnel, Some(id));
        assert_eq!(t.feed(&parse(&line), 11), None);
        let end = format!(
            "{id}/198.51.100.7:40000 SIGTERM[soft,remote-exit] received, client-instance exiting"
        );
        let Some(Record::Closed(s)) = t.feed(&parse(&end), 20) else {
            panic!()
        };
        assert_eq!(
            (s.virtual_addr, s.end, s.end_reason.as_deref()),
            (
                Some("100.64.0.9".parse().unwrap()),
                Some(20),
                Some("SIGTERM: remote-exit")
            )
        );
        assert_eq!(t.open_sessions(), 0);
        let other =
            "203.0.113.5:1 [router-7] Peer Connection Initiated with [AF_INET]203.0.113.5:1";
        let Some(Record::Opened(s)) = t.feed(&parse(other), 30) else {
            panic!()
        };
        assert_eq!((s.tunnel, s.common_name.as_str()), (None, "router-7"));
    }
}
