//! What a UDP answer may cost us: response rate limiting (`[dns.rrl]`) and
//! `truncate_without_cookie`, both applied to answers already built.
//!
//! UDP sources can be forged, so a flood of small queries "from" a victim
//! turns into a flood of larger answers to it. Rate limiting counts answers
//! per network (a /24, a /56 by default) and per kind of answer, within one
//! second, in a fixed table (memory bounded whatever the number of sources);
//! over the rate an answer is dropped, except every `slip`-th, which goes out
//! truncated so that a real resolver behind the network retries over TCP — or,
//! when the query had a client cookie, as BADCOOKIE carrying a fresh server
//! cookie, so its retry over UDP is proven and passes (RFC 7873 §5.2.3 and
//! §5.3). A query with a valid server cookie cannot have been forged: it is
//! never limited nor truncated. TCP answers are never limited either.
//!
//! Kinds, as BIND and Knot count them: a positive answer is counted per
//! question (name and type), while negative answers (NXDOMAIN, no data,
//! referrals) and errors each share one count per network, so a flood of
//! random names is limited as one.

use std::{
    hash::{BuildHasher, Hasher},
    net::IpAddr,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Instant,
};

use super::{cookie, ecs};
use crate::config::RrlConfig;

/// Slots of the rate table: 512 KiB, one counter per (network, kind) hash.
const SLOTS: usize = 1 << 16;
const COUNT_BITS: u32 = 24;
const SECOND_BITS: u32 = 24;

/// What becomes of one UDP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Send,
    /// Sent as header, question and OPT only, with TC set.
    Truncate,
    /// Sent as BADCOOKIE with the fresh cookie (no records).
    BadCookie,
    Drop,
}

/// The answers changed or withheld, for the metrics.
#[derive(Debug, Default)]
pub struct GuardCounters {
    /// Over the rate, not sent.
    pub rrl_dropped: AtomicU64,
    /// Over the rate, sent truncated.
    pub rrl_slipped: AtomicU64,
    /// Over the rate, sent as BADCOOKIE.
    pub rrl_badcookie: AtomicU64,
    /// Larger than `truncate_without_cookie`, sent truncated.
    pub truncated_without_cookie: AtomicU64,
}

/// The rate table and the counters, shared by every UDP thread for the
/// life of the process (a reload changes the limits, not the counts).
#[derive(Default)]
pub struct Guard {
    table: OnceLock<Table>,
    pub counters: GuardCounters,
}

struct Table {
    slots: Box<[AtomicU64]>,
    hasher: foldhash::fast::RandomState,
    start: Instant,
}

impl Guard {
    /// Decides what to do with `reply`, the answer to `query` from `src`.
    pub fn judge(
        &self,
        dns: &crate::config::DnsConfig,
        cookies: Option<&cookie::Secrets>,
        query: &[u8],
        reply: &[u8],
        src: IpAddr,
    ) -> Action {
        let truncate_above = usize::from(dns.truncate_without_cookie);
        if dns.rrl.is_none() && (truncate_above == 0 || reply.len() <= truncate_above) {
            return Action::Send;
        }
        let status = cookies.and_then(|s| query_cookie(s, query, src));
        if status == Some(cookie::Status::Valid) {
            return Action::Send;
        }
        if let Some(rrl) = &dns.rrl {
            let table = self.table.get_or_init(Table::new);
            match table.count(rrl, src, reply) {
                Over::No => {}
                Over::Drop => {
                    self.counters.rrl_dropped.fetch_add(1, Relaxed);
                    return Action::Drop;
                }
                Over::Slip if status.is_some() => {
                    self.counters.rrl_badcookie.fetch_add(1, Relaxed);
                    return Action::BadCookie;
                }
                Over::Slip => {
                    self.counters.rrl_slipped.fetch_add(1, Relaxed);
                    return Action::Truncate;
                }
            }
        }
        if truncate_above > 0 && reply.len() > truncate_above {
            self.counters.truncated_without_cookie.fetch_add(1, Relaxed);
            return Action::Truncate;
        }
        Action::Send
    }
}

/// What the query's cookie proves, if it has a well-formed one.
fn query_cookie(secrets: &cookie::Secrets, query: &[u8], src: IpAddr) -> Option<cookie::Status> {
    let options = ecs::opt_options(query).ok()?;
    let (_, value) = options.iter().find(|(code, _)| *code == cookie::CODE)?;
    let received = cookie::Received::parse(value).ok()?;
    Some(secrets.judge(&received, src, cookie::now()).status)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    No,
    Drop,
    Slip,
}

impl Table {
    fn new() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: foldhash::fast::RandomState::default(),
            start: Instant::now(),
        }
    }

    /// Counts one answer against its network and kind in the current second.
    fn count(&self, rrl: &RrlConfig, src: IpAddr, reply: &[u8]) -> Over {
        let mut h = self.hasher.build_hasher();
        network_key(&mut h, rrl, src);
        kind_key(&mut h, reply);
        let hash = h.finish();
        let second = self.start.elapsed().as_secs();
        let n = bump(
            &self.slots[hash as usize % SLOTS],
            (hash >> 48) as u16,
            second,
        );
        over(n, rrl.rate, rrl.slip)
    }
}

/// Whether the `n`-th answer of a second is over `rate`, and if so whether
/// it is one of every `slip` sent truncated.
fn over(n: u32, rate: u32, slip: u32) -> Over {
    if n <= rate {
        Over::No
    } else if slip > 0 && (n - rate).is_multiple_of(slip) {
        Over::Slip
    } else {
        Over::Drop
    }
}

/// Adds one to a slot for `tag` in `second`, starting over when the slot
/// holds another second or another tag (a colliding key: the table forgets
/// the older, so a collision can only let answers through); the new count.
fn bump(slot: &AtomicU64, tag: u16, second: u64) -> u32 {
    let second = second & ((1 << SECOND_BITS) - 1);
    let max = (1u64 << COUNT_BITS) - 1;
    let key = (u64::from(tag) << (SECOND_BITS + COUNT_BITS)) | (second << COUNT_BITS);
    let mut current = slot.load(Relaxed);
    loop {
        let same = current & !max == key;
        let n = if same { (current & max) + 1 } else { 1 }.min(max);
        match slot.compare_exchange_weak(current, key | n, Relaxed, Relaxed) {
            Ok(_) => return n as u32,
            Err(seen) => current = seen,
        }
    }
}

/// The network `src` is counted in.
fn network_key(h: &mut impl Hasher, rrl: &RrlConfig, src: IpAddr) {
    match crate::geo::canonical(src) {
        IpAddr::V4(v4) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(rrl.ipv4_prefix))
                .unwrap_or(0);
            h.write_u8(4);
            h.write_u32(u32::from(v4) & mask);
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(rrl.ipv6_prefix))
                .unwrap_or(0);
            h.write_u8(6);
            h.write_u128(u128::from(v6) & mask);
        }
    }
}

/// The kind of answer `reply` is: per question for a positive answer, one
/// per class otherwise.
fn kind_key(h: &mut impl Hasher, reply: &[u8]) {
    let rcode = reply.get(3).map_or(0, |b| b & 0x0F);
    let answers = reply
        .get(6..8)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    match (rcode, answers) {
        (0, 1..) => {
            h.write_u8(0);
            // The question as asked, case folded: name and type.
            if let Some(question) = question(reply) {
                for b in question {
                    h.write_u8(b.to_ascii_lowercase());
                }
            }
        }
        (0 | 3, _) => h.write_u8(1),
        _ => h.write_u8(2),
    }
}

/// The question's name and type.
fn question(msg: &[u8]) -> Option<&[u8]> {
    let mut r = ecs::Cursor::new(msg, 12);
    r.skip_name().ok()?;
    r.take(2).ok()?;
    msg.get(12..r.pos())
}

/// `reply` cut to its header, question and OPT record, with TC set, or
/// turned into BADCOOKIE (RCODE 23: 7 in the header, 1 in the OPT record's
/// extended RCODE); `None` when `reply` cannot be read (never ours).
pub fn shrink(reply: &[u8], action: Action) -> Option<Vec<u8>> {
    let header = reply.get(..12)?;
    let questions = u16::from_be_bytes([header[4], header[5]]);
    let mut r = ecs::Cursor::new(reply, 12);
    for _ in 0..questions {
        r.skip_name().ok()?;
        r.take(4).ok()?;
    }
    let question_end = r.pos();
    let counts = [6, 8, 10].map(|i| usize::from(u16::from_be_bytes([reply[i], reply[i + 1]])));
    let mut opt = None;
    for i in 0..counts.iter().sum::<usize>() {
        let start = r.pos();
        r.skip_name().ok()?;
        let rtype = r.u16().ok()?;
        r.take(6).ok()?;
        let rdlen = usize::from(r.u16().ok()?);
        r.take(rdlen).ok()?;
        if rtype == 41 && i >= counts[0] + counts[1] {
            opt = Some(&reply[start..r.pos()]);
        }
    }
    let mut out = Vec::with_capacity(question_end + opt.map_or(0, <[u8]>::len));
    out.extend_from_slice(&reply[..question_end]);
    out[6..10].fill(0);
    out[10..12].copy_from_slice(&u16::from(opt.is_some()).to_be_bytes());
    match action {
        Action::BadCookie if opt.is_some() => {
            // AA and TC off; RCODE 23 = 0x17.
            out[2] &= !0x06;
            out[3] = (out[3] & 0xF0) | 0x07;
        }
        _ => out[2] |= 0x02,
    }
    if let Some(opt) = opt {
        let at = out.len();
        out.extend_from_slice(opt);
        if action == Action::BadCookie {
            // The OPT record's TTL begins with the extended RCODE.
            out[at + 5] = 0x01;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_rate_every_slip_th_answer_slips_and_the_rest_drop() {
        let got: Vec<Over> = (1..=9).map(|n| over(n, 3, 2)).collect();
        use Over::*;
        assert_eq!(got, [No, No, No, Drop, Slip, Drop, Slip, Drop, Slip]);
        assert!((4..100).all(|n| over(n, 3, 0) == Drop), "slip 0 drops all");
        assert!(
            (4..100).all(|n| over(n, 3, 1) == Slip),
            "slip 1 truncates all"
        );
    }

    #[test]
    fn a_slot_counts_within_a_second_and_starts_over_on_the_next_or_another_key() {
        let slot = AtomicU64::new(0);
        assert_eq!(bump(&slot, 7, 100), 1);
        assert_eq!(bump(&slot, 7, 100), 2);
        assert_eq!(bump(&slot, 7, 100), 3);
        assert_eq!(bump(&slot, 7, 101), 1, "a new second");
        assert_eq!(bump(&slot, 9, 101), 1, "a colliding key takes the slot");
        assert_eq!(bump(&slot, 7, 101), 1);
    }

    #[test]
    fn networks_are_counted_per_prefix() {
        let rrl = RrlConfig {
            rate: 1,
            slip: 0,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
        };
        let key = |ip: &str| {
            let mut h = foldhash::fast::FixedState::with_seed(1).build_hasher();
            network_key(&mut h, &rrl, ip.parse().unwrap());
            h.finish()
        };
        assert_eq!(key("198.51.100.1"), key("198.51.100.254"));
        assert_ne!(key("198.51.100.1"), key("198.51.101.1"));
        assert_eq!(key("::ffff:198.51.100.9"), key("198.51.100.1"));
        assert_eq!(key("2001:db8:0:ff::1"), key("2001:db8:0:1::2"));
        assert_ne!(key("2001:db8:0:100::1"), key("2001:db8::1"));
    }

    /// A response to `name` A with `answers` answer records and an OPT record.
    fn response(name: &[u8], rcode: u8, answers: u8) -> Vec<u8> {
        let mut m = vec![0xab, 0xcd, 0x85, rcode, 0, 1, 0, answers, 0, 0, 0, 1];
        m.extend_from_slice(name);
        m.extend_from_slice(&[0, 1, 0, 1]);
        for _ in 0..answers {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        }
        // OPT: payload 1232, a 4-byte cookie-like option.
        m.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 8, 0, 10, 0, 4, 1, 2, 3, 4]);
        m
    }

    #[test]
    fn kinds_key_positive_answers_by_question_and_the_rest_by_class() {
        let key = |m: &[u8]| {
            let mut h = foldhash::fast::FixedState::with_seed(1).build_hasher();
            kind_key(&mut h, m);
            h.finish()
        };
        let a = response(b"\x01a\x00", 0, 1);
        let upper = response(b"\x01A\x00", 0, 1);
        let b = response(b"\x01b\x00", 0, 1);
        assert_eq!(key(&a), key(&upper), "case folded");
        assert_ne!(key(&a), key(&b));
        assert_eq!(
            key(&response(b"\x01x\x00", 3, 0)),
            key(&response(b"\x01y\x00", 0, 0))
        );
        assert_ne!(
            key(&response(b"\x01x\x00", 3, 0)),
            key(&response(b"\x01x\x00", 5, 0))
        );
    }

    #[test]
    fn shrinking_keeps_header_question_and_opt() {
        let full = response(b"\x04mgnt\x00", 0, 2);
        let tc = shrink(&full, Action::Truncate).unwrap();
        let opt = &full[full.len() - 19..];
        assert_eq!(&tc[..2], &full[..2]);
        assert_eq!(tc[2] & 0x02, 0x02, "TC");
        assert_eq!(&tc[4..12], &[0, 1, 0, 0, 0, 0, 0, 1]);
        assert!(tc.ends_with(opt));
        assert_eq!(tc.len(), 12 + 10 + 19);
        let bad = shrink(&full, Action::BadCookie).unwrap();
        assert_eq!(bad[2] & 0x06, 0, "neither AA nor TC");
        assert_eq!(bad[3] & 0x0F, 7);
        assert_eq!(bad[12 + 10 + 5], 1, "extended RCODE: 23 = 1 << 4 | 7");
        for n in 0..full.len() {
            let _ = shrink(&full[..n], Action::Truncate);
        }
    }
}
