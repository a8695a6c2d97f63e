//! The config hash: one short value that is equal on two nodes exactly when
//! they would answer alike, so a fleet can tell a node whose configuration,
//! zones or GeoIP data differ from the others'.
//!
//! It covers the validated configuration (so `"60s"` and `"1m"`, or a name
//! with and without its final dot, hash alike), the zones' records and the
//! GeoIP database's bytes and centroids. It leaves out what is each node's
//! own, and may differ on nodes that agree ([`shared_part`]).

use std::{fmt, path::PathBuf};

use ring::digest::{Context, SHA256};

use crate::config::Config;

/// Hex digits shown: 64 bits tell any two configurations apart in practice
/// and stay short enough for a log line and a metric label.
const SHOWN: usize = 16;

/// A configuration's hash, as [`config_hash`] computes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct ConfigHash(String);

impl ConfigHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConfigHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The hash of `config` with the digests of the zones it loaded and of its
/// GeoIP data (database and centroids).
pub fn config_hash(config: &Config, zones: &[u8; 32], geoip: &[u8; 32]) -> ConfigHash {
    let mut cx = Context::new(&SHA256);
    // Named and versioned: a change of what is hashed must not be mistaken
    // for a change of configuration by a node of the same build.
    cx.update(b"mgnt config hash 1\n");
    cx.update(format!("{:?}", shared_part(config)).as_bytes());
    cx.update(b"\nzones ");
    cx.update(zones);
    cx.update(b"\ngeoip ");
    cx.update(geoip);
    ConfigHash(data_encoding::HEXLOWER.encode(cx.finish().as_ref())[..SHOWN].to_owned())
}

/// `config` without what each node has of its own: its name (`[node]`),
/// the addresses it binds, its UDP socket count (its cores), where it keeps
/// its files (the zones' and GeoIP data's contents are hashed instead), how
/// it reaches the database (`[store]` but `reread_interval`), its admin
/// token variable, and `[vpnlog]` (each node takes the logs of the OpenVPN
/// servers that send to it). Everything else, keys added later included,
/// must be equal on every node.
pub fn shared_part(config: &Config) -> Config {
    let none = PathBuf::new;
    let unbound = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    let mut c = config.clone();
    c.file = none();
    c.node.name.clear();
    c.dns.listen.clear();
    c.dns.zones_dir = none();
    c.dns.udp_sockets = 0;
    c.dns.cookie_secret_file = none();
    c.dns.cookie_previous_secret_file = None;
    c.geoip.database = none();
    c.geoip.centroids = none();
    c.health.state_file = none();
    let api = &mut c.api;
    api.listen = unbound;
    api.token_file = none();
    api.token_env = None;
    api.audit_log = none();
    api.agent_token_file = None;
    api.tls = None;
    api.tls_ca_file = None;
    if let Some(p) = &mut c.provision {
        p.data_dir = none();
        p.export_dir = None;
        p.secret_key_file = none();
        p.hook_token_file = none();
        if let Some(ca) = &mut p.ca {
            ca.file = none();
        }
    }
    if let Some(r) = &mut c.routers {
        r.listen = unbound;
        r.tls = None;
    }
    c.vpnlog = None;
    if let Some(s) = &mut c.store {
        s.url.clear();
        s.password = None;
        s.tls = crate::config::StoreTls::Disable;
        s.pool_size = 0;
    }
    c
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str = r#"
[node]
name = "node-a"
[dns]
listen = ["127.0.0.1:5300"]
zones_dir = "zones"
udp_sockets = 2
[api]
listen = "127.0.0.1:8053"
[geoip]
database = "geoip/db.mmdb"
centroids = "geoip/centroids.csv"
[health]
state_file = "state/health.json"
[[geo]]
name = "mgnt.example"
ttl = 60
regions = ["a", "b"]
[regions.a]
host = "a.example"
location = [1.0, 2.0]
[regions.b]
host = "b.example"
location = [3.0, 4.0]
[store]
url = "postgres://mgnt@127.0.0.1/mgnt"
pool_size = 4
"#;

    fn hash_of(text: &str, file: &str) -> ConfigHash {
        let config = Config::parse(text, Path::new(file)).unwrap();
        config_hash(&config, &[1; 32], &[2; 32])
    }

    fn base() -> ConfigHash {
        hash_of(BASE, "/etc/mgnt/mgnt.toml")
    }

    #[test]
    fn the_hash_is_short_hex_and_stable() {
        let h = base();
        assert_eq!(h.as_str().len(), SHOWN);
        assert!(h.as_str().bytes().all(|b| b.is_ascii_hexdigit()), "{h}");
        assert_eq!(h, base());
    }

    #[test]
    fn what_each_node_has_of_its_own_leaves_the_hash_alone() {
        let own = [
            ("name = \"node-a\"", "name = \"node-b\""),
            (
                "listen = [\"127.0.0.1:5300\"]",
                "listen = [\"10.0.0.2:53\"]",
            ),
            ("udp_sockets = 2", "udp_sockets = 8"),
            ("zones_dir = \"zones\"", "zones_dir = \"/srv/zones\""),
            ("geoip/db.mmdb", "/var/lib/GeoIP/City.mmdb"),
            ("state/health.json", "/var/lib/mgnt/health.json"),
            ("listen = \"127.0.0.1:8053\"", "listen = \"127.0.0.1:9053\""),
            ("127.0.0.1/mgnt", "localhost/mgnt"),
            ("pool_size = 4", "pool_size = 16"),
        ];
        for (from, to) in own {
            let changed = BASE.replacen(from, to, 1);
            assert_ne!(changed, BASE, "{from}");
            assert_eq!(hash_of(&changed, "/etc/mgnt/mgnt.toml"), base(), "{to}");
        }
        // The same relative layout in another directory.
        assert_eq!(hash_of(BASE, "/srv/other/mgnt.toml"), base());
        // [vpnlog] is each node's own.
        let logs = format!("{BASE}\n[vpnlog]\nlisten = \"127.0.0.1:5514\"\n");
        assert_eq!(hash_of(&logs, "/etc/mgnt/mgnt.toml"), base());
    }

    #[test]
    fn what_decides_answers_changes_the_hash() {
        let shared = [
            ("ttl = 60", "ttl = 30"),
            ("regions = [\"a\", \"b\"]", "regions = [\"b\", \"a\"]"),
            ("location = [1.0, 2.0]", "location = [1.0, 2.5]"),
            ("host = \"b.example\"", "host = \"c.example\""),
            ("pool_size = 4", "pool_size = 4\nreread_interval = \"1m\""),
        ];
        for (from, to) in shared {
            let changed = BASE.replacen(from, to, 1);
            assert_ne!(hash_of(&changed, "/etc/mgnt/mgnt.toml"), base(), "{to}");
        }
        let health = BASE.replace("[health]", "[health]\nfall = 5");
        assert_ne!(hash_of(&health, "/etc/mgnt/mgnt.toml"), base());
        let config = Config::parse(BASE, Path::new("/etc/mgnt/mgnt.toml")).unwrap();
        assert_ne!(config_hash(&config, &[9; 32], &[2; 32]), base(), "zones");
        assert_ne!(config_hash(&config, &[1; 32], &[9; 32]), base(), "geoip");
    }

    #[test]
    fn equal_meanings_spelled_differently_hash_alike() {
        let spelled = BASE
            .replace("host = \"a.example\"", "host = \"a.example.\"")
            .replace("[health]", "[health]\ninterval = \"5m\"");
        assert_eq!(hash_of(&spelled, "/etc/mgnt/mgnt.toml"), base());
    }
}
