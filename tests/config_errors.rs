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

/// What `serve` on the fixture says as it fails to start.
fn serve_error(f: &Fixture) -> String {
    let out = mgnt()
        .args(["serve", "--config"])
        .arg(f.config())
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Replaces `from` by `to` in the test config; the result must fail naming `needles`.
fn edit_fails_with(from: &str, to: &str, needles: &[&str]) {
    let f = Fixture::new();
    let text = config_text("\"127.0.0.1:0\"");
    assert!(text.contains(from), "{from}");
    f.write_config(&text.replace(from, to));
    fails_with(&f, needles);
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

/// (from, to, what the error must say), one broken config each.
const BROKEN: &[(&str, &str, &[&str])] = &[
    (
        "[dns]\n",
        "[node]\nname = \"ns 1\"\n[dns]\n",
        &["mgnt.toml", "node.name", "`ns 1` must be 1 to 63 letters"],
    ),
    (
        "[dns]\n",
        "[dns]\nlisten_on = 1\n",
        &["mgnt.toml", "listen_on"],
    ),
    (
        "location = [1.35, 103.82]\n",
        "",
        &["mgnt.toml", "regions.asia1.location", "missing coordinates"],
    ),
    (
        "[50.11, 8.68]",
        "[95.0, 8.68]",
        &["regions.europe1.location", "latitude 95"],
    ),
    (
        "[50.11, 8.68]",
        "[50.11]",
        &["regions.europe1.location", "[latitude, longitude]"],
    ),
    (
        "host = \"sa1.mkcld.io\"",
        "host = \"sa9.mkcld.io\"",
        &["regions.sa1.host", "sa9.mkcld.io. has no A or AAAA"],
    ),
    (
        "name = \"direct.mkcld.io\"",
        "name = \"ns1.mkcld.io\"",
        &["geo[1].name", "collides with"],
    ),
    (
        "name = \"direct.mkcld.io\"",
        "name = \"vpn.example.net\"",
        &["geo[1].name", "inside no loaded zone"],
    ),
    (
        "\"asia1\", \"sa1\"]",
        "\"asia2\", \"sa1\"]",
        &["geo[0].regions[2]", "no [regions.asia2] table"],
    ),
    (
        "\"NZ\" = \"us1\"",
        "\"NZL\" = \"us1\"",
        &["overrides.\"NZL\"", "country code"],
    ),
    ("81.241.7.0/24", "81.241.7.1/24", &["host bits set"]),
    (
        "[overrides]",
        "[vpnlog]\nservers = [{ host = \"vpn-1\", region = \"mars1\" }]\n[overrides]",
        &["vpnlog.servers[0].region", "`mars1` is not a region"],
    ),
    (
        "[overrides]",
        "[vpnlog]\nservers = [{ host = \"vpn-1\", region = \"us1\", management = \"localhost\" }]\n[overrides]",
        &["vpnlog.servers[0].management", "not an address:port"],
    ),
    (
        "[overrides]",
        "[vpnlog]\nlatency_pings = 5\nlatency_timeout = \"30s\"\n[overrides]",
        &["vpnlog.latency_timeout", "must fit in latency_interval"],
    ),
    (
        "[overrides]",
        "[vpnlog]\nretention = \"soon\"\n[overrides]",
        &["vpnlog.retention", "not a duration"],
    ),
    (
        "[overrides]",
        "[health]\nquorum = 0\n[overrides]",
        &["mgnt.toml", "health.quorum", "must be at least 1"],
    ),
    (
        "[api]\nlisten = \"127.0.0.1:0\"",
        "[api]\nlisten = \"0.0.0.0:0\"",
        &["api.tls_cert", "not a loopback address"],
    ),
    (
        "[api]\nlisten = \"127.0.0.1:0\"",
        "[api]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"api.crt\"",
        &["api.tls_key", "required with tls_cert"],
    ),
    (
        "[overrides]",
        "[store]\nurl = \"postgres://mgnt@127.0.0.1/mgnt\"\n[provision]\ndata_dir = \"state\"\npool = \"100.64.0.0/24\"\n[overrides]",
        &[
            "provision.data_dir",
            "[store] database",
            "mgnt store migrate",
        ],
    ),
    (
        "[overrides]",
        "[store]\nurl = \"postgres://mgnt@127.0.0.1/mgnt\"\n[vpnlog]\ndata_dir = \"state\"\n[overrides]",
        &["vpnlog.data_dir", "[store] database", "mgnt store migrate"],
    ),
];

#[test]
fn broken_configs_are_refused_naming_file_key_and_reason() {
    for (from, to, needles) in BROKEN {
        edit_fails_with(from, to, needles);
    }
}

/// Files the config names: a missing one names the config file, the key and the path.
const MISSING_FILES: &[(&str, &str, &[&str])] = &[
    (
        "database = \"test-city.mmdb\"",
        "database = \"geoip/x.mmdb\"",
        &[
            "mgnt.toml: key `geoip.database`: ",
            "geoip/x.mmdb",
            "No such file",
        ],
    ),
    (
        "centroids = \"centroids.csv\"",
        "centroids = \"nowhere.csv\"",
        &[
            "mgnt.toml: key `geoip.centroids`: ",
            "nowhere.csv",
            "No such file",
        ],
    ),
    (
        "zones_dir = \"zones\"",
        "zones_dir = \"no-zones\"",
        &["mgnt.toml: key `dns.zones_dir`: ", "no-zones"],
    ),
];

#[test]
fn a_missing_file_names_the_config_file_and_key() {
    for (from, to, needles) in MISSING_FILES {
        edit_fails_with(from, to, needles);
    }
}

/// `serve` alone reads the token and certificate files.
#[test]
fn a_missing_certificate_names_its_key() {
    let f = Fixture::new();
    let text = config_text("\"127.0.0.1:0\"").replace(
        "[api]\nlisten = \"127.0.0.1:0\"",
        "[api]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"api.crt\"\ntls_key = \"api.key\"",
    );
    f.write_config(&text);
    let err = serve_error(&f);
    assert!(
        err.contains("mgnt.toml: key `api.tls_cert`: ") && err.contains("api.crt"),
        "{err}"
    );
}

/// `serve` on a DNS address another process holds: the address, the key, who.
#[test]
fn a_taken_port_is_named_with_what_to_do() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let f = Fixture::new();
    f.write_config(&config_text(&format!("\"{addr}\"")));
    let err = serve_error(&f);
    let want = format!(
        "binding the DNS listeners: {addr} (dns.listen): address in use: another process holds it"
    );
    assert!(err.contains(&want), "{err}");
}

/// A port below 1024 without the capability: the capability and the
/// alternative are named. Runs `serve` as nobody, which needs root to arrange.
#[test]
#[ignore = "needs root: runs the server as an unprivileged user (setpriv)"]
fn a_privileged_port_names_the_capability() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    f.write_config(&config_text("\"127.0.0.1:53\""));
    // Nobody reads the fixture and writes the token file into it.
    std::fs::set_permissions(f.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args([env!("CARGO_BIN_EXE_mgnt"), "serve", "--config"])
        .arg(f.config())
        .output()
        .expect("setpriv is required (Debian package util-linux)");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("127.0.0.1:53 (dns.listen): permission denied: ports below 1024 need CAP_NET_BIND_SERVICE (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE) or pick a port ≥ 1024"),
        "{err}"
    );
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
fn a_zone_error_after_a_multi_line_soa_names_its_file_and_line() {
    let f = Fixture::new();
    // Loaded after the good mkcld.io.zone; the SOA spans lines 4–9.
    let zone = "; a second zone\n$ORIGIN other.test.\n$TTL 300\n\
        @ IN SOA ns1.other.test. hostmaster.other.test. (\n\
        \x20   1          ; serial\n\
        \x20   7200       ; refresh\n\
        \x20   900        ; retry\n\
        \x20   1209600    ; expire\n\
        \x20   60 )       ; minimum\n\
        @ IN NS ns1.other.test.\n\
        ns1 IN A 192.0.2.53\n\
        ; the bad record is next\n\
        www IN A 300.1.2.3\n";
    std::fs::write(f.path("zones/other.test.zone"), zone).unwrap();
    fails_with(
        &f,
        &["other.test.zone:13: `www IN A 300.1.2.3`: network address"],
    );
    let out = mgnt()
        .args(["check-config", "--config"])
        .arg(f.config())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("mkcld.io.zone"),
        "the good zone is not blamed: {err}"
    );
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

#[test]
fn a_non_loopback_admin_api_without_a_token_is_refused() {
    let f = Fixture::new();
    // Off loopback the API needs TLS (a config error otherwise) and a token.
    certificate(f.dir.path(), "api");
    let text = config_text("\"127.0.0.1:0\"").replace(
        "[api]\nlisten = \"127.0.0.1:0\"",
        "[api]\nlisten = \"0.0.0.0:0\"\ntls_cert = \"api.crt\"\ntls_key = \"api.key\"",
    );
    f.write_config(&text);
    let err = serve_error(&f);
    assert!(
        err.contains("refusing to serve the admin API on 0.0.0.0:0 without a token"),
        "{err}"
    );
    assert!(
        !f.path("state/admin.token").exists(),
        "no token invented for a public address"
    );
}
