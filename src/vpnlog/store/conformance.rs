//! What every [`LogStore`] promises, as checks run on each backend: SQLite
//! in the unit tests, PostgreSQL in `tests/stores.rs` (a real server). Each
//! check takes a fresh, empty store.

#![allow(clippy::missing_panics_doc)]

use uuid::Uuid;

use super::{Item, Latency, LogStore, Origin, RegionActivity, Rtt};
use crate::vpnlog::sessions::{AuthAttempt, Record, Session};

/// A check, given a fresh store.
pub type Check = fn(&dyn LogStore);

/// Every check, by name.
pub const ALL: &[(&str, Check)] = &[
    (
        "sessions_are_updated_by_key_summarised_and_pruned",
        sessions_are_updated_by_key_summarised_and_pruned,
    ),
    (
        "attempts_are_kept_by_day_and_pruned_by_the_retention",
        attempts_are_kept_by_day_and_pruned_by_the_retention,
    ),
];

fn session(start: u64) -> Session {
    Session {
        tunnel: Some(Uuid::from_u128(7)),
        common_name: "r".into(),
        peer: "198.51.100.7:4000".parse().unwrap(),
        virtual_addr: None,
        start,
        end: None,
        end_reason: None,
        bytes_in: 0,
        bytes_out: 0,
    }
}

fn origin() -> Origin {
    Origin {
        host: Some("vpn-1".into()),
        region: Some("europe1".into()),
    }
}

fn rec(record: Record, time: u64) -> Item {
    Item::Record {
        record,
        origin: origin(),
        time,
    }
}

pub fn sessions_are_updated_by_key_summarised_and_pruned(store: &dyn LogStore) {
    let mut s = session(100);
    store.write(&[rec(Record::Opened(s.clone()), 100)]).unwrap();
    assert_eq!(store.open_sessions().unwrap(), vec![(origin(), s.clone())]);
    s.virtual_addr = Some("100.64.0.2".parse().unwrap());
    (s.bytes_in, s.bytes_out) = (10, 20);
    let mut closed = s.clone();
    (closed.end, closed.end_reason) = (Some(200), Some("connection-reset".into()));
    let ping = Latency {
        time: 150,
        tunnel: s.tunnel,
        common_name: "r".into(),
        addr: "100.64.0.2".parse().unwrap(),
        sent: 4,
        received: 3,
        rtt_ms: Some(Rtt {
            min: 1.0,
            avg: 2.0,
            max: 3.0,
        }),
    };
    store
        .write(&[
            rec(Record::Progress(s.clone()), 150),
            Item::Latency(ping, origin()),
            rec(Record::Closed(closed), 200),
        ])
        .unwrap();
    let rows = store.sessions(Uuid::from_u128(7), 10).unwrap();
    assert_eq!(rows.len(), 1, "one session, updated in place");
    assert_eq!(
        (
            rows[0].end,
            rows[0].bytes_in,
            rows[0].virtual_addr.as_deref()
        ),
        (Some(200), 10, Some("100.64.0.2"))
    );
    assert!(store.open_sessions().unwrap().is_empty());
    let l = store.latency(Uuid::from_u128(7), 0, 10).unwrap();
    assert_eq!((l[0].received, l[0].loss), (3, 0.25));
    let a = store.region_activity("europe1", 0).unwrap();
    assert_eq!((a.sessions_started, a.bytes_in, a.bytes_out), (1, 10, 20));
    assert_eq!(
        store.region_activity("us1", 0).unwrap(),
        RegionActivity::default()
    );
    // Session, traffic sample and latency sample all end before 300.
    assert_eq!(store.prune(300).unwrap(), 3);
    assert!(store.sessions(Uuid::from_u128(7), 10).unwrap().is_empty());
}

pub fn attempts_are_kept_by_day_and_pruned_by_the_retention(store: &dyn LogStore) {
    const DAY: u64 = 86_400;
    let day = 20_000 * DAY; // 2024-10-04
    let attempt = |time: u64, ok: bool| {
        rec(
            Record::Auth(AuthAttempt {
                time,
                peer: Some("198.51.100.7:4000".parse().unwrap()),
                username: ok.then(|| "r".to_owned()),
                tunnel: ok.then_some(Uuid::from_u128(7)),
                ok,
            }),
            time,
        )
    };
    let unparsed = |time: u64| Item::Unparsed {
        time,
        origin: origin(),
        raw: "what".into(),
    };
    store
        .write(&[
            attempt(day + 10, true),
            attempt(day + 20, false),
            unparsed(day + 30),
            attempt(day + DAY + 10, false),
            attempt(day + 2 * DAY + 10, true),
        ])
        .unwrap();
    let all = store.attempts(false, 0, 10).unwrap();
    let times: Vec<u64> = all.iter().map(|a| a.time).collect();
    assert_eq!(
        times,
        [day + 2 * DAY + 10, day + DAY + 10, day + 20, day + 10]
    );
    assert_eq!(all[3].username.as_deref(), Some("r"));
    let failures = store.attempts(true, day + 15, 10).unwrap();
    assert_eq!(failures.len(), 2, "failures since then");
    let a = store.region_activity("europe1", day).unwrap();
    assert_eq!(
        (a.auth_successes, a.auth_failures, a.unparsed_lines),
        (2, 2, 1)
    );
    // The first day and part of the second go.
    assert_eq!(store.prune(day + DAY + 15).unwrap(), 4);
    let left: Vec<u64> = store
        .attempts(false, 0, 10)
        .unwrap()
        .iter()
        .map(|a| a.time)
        .collect();
    assert_eq!(left, [day + 2 * DAY + 10]);
    // Writing to a day again after its records were pruned works.
    store.write(&[attempt(day + DAY + 20, true)]).unwrap();
    assert_eq!(store.attempts(false, 0, 10).unwrap().len(), 2);
}
