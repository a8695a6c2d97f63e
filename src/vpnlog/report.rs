//! What agents report of their OpenVPN server (`POST /agent/v1/reports`),
//! read from its management interface: logins, sessions and their byte
//! counts. The control plane feeds them to the server's session tracker
//! under the agent's name, as it does with syslog lines.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::{
    latency::measurement,
    sessions::{AuthAttempt, Record, Tracker},
    status::Client,
    store::Latency,
};
use crate::tunnels::username::tunnel_of;

/// Most reports in one batch.
pub const MAX_BATCH: usize = 500;

/// One thing an agent saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Report {
    /// A login the agent answered.
    Login {
        time: u64,
        user: String,
        peer: Option<SocketAddr>,
        ok: bool,
    },
    /// A session began (`>CLIENT:ESTABLISHED`).
    Established {
        time: u64,
        user: String,
        peer: SocketAddr,
        address: Option<IpAddr>,
    },
    /// A session's counters (`>BYTECOUNT_CLI`): received from the router, sent to it.
    Bytes {
        peer: SocketAddr,
        received: u64,
        sent: u64,
    },
    /// A session ended (`>CLIENT:DISCONNECT`), with its final counters.
    Disconnect {
        time: u64,
        peer: SocketAddr,
        bytes: Option<(u64, u64)>,
    },
    /// One round of pings to a tunnel address, from the server's side.
    Latency {
        time: u64,
        user: String,
        address: IpAddr,
        sent: u16,
        /// Round-trip times of the answered pings, in microseconds.
        rtts_us: Vec<u64>,
    },
}

/// A batch as posted; `dropped` counts reports the agent had to drop (its
/// buffer was full) since its last batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub reports: Vec<Report>,
    #[serde(default)]
    pub dropped: u64,
}

impl Report {
    /// The latency record of a `Latency` report.
    pub fn latency(&self) -> Option<Latency> {
        let Self::Latency {
            time,
            user,
            address,
            sent,
            rtts_us,
        } = self
        else {
            return None;
        };
        let rtts: Vec<Duration> = rtts_us
            .iter()
            .map(|&us| Duration::from_micros(us))
            .collect();
        Some(Latency {
            tunnel: tunnel_of(user).ok(),
            ..measurement(*time, user, *address, *sent, &rtts)
        })
    }

    /// Feeds the report to a server's tracker; the record it completed.
    pub fn feed(self, tracker: &mut Tracker) -> Option<Record> {
        match self {
            Self::Login {
                time,
                user,
                peer,
                ok,
            } => {
                if !ok {
                    tracker.auth_failures += 1;
                }
                Some(Record::Auth(AuthAttempt {
                    time,
                    peer,
                    tunnel: tunnel_of(&user).ok(),
                    username: Some(user),
                    ok,
                }))
            }
            Self::Established {
                time,
                user,
                peer,
                address,
            } => tracker.seen(
                &Client {
                    common_name: user,
                    username: None,
                    peer,
                    virtual_addr: address,
                    bytes: None,
                    since: Some(time),
                    client_id: None,
                },
                time,
            ),
            Self::Bytes {
                peer,
                received,
                sent,
            } => tracker.traffic(peer, (received, sent)),
            Self::Disconnect { time, peer, bytes } => {
                tracker.ended(peer, time, "disconnect", bytes)
            }
            Self::Latency { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_reported_by_an_agent_opens_counts_and_closes() {
        let mut t = Tracker::default();
        let peer: SocketAddr = "169.254.1.2:40000".parse().unwrap();
        let user = "h4vwyhu2jvhixmocpvpj6cq3fq".to_owned();
        let login = Report::Login {
            time: 9,
            user: user.clone(),
            peer: Some(peer),
            ok: false,
        };
        assert!(matches!(login.feed(&mut t), Some(Record::Auth(a)) if !a.ok));
        assert_eq!(t.auth_failures, 1);
        let opened = Report::Established {
            time: 10,
            user,
            peer,
            address: Some("100.64.0.2".parse().unwrap()),
        }
        .feed(&mut t);
        assert!(matches!(opened, Some(Record::Opened(s)) if s.start == 10));
        let bytes = Report::Bytes {
            peer,
            received: 5,
            sent: 7,
        };
        assert!(matches!(bytes.feed(&mut t), Some(Record::Progress(_))));
        let closed = Report::Disconnect {
            time: 20,
            peer,
            bytes: Some((50, 70)),
        }
        .feed(&mut t);
        let Some(Record::Closed(s)) = closed else {
            panic!("{closed:?}")
        };
        assert_eq!((s.end, s.bytes_in, s.bytes_out), (Some(20), 50, 70));
        // A latency round becomes a latency record, not a session change.
        let round = Report::Latency {
            time: 30,
            user: "h4vwyhu2jvhixmocpvpj6cq3fq".into(),
            address: "100.64.0.2".parse().unwrap(),
            sent: 3,
            rtts_us: vec![1_000, 3_000],
        };
        let l = round.latency().unwrap();
        assert_eq!((l.sent, l.received, l.rtt_ms.unwrap().avg), (3, 2, 2.0));
        assert!(l.tunnel.is_some());
        assert_eq!(round.feed(&mut t), None);
        // The wire form.
        let json = serde_json::to_string(&Batch {
            reports: vec![Report::Bytes {
                peer,
                received: 1,
                sent: 2,
            }],
            dropped: 3,
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"reports":[{"kind":"bytes","peer":"169.254.1.2:40000","received":1,"sent":2}],"dropped":3}"#
        );
    }
}
