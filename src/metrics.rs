//! Counters the query path bumps without locks, rendered as Prometheus text.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

use hickory_proto::{op::ResponseCode, rr::RecordType};

use crate::route::Reason;

/// Query types counted by name; everything else is `other`.
const QTYPES: [RecordType; 12] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::CNAME,
    RecordType::NS,
    RecordType::SOA,
    RecordType::MX,
    RecordType::TXT,
    RecordType::PTR,
    RecordType::SRV,
    RecordType::ANY,
    RecordType::AXFR,
    RecordType::IXFR,
];
/// Extra qtype slots: another type, and a query whose question could not be read.
const OTHER_QTYPE: usize = QTYPES.len();
const NO_QTYPE: usize = QTYPES.len() + 1;
const QTYPE_SLOTS: usize = QTYPES.len() + 2;

const RCODES: [(ResponseCode, &str); 7] = [
    (ResponseCode::NoError, "NOERROR"),
    (ResponseCode::FormErr, "FORMERR"),
    (ResponseCode::ServFail, "SERVFAIL"),
    (ResponseCode::NXDomain, "NXDOMAIN"),
    (ResponseCode::NotImp, "NOTIMP"),
    (ResponseCode::Refused, "REFUSED"),
    // hickory names code 16 after TSIG's BADSIG; with EDNS it is BADVERS.
    (ResponseCode::BADVERS, "BADVERS"),
];
const RCODE_SLOTS: usize = RCODES.len() + 1;

pub const REASONS: [Reason; 5] = [
    Reason::Nearest,
    Reason::Failover,
    Reason::Override,
    Reason::NoLocation,
    Reason::FailOpen,
];

/// Query counters by qtype and rcode.
pub struct QueryCounters {
    counts: [[AtomicU64; RCODE_SLOTS]; QTYPE_SLOTS],
    /// Queries that got no reply (too short, or a response).
    pub dropped: AtomicU64,
}

impl Default for QueryCounters {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            dropped: AtomicU64::new(0),
        }
    }
}

impl QueryCounters {
    pub fn count(&self, qtype: Option<RecordType>, rcode: ResponseCode) {
        let q = match qtype {
            None => NO_QTYPE,
            Some(t) => QTYPES.iter().position(|&k| k == t).unwrap_or(OTHER_QTYPE),
        };
        let r = RCODES
            .iter()
            .position(|&(k, _)| k == rcode)
            .unwrap_or(RCODES.len());
        self.counts[q][r].fetch_add(1, Relaxed);
    }

    pub fn render(&self, out: &mut String) {
        help(
            out,
            "mgnt_dns_queries_total",
            "counter",
            "DNS queries answered, by query type and response code.",
        );
        for (q, row) in self.counts.iter().enumerate() {
            let qtype = match q {
                OTHER_QTYPE => "other".to_owned(),
                NO_QTYPE => "none".to_owned(),
                _ => QTYPES[q].to_string(),
            };
            for (r, c) in row.iter().enumerate() {
                let n = c.load(Relaxed);
                if n > 0 {
                    let rcode = RCODES.get(r).map_or("other", |(_, name)| name);
                    let _ = writeln!(
                        out,
                        "mgnt_dns_queries_total{{qtype=\"{qtype}\",rcode=\"{rcode}\"}} {n}"
                    );
                }
            }
        }
        help(
            out,
            "mgnt_dns_queries_dropped_total",
            "counter",
            "Messages that got no reply.",
        );
        let _ = writeln!(
            out,
            "mgnt_dns_queries_dropped_total {}",
            self.dropped.load(Relaxed)
        );
    }
}

/// Geo answers given by one region, by reason.
#[derive(Default)]
pub struct RegionCounters {
    answers: [AtomicU64; REASONS.len()],
}

impl RegionCounters {
    pub fn count(&self, reason: Reason) {
        if let Some(i) = REASONS.iter().position(|&r| r == reason) {
            self.answers[i].fetch_add(1, Relaxed);
        }
    }

    pub fn get(&self, reason: Reason) -> u64 {
        REASONS
            .iter()
            .position(|&r| r == reason)
            .map_or(0, |i| self.answers[i].load(Relaxed))
    }

    pub fn total(&self) -> u64 {
        self.answers.iter().map(|a| a.load(Relaxed)).sum()
    }
}

/// Writes a metric's HELP and TYPE lines.
pub fn help(out: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(out, "# HELP {name} {text}\n# TYPE {name} {kind}");
}

/// A fixed-bucket histogram (milliseconds), safe to observe from any thread.
pub struct Histogram {
    counts: [AtomicU64; BUCKETS_MS.len() + 1],
    /// Sum in microseconds, so it stays an integer.
    sum_us: AtomicU64,
}

pub const BUCKETS_MS: [f64; 11] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
];

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, ms: f64) {
        let i = BUCKETS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(BUCKETS_MS.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add((ms * 1000.0) as u64, Relaxed);
    }

    /// Renders cumulative buckets with `labels` (e.g. `region="eu",kind="tcp"`).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Relaxed);
            let le = BUCKETS_MS
                .get(i)
                .map_or("+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_us.load(Relaxed) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {sum}\n{name}_count{{{labels}}} {cumulative}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_render_by_type_and_code() {
        let q = QueryCounters::default();
        q.count(Some(RecordType::A), ResponseCode::NoError);
        q.count(Some(RecordType::A), ResponseCode::NoError);
        q.count(Some(RecordType::CAA), ResponseCode::Refused);
        q.count(None, ResponseCode::FormErr);
        q.count(Some(RecordType::SOA), ResponseCode::BADVERS);
        let mut out = String::new();
        q.render(&mut out);
        assert!(
            out.contains("mgnt_dns_queries_total{qtype=\"A\",rcode=\"NOERROR\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("{qtype=\"other\",rcode=\"REFUSED\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("{qtype=\"none\",rcode=\"FORMERR\"} 1"),
            "{out}"
        );
        assert!(out.contains("{qtype=\"SOA\",rcode=\"BADVERS\"} 1"), "{out}");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        for ms in [0.2, 3.0, 3.0, 2000.0] {
            h.observe(ms);
        }
        let mut out = String::new();
        h.render(&mut out, "rtt", "region=\"x\"");
        assert!(
            out.contains("rtt_bucket{region=\"x\",le=\"0.5\"} 1"),
            "{out}"
        );
        assert!(out.contains("rtt_bucket{region=\"x\",le=\"5\"} 3"), "{out}");
        assert!(
            out.contains("rtt_bucket{region=\"x\",le=\"+Inf\"} 4"),
            "{out}"
        );
        assert!(out.contains("rtt_count{region=\"x\"} 4"), "{out}");
    }
}
