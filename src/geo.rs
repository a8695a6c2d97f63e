//! Where a client is: a MaxMind-format database plus a country-centroid table.
//!
//! Reads GeoIP2/GeoLite2 City and Country, DB-IP lite, and country-only
//! databases with a top-level `country_code`. A database's own coordinates win;
//! otherwise the country's centroid is used; otherwise the client is unlocated.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use maxminddb::{Mmap, Reader, WithinOptions};
use serde::{Deserialize, Serialize};

use crate::route::Coord;

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("{file}: cannot open GeoIP database: {source}")]
    Open {
        file: PathBuf,
        source: maxminddb::MaxMindDbError,
    },
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: cannot read: {source}")]
    ReadCentroids {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: line {line}: {reason}")]
    Centroid {
        file: PathBuf,
        line: usize,
        reason: String,
    },
}

impl GeoError {
    /// The `[geoip]` key that names the file this is about.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Open { .. } | Self::Read { .. } => "geoip.database",
            Self::ReadCentroids { .. } | Self::Centroid { .. } => "geoip.centroids",
        }
    }
}

/// Where the coordinates of a [`Location`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CoordSource {
    Database,
    CountryCentroid,
    None,
}

/// A located client.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Location {
    /// ISO 3166-1 alpha-2, upper case.
    pub country: Option<String>,
    pub coords: Option<Coord>,
    pub source: CoordSource,
    /// The database network that held the answer (or proved there was none):
    /// every address in it gets the same location.
    pub network: IpNet,
}

/// A located client, without allocation (the per-query form of [`Location`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Located {
    pub country: Option<[u8; 2]>,
    pub coords: Option<Coord>,
    pub source: CoordSource,
    pub network: IpNet,
}

impl From<Located> for Location {
    fn from(l: Located) -> Self {
        Self {
            country: l.country.map(|c| String::from_utf8_lossy(&c).into_owned()),
            coords: l.coords,
            source: l.source,
            network: l.network,
        }
    }
}

/// The fields we read from any supported schema; everything else is skipped.
#[derive(Deserialize)]
struct GeoRecord<'a> {
    #[serde(borrow)]
    country: Option<Country<'a>>,
    #[serde(borrow)]
    registered_country: Option<Country<'a>>,
    location: Option<RecordLocation>,
    country_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Country<'a> {
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct RecordLocation {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

/// A GeoIP database and the centroid table, ready for lookups.
pub struct GeoDb {
    reader: Reader<Mmap>,
    /// The file `reader` maps: [`Self::records`] maps it again, so it reads
    /// the same bytes even if the path has been renamed over since.
    file: std::fs::File,
    centroids: HashMap<[u8; 2], Coord>,
    path: PathBuf,
}

impl GeoDb {
    /// Opens `database` and reads `centroids`. The database is copied into
    /// a file only this process holds, and that copy is memory-mapped: a
    /// database rewritten in place (`cp new.mmdb db.mmdb`) cannot change the
    /// pages under a lookup (a mapped file that shrinks kills its reader with
    /// SIGBUS); a reload reads the new one.
    pub fn open(database: &Path, centroids: &Path) -> Result<Self, GeoError> {
        let read = |source| GeoError::Read {
            file: database.to_owned(),
            source,
        };
        let file = std::fs::File::open(database)
            .and_then(private_copy)
            .map_err(read)?;
        let reader = map(&file)
            .and_then(Reader::from_source)
            .map_err(|source| GeoError::Open {
                file: database.to_owned(),
                source,
            })?;
        // A truncated or corrupt file can pass the metadata check; one lookup
        // through the tree catches most of those at load instead of per query.
        reader
            .lookup(IpAddr::from([8, 8, 8, 8]))
            .and_then(|r| r.decode::<GeoRecord>().map(|_| ()))
            .map_err(|source| GeoError::Open {
                file: database.to_owned(),
                source,
            })?;
        Ok(Self {
            reader,
            file,
            centroids: load_centroids(centroids)?,
            path: database.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database's `build_epoch` (seconds since 1970).
    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }

    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// SHA-256 of the database's bytes (the file it serves from, mapped
    /// again) and of the centroid table: which data this node locates by.
    pub fn digest(&self) -> Result<[u8; 32], GeoError> {
        let bytes = map(&self.file).map_err(|source| GeoError::Open {
            file: self.path.clone(),
            source,
        })?;
        let mut cx = ring::digest::Context::new(&ring::digest::SHA256);
        cx.update(&bytes);
        let mut centroids: Vec<_> = self.centroids.iter().collect();
        centroids.sort_unstable_by_key(|(code, _)| **code);
        cx.update(format!("\n{centroids:?}").as_bytes());
        let mut sum = [0; 32];
        sum.copy_from_slice(cx.finish().as_ref());
        Ok(sum)
    }

    /// Locates `ip` (decoding its record). Never fails: a broken record only
    /// leaves the client unlocated.
    pub fn locate(&self, ip: IpAddr) -> Location {
        self.locate_raw(ip).into()
    }

    /// [`Self::locate`] without allocating.
    pub fn locate_raw(&self, ip: IpAddr) -> Located {
        let ip = canonical(ip);
        let Ok(found) = self.reader.lookup(ip) else {
            return unlocated(host_net(ip));
        };
        let network = network_of(ip, &found);
        self.located(&found, network)
    }

    /// The record `ip` falls in, without decoding it, and the database network
    /// every address of which shares that record (or its absence).
    pub fn lookup(&self, ip: IpAddr) -> Found {
        let ip = canonical(ip);
        match self.reader.lookup(ip) {
            Ok(found) => Found {
                record: found.offset(),
                network: network_of(ip, &found),
            },
            Err(_) => Found {
                record: None,
                network: host_net(ip),
            },
        }
    }

    /// Every record of the networks in `within` (or all of them), decoded
    /// once each: what a client anywhere in `within` can be located by. A
    /// record that fails to decode is unlocated, as [`Self::locate`] leaves
    /// such clients. The walk reads every page of the database through a
    /// mapping of its own, unmapped at the end, so the pages it touched do
    /// not stay in the server's resident memory.
    pub fn records(&self, within: Option<IpNet>) -> Vec<(RecordId, Located)> {
        let Ok(reader) = map(&self.file).and_then(Reader::from_source) else {
            return Vec::new();
        };
        let all: Vec<IpNet> = match within {
            Some(net) => vec![net],
            None if reader.metadata().ip_version == 6 => vec![IpNet::V6(Default::default())],
            None => vec![IpNet::V4(Default::default())],
        };
        let mut seen = HashMap::new();
        for net in all {
            let Ok(cidr) = ipnetwork::IpNetwork::new(net.addr(), net.prefix_len()) else {
                continue;
            };
            // Aliases (IPv4 through ::ffff:0:0/96, 6to4, Teredo) are visited
            // when a prefix is asked for, so an IPv6 override covering one
            // still sees the IPv4 records behind it.
            let options = match within {
                Some(_) => WithinOptions::default().include_aliased_networks(),
                None => WithinOptions::default(),
            };
            let Ok(networks) = reader.within(cidr, options) else {
                continue;
            };
            for found in networks.flatten() {
                let Some(record) = found.offset() else {
                    continue;
                };
                if seen.contains_key(&record) {
                    continue;
                }
                let network = found
                    .network()
                    .ok()
                    .and_then(|n| IpNet::new(n.network(), n.prefix()).ok())
                    .unwrap_or(net);
                seen.insert(record, self.located(&found, network));
            }
        }
        let mut out: Vec<_> = seen.into_iter().collect();
        out.sort_unstable_by_key(|(r, _)| *r);
        out
    }

    fn located<S: AsRef<[u8]>>(
        &self,
        found: &maxminddb::LookupResult<'_, S>,
        network: IpNet,
    ) -> Located {
        let record = found.decode::<GeoRecord>().ok().flatten();
        let country = record.as_ref().and_then(country_of);
        let db_coords = record
            .as_ref()
            .and_then(|r| r.location.as_ref())
            .and_then(|l| valid_coord(l.latitude?, l.longitude?));
        let centroid = country.and_then(|c| self.centroids.get(&c));
        let (coords, source) = match (db_coords, centroid) {
            (Some(c), _) => (Some(c), CoordSource::Database),
            (None, Some(&c)) => (Some(c), CoordSource::CountryCentroid),
            (None, None) => (None, CoordSource::None),
        };
        Located {
            country,
            coords,
            source,
            network,
        }
    }
}

/// Identifies a database record (its offset in the data section); many
/// networks share one.
pub type RecordId = usize;

/// What a lookup found for an address, before any decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// `None`: the database has no record for the address.
    pub record: Option<RecordId>,
    /// Every address in it gets the same answer.
    pub network: IpNet,
}

/// The database network of a lookup, in the family of `ip`. A database with
/// no IPv4 subtree answers every IPv4 address from one IPv6 record: the whole
/// IPv4 space then shares it.
fn network_of(ip: IpAddr, found: &maxminddb::LookupResult<'_, Mmap>) -> IpNet {
    match found
        .network()
        .ok()
        .and_then(|n| IpNet::new(n.network(), n.prefix()).ok())
    {
        Some(IpNet::V6(_)) if ip.is_ipv4() => IpNet::V4(Default::default()),
        Some(n) => n,
        None => host_net(ip),
    }
}

/// Maps `file` read-only.
fn map(file: &std::fs::File) -> Result<Mmap, maxminddb::MaxMindDbError> {
    // SAFETY: `file` is a private copy ([`private_copy`]): unlinked, held by
    // this process only and never written after the copy, so its pages never
    // change or vanish under a mapping.
    unsafe { memmap2::MmapOptions::new().map(file) }.map_err(maxminddb::MaxMindDbError::Mmap)
}

/// A copy of `source` in an unlinked temporary file (mode 0600) that no
/// other process can open or change; its pages stay evictable page cache,
/// as a mapping of the original's would.
fn private_copy(mut source: std::fs::File) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).mode(0o600);
    let mut copy = match options.clone().custom_flags(libc::O_TMPFILE).open(&dir) {
        Ok(f) => f,
        // A file system without O_TMPFILE: a named file, unlinked at once.
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let name = dir.join(format!(".mgnt-geoip-{}-{nanos}", std::process::id()));
            let f = options.create_new(true).open(&name)?;
            std::fs::remove_file(&name)?;
            f
        }
    };
    std::io::copy(&mut source, &mut copy)?;
    Ok(copy)
}

/// IPv4-mapped IPv6 addresses are located as the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

fn unlocated(network: IpNet) -> Located {
    Located {
        country: None,
        coords: None,
        source: CoordSource::None,
        network,
    }
}

fn country_of(r: &GeoRecord) -> Option<[u8; 2]> {
    let code = r
        .country
        .as_ref()
        .and_then(|c| c.iso_code)
        .or(r.country_code)
        .or_else(|| r.registered_country.as_ref().and_then(|c| c.iso_code))?;
    iso2(code)
}

fn iso2(code: &str) -> Option<[u8; 2]> {
    match code.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        }
        _ => None,
    }
}

fn valid_coord(lat: f64, lon: f64) -> Option<Coord> {
    ((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon)).then_some(Coord { lat, lon })
}

/// Reads `code,latitude,longitude[,name]` lines; `#` starts a comment, a `code` header is skipped.
fn load_centroids(path: &Path) -> Result<HashMap<[u8; 2], Coord>, GeoError> {
    let text = std::fs::read_to_string(path).map_err(|source| GeoError::ReadCentroids {
        file: path.to_owned(),
        source,
    })?;
    parse_centroids(&text).map_err(|(line, reason)| GeoError::Centroid {
        file: path.to_owned(),
        line,
        reason,
    })
}

fn parse_centroids(text: &str) -> Result<HashMap<[u8; 2], Coord>, (usize, String)> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("code,") {
            continue;
        }
        let mut fields = line.splitn(4, ',');
        let (Some(code), Some(lat), Some(lon)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err((i + 1, "expected code,latitude,longitude".into()));
        };
        let code = iso2(code.trim()).ok_or((i + 1, format!("`{code}` is not a country code")))?;
        let num = |s: &str| s.trim().parse::<f64>().ok();
        let coord = num(lat)
            .zip(num(lon))
            .and_then(|(la, lo)| valid_coord(la, lo))
            .ok_or((
                i + 1,
                "latitude/longitude out of range or not numbers".to_owned(),
            ))?;
        if out.insert(code, coord).is_some() {
            return Err((i + 1, "country listed twice".into()));
        }
    }
    if out.is_empty() {
        return Err((1, "no centroids found".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centroids_parse_with_comments_and_header() {
        let t =
            "# c\ncode,latitude,longitude,name\nBE,50.83,4,Belgium\nde,51,9,\"Germany, Federal\"\n";
        let m = parse_centroids(t).unwrap();
        assert_eq!(
            m[b"BE"],
            Coord {
                lat: 50.83,
                lon: 4.0
            }
        );
        assert_eq!(m[b"DE"].lat, 51.0);
    }

    #[test]
    fn centroid_errors_name_the_line() {
        assert_eq!(parse_centroids("BE,50,4\nXX1,1,1\n").unwrap_err().0, 2);
        assert_eq!(parse_centroids("BE,95,4\n").unwrap_err().0, 1);
        assert_eq!(parse_centroids("BE,50\n").unwrap_err().0, 1);
        assert_eq!(parse_centroids("BE,1,1\nBE,2,2\n").unwrap_err().0, 2);
    }

    #[test]
    fn shipped_database_locates_real_addresses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("geoip");
        let db = GeoDb::open(
            &root.join("geo-whois-asn-country.mmdb"),
            &root.join("country-centroids.csv"),
        )
        .unwrap();
        let be = db.locate("81.240.0.1".parse().unwrap());
        assert_eq!(be.country.as_deref(), Some("BE"));
        assert_eq!(be.source, CoordSource::CountryCentroid);
        assert!(
            be.network
                .contains(&"81.240.0.1".parse::<IpAddr>().unwrap())
        );
        let mapped = db.locate("::ffff:81.240.0.1".parse().unwrap());
        assert_eq!(mapped.country.as_deref(), Some("BE"));
        let private = db.locate("10.1.2.3".parse().unwrap());
        assert_eq!(private.source, CoordSource::None);
    }
}
