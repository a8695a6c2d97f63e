//! What a reload cannot apply: settings read only when `mgnt serve` starts.
//!
//! Sockets are bound, stores opened, token files read and services started
//! once, from the config the process started with (the running config). A
//! reload applies everything else (zones, GeoIP, geo names, regions, probes,
//! overrides, cookies, rate limits, what scripts and agents are told); for
//! the settings listed here it reports the difference ([`changes`]) and
//! keeps the running value in what it publishes ([`keep_running`]), so every
//! reader of the loaded config agrees with what was started from it.
//!
//! One table drives both, so what is reported is exactly what is kept.

use super::{Config, ProvisionConfig, RoutersConfig};

/// One restart-only setting of a `T`: its dotted key, whether the running
/// and the new value differ, and how the new config takes the running one.
struct Setting<T> {
    key: &'static str,
    differs: fn(running: &T, new: &T) -> bool,
    keep: fn(new: &mut T, running: &T),
}

/// A setting held in one field (path) of `T`.
macro_rules! field {
    ($key:literal, $($field:ident).+) => {
        Setting {
            key: $key,
            differs: |running, new| running.$($field).+ != new.$($field).+,
            keep: |new, running| new.$($field).+ = running.$($field).+.clone(),
        }
    };
}

/// Outside the optional tables. Token files are read once at start, so a
/// change of their path (or of their content) waits for a restart too.
const TOP: &[Setting<Config>] = &[
    field!("node.name", node.name),
    field!("store", store),
    field!("dns.listen", dns.listen),
    field!("dns.udp_sockets", dns.udp_sockets),
    field!("dns.tcp_max_connections", dns.tcp_max_connections),
    field!("dns.tcp_max_per_source", dns.tcp_max_per_source),
    field!("dns.tcp_idle_timeout", dns.tcp_idle_timeout),
    field!("dns.tcp_io_timeout", dns.tcp_io_timeout),
    field!("health.state_file", health.state_file),
    field!("api.listen", api.listen),
    field!("api.token_file", api.token_file),
    field!("api.token_env", api.token_env),
    field!("api.agent_token_file", api.agent_token_file),
    field!("api.audit_log", api.audit_log),
    // A SIGHUP re-reads the certificate files the API started with.
    Setting {
        key: "api.tls_cert",
        differs: |running, new| {
            let cert = |c: &Config| c.api.tls.as_ref().map(|t| t.cert.clone());
            cert(running) != cert(new)
        },
        keep: |new, running| new.api.tls = running.api.tls.clone(),
    },
    Setting {
        key: "api.tls_key",
        differs: |running, new| {
            let key = |c: &Config| c.api.tls.as_ref().map(|t| t.key.clone());
            key(running) != key(new)
        },
        keep: |new, running| new.api.tls = running.api.tls.clone(),
    },
    field!("api.max_connections", api.max_connections),
    field!(
        "api.max_connections_per_source",
        api.max_connections_per_source
    ),
    // Log ingestion runs as started, servers and all.
    field!("vpnlog", vpnlog),
];

/// Inside `[provision]` (the tunnel store, its key, the exporter and the
/// hook's token are made at start). `connect_to`, `management_networks`
/// and `ca_file` are read per script and per agent poll: a reload applies them.
const PROVISION: &[Setting<ProvisionConfig>] = &[
    field!("provision.data_dir", data_dir),
    field!("provision.pool", pool),
    field!("provision.secret_key_file", secret_key_file),
    field!("provision.export_dir", export_dir),
    field!("provision.quarantine", quarantine),
    field!("provision.rotation_grace", rotation_grace),
    field!("provision.hook_token_file", hook_token_file),
    // The exporter writes them into the OpenVPN server's config fragment
    // at start; routers must be told the port and digest that server uses.
    Setting {
        key: "provision.port",
        differs: |running, new| running.export_dir.is_some() && running.port != new.port,
        keep: |new, running| {
            if running.export_dir.is_some() {
                new.port = running.port;
            }
        },
    },
    Setting {
        key: "provision.auth",
        differs: |running, new| running.export_dir.is_some() && running.auth != new.auth,
        keep: |new, running| {
            if running.export_dir.is_some() {
                new.auth.clone_from(&running.auth);
            }
        },
    },
];

/// Inside `[routers]` (the endpoint is bound at start, and the tunnel store
/// takes the job lifetime then). `public_url`, `poll_interval` and
/// `bootstrap_expiry` are read per request: a reload applies them.
const ROUTERS: &[Setting<RoutersConfig>] = &[
    field!("routers.listen", listen),
    Setting {
        key: "routers.tls_cert",
        differs: |running, new| {
            let cert = |r: &RoutersConfig| r.tls.as_ref().map(|t| t.cert.clone());
            cert(running) != cert(new)
        },
        keep: |new, running| new.tls = running.tls.clone(),
    },
    Setting {
        key: "routers.tls_key",
        differs: |running, new| {
            let key = |r: &RoutersConfig| r.tls.as_ref().map(|t| t.key.clone());
            key(running) != key(new)
        },
        keep: |new, running| new.tls = running.tls.clone(),
    },
    field!("routers.job_expiry", job_expiry),
    field!("routers.min_poll_gap", min_poll_gap),
    field!("routers.max_connections", max_connections),
    field!(
        "routers.max_connections_per_source",
        max_connections_per_source
    ),
];

/// The restart-only settings whose value in `new` differs from `running`
/// (the config the process started with), as dotted keys in config order;
/// an optional table added or removed is its name alone (`provision`).
pub fn changes(running: &Config, new: &Config) -> Vec<String> {
    let mut out = differing(TOP, running, new);
    out.extend(table(
        "provision",
        PROVISION,
        &running.provision,
        &new.provision,
    ));
    out.extend(table("routers", ROUTERS, &running.routers, &new.routers));
    out
}

/// Gives `new` the running value of every restart-only setting: what a
/// reload publishes, since those parts go on running as they started.
pub fn keep_running(new: &mut Config, running: &Config) {
    keep(TOP, new, running);
    keep_table(PROVISION, &mut new.provision, &running.provision);
    keep_table(ROUTERS, &mut new.routers, &running.routers);
}

fn differing<T>(settings: &[Setting<T>], running: &T, new: &T) -> Vec<String> {
    settings
        .iter()
        .filter(|s| (s.differs)(running, new))
        .map(|s| s.key.to_owned())
        .collect()
}

fn keep<T>(settings: &[Setting<T>], new: &mut T, running: &T) {
    for s in settings {
        (s.keep)(new, running);
    }
}

fn table<T>(
    name: &str,
    settings: &[Setting<T>],
    running: &Option<T>,
    new: &Option<T>,
) -> Vec<String> {
    match (running, new) {
        (Some(running), Some(new)) => differing(settings, running, new),
        (None, None) => Vec::new(),
        _ => vec![name.to_owned()],
    }
}

/// A table added or removed keeps its running presence, whole.
fn keep_table<T: Clone>(settings: &[Setting<T>], new: &mut Option<T>, running: &Option<T>) {
    match (new.as_mut(), running) {
        (Some(new), Some(running)) => keep(settings, new, running),
        _ => new.clone_from(running),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str = r#"
[dns]
listen = ["127.0.0.1:5300"]
zones_dir = "zones"
[geoip]
database = "geoip/db.mmdb"
centroids = "geoip/centroids.csv"
[[geo]]
name = "mgnt.example"
regions = ["a"]
[regions.a]
host = "a.example"
location = [1.0, 2.0]
"#;

    const PROVISION: &str =
        "\n[provision]\npool = \"100.64.0.0/16\"\nconnect_to = \"vpn.example\"\n";

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("/etc/mgnt/mgnt.toml")).unwrap()
    }

    fn changes_to(running: &str, new: &str) -> Vec<String> {
        changes(&parse(running), &parse(new))
    }

    /// `base` with the first `from` replaced by `to` (which must occur).
    fn edit(base: &str, from: &str, to: &str) -> String {
        assert!(base.contains(from), "{from}");
        base.replacen(from, to, 1)
    }

    #[test]
    fn each_restart_only_setting_is_named_by_its_key() {
        let cases = [
            (
                "listen = [\"127.0.0.1:5300\"]",
                "listen = [\"127.0.0.1:5301\"]",
                "dns.listen",
            ),
            ("[dns]", "[dns]\nudp_sockets = 3", "dns.udp_sockets"),
            (
                "[dns]",
                "[dns]\ntcp_max_connections = 7",
                "dns.tcp_max_connections",
            ),
            (
                "[dns]",
                "[dns]\ntcp_idle_timeout = \"3s\"",
                "dns.tcp_idle_timeout",
            ),
            ("[geoip]", "[node]\nname = \"other\"\n[geoip]", "node.name"),
            (
                "[geoip]",
                "[api]\nlisten = \"127.0.0.1:9\"\n[geoip]",
                "api.listen",
            ),
            (
                "[geoip]",
                "[api]\naudit_log = \"a.log\"\n[geoip]",
                "api.audit_log",
            ),
            (
                "[geoip]",
                "[api]\ntoken_file = \"t\"\n[geoip]",
                "api.token_file",
            ),
            (
                "[geoip]",
                "[health]\nstate_file = \"h.json\"\n[geoip]",
                "health.state_file",
            ),
        ];
        for (from, to, key) in cases {
            assert_eq!(changes_to(BASE, &edit(BASE, from, to)), [key], "{to}");
        }
    }

    #[test]
    fn what_a_reload_applies_is_not_reported() {
        let applied = [
            ("[dns]", "[dns]\nmax_udp_payload = 1400"),
            ("[dns]", "[dns]\ncookies = false"),
            ("location = [1.0, 2.0]", "location = [1.0, 3.0]"),
            ("[[geo]]", "[health]\nfall = 5\ninterval = \"1m\"\n[[geo]]"),
        ];
        for (from, to) in applied {
            assert_eq!(
                changes_to(BASE, &edit(BASE, from, to)),
                [] as [&str; 0],
                "{to}"
            );
        }
        let with = format!("{BASE}{PROVISION}");
        let scripts = edit(&with, "vpn.example", "vpn2.example");
        assert!(changes_to(&with, &scripts).is_empty(), "connect_to");
        // The live view reads its table at every ticket, viewer and stream.
        let live = format!("{with}\n[live]\nticket_ttl = \"10s\"\n");
        assert!(changes_to(&with, &live).is_empty(), "[live] added");
        let edited = edit(&live, "\"10s\"", "\"20s\"\nmax_viewers_per_router = 3");
        assert!(changes_to(&live, &edited).is_empty(), "[live] edited");
        assert!(changes_to(&live, &with).is_empty(), "[live] removed");
    }

    #[test]
    fn a_table_added_or_removed_is_named_whole() {
        let with = format!("{BASE}{PROVISION}");
        assert_eq!(changes_to(BASE, &with), ["provision"]);
        assert_eq!(changes_to(&with, BASE), ["provision"]);
        let logs = format!("{BASE}\n[vpnlog]\nlisten = \"127.0.0.1:5514\"\n");
        assert_eq!(changes_to(BASE, &logs), ["vpnlog"]);
        let routers = format!("{with}\n[routers]\npublic_url = \"https://r.example\"\n");
        assert_eq!(changes_to(&with, &routers), ["routers"]);
        assert_eq!(changes_to(BASE, &routers), ["provision", "routers"]);
        let store = format!("{BASE}\n[store]\nurl = \"postgres://mgnt@127.0.0.1/mgnt\"\n");
        assert_eq!(changes_to(BASE, &store), ["store"]);
    }

    #[test]
    fn inside_provision_what_is_read_at_start_is_named() {
        let with = format!("{BASE}{PROVISION}");
        let pool = edit(&with, "100.64.0.0/16", "100.65.0.0/16");
        assert_eq!(changes_to(&with, &pool), ["provision.pool"]);
        // The port reaches routers only, unless the exporter wrote it at start.
        let port = edit(&with, "[provision]", "[provision]\nport = 1194");
        assert!(changes_to(&with, &port).is_empty());
        let exported = edit(&with, "[provision]", "[provision]\nexport_dir = \"ovpn\"");
        let both = edit(&exported, "[provision]", "[provision]\nport = 1194");
        assert_eq!(changes_to(&exported, &both), ["provision.port"]);
        assert_eq!(changes_to(&with, &exported), ["provision.export_dir"]);
    }

    #[test]
    fn it_compares_with_the_running_config_not_the_last_reload() {
        let running = parse(BASE);
        let moved = parse(&edit(BASE, "5300", "5301"));
        // Reloaded twice: still different from what runs.
        assert_eq!(changes(&running, &moved), ["dns.listen"]);
        assert_eq!(changes(&running, &moved), ["dns.listen"]);
        // Restored: nothing to restart for.
        assert!(changes(&running, &parse(BASE)).is_empty());
    }

    #[test]
    fn what_is_kept_is_exactly_what_is_reported() {
        let with = format!("{BASE}{PROVISION}");
        let exported = edit(&with, "[provision]", "[provision]\nexport_dir = \"ovpn\"");
        let news = [
            edit(BASE, "5300", "5301"),
            format!("{BASE}{PROVISION}"),
            edit(
                &exported,
                "[provision]",
                "[provision]\nport = 1194\nquarantine = \"1h\"",
            ),
            edit(&with, "vpn.example", "vpn2.example"),
            format!("{with}\n[routers]\npublic_url = \"https://r.example\"\n"),
            edit(BASE, "[geoip]", "[api]\nlisten = \"127.0.0.1:9\"\n[geoip]"),
        ];
        for running in [BASE.to_owned(), with.clone(), exported.clone()] {
            let running = parse(&running);
            for text in &news {
                let new = parse(text);
                let mut kept = new.clone();
                keep_running(&mut kept, &running);
                assert!(changes(&running, &kept).is_empty(), "{text}");
                // What a reload applies is the new value.
                assert_eq!(kept.provision.is_some(), running.provision.is_some());
                if let (Some(k), Some(n)) = (&kept.provision, &new.provision) {
                    assert_eq!(k.connect_to, n.connect_to, "{text}");
                }
                assert_eq!(kept.regions.len(), new.regions.len());
            }
        }
    }
}
