//! Fixtures for unit tests: a directory holding the shipped zone, a GeoIP
//! database generated from rows, a centroid table and a config naming them.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{config::Config, dns::Data};

/// (network, country, coordinates) rows of a generated GeoIP database.
pub type Row = (&'static str, &'static str, Option<(f64, f64)>);

/// Networks on six continents, a country without coordinates (AR, located by
/// its centroid) and IPv6.
pub const ROWS: &[Row] = &[
    ("81.240.0.0/14", "BE", Some((50.85, 4.35))),
    ("3.0.0.0/9", "US", Some((39.0, -77.5))),
    ("1.0.16.0/20", "JP", Some((35.69, 139.69))),
    ("177.0.0.0/8", "BR", Some((-23.5, -46.6))),
    ("181.0.0.0/12", "AR", None),
    ("49.224.0.0/14", "NZ", Some((-36.85, 174.76))),
    ("2a02:1800::/24", "BE", Some((50.85, 4.35))),
    ("2804::/16", "BR", Some((-23.5, -46.6))),
];

/// Where the four shipped regions are.
const REGIONS: [(&str, f64, f64); 4] = [
    ("europe1", 50.11, 8.68),
    ("us1", 39.04, -77.49),
    ("asia1", 1.35, 103.82),
    ("sa1", -23.55, -46.63),
];

#[derive(Serialize)]
struct Record {
    country: Country,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<Coords>,
}

#[derive(Serialize)]
struct Country {
    iso_code: String,
}

#[derive(Serialize)]
struct Coords {
    latitude: f64,
    longitude: f64,
}

/// A temporary directory with everything a config needs.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new(rows: &[Row]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        std::fs::create_dir(dir.path().join("zones")).unwrap();
        std::fs::copy(
            root.join("zones/mkcld.io.zone"),
            dir.path().join("zones/mkcld.io.zone"),
        )
        .unwrap();
        std::fs::write(dir.path().join("centroids.csv"), "AR,-34,-64\n").unwrap();
        let mut w = mmdb_writer::Writer::new("Test-City");
        for (net, cc, coords) in rows {
            let record = Record {
                country: Country {
                    iso_code: (*cc).into(),
                },
                location: coords.map(|(latitude, longitude)| Coords {
                    latitude,
                    longitude,
                }),
            };
            w.insert(net.parse::<ipnet::IpNet>().unwrap(), &record)
                .unwrap();
        }
        std::fs::write(dir.path().join("test.mmdb"), w.to_bytes().unwrap()).unwrap();
        Self { dir }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Writes `mgnt.toml` with one geo name over `regions` (in that order),
    /// probes on the `probed` ones, and `extra` appended (overrides, say).
    pub fn config(&self, regions: &[&str], probed: &[&str], extra: &str) -> PathBuf {
        let mut text = format!(
            "[dns]\nlisten = [\"127.0.0.1:0\"]\nzones_dir = \"zones\"\n\
             [geoip]\ndatabase = \"test.mmdb\"\ncentroids = \"centroids.csv\"\n\
             [api]\naudit_log = \"state/audit.log\"\n\
             [health]\nstate_file = \"state/health.json\"\nfall = 2\nrise = 2\n\
             [[geo]]\nname = \"mgnt.mkcld.io\"\nregions = {regions:?}\n"
        );
        for (name, lat, lon) in REGIONS.iter().filter(|(n, ..)| regions.contains(n)) {
            text.push_str(&format!(
                "[regions.{name}]\nhost = \"{name}.mkcld.io\"\nlocation = [{lat}, {lon}]\n"
            ));
            if probed.contains(name) {
                text.push_str(&format!(
                    "[regions.{name}.probe]\ntcp = [\"127.0.0.1:9\"]\n"
                ));
            }
        }
        text.push_str(extra);
        let path = self.path("mgnt.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// [`Self::config`], loaded.
    pub fn load(&self, regions: &[&str], probed: &[&str], extra: &str) -> Data {
        let config = Config::load(&self.config(regions, probed, extra)).unwrap();
        Data::load(config).unwrap()
    }
}

/// The names of `regions` (indices of `data`), for readable assertions.
pub fn names(data: &Data, regions: impl IntoIterator<Item = usize>) -> Vec<String> {
    regions
        .into_iter()
        .map(|r| data.config.regions[r].name.clone())
        .collect()
}
