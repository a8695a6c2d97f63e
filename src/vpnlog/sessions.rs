//! Parsed log events → session and authentication records (pure).
//!
//! A session opens when OpenVPN reports the peer connected, learns its tunnel
//! address from `MULTI: Learn`, and closes when the client instance ends
//! (signal and reason), the connection resets or the peer times out. Usernames
//! and common names resolve to the tunnel's UUID (compact or UUID form); a name
//! that is neither is kept as it is. The tracker is fed one event at a time
//! with the time it happened and returns what is complete.
//!
//! The management interface and status reports feed the same tracker: they
//! open sessions the log did not show, add byte counts, and close sessions
//! that are no longer listed (OpenVPN 2.6 logs a reset but tells the
//! management interface nothing). Recently closed sessions are remembered so
//! a report that was taken before the close neither reopens them nor loses
//! their final counts.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use uuid::Uuid;

use super::{
    parse::{Event, Line},
    status::{Client, Snapshot},
};
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
    /// Bytes received from the router and sent to it (OpenVPN's counters).
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// A session younger than this is not closed for missing from a report:
/// the report may have been taken just before it connected.
const REPORT_GRACE: u64 = 5;
/// How long a closed session is remembered for late reports.
const REMEMBER_CLOSED: u64 = 3600;
/// Most closed sessions remembered per server.
const MAX_CLOSED: usize = 65_536;

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
    /// An open (or just closed) session learned its address or new counts.
    Progress(Session),
    Closed(Session),
    Auth(AuthAttempt),
}

/// Sessions of one OpenVPN server by client address (OpenVPN's key for a
/// client instance), and what they add up to.
pub struct Tracker {
    open: HashMap<SocketAddr, Session>,
    closed: HashMap<SocketAddr, Session>,
    /// Open sessions missing from complete client lists: how many lists in
    /// a row, and the time of the first (a subset of `open`'s keys).
    unlisted: HashMap<SocketAddr, (u32, u64)>,
    /// Lists a session may miss before it is closed as "stale".
    stale_after: u32,
    /// Failed authentications seen.
    pub auth_failures: u64,
    /// Bytes in and out counted so far (growth of the sessions' counters).
    pub bytes: (u64, u64),
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new(3)
    }
}

impl Tracker {
    /// A tracker that closes a session missing from `stale_after` complete
    /// client lists in a row (one list may be taken just before a client
    /// reconnects, and a lost line must not keep a session open forever).
    pub fn new(stale_after: u32) -> Self {
        Self {
            open: HashMap::new(),
            closed: HashMap::new(),
            unlisted: HashMap::new(),
            stale_after: stale_after.max(1),
            auth_failures: 0,
            bytes: (0, 0),
        }
    }

    pub fn open_sessions(&self) -> usize {
        self.open.len()
    }

    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.open.values()
    }

    /// Takes back a session that was open when the service last stopped.
    pub fn resume(&mut self, session: Session) {
        self.open.insert(session.peer, session);
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
                time: {
                    self.auth_failures += 1;
                    time
                },
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
                    bytes_in: 0,
                    bytes_out: 0,
                };
                if self.open.contains_key(&peer) {
                    // The management interface saw it first: same session.
                    return None;
                }
                self.open_new(session)
            }
            Event::Learn { virtual_addr } => {
                let s = self.open.get_mut(&peer?)?;
                if s.virtual_addr == Some(*virtual_addr) {
                    return None;
                }
                s.virtual_addr = Some(*virtual_addr);
                Some(Record::Progress(s.clone()))
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

    fn open_new(&mut self, session: Session) -> Option<Record> {
        self.closed.remove(&session.peer);
        self.open.insert(session.peer, session.clone());
        Some(Record::Opened(session))
    }

    fn close(&mut self, peer: SocketAddr, time: u64, reason: String) -> Option<Record> {
        let mut s = self.open.remove(&peer)?;
        self.unlisted.remove(&peer);
        s.end = Some(time);
        s.end_reason = Some(reason);
        if self.closed.len() >= MAX_CLOSED {
            self.forget_closed(time);
        }
        if self.closed.len() < MAX_CLOSED {
            self.closed.insert(peer, s.clone());
        }
        Some(Record::Closed(s))
    }

    fn forget_closed(&mut self, time: u64) {
        self.closed
            .retain(|_, s| s.end.unwrap_or(0) + REMEMBER_CLOSED > time);
    }

    /// The open session of `peer`, or the recently closed one a report taken
    /// at `since` (if known) may still describe.
    fn known(&mut self, peer: SocketAddr, since: Option<u64>) -> Option<&mut Session> {
        if self.open.contains_key(&peer) {
            return self.open.get_mut(&peer);
        }
        self.closed
            .get_mut(&peer)
            .filter(|s| since.is_none_or(|t| t <= s.end.unwrap_or(0)))
    }

    /// New counters for a session; grows the totals; `true` if they grew.
    /// OpenVPN's counters only grow within a session: lower figures come
    /// from a report older than what we have.
    fn count(totals: &mut (u64, u64), s: &mut Session, (rx, tx): (u64, u64)) -> bool {
        let (rx, tx) = (rx.max(s.bytes_in), tx.max(s.bytes_out));
        if (rx, tx) == (s.bytes_in, s.bytes_out) {
            return false;
        }
        totals.0 += rx - s.bytes_in;
        totals.1 += tx - s.bytes_out;
        (s.bytes_in, s.bytes_out) = (rx, tx);
        true
    }

    /// A client some report lists as connected: opens its session or adds
    /// what the report knows.
    pub fn seen(&mut self, c: &Client, time: u64) -> Option<Record> {
        let mut totals = self.bytes;
        let record = match self.known(c.peer, c.since) {
            Some(s) => {
                let mut changed = c.bytes.is_some_and(|b| Self::count(&mut totals, s, b));
                if s.virtual_addr.is_none() && c.virtual_addr.is_some() {
                    s.virtual_addr = c.virtual_addr;
                    changed = true;
                }
                changed.then(|| Record::Progress(s.clone()))
            }
            None => {
                let mut s = Session {
                    tunnel: tunnel_of(&c.common_name).ok(),
                    common_name: c.common_name.clone(),
                    peer: c.peer,
                    virtual_addr: c.virtual_addr,
                    start: c.since.unwrap_or(time),
                    end: None,
                    end_reason: None,
                    bytes_in: 0,
                    bytes_out: 0,
                };
                if let Some(b) = c.bytes {
                    Self::count(&mut totals, &mut s, b);
                }
                self.open_new(s)
            }
        };
        self.bytes = totals;
        record
    }

    /// New byte counters for the client at `peer`.
    pub fn traffic(&mut self, peer: SocketAddr, bytes: (u64, u64)) -> Option<Record> {
        let mut totals = self.bytes;
        let s = self.known(peer, None)?;
        let record = Self::count(&mut totals, s, bytes).then(|| Record::Progress(s.clone()));
        self.bytes = totals;
        record
    }

    /// The client at `peer` left (a management `>CLIENT:DISCONNECT`), with its
    /// final counters if known.
    pub fn ended(
        &mut self,
        peer: SocketAddr,
        time: u64,
        reason: &str,
        bytes: Option<(u64, u64)>,
    ) -> Option<Record> {
        let counted = bytes.and_then(|b| self.traffic(peer, b));
        if !self.open.contains_key(&peer) {
            // Closed already (from the log): the final counts are the news.
            return counted;
        }
        self.close(peer, time, reason.to_owned())
    }

    /// A whole client list taken at `taken`: opens and updates what it lists
    /// and, if it is complete, counts a miss for each session it does not
    /// list; a session missing from `stale_after` lists in a row closes as
    /// "stale", ended when the first of them was taken.
    pub fn snapshot(&mut self, report: &Snapshot, taken: u64, time: u64) -> Vec<Record> {
        let mut records: Vec<Record> = report
            .clients
            .iter()
            .filter_map(|c| self.seen(c, time))
            .collect();
        if report.complete() {
            let listed: std::collections::HashSet<SocketAddr> =
                report.clients.iter().map(|c| c.peer).collect();
            self.unlisted.retain(|peer, _| !listed.contains(peer));
            let missing: Vec<SocketAddr> = self
                .open
                .values()
                .filter(|s| !listed.contains(&s.peer) && s.start + REPORT_GRACE < taken)
                .map(|s| s.peer)
                .collect();
            for peer in missing {
                let (misses, since) = self.unlisted.entry(peer).or_insert((0, taken));
                *misses += 1;
                if *misses >= self.stale_after {
                    let since = *since;
                    records.extend(self.close(peer, since.min(time), "stale".into()));
                }
            }
        }
        self.forget_closed(time);
        records
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
        assert!(matches!(
            t.feed(&parse(&line), 11),
            Some(Record::Progress(_))
        ));
        assert_eq!(t.feed(&parse(&line), 12), None, "nothing new");
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

    fn client(peer: &str, since: Option<u64>, bytes: Option<(u64, u64)>) -> Client {
        Client {
            common_name: "gfynkzpktrhafbfy5t2uzic2gq".into(),
            username: None,
            peer: peer.parse().unwrap(),
            virtual_addr: Some("100.64.0.2".parse().unwrap()),
            bytes,
            since,
            client_id: None,
        }
    }

    fn report(clients: Vec<Client>) -> Snapshot {
        Snapshot {
            taken: None,
            clients,
            bad_rows: vec![],
            ended: true,
        }
    }

    #[test]
    fn reports_open_count_and_close_sessions() {
        let mut t = Tracker::default();
        let a = client("198.51.100.7:1000", Some(100), Some((10, 20)));
        let Some(Record::Opened(s)) = t.seen(&a, 105) else {
            panic!()
        };
        assert_eq!((s.start, s.bytes_in, s.bytes_out), (100, 10, 20));
        assert!(s.tunnel.is_some());
        assert_eq!(t.seen(&a, 106), None, "nothing new");
        let Some(Record::Progress(s)) = t.traffic(a.peer, (15, 50)) else {
            panic!()
        };
        assert_eq!((s.bytes_in, s.bytes_out), (15, 50));
        assert_eq!(t.bytes, (15, 50));
        // Listed: kept; missing from `stale_after` (3) complete reports in
        // a row: closed as stale, ended at the first; a young one waits.
        assert!(t.snapshot(&report(vec![a.clone()]), 200, 200).is_empty());
        let b = client("198.51.100.8:1000", Some(300), None);
        t.seen(&b, 300);
        assert!(t.snapshot(&report(vec![]), 302, 302).is_empty());
        // An incomplete report (bad rows, or no END) counts for nothing.
        let mut broken = report(vec![]);
        broken.bad_rows.push("line 4: x".into());
        assert!(t.snapshot(&broken, 303, 303).is_empty());
        let cut = Snapshot {
            ended: false,
            ..report(vec![])
        };
        assert!(t.snapshot(&cut, 304, 304).is_empty());
        assert!(t.snapshot(&report(vec![]), 305, 305).is_empty());
        let r = t.snapshot(&report(vec![]), 308, 308);
        let [Record::Closed(s)] = &r[..] else {
            panic!("{r:?}")
        };
        assert_eq!(
            (s.peer, s.end, s.end_reason.as_deref()),
            (a.peer, Some(302), Some("stale"))
        );
        assert_eq!(t.open_sessions(), 1, "b, younger, missed one list only");
        // Listed again, its misses start over.
        assert!(t.snapshot(&report(vec![b.clone()]), 310, 310).is_empty());
        for at in [320, 330] {
            assert!(t.snapshot(&report(vec![]), at, at).is_empty());
        }
        assert_eq!(t.snapshot(&report(vec![]), 340, 340).len(), 1);
        assert_eq!(t.open_sessions(), 0);
    }

    #[test]
    fn a_report_taken_before_a_close_neither_reopens_nor_loses_counts() {
        let mut t = Tracker::default();
        let id = Uuid::new_v4();
        let connected = format!(
            "198.51.100.7:40000 [{id}] Peer Connection Initiated with [AF_INET]198.51.100.7:40000"
        );
        t.feed(&parse(&connected), 100);
        let reset = format!("{id}/198.51.100.7:40000 Connection reset, restarting [0]");
        assert!(matches!(
            t.feed(&parse(&reset), 150),
            Some(Record::Closed(_))
        ));
        // The status reply of 149 arrives after the close: same session, final counts.
        let late = Client {
            common_name: id.to_string(),
            ..client("198.51.100.7:40000", Some(100), Some((7, 9)))
        };
        let r = t.snapshot(&report(vec![late.clone()]), 149, 151);
        let [Record::Progress(s)] = &r[..] else {
            panic!("{r:?}")
        };
        assert_eq!(
            (s.end, s.bytes_in, s.bytes_out, s.tunnel),
            (Some(150), 7, 9, Some(id))
        );
        assert_eq!(t.open_sessions(), 0);
        // A new connection from the same address and port is a new session.
        let again = Client {
            since: Some(160),
            ..late
        };
        assert!(matches!(t.seen(&again, 160), Some(Record::Opened(_))));
        // A management DISCONNECT closes with its final counts.
        let Some(Record::Closed(s)) = t.ended(again.peer, 170, "disconnect", Some((100, 200)))
        else {
            panic!()
        };
        assert_eq!(
            (s.bytes_in, s.end_reason.as_deref()),
            (100, Some("disconnect"))
        );
    }
}
