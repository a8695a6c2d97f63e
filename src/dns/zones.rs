//! Zone files (RFC 1035 master format) → hickory's catalog, plus the records
//! the geo answers are built from.

mod entries;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
};

use hickory_proto::{
    rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey},
    serialize::txt::{ParseError, Parser},
};
use hickory_server::{
    net::runtime::TokioRuntimeProvider,
    store::in_memory::InMemoryZoneHandler,
    zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType},
};

/// Most zone files we accept in one directory; bounds start-up work on a misconfigured path.
const MAX_ZONE_FILES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("{dir}: cannot list zone directory: {source}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{dir}: no zone files (*.zone) found")]
    Empty { dir: PathBuf },
    #[error("{dir}: more than {MAX_ZONE_FILES} zone files")]
    TooMany { dir: PathBuf },
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    /// `line` is the first line of the record (or directive) that does not
    /// parse, `record` its text without comments.
    #[error("{file}:{line}: `{record}`: {source}")]
    Parse {
        file: PathBuf,
        line: usize,
        record: String,
        source: ParseError,
    },
    #[error("{file}: {reason}")]
    Invalid { file: PathBuf, reason: String },
}

/// One loaded zone.
#[derive(Debug, Clone)]
pub struct ZoneInfo {
    pub origin: Name,
    pub file: PathBuf,
    /// The SOA record, with its TTL already the negative-caching TTL (RFC 2308 §5).
    pub negative_soa: Record,
}

/// Every zone of `zones_dir`: the catalog that answers them and an index by owner name.
pub struct Zones {
    pub catalog: Catalog,
    pub zones: Vec<ZoneInfo>,
    /// SHA-256 of every zone's records in presentation form, sorted: equal
    /// for zone files that differ only in comments, layout or order.
    pub digest: [u8; 32],
    by_name: HashMap<LowerName, Vec<Record>>,
}

impl Zones {
    /// Loads every `*.zone` file in `dir`; the origin is the file name without `.zone`
    /// unless the file sets `$ORIGIN` first.
    pub fn load(dir: &Path) -> Result<Self, ZoneError> {
        let mut catalog = Catalog::new();
        let mut zones = Vec::new();
        let mut by_name: HashMap<LowerName, Vec<Record>> = HashMap::new();
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        for file in zone_files(dir)? {
            let (origin, records) = parse_file(&file)?;
            for line in presentation(&origin, &records) {
                digest.update(line.as_bytes());
                digest.update(b"\n");
            }
            let negative_soa = soa_of(&origin, &records).ok_or_else(|| ZoneError::Invalid {
                file: file.clone(),
                reason: format!("no SOA record at the origin {origin}"),
            })?;
            if zones.iter().any(|z: &ZoneInfo| z.origin == origin) {
                return Err(ZoneError::Invalid {
                    file,
                    reason: format!("zone {origin} is already loaded from another file"),
                });
            }
            for rrset in records.values() {
                by_name
                    .entry(LowerName::new(rrset.name()))
                    .or_default()
                    .extend(rrset.records_without_rrsigs().cloned());
            }
            let handler = InMemoryZoneHandler::<TokioRuntimeProvider>::new(
                origin.clone(),
                records,
                ZoneType::Primary,
                AxfrPolicy::Deny,
            )
            .map_err(|reason| ZoneError::Invalid {
                file: file.clone(),
                reason,
            })?;
            let handler: Arc<dyn ZoneHandler> = Arc::new(handler);
            catalog.upsert(LowerName::new(&origin), vec![handler]);
            zones.push(ZoneInfo {
                origin,
                file,
                negative_soa,
            });
        }
        let mut sum = [0; 32];
        sum.copy_from_slice(digest.finish().as_ref());
        Ok(Self {
            catalog,
            zones,
            digest: sum,
            by_name,
        })
    }

    /// All records owned by `name` in any zone.
    pub fn records_at(&self, name: &Name) -> &[Record] {
        self.by_name
            .get(&LowerName::new(name))
            .map_or(&[], Vec::as_slice)
    }

    /// The most specific zone containing `name`.
    pub fn zone_of(&self, name: &Name) -> Option<&ZoneInfo> {
        self.zones
            .iter()
            .filter(|z| z.origin.zone_of(name))
            .max_by_key(|z| z.origin.num_labels())
    }
}

fn zone_files(dir: &Path) -> Result<Vec<PathBuf>, ZoneError> {
    let dir_err = |source| ZoneError::Dir {
        dir: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(dir_err)? {
        let path = entry.map_err(dir_err)?.path();
        if path.extension().is_some_and(|e| e == "zone") && path.is_file() {
            files.push(path);
            if files.len() > MAX_ZONE_FILES {
                return Err(ZoneError::TooMany {
                    dir: dir.to_owned(),
                });
            }
        }
    }
    if files.is_empty() {
        return Err(ZoneError::Empty {
            dir: dir.to_owned(),
        });
    }
    files.sort();
    Ok(files)
}

type ZoneRecords = BTreeMap<RrKey, RecordSet>;

fn parse_file(file: &Path) -> Result<(Name, ZoneRecords), ZoneError> {
    let text = std::fs::read_to_string(file).map_err(|source| ZoneError::Read {
        file: file.to_owned(),
        source,
    })?;
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let origin = Name::from_ascii(stem)
        .map(|mut n| {
            n.set_fqdn(true);
            n
        })
        .map_err(|e| ZoneError::Invalid {
            file: file.to_owned(),
            reason: format!("file name `{stem}` is not a zone name: {e}"),
        })?;
    parse_text(&text, file, &origin)
}

/// Parses zone text; an error names the record where the parser stopped.
fn parse_text(text: &str, file: &Path, origin: &Name) -> Result<(Name, ZoneRecords), ZoneError> {
    let parse = |t: &str| Parser::new(t, Some(file.to_owned()), Some(origin.clone())).parse();
    parse(text).map_err(|source| {
        let all = entries::entries(text);
        // hickory's errors carry no position: find the entry it stopped at.
        let bad = entries::first_bad(text, &all, |t| parse(t).is_err());
        // The whole text is the last prefix tried, so an entry is found unless
        // the scan and the parser disagree; then only the file is certain.
        let (line, record) = bad.map_or((1, String::new()), |e| {
            (e.line, entries::shown(&text[e.span.clone()]))
        });
        ZoneError::Parse {
            file: file.to_owned(),
            line,
            record,
            source,
        }
    })
}

/// A zone in a canonical text: its origin, then each record in
/// presentation form, sorted.
fn presentation(origin: &Name, records: &ZoneRecords) -> Vec<String> {
    let mut lines: Vec<String> = records
        .values()
        .flat_map(|set| set.records_without_rrsigs().map(ToString::to_string))
        .collect();
    lines.sort_unstable();
    lines.insert(0, format!("$ORIGIN {origin}"));
    lines
}

fn soa_of(origin: &Name, records: &ZoneRecords) -> Option<Record> {
    let set = records.get(&RrKey::new(LowerName::new(origin), RecordType::SOA))?;
    let mut soa = set.records_without_rrsigs().next()?.clone();
    if let RData::SOA(data) = &soa.data {
        soa.ttl = soa.ttl.min(data.minimum);
        Some(soa)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: &str =
        "$TTL 300\n@ IN SOA ns1 hostmaster 1 7200 900 1209600 60\n@ NS ns1\nns1 A 192.0.2.1\n";

    fn origin() -> Name {
        Name::from_ascii("example.").unwrap()
    }

    #[test]
    fn parses_a_good_zone() {
        let (o, recs) = parse_text(ZONE, Path::new("x.zone"), &origin()).unwrap();
        assert_eq!(o, origin());
        assert_eq!(recs.len(), 3);
        let soa = soa_of(&o, &recs).unwrap();
        assert_eq!(soa.ttl, 60, "negative TTL is min(SOA TTL, minimum)");
    }

    #[test]
    fn the_canonical_text_ignores_layout_and_keeps_every_value() {
        let text = |zone: &str| {
            let (o, recs) = parse_text(zone, Path::new("x.zone"), &origin()).unwrap();
            presentation(&o, &recs)
        };
        let relaid = "; the same zone\n$TTL 300\nns1 A 192.0.2.1\n@ NS ns1 ; name server\n@ IN SOA ns1 hostmaster 1 7200 900 1209600 60\n";
        assert_eq!(text(relaid), text(ZONE));
        assert_ne!(text(&ZONE.replace("$TTL 300", "$TTL 600")), text(ZONE));
        assert_ne!(text(&ZONE.replace("192.0.2.1", "192.0.2.2")), text(ZONE));
    }

    /// The line and record text of the error `zone` fails with.
    fn error_at(zone: &str) -> (usize, String) {
        match parse_text(zone, Path::new("x.zone"), &origin()) {
            Err(ZoneError::Parse { line, record, .. }) => (line, record),
            other => panic!("{:?}", other.map(|(_, recs)| recs.len())),
        }
    }

    /// Lines 1–9, the SOA on lines 4–9 as in the shipped zone.
    const MULTI_LINE_SOA: &str = "; example\n$ORIGIN example.\n$TTL 300\n\
        @ IN SOA ns1 hostmaster (\n\
        \x20   2026112501 ; serial\n\
        \x20   7200       ; refresh (two hours)\n\
        \x20   900        ; retry\n\
        \x20   1209600    ; expire\n\
        \x20   60 )       ; minimum \"(negative caching)\"\n";

    /// Good records on lines 10–14, with `bad` on line `at`.
    fn after_the_soa(at: usize, bad: &str) -> String {
        let mut lines = [
            "@ IN NS ns1",
            "ns1 IN A 192.0.2.1",
            "; between records",
            "www IN A 192.0.2.80",
            "mail IN MX 10 ns1",
        ];
        lines[at - 10] = bad;
        format!("{MULTI_LINE_SOA}{}\n", lines.join("\n"))
    }

    #[test]
    fn the_zone_after_a_multi_line_soa_parses() {
        let (_, recs) = parse_text(&after_the_soa(12, ""), Path::new("x.zone"), &origin()).unwrap();
        assert_eq!(recs.len(), 5, "SOA, NS, two A and MX");
    }

    #[test]
    fn errors_after_a_multi_line_soa_name_their_own_line() {
        // The parser stops at the first error, so each zone holds one.
        for (at, bad) in [
            (10, "@ IN NS"),
            (11, "ns1 IN A 300.1.2.3"),
            (13, "www IN AAAA 192.0.2.80"),
            (14, "mail IN MX ten ns1"),
        ] {
            assert_eq!(error_at(&after_the_soa(at, bad)), (at, bad.to_owned()));
        }
    }

    #[test]
    fn errors_in_crlf_text_name_the_same_lines() {
        let zone = after_the_soa(11, "ns1 IN A 300.1.2.3").replace('\n', "\r\n");
        assert_eq!(error_at(&zone), (11, "ns1 IN A 300.1.2.3".to_owned()));
    }

    #[test]
    fn an_error_inside_a_multi_line_record_names_its_first_line() {
        // hickory names no token, so the line is the record's first and the
        // message quotes the whole record.
        let zone = after_the_soa(12, "").replace("7200       ;", "2h2x       ;");
        assert_eq!(
            error_at(&zone),
            (
                4,
                "@ IN SOA ns1 hostmaster ( 2026112501 2h2x 900 1209600 60 )".to_owned()
            )
        );
        let unclosed = after_the_soa(12, "").replace("60 )", "60");
        assert_eq!(
            error_at(&unclosed).0,
            4,
            "the record whose `(` is never closed"
        );
    }

    #[test]
    fn errors_after_directives_and_in_them_name_their_line() {
        let zone = after_the_soa(12, "$ORIGIN sub.example.\n$TTL 60\nx IN A 192.0.2.999");
        assert_eq!(error_at(&zone), (14, "x IN A 192.0.2.999".to_owned()));
        assert_eq!(error_at(&after_the_soa(12, "$TTL soon")).0, 12);
        assert_eq!(error_at(&after_the_soa(12, "$ORIGIN a..b.")).0, 12);
        let include = after_the_soa(12, "$INCLUDE no-such-file.zone");
        assert_eq!(
            error_at(&include),
            (12, "$INCLUDE no-such-file.zone".to_owned())
        );
    }

    #[test]
    fn quotes_and_parentheses_in_strings_and_comments_join_no_lines() {
        let zone = after_the_soa(
            11,
            "t IN TXT \"(\" \"a;b\" ; a remark (unclosed\nu IN TXT \"two\nlines\"\nns1 IN A 300.1.2.3",
        );
        assert_eq!(error_at(&zone), (14, "ns1 IN A 300.1.2.3".to_owned()));
    }

    #[test]
    fn errors_name_the_line_of_the_bad_record() {
        let bad = format!("{ZONE}www A 192.0.2.1\nmail A not-an-address\nx A 192.0.2.9\n");
        assert_eq!(error_at(&bad), (6, "mail A not-an-address".to_owned()));
    }
}
