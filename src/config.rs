//! `mgnt.toml` → a validated [`Config`].
//!
//! Parsing is strict: unknown keys are rejected, every value is checked at load,
//! and each error names the file, the key path and the reason, so an operator
//! can fix a broken config without reading the source. Cross-checks that need
//! the zone data (a region host missing from the zones, a geo name colliding
//! with zone records) live in [`crate::dns::zones`].

pub mod hash;
mod raw;
pub mod restart;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use hickory_proto::rr::Name;
use ipnet::IpNet;

use crate::route::Coord;

/// Default number of simultaneous TCP connections a DNS listener accepts.
pub const DEFAULT_TCP_MAX_CONNECTIONS: usize = 1024;
/// One source's share of them: a flood from one address leaves the rest free.
pub const DEFAULT_TCP_MAX_PER_SOURCE: usize = 64;
pub const DEFAULT_TCP_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Default idle time after which a TCP connection without a query is closed.
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest UDP response (RFC 9715 / DNS flag day 2020 value).
pub const DEFAULT_MAX_UDP_PAYLOAD: u16 = 1232;
/// Default TTL of geo answers.
pub const DEFAULT_GEO_TTL: u32 = 60;
/// The product document's "active health checks every five minutes".
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(300);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_HEALTH_RECHECK: Duration = Duration::from_secs(10);
pub const DEFAULT_FALL: u32 = 2;
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_STATE_FILE: &str = "state/health.json";
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:8053";
pub const DEFAULT_TOKEN_FILE: &str = "state/admin.token";
pub const DEFAULT_AUDIT_LOG: &str = "state/audit.log";
pub const DEFAULT_SECRET_KEY_FILE: &str = "state/secret.key";
pub const DEFAULT_COOKIE_SECRET_FILE: &str = "state/cookie.secret";
/// BIND's and Knot's usual figures for response rate limiting.
pub const DEFAULT_RRL_RATE: u32 = 20;
pub const DEFAULT_RRL_SLIP: u32 = 2;
pub const DEFAULT_ROUTERS_LISTEN: &str = "127.0.0.1:8054";
/// A router that polls every few minutes has days to apply a recreate job.
pub const DEFAULT_ROTATION_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The OpenVPN port the routers use; TCP probes default to it.
pub const DEFAULT_PROBE_PORT: u16 = 8443;

/// A config error, always naming the file it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        file: PathBuf,
        key: String,
        reason: String,
    },
}

/// An error about a file the config names, with the config file and the key
/// that named it: an operator reads which line to fix, not only which file failed.
#[derive(Debug, thiserror::Error)]
#[error("{config}: key `{key}`: {source}")]
pub struct Named<E: std::error::Error + 'static> {
    pub config: PathBuf,
    pub key: String,
    /// Boxed: the errors that carry this stay small (clippy's `result_large_err`).
    pub source: Box<E>,
}

impl<E: std::error::Error + 'static> Named<E> {
    pub fn new(config: &Path, key: impl Into<String>, source: E) -> Self {
        Self {
            config: config.to_owned(),
            key: key.into(),
            source: Box::new(source),
        }
    }
}

/// A file that could not be read, named.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {source}")]
pub struct ReadError {
    pub file: PathBuf,
    pub source: std::io::Error,
}

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from; relative paths inside are resolved against its directory.
    pub file: PathBuf,
    /// `[node]`: this node's identity.
    pub node: NodeConfig,
    pub dns: DnsConfig,
    pub geoip: GeoipConfig,
    pub geo: Vec<GeoName>,
    pub health: HealthConfig,
    pub api: ApiConfig,
    /// `[provision]`; `None` keeps tunnel provisioning off.
    pub provision: Option<ProvisionConfig>,
    /// `[routers]`; `None`: no router endpoint (jobs only through the admin API).
    pub routers: Option<RoutersConfig>,
    /// `[live]`; `None` keeps the live view off.
    pub live: Option<LiveConfig>,
    /// `[vpnlog]`; `None` keeps log ingestion off.
    pub vpnlog: Option<VpnlogConfig>,
    /// `[store]`: PostgreSQL; `None`: the embedded files (one machine).
    pub store: Option<StoreConfig>,
    /// Every configured region, sorted by name; geo names refer to them by index.
    pub regions: Vec<Region>,
    pub overrides: Overrides,
}

/// `[store]`: the PostgreSQL database every node shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `postgres://USER@HOST[:PORT]/DB` (never with a password).
    pub url: String,
    pub password: Option<StorePassword>,
    pub tls: StoreTls,
    pub pool_size: usize,
    /// How often the shared state is read again in full, should a
    /// notification be missed.
    pub reread_interval: Duration,
}

/// Where the database password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorePassword {
    /// Its first line.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreTls {
    /// Only for a server on loopback or a Unix socket.
    Disable,
    /// TLS, the server's certificate checked against `ca` (and its name).
    Require { ca: PathBuf },
}

/// `[node]`: which node this is, in DNS answers (NSID, CHAOS `id.server`)
/// and wherever a fleet needs to tell nodes apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Letters, digits, `.`, `-` and `_`; 1 to 63 bytes. Default: the host name.
    pub name: String,
    /// Where the other nodes reach this node's admin API (the live view:
    /// one node holds a router's connection, the others relay from it).
    pub api_url: Option<String>,
    /// CA certificates for the other nodes' `api_url` (else the public roots).
    pub api_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub listen: Vec<SocketAddr>,
    pub zones_dir: PathBuf,
    /// A connection with no query begun for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Most time a begun query may take to arrive, and a reply to be taken.
    pub tcp_io_timeout: Duration,
    pub tcp_max_connections: usize,
    /// Open connections from one source (an IPv4 address, an IPv6 /64).
    pub tcp_max_per_source: usize,
    pub max_udp_payload: u16,
    /// UDP sockets per listen address (SO_REUSEPORT), one receive loop each.
    pub udp_sockets: usize,
    /// DNS Cookies (RFC 7873, RFC 9018): answered unless turned off.
    pub cookies: bool,
    /// The server secret, shared by every node (created when missing).
    pub cookie_secret_file: PathBuf,
    /// The secret being retired: its cookies are still valid.
    pub cookie_previous_secret_file: Option<PathBuf>,
    /// UDP answers larger than this to queries without a valid server
    /// cookie go out truncated; 0 never truncates.
    pub truncate_without_cookie: u16,
    /// Response rate limiting, when configured.
    pub rrl: Option<RrlConfig>,
}

/// `[dns.rrl]`: how many answers per second one network gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrlConfig {
    /// Answers per second to one network for one kind of answer.
    pub rate: u32,
    /// Every `slip`-th answer over the rate goes out truncated (TC, or
    /// BADCOOKIE to a query with a client cookie) instead of being dropped;
    /// 0 drops them all.
    pub slip: u32,
    /// The networks counted as one: IPv4 and IPv6 prefix lengths.
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
}

#[derive(Debug, Clone)]
pub struct GeoipConfig {
    pub database: PathBuf,
    pub centroids: PathBuf,
}

/// How a geo name is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerMode {
    /// `name CNAME region-host` plus the host's in-zone records.
    Cname,
    /// The region host's A/AAAA records, owned by the geo name itself.
    Address,
}

#[derive(Debug, Clone)]
pub struct GeoName {
    pub name: Name,
    pub ttl: u32,
    pub answer: AnswerMode,
    /// Indices into [`Config::regions`], in the configured (fallback) order.
    pub regions: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Region {
    pub name: String,
    pub host: Name,
    pub location: Coord,
    /// `None`: the region is unprobed and always serving.
    pub probe: Option<ProbeSpec>,
}

/// `[api]`: the admin HTTP API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// Lines of `TOKEN` or `NAME:TOKEN`.
    pub token_file: PathBuf,
    /// An environment variable holding one more token (named `env`).
    pub token_env: Option<String>,
    /// Append-only record of drains and reloads (JSON lines).
    pub audit_log: PathBuf,
    /// Agents' tokens (`NAME:TOKEN` lines; the name is the OpenVPN server's).
    pub agent_token_file: Option<PathBuf>,
    /// `None` only on a loopback address.
    pub tls: Option<TlsFiles>,
    /// CA certificates the command line (and the hook) trust for `tls`.
    pub tls_ca_file: Option<PathBuf>,
    pub max_connections: usize,
    pub max_connections_per_source: usize,
}

/// `[vpnlog]`: log ingestion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpnlogConfig {
    /// Syslog over UDP and TCP.
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub servers: Vec<LogServer>,
    /// Records older than this are deleted.
    pub retention: Duration,
    /// Status files are read, and management interfaces asked for byte
    /// counts and the client list, this often.
    pub poll_interval: Duration,
    /// Each connected tunnel is pinged this often...
    pub latency_interval: Duration,
    /// ...this many times, each answer awaited this long.
    pub latency_pings: u16,
    pub latency_timeout: Duration,
    /// Syslog over TCP: connections at once, in all and from one address.
    pub tcp_max_connections: usize,
    pub tcp_max_per_source: usize,
    /// A TCP sender silent this long is disconnected.
    pub tcp_idle_timeout: Duration,
    /// Most records waiting for the writer: beyond, UDP lines are dropped
    /// (counted) and TCP senders wait.
    pub queue_capacity: usize,
    /// The syslog UDP socket's receive buffer, in bytes.
    pub udp_receive_buffer: usize,
    /// A session missing from this many complete client lists in a row
    /// (status file or `status 3`) is closed as "stale".
    pub stale_after: u32,
}

/// `[[vpnlog.servers]]`: one regional OpenVPN server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogServer {
    /// The name its records carry (and its agent's token name).
    pub host: String,
    pub region: String,
    /// Where its syslog comes from: a sender is known by its address, never
    /// by the HOSTNAME it writes.
    pub addresses: Vec<ipnet::IpNet>,
    /// Its management interface (`--management IP PORT`).
    pub management: Option<SocketAddr>,
    /// The management password (`--management … pw-file`), first line of this file.
    pub management_password_file: Option<PathBuf>,
    /// Its `--status` file (any `status-version`).
    pub status_file: Option<PathBuf>,
}

/// `[provision]`: tunnel provisioning.
#[derive(Debug, Clone)]
pub struct ProvisionConfig {
    pub data_dir: PathBuf,
    pub pool: ipnet::Ipv4Net,
    pub quarantine: Duration,
    /// OpenVPN data-channel digest, the same on routers and servers.
    pub auth: String,
    pub connect_to: String,
    pub port: u16,
    /// Where the server re-exports the OpenVPN files after every change, if set.
    pub export_dir: Option<PathBuf>,
    /// The key that stored secrets are digested and sealed under.
    pub secret_key_file: PathBuf,
    /// How long the last applied tunnel secret keeps working after a recreate.
    pub rotation_grace: Duration,
    /// The token `mgnt auth-verify` (OpenVPN's via-file hook) asks the
    /// control plane with; the OpenVPN user must be able to read it.
    pub hook_token_file: PathBuf,
    /// Where routers accept management connections from (besides the server's
    /// own tunnel address).
    pub management_networks: Vec<ipnet::Ipv4Net>,
    /// The CA routers install to verify the servers (`ca_file`).
    pub ca: Option<CaBundle>,
}

/// The CA certificates in `[provision] ca_file`, read at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundle {
    pub file: PathBuf,
    /// The file's certificates, as PEM.
    pub pem: String,
    /// SHA-256 of each certificate, lowercase hex (RouterOS's `fingerprint`).
    pub fingerprints: Vec<String>,
}

/// `[routers]`: the endpoint routers pull their jobs from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutersConfig {
    pub listen: SocketAddr,
    /// What routers fetch from (scheme and host, no trailing slash).
    pub public_url: String,
    /// `None` only on a loopback address.
    pub tls: Option<TlsFiles>,
    /// How often a router's scheduler polls (plus jitter).
    pub poll_interval: Duration,
    /// How long a job waits for its router.
    pub job_expiry: Duration,
    /// Least time between two polls with one token; faster ones get 429.
    pub min_poll_gap: Duration,
    /// How long a one-time bootstrap token stays usable.
    pub bootstrap_expiry: Duration,
    pub max_connections: usize,
    pub max_connections_per_source: usize,
}

/// RouterOS's API port.
pub const DEFAULT_LIVE_API_PORT: u16 = 8728;

/// `[live]`: the read-only live view of routers through their RouterOS API.
/// Every key applies on reload (the next ticket, viewer or stream uses it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveConfig {
    /// The routers' API port, opened through their tunnels.
    pub api_port: u16,
    /// How long a ticket waits to be redeemed.
    pub ticket_ttl: Duration,
    /// Browser origins besides the page's own that may open a live view.
    pub allowed_origins: Vec<String>,
    pub max_viewers_per_router: usize,
    pub max_streams_per_user: usize,
    /// How long a router's API connection outlives its last viewer.
    pub linger: Duration,
    /// How long a reboot waits to be confirmed.
    pub reboot_timeout: Duration,
    /// Least time between two reboots of one site.
    pub reboot_min_gap: Duration,
}

impl Default for LiveConfig {
    /// `[live]` with every key at its default.
    fn default() -> Self {
        Self {
            api_port: DEFAULT_LIVE_API_PORT,
            ticket_ttl: Duration::from_secs(30),
            allowed_origins: Vec::new(),
            max_viewers_per_router: 10,
            max_streams_per_user: 20,
            linger: Duration::from_secs(5),
            reboot_timeout: Duration::from_secs(600),
            reboot_min_gap: Duration::from_secs(300),
        }
    }
}

/// A PEM certificate chain and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[health]`: when and how strictly regions are probed.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub interval: Duration,
    pub timeout: Duration,
    pub recheck: Duration,
    pub fall: u32,
    pub rise: u32,
    /// Nodes that must say a region is down to take it out (with `[store]`);
    /// `None`: a majority of the nodes that reported lately.
    pub quorum: Option<u32>,
    pub state_file: PathBuf,
}

/// `[regions.NAME.probe]`: the targets of one region's health checks.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSpec {
    pub tcp: Vec<SocketAddr>,
    pub icmp: Vec<std::net::IpAddr>,
    pub require: Require,
    /// How many targets of each required kind must pass.
    pub min_targets: usize,
}

/// Which probe kinds must pass for a region to be healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Require {
    Tcp,
    Icmp,
    All,
}

impl Require {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Icmp => "icmp",
            Self::All => "all",
        }
    }
}

/// Operator overrides: they win over distance.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// ISO 3166-1 alpha-2 code (upper case) → preferred regions (indices), in order.
    pub countries: BTreeMap<[u8; 2], Vec<usize>>,
    /// Address prefix → preferred regions; the longest matching prefix wins.
    pub prefixes: Vec<(IpNet, Vec<usize>)>,
}

impl Config {
    /// Reads and validates `file`.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        Self::parse(&text, file)
    }

    /// Validates `text` as if read from `file` (used for error messages and relative paths).
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        raw.validate(file)
    }

    pub fn region_index(&self, name: &str) -> Option<usize> {
        self.regions.iter().position(|r| r.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[dns]
listen = ["127.0.0.1:5300", "[::1]:5300"]
zones_dir = "zones"
[geoip]
database = "geoip/db.mmdb"
centroids = "/abs/centroids.csv"
[[geo]]
name = "MGNT.example"
regions = ["b", "a"]
[regions.a]
host = "a.example"
location = [1.0, 2.0]
[regions.b]
host = "b.example."
location = [-3.5, 4.25]
[overrides]
"be" = "a"
"2001:db8::/32" = ["b", "a"]
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/mgnt/mgnt.toml"))
    }

    fn invalid_key(text: &str) -> String {
        match parse(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn a_full_config_validates_with_defaults() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.dns.listen.len(), 2);
        assert_eq!(c.dns.zones_dir, Path::new("/etc/mgnt/zones"));
        assert_eq!(c.geoip.database, Path::new("/etc/mgnt/geoip/db.mmdb"));
        assert_eq!(c.geoip.centroids, Path::new("/abs/centroids.csv"));
        assert_eq!(c.dns.tcp_idle_timeout, DEFAULT_TCP_IDLE_TIMEOUT);
        assert_eq!(c.dns.max_udp_payload, DEFAULT_MAX_UDP_PAYLOAD);
        let names: Vec<&str> = c.regions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b"], "regions sorted by name");
        let g = &c.geo[0];
        assert_eq!(g.name.to_ascii(), "mgnt.example.");
        assert_eq!((g.ttl, g.answer), (DEFAULT_GEO_TTL, AnswerMode::Cname));
        assert_eq!(g.regions, [1, 0], "configured order kept");
        assert_eq!(c.overrides.countries[b"BE"], [0]);
        assert_eq!(c.overrides.prefixes[0].1, [1, 0]);
    }

    #[test]
    fn errors_name_the_key() {
        let bad = |from: &str, to: &str| invalid_key(&GOOD.replace(from, to));
        assert_eq!(bad("\"[::1]:5300\"", "\"::1:5300\""), "dns.listen[1]");
        assert_eq!(
            bad(
                "zones_dir = \"zones\"",
                "zones_dir = \"zones\"\ntcp_idle_timeout = \"soon\""
            ),
            "dns.tcp_idle_timeout"
        );
        assert_eq!(
            bad(
                "zones_dir = \"zones\"",
                "zones_dir = \"zones\"\nmax_udp_payload = 100"
            ),
            "dns.max_udp_payload"
        );
        assert_eq!(
            bad("regions = [\"b\", \"a\"]", "regions = [\"b\", \"b\"]"),
            "geo[0].regions[1]"
        );
        assert_eq!(
            bad("regions = [\"b\", \"a\"]", "regions = []"),
            "geo[0].regions"
        );
        assert_eq!(
            bad("name = \"MGNT.example\"", "name = \"bad..name\""),
            "geo[0].name"
        );
        assert_eq!(
            bad(
                "regions = [\"b\", \"a\"]",
                "regions = [\"a\"]\nanswer = \"txt\""
            ),
            "geo[0].answer"
        );
        assert_eq!(bad("[1.0, 2.0]", "[1.0, 200.0]"), "regions.a.location");
        assert_eq!(bad("\"be\" = \"a\"", "\"be\" = \"zz\""), "overrides.\"be\"");
        assert_eq!(
            bad("[overrides]", "[health]\nquorum = 0\n[overrides]"),
            "health.quorum"
        );
    }

    #[test]
    fn the_quorum_is_a_majority_unless_set() {
        assert_eq!(parse(GOOD).unwrap().health.quorum, None);
        let set = GOOD.replace("[overrides]", "[health]\nquorum = 2\n[overrides]");
        assert_eq!(parse(&set).unwrap().health.quorum, Some(2));
        let negative = GOOD.replace("[overrides]", "[health]\nquorum = -1\n[overrides]");
        let e = parse(&negative).unwrap_err().to_string();
        assert!(e.contains("quorum"), "{e}");
    }

    #[test]
    fn unknown_keys_and_syntax_errors_are_parse_errors_with_the_file() {
        for text in [GOOD.replace("[dns]", "[dns]\nport = 53"), "[dns".to_owned()] {
            let e = parse(&text).unwrap_err();
            assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
            assert!(e.to_string().starts_with("/etc/mgnt/mgnt.toml: "), "{e}");
        }
    }

    #[test]
    fn the_live_table_has_defaults_and_names_its_errors() {
        let provision = "\n[provision]\npool = \"100.64.0.0/16\"\nconnect_to = \"vpn.example\"\n";
        let with = format!("{GOOD}{provision}\n[live]\n");
        let live = parse(&with).unwrap().live.unwrap();
        assert_eq!(live.api_port, 8728);
        assert_eq!(live.ticket_ttl, Duration::from_secs(30));
        assert!(live.allowed_origins.is_empty(), "same-origin only");
        assert_eq!(
            (live.max_viewers_per_router, live.max_streams_per_user),
            (10, 20)
        );
        let bad = |extra: &str| invalid_key(&format!("{with}{extra}\n"));
        assert_eq!(bad("ticket_ttl = \"10m\""), "live.ticket_ttl");
        assert_eq!(bad("api_port = 0"), "live.api_port");
        assert_eq!(
            bad("max_viewers_per_router = 0"),
            "live.max_viewers_per_router"
        );
        assert_eq!(
            bad("allowed_origins = [\"https://a.example\", \"https://b.example/\"]"),
            "live.allowed_origins[1]"
        );
        assert_eq!(invalid_key(&format!("{GOOD}\n[live]\n")), "live");
    }
}
