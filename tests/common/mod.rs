//! Shared fixture: a generated GeoIP database, a zone and a config in a temp
//! directory, the real `mgnt` binary serving them on ephemeral loopback ports,
//! and small query helpers built on hickory-proto's message codec.
#![allow(dead_code)]

pub mod curl;
pub mod deb;
pub mod exposition;
pub mod lab;
pub mod limits;
pub mod pg;
pub mod routeros;
pub mod viewer;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query},
    rr::{
        Name, RData, RecordType,
        rdata::opt::{ClientSubnet, EdnsOption},
    },
};
use serde::Serialize;

pub const ZONE: &str = include_str!("../../zones/mkcld.io.zone");

/// A GeoIP2-City-shaped record (only the fields mgnt reads, plus a name to skip).
#[derive(Serialize)]
struct CityRecord {
    #[serde(skip_serializing_if = "Option::is_none")]
    country: Option<Country>,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<Location>,
    city: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct Country {
    iso_code: String,
}

#[derive(Serialize)]
struct Location {
    latitude: f64,
    longitude: f64,
}

/// (network, country, coordinates) rows of the test database.
pub type Network = (&'static str, &'static str, Option<(f64, f64)>);
pub const NETWORKS: &[Network] = &[
    ("81.240.0.0/14", "BE", Some((50.85, 4.35))),
    ("3.0.0.0/9", "US", Some((39.0, -77.5))),
    ("1.0.16.0/20", "JP", Some((35.69, 139.69))),
    ("1.128.0.0/11", "AU", Some((-33.87, 151.21))),
    ("177.0.0.0/8", "BR", Some((-23.5, -46.6))),
    ("41.32.0.0/12", "EG", Some((30.04, 31.24))),
    ("181.0.0.0/12", "AR", None),
    ("24.0.0.0/12", "CA", None),
    ("49.224.0.0/14", "NZ", Some((-36.85, 174.76))),
    ("2a02:1800::/24", "BE", Some((50.85, 4.35))),
    ("2400:4000::/22", "JP", Some((35.69, 139.69))),
    ("2804::/16", "BR", Some((-23.5, -46.6))),
];

const CENTROIDS: &str = "code,latitude,longitude,name\nAR,-34,-64,Argentina\nCA,60,-95,Canada\n";

/// A TCP port free on loopback now (for a config that must name its port).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

pub fn config_text(listen: &str) -> String {
    format!(
        r#"
[dns]
listen = [{listen}]
zones_dir = "zones"
tcp_idle_timeout = "2s"
tcp_max_connections = 8
udp_sockets = 2

[api]
listen = "127.0.0.1:0"

[geoip]
database = "test-city.mmdb"
centroids = "centroids.csv"

[[geo]]
name = "mgnt.mkcld.io"
ttl = 60
regions = ["europe1", "us1", "asia1", "sa1"]

[[geo]]
name = "direct.mkcld.io"
ttl = 30
answer = "address"
regions = ["europe1", "us1", "asia1", "sa1"]

[regions.europe1]
host = "europe1.mkcld.io"
location = [50.11, 8.68]
[regions.us1]
host = "us1.mkcld.io"
location = [39.04, -77.49]
[regions.asia1]
host = "asia1.mkcld.io"
location = [1.35, 103.82]
[regions.sa1]
host = "sa1.mkcld.io"
location = [-23.55, -46.63]

[overrides]
"NZ" = "us1"
"81.241.7.0/24" = ["sa1", "us1"]
"#
    )
}

/// A temp directory holding the zone, database, centroids and config.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("zones")).unwrap();
        std::fs::write(dir.path().join("zones/mkcld.io.zone"), ZONE).unwrap();
        std::fs::write(dir.path().join("centroids.csv"), CENTROIDS).unwrap();
        std::fs::write(dir.path().join("test-city.mmdb"), city_db()).unwrap();
        let f = Self { dir };
        f.write_config(&config_text("\"127.0.0.1:0\", \"[::1]:0\""));
        f
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn config(&self) -> PathBuf {
        self.path("mgnt.toml")
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(self.config(), text).unwrap();
    }
}

fn city_db() -> Vec<u8> {
    let mut w = mmdb_writer::Writer::new("Test-City");
    for (net, cc, coords) in NETWORKS {
        let rec = CityRecord {
            country: Some(Country {
                iso_code: (*cc).into(),
            }),
            location: coords.map(|(latitude, longitude)| Location {
                latitude,
                longitude,
            }),
            city: BTreeMap::from([(
                "names".into(),
                BTreeMap::from([("en".into(), format!("somewhere in {cc}"))]),
            )]),
        };
        w.insert(net.parse::<ipnet::IpNet>().unwrap(), &rec)
            .unwrap();
    }
    w.to_bytes().unwrap()
}

pub fn mgnt() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mgnt"))
}

/// What a started server printed it listens on.
struct Launched {
    child: Child,
    v4: SocketAddr,
    v6: SocketAddr,
    api: SocketAddr,
    syslog: Option<SocketAddr>,
    routers: Option<SocketAddr>,
}

/// The real server process; killed on drop.
pub struct Server {
    child: Child,
    pub v4: SocketAddr,
    pub v6: SocketAddr,
    pub api: SocketAddr,
    /// The syslog listener, when the config has `[vpnlog]`.
    pub syslog: Option<SocketAddr>,
    /// The router endpoint, when the config has `[routers]`.
    pub routers: Option<SocketAddr>,
    pub fixture: Fixture,
    /// The network namespace it runs in, if not ours.
    pub netns: Option<String>,
    /// Its log (`RUST_LOG=info`) goes to the fixture's `serve.log`.
    logging: bool,
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(Fixture::new())
    }

    pub fn start_with(fixture: Fixture) -> Self {
        Self::spawn(fixture, mgnt(), false)
    }

    /// Starts the server with its log at level info appended to the
    /// fixture's `serve.log` (read with [`Self::log`]).
    pub fn start_logging(fixture: Fixture) -> Self {
        Self::spawn(fixture, mgnt(), true)
    }

    /// As [`Self::start_logging`], its lines written as JSON
    /// (`--log-format json`; a [`Self::restart`] drops the flag).
    pub fn start_logging_json(fixture: Fixture) -> Self {
        let mut cmd = mgnt();
        cmd.args(["--log-format", "json"]);
        Self::spawn(fixture, cmd, true)
    }

    /// What a server started by [`Self::start_logging`] has logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.fixture.path("serve.log")).unwrap_or_default()
    }

    /// Starts the server inside network namespace `netns` (needs root).
    pub fn start_in_netns(fixture: Fixture, netns: &str) -> Self {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, env!("CARGO_BIN_EXE_mgnt")]);
        let mut server = Self::spawn(fixture, cmd, false);
        server.netns = Some(netns.to_owned());
        server
    }

    /// Stops the process (the files stay).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process and starts a new one on the same files (in the
    /// same namespace).
    pub fn restart(&mut self) {
        self.stop();
        let cmd = match &self.netns {
            None => mgnt(),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_mgnt")]);
                c
            }
        };
        let l = Self::launch(&self.fixture, cmd, self.logging);
        (
            self.child,
            self.v4,
            self.v6,
            self.api,
            self.syslog,
            self.routers,
        ) = (l.child, l.v4, l.v6, l.api, l.syslog, l.routers);
    }

    fn spawn(fixture: Fixture, cmd: Command, logging: bool) -> Self {
        let l = Self::launch(&fixture, cmd, logging);
        Self {
            child: l.child,
            v4: l.v4,
            v6: l.v6,
            api: l.api,
            syslog: l.syslog,
            routers: l.routers,
            fixture,
            netns: None,
            logging,
        }
    }

    fn launch(fixture: &Fixture, mut cmd: Command, logging: bool) -> Launched {
        let (level, stderr) = if logging {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(fixture.path("serve.log"))
                .unwrap();
            ("info", Stdio::from(log))
        } else {
            ("error", Stdio::inherit())
        };
        let mut child = cmd
            .args(["serve", "--config"])
            .arg(fixture.config())
            .env("RUST_LOG", level)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // A server that never prints what is awaited (a config with one DNS
        // listener, say) is killed, so the test fails instead of hanging.
        let (started, watchdog) = std::sync::mpsc::channel::<()>();
        let pid = child.id() as i32;
        std::thread::spawn(move || {
            if watchdog.recv_timeout(Duration::from_secs(90)).is_err() {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
        let mut addrs = Vec::new();
        let mut api = None;
        let mut syslog = None;
        let mut routers = None;
        while addrs.len() < 2 || api.is_none() {
            let line = lines
                .next()
                .expect("server exited (or was killed after 90 s) before listening on two DNS addresses and the API")
                .unwrap();
            if let Some(a) = line.strip_prefix("listening dns ") {
                addrs.push(a.parse::<SocketAddr>().unwrap());
            }
            if let Some(a) = line.strip_prefix("listening api ") {
                api = Some(a.parse::<SocketAddr>().unwrap());
            }
            if let Some(a) = line.strip_prefix("listening syslog ") {
                syslog = Some(a.parse::<SocketAddr>().unwrap());
            }
            if let Some(a) = line.strip_prefix("listening routers ") {
                routers = Some(a.parse::<SocketAddr>().unwrap());
            }
        }
        let _ = started.send(());
        Launched {
            child,
            v4: addrs[0],
            v6: addrs[1],
            api: api.unwrap(),
            syslog,
            routers,
        }
    }

    /// The admin API token the server created.
    pub fn token(&self) -> String {
        let t = std::fs::read_to_string(self.fixture.path("state/admin.token")).unwrap();
        t.trim().to_owned()
    }

    /// Runs the `mgnt` command line against this server's config, with
    /// `api.listen` pointed at the port the server actually bound.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let cfg = self.fixture.config();
        let text = std::fs::read_to_string(&cfg).unwrap();
        let pointed = text.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{}\"", self.api),
        );
        if pointed != text {
            std::fs::write(&cfg, pointed).unwrap();
        }
        let mut cmd = match &self.netns {
            None => mgnt(),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_mgnt")]);
                c
            }
        };
        cmd.args(args).arg("--config").arg(&cfg).output().unwrap()
    }

    /// GET on the admin API with the server's token: status and JSON body
    /// (or the text as a JSON string). Runs inside the server's namespace.
    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.call(path, None)
    }

    /// POST `body` (or nothing) on the admin API, as [`Self::get`].
    pub fn post(&self, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        self.call(path, Some(body.unwrap_or(serde_json::Value::Null)))
    }

    /// A GET, or a POST when `body` is given (`Null`: an empty body).
    fn call(&self, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        let (url, token) = (format!("http://{}{path}", self.api), self.token());
        let call = move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let auth = format!("Bearer {token}");
            let mut resp = match body {
                None => agent.get(&url).header("Authorization", &auth).call(),
                Some(serde_json::Value::Null) => {
                    agent.post(&url).header("Authorization", &auth).send_empty()
                }
                Some(b) => agent.post(&url).header("Authorization", &auth).send_json(b),
            }
            .unwrap();
            let body = resp.body_mut().read_to_string().unwrap();
            let value = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
            (resp.status().as_u16(), value)
        };
        match &self.netns {
            None => call(),
            Some(ns) => lab::in_netns(ns, call),
        }
    }

    /// Polls GET `path` until `check` accepts the body (30 s at most);
    /// panics with `what` and the last body.
    pub fn get_until(
        &self,
        path: &str,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = self.get(path);
            if status == 200 && check(&body) {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: {path} still {status} {body:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Sends a signal (`HUP`, `TERM`, …) to the server process.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name}");
    }

    /// The server's process id (its `/proc` entry).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A query for `name`/`qtype`, with EDNS (and ECS when `ecs` is given).
pub fn query(name: &str, qtype: RecordType, ecs: Option<&str>) -> Message {
    let mut m = Message::new(0x4d47, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    if let Some(net) = ecs {
        let subnet: ClientSubnet = net.parse().unwrap();
        edns.options_mut().insert(EdnsOption::Subnet(subnet));
    }
    m.edns = Some(edns);
    m
}

pub fn udp_raw(server: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() {
        "127.0.0.1:0".parse().unwrap()
    } else {
        "[::1]:0".parse().unwrap()
    };
    let sock = UdpSocket::bind(bind).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    sock.send_to(bytes, server).unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

pub fn tcp_raw(server: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    tcp_exchange(&mut s, bytes)
}

pub fn tcp_exchange(s: &mut TcpStream, bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    s.write_all(&out).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).unwrap();
    buf
}

pub fn udp(server: SocketAddr, q: &Message) -> Message {
    let raw = udp_raw(server, &q.to_vec().unwrap()).expect("no UDP reply");
    Message::from_vec(&raw).unwrap()
}

pub fn tcp(server: SocketAddr, q: &Message) -> Message {
    Message::from_vec(&tcp_raw(server, &q.to_vec().unwrap())).unwrap()
}

/// The CNAME target's first label (the region) and the addresses of an answer.
pub fn region_of(m: &Message) -> Option<String> {
    m.answers.iter().find_map(|r| match &r.data {
        RData::CNAME(c) => Some(c.0.to_ascii().split('.').next().unwrap().to_owned()),
        _ => None,
    })
}

pub fn addresses(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// The (source prefix, scope prefix) of the ECS option echoed in `m`.
pub fn ecs_echo(m: &Message) -> Option<(u8, u8)> {
    match m
        .edns
        .as_ref()?
        .option(hickory_proto::rr::rdata::opt::EdnsCode::Subnet)?
    {
        EdnsOption::Subnet(s) => Some((s.source_prefix(), s.scope_prefix())),
        _ => None,
    }
}

/// The command-line DNS clients the tests run, and their Debian packages.
pub const DNS_CLIENTS: &[(&str, &str)] = &[("dig", "bind9-dnsutils"), ("kdig", "knot-dnsutils")];

/// Runs a command-line DNS client, returning its standard output.
pub fn run(cmd: &str, args: &[&str]) -> String {
    run_on_path(cmd, args, None)
}

/// [`run`], finding `cmd` on `path` (else on this process's PATH). A client
/// that is not installed fails the test with one line naming its package.
pub fn run_on_path(cmd: &str, args: &[&str], path: Option<&Path>) -> String {
    let mut command = Command::new(cmd);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    let out = match command.args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let package = DNS_CLIENTS
                .iter()
                .find(|(c, _)| *c == cmd)
                .map_or("?", |(_, p)| p);
            panic!(
                "`{cmd}` is not installed: the tests query the server with it; install the Debian package {package} (`apt-get install {package}`; scripts/test does)"
            );
        }
        Err(e) => panic!("running {cmd}: {e}"),
    };
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the tests run as root (CI does; root-only tests fail otherwise).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

pub fn port_arg(addr: SocketAddr) -> String {
    addr.port().to_string()
}

pub fn assert_file_exists(p: &Path) {
    assert!(p.exists(), "{}", p.display());
}

/// A small deterministic generator (xorshift64*), so a failing case reproduces.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn coin(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Writes a CA and a certificate for localhost/127.0.0.1 signed by it into
/// `dir` (`NAME-ca.crt`, `NAME.crt`, `NAME.key`), with the openssl command.
pub fn certificate(dir: &Path, name: &str) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is required (Debian package openssl; scripts/test installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (ca_key, ca_crt) = (format!("{name}-ca.key"), format!("{name}-ca.crt"));
    let (key, csr, crt) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
            "-keyout",
            &ca_key,
            "-out",
            &ca_crt,
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &["-subj", "/CN=localhost", "-keyout", &key, "-out", &csr],
    ]
    .concat());
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_crt,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        &crt,
    ]);
}
