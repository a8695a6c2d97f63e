//! Two network namespaces joined by a veth pair, for tests of what crosses a
//! network. Link-local addresses only: nothing can leave the machine.

use std::{fs::File, os::fd::AsRawFd, process::Command};

/// Network namespaces `server` and `region` and their veth pair; deleted on drop.
pub struct Lab {
    pub server: String,
    pub region: String,
    veth_region: String,
}

pub fn ip(args: &[&str]) {
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
    /// `tag` keeps names unique per test; `subnet` is the /30's first three
    /// octets, e.g. "169.254.88": the server side gets .1, the region side .2.
    pub fn new(tag: &str, subnet: &str) -> Self {
        let id = std::process::id() % 100_000;
        let lab = Self {
            server: format!("mgnt-{tag}s-{id}"),
            region: format!("mgnt-{tag}r-{id}"),
            veth_region: format!("{tag}r{id}"),
        };
        let veth_server = format!("{tag}s{id}");
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
            &format!("{subnet}.1/30"),
            "dev",
            &veth_server,
        ]);
        ip(&[
            "-n",
            &lab.region,
            "addr",
            "add",
            &format!("{subnet}.2/30"),
            "dev",
            &lab.veth_region,
        ]);
        for (ns, dev) in [(&lab.server, &veth_server), (&lab.region, &lab.veth_region)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        lab
    }

    pub fn set_region_link(&self, up: bool) {
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
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
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

/// Why namespace tests cannot run here, if they cannot (they need root and `ip`).
/// Fails the test, saying why, unless it can do what it needs: root, and
/// `tools` (commands, with the Debian package that has each). A test that
/// cannot run must never pass.
pub fn require_root(tools: &[(&str, &str)]) {
    assert!(
        super::is_root(),
        "this test needs root (network namespaces); it is #[ignore]d for other users"
    );
    for (tool, package) in [("ip", "iproute2")].iter().chain(tools) {
        let found = Command::new(tool).arg("--version").output().is_ok()
            || Command::new(tool).arg("-V").output().is_ok();
        assert!(
            found,
            "`{tool}` is not installed (Debian package {package}; scripts/test installs it)"
        );
    }
}

/// A hub namespace with a veth pair to each of several leaf namespaces: leaf
/// `i` is `base.(4i+2)/30`, the hub's side `base.(4i+1)`. The namespaces
/// have no other link, so nothing leaves the machine (use link-local or
/// 198.18.0.0/15 addresses all the same); deleted on drop.
pub struct Star {
    pub hub: String,
    pub leaves: Vec<String>,
    base: String,
    /// The hub's end of each leaf's veth pair.
    hub_links: Vec<String>,
}

impl Star {
    pub fn new(tag: &str, base: &str, leaves: usize) -> Self {
        let id = std::process::id() % 100_000;
        let star = Self {
            hub: format!("mgnt-{tag}h-{id}"),
            leaves: (0..leaves).map(|i| format!("mgnt-{tag}{i}-{id}")).collect(),
            base: base.to_owned(),
            hub_links: (0..leaves).map(|i| format!("{tag}h{i}x{id}")).collect(),
        };
        ip(&["netns", "add", &star.hub]);
        ip(&["-n", &star.hub, "link", "set", "lo", "up"]);
        for (i, leaf) in star.leaves.iter().enumerate() {
            let (h, l) = (star.hub_links[i].clone(), format!("{tag}l{i}x{id}"));
            ip(&["netns", "add", leaf]);
            ip(&["link", "add", &h, "type", "veth", "peer", "name", &l]);
            ip(&["link", "set", &h, "netns", &star.hub]);
            ip(&["link", "set", &l, "netns", leaf]);
            ip(&[
                "-n",
                &star.hub,
                "addr",
                "add",
                &format!("{}/30", star.hub_addr(i)),
                "dev",
                &h,
            ]);
            ip(&[
                "-n",
                leaf,
                "addr",
                "add",
                &format!("{}/30", star.leaf_addr(i)),
                "dev",
                &l,
            ]);
            ip(&["-n", &star.hub, "link", "set", &h, "up"]);
            ip(&["-n", leaf, "link", "set", &l, "up"]);
            ip(&["-n", leaf, "link", "set", "lo", "up"]);
        }
        star
    }

    pub fn hub_addr(&self, leaf: usize) -> String {
        format!("{}.{}", self.base, 4 * leaf + 1)
    }

    pub fn leaf_addr(&self, leaf: usize) -> String {
        format!("{}.{}", self.base, 4 * leaf + 2)
    }

    /// Sets the hub's end of `leaf`'s link up or down (down: the leaf's
    /// packets to the hub vanish, no error comes back).
    pub fn set_leaf_link(&self, leaf: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.hub, "link", "set", &self.hub_links[leaf], state]);
    }
}

impl Drop for Star {
    fn drop(&mut self) {
        for ns in self.leaves.iter().chain([&self.hub]) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
