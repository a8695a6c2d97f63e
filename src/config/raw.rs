//! The TOML shape of `mgnt.toml`, and its validation into [`super::Config`].

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use hickory_proto::rr::Name;
use ipnet::IpNet;
use serde::Deserialize;

use super::{
    AnswerMode, ApiConfig, CaBundle, Config, ConfigError, DnsConfig, GeoName, GeoipConfig,
    HealthConfig, LogServer, Overrides, ProbeSpec, ProvisionConfig, Region, Require, TlsFiles,
    VpnlogConfig,
};
use crate::route::Coord;

mod live;
mod node;
mod routers;
mod store;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    node: node::RawNode,
    dns: RawDns,
    geoip: RawGeoip,
    #[serde(default)]
    geo: Vec<RawGeo>,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    api: RawApi,
    provision: Option<RawProvision>,
    routers: Option<routers::RawRouters>,
    live: Option<live::RawLive>,
    vpnlog: Option<RawVpnlog>,
    store: Option<store::RawStore>,
    #[serde(default)]
    regions: BTreeMap<String, RawRegion>,
    #[serde(default)]
    overrides: BTreeMap<String, OneOrMany>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    listen: Vec<String>,
    zones_dir: PathBuf,
    tcp_idle_timeout: Option<String>,
    tcp_io_timeout: Option<String>,
    tcp_max_connections: Option<usize>,
    tcp_max_per_source: Option<usize>,
    max_udp_payload: Option<u16>,
    udp_sockets: Option<usize>,
    cookies: Option<bool>,
    cookie_secret_file: Option<PathBuf>,
    cookie_previous_secret_file: Option<PathBuf>,
    truncate_without_cookie: Option<u16>,
    rrl: Option<RawRrl>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRrl {
    rate: Option<u32>,
    slip: Option<u32>,
    ipv4_prefix: Option<u8>,
    ipv6_prefix: Option<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGeoip {
    database: PathBuf,
    centroids: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGeo {
    name: String,
    ttl: Option<u32>,
    answer: Option<String>,
    regions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    host: String,
    location: Option<Vec<f64>>,
    probe: Option<RawProbe>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVpnlog {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    retention: Option<String>,
    poll_interval: Option<String>,
    latency_interval: Option<String>,
    latency_pings: Option<u16>,
    latency_timeout: Option<String>,
    tcp_max_connections: Option<usize>,
    tcp_max_per_source: Option<usize>,
    tcp_idle_timeout: Option<String>,
    queue_capacity: Option<usize>,
    udp_receive_buffer: Option<usize>,
    stale_after: Option<u32>,
    #[serde(default)]
    servers: Vec<RawLogServer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogServer {
    host: String,
    region: String,
    addresses: Option<Vec<String>>,
    management: Option<String>,
    management_password_file: Option<PathBuf>,
    status_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvision {
    data_dir: Option<PathBuf>,
    pool: Option<String>,
    quarantine: Option<String>,
    auth: Option<String>,
    connect_to: Option<String>,
    port: Option<u16>,
    export_dir: Option<PathBuf>,
    secret_key_file: Option<PathBuf>,
    rotation_grace: Option<String>,
    management_networks: Option<Vec<String>>,
    ca_file: Option<PathBuf>,
    hook_token_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Option<String>,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    audit_log: Option<PathBuf>,
    agent_token_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca_file: Option<PathBuf>,
    max_connections: Option<usize>,
    max_connections_per_source: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    interval: Option<String>,
    timeout: Option<String>,
    recheck: Option<String>,
    fall: Option<u32>,
    rise: Option<u32>,
    quorum: Option<u32>,
    state_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    #[serde(default)]
    tcp: Vec<String>,
    #[serde(default)]
    icmp: Vec<String>,
    require: Option<String>,
    min_targets: Option<usize>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn names(&self) -> Vec<&str> {
        match self {
            Self::One(s) => vec![s.as_str()],
            Self::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// Builds errors that carry the config file's path.
struct Ctx<'a> {
    file: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_owned(),
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// Relative paths are taken from the config file's directory, so `serve` works from anywhere.
    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            return p.to_owned();
        }
        match self.file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join(p),
            _ => p.to_owned(),
        }
    }
}

impl RawConfig {
    pub(super) fn validate(self, file: &Path) -> Result<Config, ConfigError> {
        let cx = Ctx { file };
        let node = self.node.validate(&cx)?;
        let dns = self.dns.validate(&cx)?;
        let geoip = GeoipConfig {
            database: cx.path(&self.geoip.database),
            centroids: cx.path(&self.geoip.centroids),
        };
        let regions = validate_regions(&cx, &self.regions)?;
        let index = |name: &str| regions.iter().position(|r| r.name == name);
        if self.geo.is_empty() {
            return Err(cx.err("geo", "at least one [[geo]] name is required"));
        }
        let mut geo = Vec::with_capacity(self.geo.len());
        for (i, g) in self.geo.iter().enumerate() {
            let parsed = g.validate(&cx, i, &index)?;
            if geo.iter().any(|o: &GeoName| o.name == parsed.name) {
                return Err(cx.err(format!("geo[{i}].name"), "duplicate geo name"));
            }
            geo.push(parsed);
        }
        let overrides = validate_overrides(&cx, &self.overrides, &index)?;
        let health = self.health.validate(&cx)?;
        let api = self.api.validate(&cx)?;
        let provision = self
            .provision
            .as_ref()
            .map(|p| p.validate(&cx, &geo))
            .transpose()?;
        let routers = self
            .routers
            .as_ref()
            .map(|r| r.validate(&cx, provision.is_some()))
            .transpose()?;
        let live = self
            .live
            .as_ref()
            .map(|l| l.validate(&cx, provision.is_some()))
            .transpose()?;
        let vpnlog = self
            .vpnlog
            .as_ref()
            .map(|v| v.validate(&cx, &regions))
            .transpose()?;
        let store = self.store.as_ref().map(|s| s.validate(&cx)).transpose()?;
        if store.is_some() {
            self.refuse_local_stores(&cx)?;
        }
        Ok(Config {
            file: file.to_owned(),
            store,
            node,
            dns,
            geoip,
            geo,
            health,
            api,
            provision,
            routers,
            live,
            vpnlog,
            regions,
            overrides,
        })
    }
}

impl RawConfig {
    /// With `[store]` the data lives in the shared database: a local SQLite
    /// directory would be a second, silently diverging truth.
    fn refuse_local_stores(&self, cx: &Ctx) -> Result<(), ConfigError> {
        if self
            .provision
            .as_ref()
            .is_some_and(|p| p.data_dir.is_some())
        {
            return Err(cx.err(
                "provision.data_dir",
                "sites live in the [store] database: remove data_dir (`mgnt store migrate` copies an existing tunnels.db into it)",
            ));
        }
        if self.vpnlog.as_ref().is_some_and(|v| v.data_dir.is_some()) {
            return Err(cx.err(
                "vpnlog.data_dir",
                "log records live in the [store] database: remove data_dir (`mgnt store migrate` copies an existing vpnlog.db into it)",
            ));
        }
        Ok(())
    }
}

impl RawDns {
    fn validate(&self, cx: &Ctx) -> Result<DnsConfig, ConfigError> {
        if self.listen.is_empty() {
            return Err(cx.err("dns.listen", "at least one address is required"));
        }
        let mut listen = Vec::with_capacity(self.listen.len());
        for (i, a) in self.listen.iter().enumerate() {
            let addr: SocketAddr = a.parse().map_err(|_| {
                cx.err(
                    format!("dns.listen[{i}]"),
                    format!("`{a}` is not an address:port (IPv6 as \"[::1]:5300\")"),
                )
            })?;
            listen.push(addr);
        }
        let tcp_idle_timeout = match &self.tcp_idle_timeout {
            None => super::DEFAULT_TCP_IDLE_TIMEOUT,
            Some(s) => duration(cx, "dns.tcp_idle_timeout", s)?,
        };
        let tcp_max_connections = self
            .tcp_max_connections
            .unwrap_or(super::DEFAULT_TCP_MAX_CONNECTIONS);
        if tcp_max_connections == 0 {
            return Err(cx.err("dns.tcp_max_connections", "must be at least 1"));
        }
        let tcp_max_per_source = self
            .tcp_max_per_source
            .unwrap_or(super::DEFAULT_TCP_MAX_PER_SOURCE);
        if tcp_max_per_source == 0 {
            return Err(cx.err("dns.tcp_max_per_source", "must be at least 1"));
        }
        let tcp_io_timeout = match &self.tcp_io_timeout {
            None => super::DEFAULT_TCP_IO_TIMEOUT,
            Some(s) => duration(cx, "dns.tcp_io_timeout", s)?,
        };
        let max_udp_payload = self
            .max_udp_payload
            .unwrap_or(super::DEFAULT_MAX_UDP_PAYLOAD);
        if max_udp_payload < 512 {
            return Err(cx.err("dns.max_udp_payload", "must be at least 512"));
        }
        let udp_sockets = self.udp_sockets.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
        });
        if udp_sockets == 0 || udp_sockets > 64 {
            return Err(cx.err("dns.udp_sockets", "must be between 1 and 64"));
        }
        let truncate_without_cookie = self.truncate_without_cookie.unwrap_or(0);
        if (1..128).contains(&truncate_without_cookie) {
            return Err(cx.err(
                "dns.truncate_without_cookie",
                "must be 0 (never truncate) or at least 128 bytes",
            ));
        }
        let secret = self
            .cookie_secret_file
            .as_deref()
            .unwrap_or(Path::new(super::DEFAULT_COOKIE_SECRET_FILE));
        Ok(DnsConfig {
            listen,
            zones_dir: cx.path(&self.zones_dir),
            tcp_idle_timeout,
            tcp_io_timeout,
            tcp_max_connections,
            tcp_max_per_source,
            max_udp_payload,
            udp_sockets,
            cookies: self.cookies.unwrap_or(true),
            cookie_secret_file: cx.path(secret),
            cookie_previous_secret_file: self
                .cookie_previous_secret_file
                .as_deref()
                .map(|p| cx.path(p)),
            truncate_without_cookie,
            rrl: self.rrl.as_ref().map(|r| r.validate(cx)).transpose()?,
        })
    }
}

impl RawRrl {
    fn validate(&self, cx: &Ctx) -> Result<super::RrlConfig, ConfigError> {
        let rate = self.rate.unwrap_or(super::DEFAULT_RRL_RATE);
        if rate == 0 {
            return Err(cx.err("dns.rrl.rate", "must be at least 1 answer per second"));
        }
        let prefix = |key: &str, value: Option<u8>, default: u8, width: u8| match value {
            None => Ok(default),
            Some(p) if (1..=width).contains(&p) => Ok(p),
            Some(_) => Err(cx.err(key, format!("must be 1 to {width}"))),
        };
        Ok(super::RrlConfig {
            rate,
            slip: self.slip.unwrap_or(super::DEFAULT_RRL_SLIP),
            ipv4_prefix: prefix("dns.rrl.ipv4_prefix", self.ipv4_prefix, 24, 32)?,
            ipv6_prefix: prefix("dns.rrl.ipv6_prefix", self.ipv6_prefix, 56, 128)?,
        })
    }
}

fn duration(cx: &Ctx, key: &str, s: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(s)
        .map_err(|e| cx.err(key, format!("`{s}` is not a duration like \"10s\": {e}")))?;
    if d.is_zero() {
        return Err(cx.err(key, "must be longer than zero"));
    }
    Ok(d)
}

fn dns_name(cx: &Ctx, key: &str, s: &str) -> Result<Name, ConfigError> {
    let mut name =
        Name::from_ascii(s).map_err(|e| cx.err(key, format!("`{s}` is not a DNS name: {e}")))?;
    name.set_fqdn(true);
    if name.is_root() {
        return Err(cx.err(key, "the root name is not allowed"));
    }
    Ok(name.to_lowercase())
}

fn validate_regions(
    cx: &Ctx,
    raw: &BTreeMap<String, RawRegion>,
) -> Result<Vec<Region>, ConfigError> {
    if raw.is_empty() {
        return Err(cx.err("regions", "at least one region is required"));
    }
    raw.iter()
        .map(|(name, r)| {
            let key = format!("regions.{name}");
            let host = dns_name(cx, &format!("{key}.host"), &r.host)?;
            let location = match &r.location {
                None => return Err(cx.err(format!("{key}.location"), "missing coordinates")),
                Some(v) => coord(cx, &format!("{key}.location"), v)?,
            };
            let probe = r
                .probe
                .as_ref()
                .map(|p| p.validate(cx, &format!("{key}.probe")))
                .transpose()?;
            Ok(Region {
                name: name.clone(),
                host,
                location,
                probe,
            })
        })
        .collect()
}

fn coord(cx: &Ctx, key: &str, v: &[f64]) -> Result<Coord, ConfigError> {
    let [lat, lon] = v else {
        return Err(cx.err(key, "must be [latitude, longitude]"));
    };
    if !lat.is_finite() || !(-90.0..=90.0).contains(lat) {
        return Err(cx.err(key, format!("latitude {lat} is outside -90..90")));
    }
    if !lon.is_finite() || !(-180.0..=180.0).contains(lon) {
        return Err(cx.err(key, format!("longitude {lon} is outside -180..180")));
    }
    Ok(Coord {
        lat: *lat,
        lon: *lon,
    })
}

impl RawGeo {
    fn validate(
        &self,
        cx: &Ctx,
        i: usize,
        index: &dyn Fn(&str) -> Option<usize>,
    ) -> Result<GeoName, ConfigError> {
        let key = format!("geo[{i}]");
        let name = dns_name(cx, &format!("{key}.name"), &self.name)?;
        let ttl = self.ttl.unwrap_or(super::DEFAULT_GEO_TTL);
        if ttl > 86_400 {
            return Err(cx.err(format!("{key}.ttl"), "must be at most 86400 seconds"));
        }
        let answer = match self.answer.as_deref() {
            None | Some("cname") => AnswerMode::Cname,
            Some("address") => AnswerMode::Address,
            Some(other) => {
                return Err(cx.err(
                    format!("{key}.answer"),
                    format!("`{other}` is not \"cname\" or \"address\""),
                ));
            }
        };
        if self.regions.is_empty() {
            return Err(cx.err(format!("{key}.regions"), "at least one region is required"));
        }
        if self.regions.len() > crate::route::MAX_REGIONS {
            return Err(cx.err(
                format!("{key}.regions"),
                format!("at most {} regions per geo name", crate::route::MAX_REGIONS),
            ));
        }
        let mut regions = Vec::with_capacity(self.regions.len());
        for (j, r) in self.regions.iter().enumerate() {
            let k = format!("{key}.regions[{j}]");
            let idx = index(r).ok_or_else(|| cx.err(&k, format!("no [regions.{r}] table")))?;
            if regions.contains(&idx) {
                return Err(cx.err(k, format!("region `{r}` is listed twice")));
            }
            regions.push(idx);
        }
        Ok(GeoName {
            name,
            ttl,
            answer,
            regions,
        })
    }
}

fn validate_overrides(
    cx: &Ctx,
    raw: &BTreeMap<String, OneOrMany>,
    index: &dyn Fn(&str) -> Option<usize>,
) -> Result<Overrides, ConfigError> {
    let mut out = Overrides::default();
    for (k, v) in raw {
        let key = format!("overrides.\"{k}\"");
        let names = v.names();
        if names.is_empty() {
            return Err(cx.err(&key, "at least one region is required"));
        }
        let mut regions = Vec::with_capacity(names.len());
        for n in names {
            regions.push(index(n).ok_or_else(|| cx.err(&key, format!("no [regions.{n}] table")))?);
        }
        if k.contains('/') {
            let net: IpNet = k
                .parse()
                .map_err(|_| cx.err(&key, format!("`{k}` is not a prefix like 203.0.113.0/24")))?;
            if net.trunc() != net {
                return Err(cx.err(
                    &key,
                    format!("host bits set; did you mean {}?", net.trunc()),
                ));
            }
            out.prefixes.push((net, regions));
        } else {
            let b = k.as_bytes();
            if b.len() != 2 || !b.iter().all(u8::is_ascii_alphabetic) {
                return Err(cx.err(
                    &key,
                    "not an ISO 3166-1 alpha-2 country code (\"BE\") or a prefix (\"203.0.113.0/24\")",
                ));
            }
            out.countries.insert(
                [b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()],
                regions,
            );
        }
    }
    Ok(out)
}

impl RawHealth {
    fn validate(&self, cx: &Ctx) -> Result<HealthConfig, ConfigError> {
        let get = |key: &str, v: &Option<String>, default: Duration| {
            v.as_deref()
                .map_or(Ok(default), |s| duration(cx, &format!("health.{key}"), s))
        };
        let interval = get("interval", &self.interval, super::DEFAULT_HEALTH_INTERVAL)?;
        let timeout = get("timeout", &self.timeout, super::DEFAULT_HEALTH_TIMEOUT)?;
        let recheck = get("recheck", &self.recheck, super::DEFAULT_HEALTH_RECHECK)?;
        if timeout > interval {
            return Err(cx.err("health.timeout", "must not be longer than health.interval"));
        }
        if recheck > interval {
            return Err(cx.err("health.recheck", "must not be longer than health.interval"));
        }
        let count = |key: &str, v: Option<u32>, default: u32| match v.unwrap_or(default) {
            n @ 1..=100 => Ok(n),
            _ => Err(cx.err(format!("health.{key}"), "must be between 1 and 100")),
        };
        Ok(HealthConfig {
            interval,
            timeout,
            recheck,
            fall: count("fall", self.fall, super::DEFAULT_FALL)?,
            rise: count("rise", self.rise, super::DEFAULT_RISE)?,
            quorum: match self.quorum {
                Some(0) => return Err(cx.err("health.quorum", "must be at least 1")),
                q => q,
            },
            state_file: cx.path(
                self.state_file
                    .as_deref()
                    .unwrap_or(Path::new(super::DEFAULT_STATE_FILE)),
            ),
        })
    }
}

impl RawProbe {
    fn validate(&self, cx: &Ctx, key: &str) -> Result<ProbeSpec, ConfigError> {
        let mut tcp = Vec::with_capacity(self.tcp.len());
        for (i, t) in self.tcp.iter().enumerate() {
            let addr = t
                .parse::<SocketAddr>()
                .or_else(|_| {
                    t.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, super::DEFAULT_PROBE_PORT))
                })
                .map_err(|_| {
                    cx.err(
                        format!("{key}.tcp[{i}]"),
                        format!("`{t}` is not an address or address:port"),
                    )
                })?;
            tcp.push(addr);
        }
        let mut icmp = Vec::with_capacity(self.icmp.len());
        for (i, t) in self.icmp.iter().enumerate() {
            icmp.push(t.parse().map_err(|_| {
                cx.err(
                    format!("{key}.icmp[{i}]"),
                    format!("`{t}` is not an IP address"),
                )
            })?);
        }
        let require = match self.require.as_deref() {
            None | Some("tcp") => Require::Tcp,
            Some("icmp") => Require::Icmp,
            Some("all") => Require::All,
            Some(other) => {
                return Err(cx.err(
                    format!("{key}.require"),
                    format!("`{other}` is not \"tcp\", \"icmp\" or \"all\""),
                ));
            }
        };
        let min_targets = self.min_targets.unwrap_or(1);
        let needs_tcp = matches!(require, Require::Tcp | Require::All);
        let needs_icmp = matches!(require, Require::Icmp | Require::All);
        for (needed, list, kind) in [
            (needs_tcp, tcp.len(), "tcp"),
            (needs_icmp, icmp.len(), "icmp"),
        ] {
            if needed && list < min_targets.max(1) {
                return Err(cx.err(
                    format!("{key}.{kind}"),
                    format!(
                        "require = \"{}\" needs at least {} {kind} target(s)",
                        require.as_str(),
                        min_targets.max(1)
                    ),
                ));
            }
        }
        if min_targets == 0 {
            return Err(cx.err(format!("{key}.min_targets"), "must be at least 1"));
        }
        Ok(ProbeSpec {
            tcp,
            icmp,
            require,
            min_targets,
        })
    }
}

/// A count of at least one, or `default`.
fn positive(cx: &Ctx, key: &str, v: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match v {
        Some(0) => Err(cx.err(key, "must be at least 1")),
        v => Ok(v.unwrap_or(default)),
    }
}

/// `v` (or `default`) when it lies in `range`.
fn within(
    cx: &Ctx,
    key: &str,
    v: Option<usize>,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<usize, ConfigError> {
    let v = v.unwrap_or(default);
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(cx.err(key, format!("must be {} to {}", range.start(), range.end())))
    }
}

/// A listener's `tls_cert` and `tls_key`: both or neither, and both when
/// `listen` is not a loopback address (`what` must not cross in clear).
fn tls_pair(
    cx: &Ctx,
    table: &str,
    listen: SocketAddr,
    (cert, key): (&Option<PathBuf>, &Option<PathBuf>),
    what: &str,
) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert: cx.path(cert),
            key: cx.path(key),
        })),
        (None, None) if listen.ip().is_loopback() => Ok(None),
        (None, None) => Err(cx.err(
            format!("{table}.tls_cert"),
            format!("required (with tls_key) when `listen` is not a loopback address: {what} must not cross a network in clear"),
        )),
        (Some(_), None) => Err(cx.err(format!("{table}.tls_key"), "required with tls_cert")),
        (None, Some(_)) => Err(cx.err(format!("{table}.tls_cert"), "required with tls_key")),
    }
}

impl RawApi {
    fn validate(&self, cx: &Ctx) -> Result<ApiConfig, ConfigError> {
        let listen = self.listen.as_deref().unwrap_or(super::DEFAULT_API_LISTEN);
        let listen: SocketAddr = listen
            .parse()
            .map_err(|_| cx.err("api.listen", format!("`{listen}` is not an address:port")))?;
        if self
            .token_env
            .as_ref()
            .is_some_and(|v| v.is_empty() || v.contains('='))
        {
            return Err(cx.err("api.token_env", "not an environment variable name"));
        }
        Ok(ApiConfig {
            listen,
            token_file: cx.path(
                self.token_file
                    .as_deref()
                    .unwrap_or(Path::new(super::DEFAULT_TOKEN_FILE)),
            ),
            token_env: self.token_env.clone(),
            agent_token_file: self.agent_token_file.as_deref().map(|f| cx.path(f)),
            tls: tls_pair(
                cx,
                "api",
                listen,
                (&self.tls_cert, &self.tls_key),
                "admin and agent tokens",
            )?,
            tls_ca_file: self.tls_ca_file.as_deref().map(|f| cx.path(f)),
            max_connections: positive(cx, "api.max_connections", self.max_connections, 1024)?,
            max_connections_per_source: positive(
                cx,
                "api.max_connections_per_source",
                self.max_connections_per_source,
                64,
            )?,
            audit_log: cx.path(
                self.audit_log
                    .as_deref()
                    .unwrap_or(Path::new(super::DEFAULT_AUDIT_LOG)),
            ),
        })
    }
}

impl RawProvision {
    fn validate(&self, cx: &Ctx, geo: &[GeoName]) -> Result<ProvisionConfig, ConfigError> {
        let pool_text = self.pool.as_deref().unwrap_or("100.64.0.0/10");
        let pool: ipnet::Ipv4Net = pool_text.parse().map_err(|_| {
            cx.err(
                "provision.pool",
                format!("`{pool_text}` is not an IPv4 prefix"),
            )
        })?;
        if pool.prefix_len() > 29 {
            return Err(cx.err("provision.pool", "must be /29 or larger"));
        }
        let quarantine = match &self.quarantine {
            None => Duration::from_secs(24 * 3600),
            Some(q) => duration(cx, "provision.quarantine", q)?,
        };
        let auth = self.auth.as_deref().unwrap_or("sha1").to_ascii_lowercase();
        if !["md5", "sha1", "sha256", "sha512"].contains(&auth.as_str()) {
            return Err(cx.err(
                "provision.auth",
                format!("`{auth}` is not md5, sha1, sha256 or sha512"),
            ));
        }
        let connect_to = match &self.connect_to {
            Some(c) => c.clone(),
            None => geo
                .first()
                .map(|g| g.name.to_string().trim_end_matches('.').to_owned())
                .unwrap_or_default(),
        };
        let rotation_grace = match &self.rotation_grace {
            None => super::DEFAULT_ROTATION_GRACE,
            Some(g) => duration(cx, "provision.rotation_grace", g)?,
        };
        let secret_key_file = self
            .secret_key_file
            .as_deref()
            .unwrap_or(Path::new(super::DEFAULT_SECRET_KEY_FILE));
        let management_networks = self
            .management_networks
            .iter()
            .flatten()
            .map(|n| {
                n.parse::<ipnet::Ipv4Net>().map(|n| n.trunc()).map_err(|_| {
                    cx.err(
                        "provision.management_networks",
                        format!("`{n}` is not an IPv4 prefix (the tunnel carries IPv4)"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ca = self
            .ca_file
            .as_deref()
            .map(|f| ca_bundle(cx, &cx.path(f)))
            .transpose()?;
        Ok(ProvisionConfig {
            hook_token_file: cx.path(
                self.hook_token_file
                    .as_deref()
                    .unwrap_or(Path::new("state/hook.token")),
            ),
            management_networks,
            ca,
            secret_key_file: cx.path(secret_key_file),
            rotation_grace,
            data_dir: cx.path(self.data_dir.as_deref().unwrap_or(Path::new("state"))),
            pool,
            quarantine,
            auth,
            connect_to,
            port: self.port.unwrap_or(super::DEFAULT_PROBE_PORT),
            export_dir: self.export_dir.as_deref().map(|d| cx.path(d)),
        })
    }
}

/// Reads the CA certificates routers are to trust.
fn ca_bundle(cx: &Ctx, file: &Path) -> Result<CaBundle, ConfigError> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let err = |reason: String| cx.err("provision.ca_file", format!("{}: {reason}", file.display()));
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    let mut pem = String::new();
    let mut fingerprints = Vec::new();
    for cert in &certs {
        let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
        fingerprints.push(data_encoding::HEXLOWER.encode(digest.as_ref()));
        let body = data_encoding::BASE64.encode(cert.as_ref());
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for chunk in body.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
    }
    Ok(CaBundle {
        file: file.to_owned(),
        pem,
        fingerprints,
    })
}

impl RawVpnlog {
    fn validate(&self, cx: &Ctx, regions: &[Region]) -> Result<VpnlogConfig, ConfigError> {
        let listen = self.listen.as_deref().unwrap_or("127.0.0.1:5514");
        let listen = listen.parse().map_err(|_| {
            cx.err(
                "vpnlog.listen",
                format!("`{listen}` is not an address:port"),
            )
        })?;
        let or = |key: &str, v: &Option<String>, default: &str| {
            duration(
                cx,
                &format!("vpnlog.{key}"),
                v.as_deref().unwrap_or(default),
            )
        };
        let latency_pings = self.latency_pings.unwrap_or(3);
        if !(1..=100).contains(&latency_pings) {
            return Err(cx.err("vpnlog.latency_pings", "must be 1 to 100"));
        }
        let latency_interval = or("latency_interval", &self.latency_interval, "60s")?;
        let latency_timeout = or("latency_timeout", &self.latency_timeout, "2s")?;
        if latency_timeout * u32::from(latency_pings) > latency_interval {
            return Err(cx.err(
                "vpnlog.latency_timeout",
                "latency_pings × latency_timeout must fit in latency_interval",
            ));
        }
        let mut servers: Vec<LogServer> = Vec::with_capacity(self.servers.len());
        for (i, s) in self.servers.iter().enumerate() {
            let server = s.validate(cx, i, regions)?;
            if servers.iter().any(|o| o.host == server.host) {
                return Err(cx.err(format!("vpnlog.servers[{i}].host"), "duplicate host"));
            }
            servers.push(server);
        }
        Ok(VpnlogConfig {
            listen,
            data_dir: cx.path(self.data_dir.as_deref().unwrap_or(Path::new("state"))),
            servers,
            retention: or("retention", &self.retention, "90days")?,
            poll_interval: or("poll_interval", &self.poll_interval, "60s")?,
            latency_interval,
            latency_pings,
            latency_timeout,
            tcp_max_connections: positive(
                cx,
                "vpnlog.tcp_max_connections",
                self.tcp_max_connections,
                256,
            )?,
            tcp_max_per_source: positive(
                cx,
                "vpnlog.tcp_max_per_source",
                self.tcp_max_per_source,
                16,
            )?,
            tcp_idle_timeout: or("tcp_idle_timeout", &self.tcp_idle_timeout, "5m")?,
            queue_capacity: within(
                cx,
                "vpnlog.queue_capacity",
                self.queue_capacity,
                50_000,
                1_000..=10_000_000,
            )?,
            udp_receive_buffer: within(
                cx,
                "vpnlog.udp_receive_buffer",
                self.udp_receive_buffer,
                4 << 20,
                64 << 10..=1 << 30,
            )?,
            stale_after: within(
                cx,
                "vpnlog.stale_after",
                self.stale_after.map(|v| v as usize),
                3,
                1..=100,
            )? as u32,
        })
    }
}

impl RawLogServer {
    fn validate(&self, cx: &Ctx, i: usize, regions: &[Region]) -> Result<LogServer, ConfigError> {
        let key = |k: &str| format!("vpnlog.servers[{i}].{k}");
        if self.host.is_empty() || self.host.contains(char::is_whitespace) {
            return Err(cx.err(key("host"), "must be a syslog HOSTNAME (no spaces)"));
        }
        if !regions.iter().any(|r| r.name == self.region) {
            return Err(cx.err(
                key("region"),
                format!("`{}` is not a region in [regions]", self.region),
            ));
        }
        let management =
            match &self.management {
                None => None,
                Some(m) => Some(m.parse().map_err(|_| {
                    cx.err(key("management"), format!("`{m}` is not an address:port"))
                })?),
            };
        if self.management_password_file.is_some() && management.is_none() {
            return Err(cx.err(
                key("management_password_file"),
                "needs `management` (the interface it unlocks)",
            ));
        }
        let addresses = self
            .addresses
            .iter()
            .flatten()
            .map(|a| {
                a.parse::<ipnet::IpNet>()
                    .or_else(|_| a.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map(|n| n.trunc())
                    .map_err(|_| {
                        cx.err(
                            key("addresses"),
                            format!("`{a}` is not an address or prefix"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LogServer {
            host: self.host.clone(),
            region: self.region.clone(),
            addresses,
            management,
            management_password_file: self.management_password_file.as_deref().map(|p| cx.path(p)),
            status_file: self.status_file.as_deref().map(|p| cx.path(p)),
        })
    }
}
