//! A scrape read by a parser that is not ours: the Prometheus project's own
//! Python client (`prometheus_client.parser`), which raises on a line it
//! cannot read. Debian's `python3-prometheus-client` (a 200 KiB pure-Python
//! package) rather than `promtool`, whose Debian package is the whole
//! Prometheus server. Then the checks a scraper relies on, on what it read.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    process::{Command, Stdio},
};

use serde::Deserialize;

/// Debian's interpreter: the package installs the module for it only (a
/// `python3` found first on the PATH, e.g. pyenv's, does not see it).
const PYTHON: &str = "/usr/bin/python3";

const INSTALL: &str = "the metrics tests need Debian's python3-prometheus-client \
     (apt-get install python3-prometheus-client; scripts/test installs it)";

/// Reads the exposition on standard input, writes the families as JSON.
/// Exit 3: the module is missing. Values go as `repr` strings, since JSON
/// has no NaN or infinities.
const PARSE: &str = r#"
import json, sys
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError as e:
    print(e, file=sys.stderr)
    sys.exit(3)
families = [
    {"name": f.name, "type": f.type, "samples": [
        {"name": s.name, "labels": s.labels, "value": repr(s.value)}
        for s in f.samples]}
    for f in text_string_to_metric_families(sys.stdin.read())]
json.dump(families, sys.stdout)
"#;

/// One family as the parser reads it: a counter's name without `_total`
/// (its samples keep it), a histogram's with its `_bucket`, `_sum` and
/// `_count` samples.
#[derive(Debug, Deserialize)]
pub struct Family {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Deserialize)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    value: String,
}

impl Sample {
    pub fn value(&self) -> f64 {
        self.value.parse().expect("a float's repr")
    }
}

/// `text` parsed by `prometheus_client`; panics with the parser's error, or
/// with what to install when it is missing.
pub fn parse(text: &str) -> Vec<Family> {
    let mut child = Command::new(PYTHON)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{PYTHON}: {e}: {INSTALL}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        panic!("{}: {INSTALL}", stderr.trim());
    }
    assert!(
        out.status.success(),
        "prometheus_client refused the exposition: {stderr}\n{text}"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Parses `text` and checks what a scraper relies on: each family once and
/// typed (a sample outside its family reads as an untyped one), names and
/// label names well formed, no series twice, counters named `…_total`, and
/// each histogram's buckets cumulative up to `+Inf`, which `_count` equals.
pub fn parse_and_check(text: &str) -> Vec<Family> {
    let families = parse(text);
    let mut names = BTreeSet::new();
    let mut series = BTreeSet::new();
    for f in &families {
        assert!(names.insert(&f.name), "{} twice:\n{text}", f.name);
        assert!(
            ["counter", "gauge", "histogram"].contains(&f.kind.as_str()),
            "{} has no type ({}):\n{text}",
            f.name,
            f.kind
        );
        for s in &f.samples {
            assert!(name_ok(&s.name, true), "metric name {}", s.name);
            assert!(s.labels.keys().all(|l| name_ok(l, false)), "{s:?}");
            assert!(series.insert((&s.name, &s.labels)), "{s:?} twice");
        }
        if f.kind == "histogram" {
            check_histogram(f);
        }
    }
    for line in text.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|t| t.strip_suffix(" counter"))
        {
            assert!(name.ends_with("_total"), "counter {name} without _total");
        }
    }
    families
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*` for metrics, without `:` for labels.
fn name_ok(name: &str, metric: bool) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || (metric && c == ':');
    name.chars().all(ok) && name.chars().next().is_some_and(|c| !c.is_ascii_digit())
}

/// Per label set: `le` ascending and ending at `+Inf`, counts never
/// falling, `_count` equal to the `+Inf` bucket, a `_sum`.
fn check_histogram(f: &Family) {
    let mut buckets: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts = BTreeMap::new();
    let mut sums = BTreeSet::new();
    for s in &f.samples {
        let mut labels = s.labels.clone();
        match s.name.strip_prefix(&f.name) {
            Some("_bucket") => {
                let le = labels.remove("le").expect("a bucket's le");
                let le: f64 = le.parse().expect("le a float");
                buckets.entry(labels).or_default().push((le, s.value()));
            }
            Some("_count") => {
                counts.insert(labels, s.value());
            }
            Some("_sum") => {
                sums.insert(labels);
            }
            _ => panic!("{} in histogram {}", s.name, f.name),
        }
    }
    for (labels, b) in &buckets {
        let what = format!("{}{labels:?}", f.name);
        assert!(b.windows(2).all(|w| w[0].0 < w[1].0), "{what}: le order");
        assert!(b.windows(2).all(|w| w[0].1 <= w[1].1), "{what}: cumulative");
        let last = b.last().unwrap();
        assert_eq!(last.0, f64::INFINITY, "{what}: ends at +Inf");
        assert_eq!(counts.get(labels), Some(&last.1), "{what}: _count");
        assert!(sums.contains(labels), "{what}: _sum");
    }
}

/// The family named `name` (a counter's without `_total`), if any.
pub fn family<'a>(families: &'a [Family], name: &str) -> Option<&'a Family> {
    families.iter().find(|f| f.name == name)
}
