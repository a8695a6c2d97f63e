//! Counters the query path bumps without locks, rendered as Prometheus text.

use std::{
    borrow::Cow,
    fmt::{Display, Write as _},
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

/// A label value as the [text format] writes it: "label_value can be any
/// sequence of UTF-8 characters, but the backslash (`\`), double-quote (`"`),
/// and line feed (`\n`) characters have to be escaped as `\\`, `\"`, and
/// `\n`, respectively."
///
/// [text format]: https://prometheus.io/docs/instrumenting/exposition_formats/#text-format-details
pub fn escape(value: &str) -> Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// One family of counters by one label: its name, help text, label name,
/// and each label value with its counter.
pub type Family<'a> = (&'a str, &'a str, &'a str, Vec<(&'a str, &'a AtomicU64)>);

/// Writes each family of counters whole (HELP, TYPE, then its samples).
pub fn families_out<'a>(out: &mut String, families: impl IntoIterator<Item = Family<'a>>) {
    for (name, text, label, values) in families {
        help(out, name, "counter", text);
        for (value, counter) in values {
            let _ = writeln!(
                out,
                "{name}{{{label}=\"{}\"}} {}",
                escape(value),
                counter.load(Relaxed)
            );
        }
    }
}

/// Writes a metric without labels, with its HELP and TYPE.
pub fn single(out: &mut String, name: &str, kind: &str, text: &str, value: impl Display) {
    help(out, name, kind, text);
    let _ = writeln!(out, "{name} {value}");
}

/// Checks `text` against the text format's rules, as a scraper reads them:
/// one HELP and one TYPE per family, before its samples; a family's samples
/// together (never interleaved with another's); names, labels (escaped
/// values) and values well formed; no series twice.
#[cfg(test)]
pub fn check_exposition(text: &str) -> Result<(), String> {
    use std::collections::{HashMap, HashSet};
    let name_ok = |n: &str| {
        n.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        }) && !n.is_empty()
    };
    let mut kinds: HashMap<String, String> = HashMap::new();
    let mut helped = HashSet::new();
    let mut series = HashSet::new();
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |why: &str| Err(format!("line {}: {why}: {line}", i + 1));
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            if !name_ok(name) || !helped.insert(name.to_owned()) || kinds.contains_key(name) {
                return bad("a second HELP, or one after the family began");
            }
            current = name.to_owned();
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let known = ["counter", "gauge", "histogram", "summary", "untyped"];
            if name != current || !known.contains(&kind) || kinds.contains_key(name) {
                return bad("a TYPE out of place");
            }
            kinds.insert(name.to_owned(), kind.to_owned());
        } else if line.starts_with('#') || line.is_empty() {
            continue;
        } else {
            let (head, value) = line.rsplit_once(' ').unwrap_or((line, ""));
            let (name, labels) = head.split_once('{').unwrap_or((head, ""));
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| kinds.get(*f).is_some_and(|k| k == "histogram"))
                .unwrap_or(name);
            if family != current || !kinds.contains_key(family) || !name_ok(name) {
                return bad("a sample outside its family");
            }
            if !labels.is_empty() && !labels_ok(labels.strip_suffix('}').unwrap_or("\"")) {
                return bad("malformed labels");
            }
            let number = matches!(value, "+Inf" | "-Inf" | "NaN") || value.parse::<f64>().is_ok();
            if !number || !series.insert(head.to_owned()) {
                return bad("a bad value, or a series twice");
            }
        }
    }
    Ok(())
}

/// `a="x",b="y\"z"`: label names well formed, values quoted and escaped.
#[cfg(test)]
fn labels_ok(mut text: &str) -> bool {
    while !text.is_empty() {
        let Some((name, rest)) = text.split_once("=\"") else {
            return false;
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return false;
        }
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\' | '"' | 'n')) => {}
                    _ => return false,
                },
                Some((i, '"')) => break i,
                Some((_, '\n')) | None => return false,
                Some(_) => {}
            }
        };
        text = &rest[end + 1..];
        text = match text.strip_prefix(',') {
            Some(more) if !more.is_empty() => more,
            Some(_) => "",
            None if text.is_empty() => "",
            None => return false,
        };
    }
    true
}

/// A fixed-bucket histogram of durations, safe to observe from any thread.
/// It takes and renders seconds, the text format's base unit.
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    /// Sum in microseconds, so it stays an integer in an atomic.
    sum_us: AtomicU64,
}

/// Upper bounds in seconds, 0.5 ms to 1 s.
pub const BUCKETS: [f64; 11] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
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
    pub fn observe(&self, seconds: f64) {
        let i = BUCKETS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Relaxed);
        // Rounded: 0.0002 s is 199.99… µs in binary floating point.
        self.sum_us
            .fetch_add((seconds * 1e6).round() as u64, Relaxed);
    }

    /// Renders cumulative buckets with `labels` (e.g. `region="eu",kind="tcp"`).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Relaxed);
            let le = BUCKETS.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
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
    fn label_values_are_escaped_and_the_checker_tells_a_broken_exposition() {
        assert_eq!(escape("vpn-1"), "vpn-1");
        assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        let hits = [AtomicU64::new(3), AtomicU64::new(4)];
        let mut out = String::new();
        families_out(
            &mut out,
            [(
                "x_total",
                "X.",
                "host",
                vec![("plain", &hits[0]), ("we\"ird\n\\", &hits[1])],
            )],
        );
        single(&mut out, "y", "gauge", "Y.", 1);
        check_exposition(&out).unwrap();
        assert!(
            out.contains("x_total{host=\"we\\\"ird\\n\\\\\"} 4"),
            "{out}"
        );
        let interleaved = "# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\nb 1\na 1\n";
        assert!(check_exposition(interleaved).is_err());
        let twice = "# HELP a A.\n# TYPE a gauge\na 1\n# HELP a A.\n# TYPE a gauge\n";
        assert!(check_exposition(twice).is_err());
        let raw_quote = "# HELP a A.\n# TYPE a counter\na{h=\"x\"y\"} 1\n";
        assert!(check_exposition(raw_quote).is_err());
        let no_help = "a 1\n";
        assert!(check_exposition(no_help).is_err());
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_in_seconds() {
        let h = Histogram::default();
        for seconds in [0.0002, 0.003, 0.003, 2.0] {
            h.observe(seconds);
        }
        let mut out = String::new();
        h.render(&mut out, "rtt", "region=\"x\"");
        for line in [
            "rtt_bucket{region=\"x\",le=\"0.0005\"} 1",
            "rtt_bucket{region=\"x\",le=\"0.005\"} 3",
            "rtt_bucket{region=\"x\",le=\"1\"} 3",
            "rtt_bucket{region=\"x\",le=\"+Inf\"} 4",
            "rtt_sum{region=\"x\"} 2.0062",
            "rtt_count{region=\"x\"} 4",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} in\n{out}");
        }
    }
}
