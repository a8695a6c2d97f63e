//! Writes the benchmark's GeoIP database (GeoIP2-City schema) and the ECS
//! prefixes the load generators use, so every server is measured on the same
//! data: `mkgeodb OUT.mmdb PREFIXES.txt KNOT-MAP.conf [NETWORKS]`.
//!
//! Networks are /16s spread over IPv4 unicast space, each in one of a fixed
//! set of countries at that country's centroid. The Knot map sends each
//! country to the region (address) mgnt and gdnsd pick by distance (Knot has no
//! distance mode), so all three give the same answers.

use std::{collections::BTreeMap, fmt::Write as _};

use mgnt::route::{Coord, distance_km};
use serde::Serialize;

const COUNTRIES: [(&str, f64, f64); 16] = [
    ("BE", 50.83, 4.0),
    ("DE", 51.0, 9.0),
    ("FR", 46.0, 2.0),
    ("GB", 54.0, -2.0),
    ("PL", 52.0, 20.0),
    ("EG", 27.0, 30.0),
    ("US", 38.0, -97.0),
    ("CA", 60.0, -95.0),
    ("MX", 23.0, -102.0),
    ("BR", -10.0, -55.0),
    ("AR", -34.0, -64.0),
    ("JP", 36.0, 138.0),
    ("IN", 20.0, 77.0),
    ("AU", -27.0, 133.0),
    ("SG", 1.37, 103.8),
    ("ZA", -29.0, 24.0),
];

/// The regions of the benchmark config, as mgnt.toml and gdnsd see them.
pub const REGIONS: [(&str, f64, f64, &str); 4] = [
    ("europe1", 50.11, 8.68, "192.0.2.11"),
    ("us1", 39.04, -77.49, "192.0.2.21"),
    ("asia1", 1.35, 103.82, "192.0.2.31"),
    ("sa1", -23.55, -46.63, "192.0.2.41"),
];

#[derive(Serialize)]
struct Record {
    country: Iso,
    location: Location,
}

#[derive(Serialize)]
struct Iso {
    iso_code: String,
}

#[derive(Serialize)]
struct Location {
    latitude: f64,
    longitude: f64,
}

fn nearest(lat: f64, lon: f64) -> (&'static str, &'static str) {
    let c = Coord { lat, lon };
    REGIONS
        .iter()
        .min_by(|a, b| {
            let da = distance_km(c, Coord { lat: a.1, lon: a.2 });
            let db = distance_km(c, Coord { lat: b.1, lon: b.2 });
            da.total_cmp(&db)
        })
        .map(|r| (r.0, r.3))
        .unwrap_or(("europe1", "192.0.2.11"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, out, prefixes, knot_map, rest @ ..] = args.as_slice() else {
        eprintln!("usage: mkgeodb OUT.mmdb PREFIXES.txt KNOT-MAP.conf [NETWORKS]");
        std::process::exit(2);
    };
    let count: u32 = rest.first().and_then(|n| n.parse().ok()).unwrap_or(4000);
    let mut writer = mmdb_writer::Writer::new("Bench-City");
    let mut list = String::new();
    let mut seen = 0u32;
    // Walk /16s from 1.0/16 upward with a stride, skipping special ranges.
    let mut n: u32 = 0x0100;
    while seen < count && n < 0xE000 {
        let first = n >> 8;
        n += 13;
        if matches!(first, 10 | 100 | 127 | 169 | 172 | 192 | 198 | 203) {
            continue;
        }
        let (cc, lat, lon) = COUNTRIES[(seen as usize) % COUNTRIES.len()];
        let net = format!("{}.{}.0.0/16", first, (n - 13) & 0xff);
        let record = Record {
            country: Iso {
                iso_code: cc.into(),
            },
            location: Location {
                latitude: lat,
                longitude: lon,
            },
        };
        writer
            .insert(net.parse::<ipnet::IpNet>().expect("valid prefix"), &record)
            .expect("insert");
        let _ = writeln!(list, "{}.{}.7.0/24", first, (n - 13) & 0xff);
        seen += 1;
    }
    std::fs::write(out, writer.to_bytes().expect("database")).expect("write database");
    std::fs::write(prefixes, list).expect("write prefixes");
    // Knot mod-geoip: country -> the address distance routing gives.
    let mut map = String::from("mgnt.mkcld.io:\n");
    let mut by_region: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (cc, lat, lon) in COUNTRIES {
        let (region, address) = nearest(lat, lon);
        by_region.entry(region).or_default().push(cc);
        let _ = writeln!(map, "  - geo: \"{cc}\"\n    A: {address}");
    }
    std::fs::write(knot_map, map).expect("write knot map");
    eprintln!("{seen} networks; regions by country: {by_region:?}");
}
