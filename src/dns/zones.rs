//! Zone files (RFC 1035 master format) → hickory's catalog, plus the records
//! the geo answers are built from.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
};

use hickory_proto::{
    rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey},
    serialize::txt::Parser,
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
    #[error("{file}:{line}: {reason}")]
    Parse {
        file: PathBuf,
        line: usize,
        reason: String,
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
    parse_text(&text, file, &origin).map_err(|(line, reason)| ZoneError::Parse {
        file: file.to_owned(),
        line,
        reason,
    })
}

/// Parses zone text; an error carries the line where it was found.
fn parse_text(
    text: &str,
    file: &Path,
    origin: &Name,
) -> Result<(Name, ZoneRecords), (usize, String)> {
    let parse = |t: &str| Parser::new(t, Some(file.to_owned()), Some(origin.clone())).parse();
    match parse(text) {
        Ok(ok) => Ok(ok),
        Err(e) => Err((error_line(text, &parse), e.to_string())),
    }
}

/// hickory's zone parser reports no position, so find the shortest prefix of
/// whole lines that fails; its last line is where the bad record starts.
fn error_line<T, E>(text: &str, parse: &dyn Fn(&str) -> Result<T, E>) -> usize {
    let ends: Vec<usize> = text
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .chain(std::iter::once(text.len()))
        .collect();
    let (mut lo, mut hi) = (0, ends.len() - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if parse(&text[..ends[mid]]).is_err() {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo + 1
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

    #[test]
    fn errors_name_the_line_of_the_bad_record() {
        let bad = format!("{ZONE}www A 192.0.2.1\nmail A not-an-address\nx A 192.0.2.9\n");
        let (line, reason) = parse_text(&bad, Path::new("x.zone"), &origin()).unwrap_err();
        assert_eq!(line, 6, "{reason}");
    }
}
