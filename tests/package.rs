//! The Debian package, as `cargo deb` makes it from the binary these tests
//! run (no second build): unpacked into a temporary root with `dpkg-deb`,
//! its contents and units checked (`systemd-analyze verify`), and its binary
//! run on port 53 by an unprivileged user holding CAP_NET_BIND_SERVICE and
//! nothing else, in a network namespace of its own, telling READY to a
//! notification socket the test owns. Nothing is installed: the machine is
//! left as it was found.

mod common;

use std::{
    os::unix::{fs::PermissionsExt, net::UnixDatagram},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use common::{deb, lab::*, *};

fn dpkg_deb(args: &[&str], deb: &Path, into: &Path) {
    let ok = Command::new("dpkg-deb")
        .args(args)
        .arg(deb)
        .arg(into)
        .status()
        .expect("dpkg-deb")
        .success();
    assert!(ok, "dpkg-deb {args:?}");
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The package, unpacked: its files under `root`, its control files under `control`.
struct Unpacked {
    _dir: tempfile::TempDir,
    root: PathBuf,
    control: PathBuf,
}

fn unpack() -> Unpacked {
    let dir = tempfile::tempdir().unwrap();
    let deb = deb::build(dir.path(), None);
    let (root, control) = (dir.path().join("root"), dir.path().join("control"));
    dpkg_deb(&["-x"], &deb, &root);
    dpkg_deb(&["-e"], &deb, &control);
    Unpacked {
        _dir: dir,
        root,
        control,
    }
}

#[test]
#[ignore = "needs root (network namespaces, another user); scripts/test runs it as root"]
fn the_package_holds_binary_configs_data_and_hardened_units() {
    require_root(&[("dpkg-deb", "dpkg"), ("systemd-analyze", "systemd")]);
    let p = unpack();
    let mode = |f: &str| {
        std::fs::metadata(p.root.join(f))
            .unwrap_or_else(|e| panic!("{f}: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("usr/bin/mgnt"), 0o755);
    for f in [
        "etc/mgnt/mgnt.toml",
        "etc/mgnt/agent.toml",
        "usr/share/mgnt/zones/mkcld.io.zone",
        "usr/share/mgnt/geoip/geo-whois-asn-country.mmdb",
        "usr/share/mgnt/geoip/country-centroids.csv",
        "usr/share/doc/mgnt/README.md",
    ] {
        assert_eq!(mode(f), 0o644, "{f}");
    }
    let conffiles = text(&p.control.join("conffiles"));
    assert!(conffiles.contains("/etc/mgnt/mgnt.toml"), "{conffiles}");
    assert!(conffiles.contains("/etc/mgnt/agent.toml"), "{conffiles}");
    // The user and its private state directory; state removed on purge only.
    let postinst = text(&p.control.join("postinst"));
    assert!(postinst.contains("adduser --system"), "{postinst}");
    assert!(postinst.contains("install -d -m 0700 -o mgnt -g mgnt /var/lib/mgnt"));
    assert!(
        postinst.contains("deb-systemd-helper"),
        "units enabled: {postinst}"
    );
    let postrm = text(&p.control.join("postrm"));
    let purge = postrm.find("\"purge\"").expect("a purge branch");
    let removal = postrm.find("rm -rf /var/lib/mgnt").expect("state removed");
    assert!(purge < removal, "{postrm}");

    // The shipped config loads as installed (its paths under the root).
    let units = p.root.join("usr/lib/systemd/system");
    let serve = text(&units.join("mgnt.service"));
    let agent = text(&units.join("mgnt-agent.service"));
    for line in [
        "Type=notify",
        "User=mgnt",
        "ExecStartPre=/usr/bin/mgnt check-config --config /etc/mgnt/mgnt.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "WatchdogSec=",
    ] {
        assert!(serve.contains(line), "mgnt.service lacks {line}");
    }
    assert!(
        agent.contains("AmbientCapabilities=CAP_NET_ADMIN\n"),
        "{agent}"
    );
    assert!(
        agent.contains("CapabilityBoundingSet=CAP_NET_ADMIN\n"),
        "{agent}"
    );
    assert!(!serve.contains("CAP_NET_RAW") && !agent.contains("CAP_NET_RAW"));
    // What the units name outside the package comes from this system:
    // its targets and slices, and the kill that ExecReload runs.
    for entry in std::fs::read_dir("/usr/lib/systemd/system").unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".target") || name.ends_with(".slice") {
            let _ = std::fs::copy(&path, units.join(&name));
        }
    }
    std::fs::create_dir_all(p.root.join("bin")).unwrap();
    std::fs::copy("/bin/kill", p.root.join("bin/kill")).unwrap();
    for unit in ["mgnt.service", "mgnt-agent.service"] {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", p.root.display()))
            .arg(units.join(unit))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{unit}: {said}"
        );
    }
    let config = p.root.join("etc/mgnt/mgnt.toml");
    let installed = text(&config).replace(
        "/usr/share/mgnt",
        &p.root.join("usr/share/mgnt").display().to_string(),
    );
    let checked = p.root.join("etc/mgnt/checked.toml");
    std::fs::write(&checked, installed).unwrap();
    let out = Command::new(p.root.join("usr/bin/mgnt"))
        .args(["check-config", "--config"])
        .arg(&checked)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs root (network namespaces, another user); scripts/test runs it as root"]
fn the_packaged_binary_serves_port_53_as_a_user_with_only_cap_net_bind_service() {
    require_root(&[
        ("dpkg-deb", "dpkg"),
        ("setpriv", "util-linux"),
        ("dig", "bind9-dnsutils"),
    ]);
    let p = unpack();
    // A world-readable place for the unprivileged user: config and data
    // from the package, state in a directory it owns.
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let share = p.root.join("usr/share/mgnt");
    let state = base.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let chown = Command::new("chown")
        .args(["nobody:nogroup"])
        .arg(&state)
        .status()
        .unwrap();
    assert!(chown.success());
    std::fs::set_permissions(&p.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut config = text(&p.root.join("etc/mgnt/mgnt.toml"))
        .replace("/usr/share/mgnt", &share.display().to_string())
        .replace("/var/lib/mgnt", &state.display().to_string());
    config = config.replace("listen = \"127.0.0.1:8053\"", "listen = \"127.0.0.1:0\"");
    let config_file = base.path().join("mgnt.toml");
    std::fs::write(&config_file, config).unwrap();
    let notify = base.path().join("notify.sock");
    let socket = UnixDatagram::bind(&notify).unwrap();
    std::fs::set_permissions(&notify, std::fs::Permissions::from_mode(0o777)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();

    let ns = format!("mgnt-pkg-{}", std::process::id() % 100_000);
    ip(&["netns", "add", &ns]);
    let _gone = Deleted(ns.clone());
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    let as_nobody = |caps: &str| {
        let mut c = Command::new("ip");
        c.args([
            "netns",
            "exec",
            &ns,
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
        ]);
        c.arg(format!("--inh-caps=-all{caps}"));
        c.arg(format!("--ambient-caps=-all{caps}"));
        c.arg(format!("--bounding-set=-all{caps}"));
        c.arg(p.root.join("usr/bin/mgnt"));
        c.args(["serve", "--config"]).arg(&config_file);
        c.env("NOTIFY_SOCKET", &notify);
        c
    };
    // Without the capability, port 53 is refused, and the error says so.
    let refused = as_nobody("").stdout(Stdio::null()).output().unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("127.0.0.1:53"),
        "the address is named: {said}"
    );

    let mut child = as_nobody(",+net_bind_service")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let got = socket.recv(&mut buf).expect("READY in time");
    let ready = String::from_utf8_lossy(&buf[..got]).into_owned();
    assert!(ready.starts_with("READY=1"), "{ready}");
    let answer = in_netns(&ns, || {
        run(
            "dig",
            &["@127.0.0.1", "-p", "53", "+tries=1", "mgnt.mkcld.io", "A"],
        )
    });
    assert!(answer.contains("status: NOERROR"), "{answer}");
    // It runs as nobody, with CAP_NET_BIND_SERVICE alone.
    // `ip netns exec` and `setpriv` exec: the child is the server itself.
    let status = text(Path::new(&format!("/proc/{}/status", child.id())));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    assert!(field("Uid:").starts_with("65534"), "{status}");
    assert_eq!(
        field("CapEff:"),
        "0000000000000400",
        "CAP_NET_BIND_SERVICE only"
    );
    assert_eq!(field("CapBnd:"), "0000000000000400");
    let _ = child.kill();
    let _ = child.wait();
    // Its secrets were made private in the state directory.
    let m = std::fs::metadata(state.join("admin.token")).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
}

/// Deletes a network namespace on drop.
struct Deleted(String);

impl Drop for Deleted {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}
