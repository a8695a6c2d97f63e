//! Broken configs, zones and databases: a precise error and no server.

mod common;

use common::*;

/// Runs `check-config` and `serve` on the fixture; both must fail with `needle` in the error.
fn fails_with(fixture: &Fixture, needles: &[&str]) {
    for cmd in ["check-config", "serve"] {
        let out = mgnt()
            .args([cmd, "--config"])
            .arg(fixture.config())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{cmd} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        for n in needles {
            assert!(err.contains(n), "{cmd}: `{n}` missing from: {err}");
        }
    }
}

fn with_config(edit: impl Fn(String) -> String) -> Fixture {
    let f = Fixture::new();
    f.write_config(&edit(config_text("\"127.0.0.1:0\"")));
    f
}

#[test]
fn a_good_config_checks_out() {
    let f = Fixture::new();
    let out = mgnt()
        .args(["check-config", "--config"])
        .arg(f.config())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 zones, 2 geo names, 4 regions"));
}

#[test]
fn shipped_config_checks_out() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = mgnt()
        .args(["check-config", "--config"])
        .arg(root.join("mgnt.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    let f = with_config(|c| c.replace("[dns]\n", "[dns]\nlisten_on = 1\n"));
    fails_with(&f, &["mgnt.toml", "listen_on"]);
}

#[test]
fn a_region_without_coordinates_is_named() {
    let f = with_config(|c| c.replace("location = [1.35, 103.82]\n", ""));
    fails_with(
        &f,
        &["mgnt.toml", "regions.asia1.location", "missing coordinates"],
    );
}

#[test]
fn bad_coordinates_are_named() {
    let f = with_config(|c| c.replace("[50.11, 8.68]", "[95.0, 8.68]"));
    fails_with(&f, &["regions.europe1.location", "latitude 95"]);
    let f = with_config(|c| c.replace("[50.11, 8.68]", "[50.11]"));
    fails_with(&f, &["regions.europe1.location", "[latitude, longitude]"]);
}

#[test]
fn a_host_missing_from_the_zones_is_named() {
    let f = with_config(|c| c.replace("host = \"sa1.mkcld.io\"", "host = \"sa9.mkcld.io\""));
    fails_with(&f, &["regions.sa1.host", "sa9.mkcld.io. has no A or AAAA"]);
}

#[test]
fn a_geo_name_colliding_with_zone_data_is_named() {
    let f = with_config(|c| c.replace("name = \"direct.mkcld.io\"", "name = \"ns1.mkcld.io\""));
    fails_with(&f, &["geo[1].name", "collides with"]);
}

#[test]
fn a_geo_name_outside_the_zones_is_named() {
    let f = with_config(|c| c.replace("name = \"direct.mkcld.io\"", "name = \"vpn.example.net\""));
    fails_with(&f, &["geo[1].name", "inside no loaded zone"]);
}

#[test]
fn unknown_regions_and_bad_overrides_are_named() {
    let f = with_config(|c| c.replace("\"asia1\", \"sa1\"]", "\"asia2\", \"sa1\"]"));
    fails_with(&f, &["geo[0].regions[2]", "no [regions.asia2] table"]);
    let f = with_config(|c| c.replace("\"NZ\" = \"us1\"", "\"NZL\" = \"us1\""));
    fails_with(&f, &["overrides.\"NZL\"", "country code"]);
    let f = with_config(|c| c.replace("81.241.7.0/24", "81.241.7.1/24"));
    fails_with(&f, &["host bits set"]);
}

#[test]
fn a_broken_zone_file_names_the_line() {
    let f = Fixture::new();
    let zone = format!("{ZONE}bad IN A 300.1.2.3\n");
    std::fs::write(f.path("zones/mkcld.io.zone"), &zone).unwrap();
    let line = zone.lines().count();
    fails_with(&f, &[&format!("mkcld.io.zone:{line}:")]);
}

#[test]
fn a_zone_without_soa_is_refused() {
    let f = Fixture::new();
    std::fs::write(
        f.path("zones/other.test.zone"),
        "$TTL 60\nwww.other.test. IN A 192.0.2.9\n",
    )
    .unwrap();
    fails_with(&f, &["other.test.zone", "no SOA"]);
}

#[test]
fn a_truncated_geoip_database_is_refused() {
    let f = Fixture::new();
    let db = std::fs::read(f.path("test-city.mmdb")).unwrap();
    std::fs::write(f.path("test-city.mmdb"), &db[..db.len() / 3]).unwrap();
    fails_with(&f, &["test-city.mmdb", "GeoIP"]);
}

#[test]
fn lookup_reports_location_and_answer_as_json() {
    let f = Fixture::new();
    let out = mgnt()
        .args(["lookup", "81.240.0.0/16", "--json", "--config"])
        .arg(f.config())
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["location"]["country"], "BE");
    assert_eq!(v["names"][0]["region"], "europe1");
    assert_eq!(v["names"][0]["reason"], "nearest");
    assert_eq!(v["names"][0]["regions"].as_array().unwrap().len(), 4);
    assert_eq!(v["names"][0]["ecs_scope"], 16);
}
