//! A region behind a cut link: the probe times out (no RST, no ICMP error) and
//! the answer moves. Runs the server and the region in network namespaces this
//! test creates, joined by a veth pair with link-local addresses, so no packet
//! can leave the machine. Needs root (CI runs as root).

mod common;

use std::{
    fs::File,
    net::TcpListener,
    os::fd::AsRawFd,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::*;
use hickory_proto::rr::RecordType;

const SERVER_ADDR: &str = "169.254.88.1/30";
const REGION_IP: &str = "169.254.88.2";

/// Network namespaces and their veth pair; deleted on drop.
struct Lab {
    server: String,
    region: String,
    veth_region: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2's ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lab {
    fn new() -> Self {
        let id = std::process::id() % 100_000;
        let lab = Self {
            server: format!("mgnt-dns-{id}"),
            region: format!("mgnt-eu-{id}"),
            veth_region: format!("mgr{id}"),
        };
        let veth_server = format!("mgs{id}");
        ip(&["netns", "add", &lab.server]);
        ip(&["netns", "add", &lab.region]);
        ip(&[
            "link",
            "add",
            &veth_server,
            "type",
            "veth",
            "peer",
            "name",
            &lab.veth_region,
        ]);
        ip(&["link", "set", &veth_server, "netns", &lab.server]);
        ip(&["link", "set", &lab.veth_region, "netns", &lab.region]);
        ip(&[
            "-n",
            &lab.server,
            "addr",
            "add",
            SERVER_ADDR,
            "dev",
            &veth_server,
        ]);
        ip(&[
            "-n",
            &lab.region,
            "addr",
            "add",
            &format!("{REGION_IP}/30"),
            "dev",
            &lab.veth_region,
        ]);
        for (ns, dev) in [(&lab.server, &veth_server), (&lab.region, &lab.veth_region)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        lab
    }

    fn set_region_link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.region, "link", "set", &self.veth_region, state]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.server, &self.region] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread that has joined network namespace `ns`; sockets it
/// creates stay in that namespace.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(format!("/var/run/netns/{ns}")).unwrap();
            // SAFETY: setns on a valid namespace fd only changes this thread's namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    })
}

fn runnable() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !status
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    {
        return Err("network namespaces need root".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Err("iproute2's `ip` is not installed".into());
    }
    Ok(())
}

fn state_error(path: &Path) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    v["regions"]["europe1"]["last"]["results"][0]["error"]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn a_cut_link_times_the_probe_out_and_moves_the_answer() {
    if let Err(why) = runnable() {
        eprintln!("skipping: {why}");
        return;
    }
    let lab = Lab::new();
    let _listener = in_netns(&lab.region, || {
        TcpListener::bind((REGION_IP, 8443)).unwrap()
    });
    let fixture = Fixture::new();
    let state = fixture.path("state/health.json");
    let mut config = config_text("\"127.0.0.1:0\", \"[::1]:0\"");
    config.push_str(&format!(
        "\n[health]\ninterval = \"2s\"\ntimeout = \"500ms\"\nrecheck = \"1s\"\nstate_file = \"{}\"\n\
         \n[regions.europe1.probe]\ntcp = [\"{REGION_IP}:8443\"]\nicmp = [\"{REGION_IP}\"]\nrequire = \"all\"\n",
        state.display()
    ));
    fixture.write_config(&config);
    let server = Server::start_in_netns(fixture, &lab.server);
    let region = |deadline: Duration, want: &str| {
        let start = Instant::now();
        loop {
            let q = query("mgnt.mkcld.io.", RecordType::A, Some("81.240.0.0/16"));
            let got = in_netns(&lab.server, || region_of(&udp(server.v4, &q)));
            if got.as_deref() == Some(want) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < deadline,
                "never answered {want}; last {got:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Up: TCP and ICMP both answer across the veth.
    let start = Instant::now();
    while !std::fs::read_to_string(&state).is_ok_and(|s| s.contains("\"ok\": true")) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "europe1 never probed ok"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    region(Duration::from_secs(5), "europe1");

    lab.set_region_link(false);
    let took = region(Duration::from_secs(10), "us1");
    let err = state_error(&state).unwrap_or_default();
    assert!(
        err.contains("no connection within"),
        "timed out, not refused: {err}"
    );
    eprintln!("cut link detected in {took:?}");

    lab.set_region_link(true);
    region(Duration::from_secs(10), "europe1");
}
