//! README's "Deploy" section, run as written: every command of its code
//! blocks (install, reload, backup, restore, upgrade, removal, purge), as
//! root, on a throwaway Debian system: an overlay of this machine's root
//! (writes go to a tmpfs) booted by systemd as PID 1 in mount, PID, network,
//! UTS, IPC and cgroup namespaces of its own. Killing its PID 1 discards it
//! all; the machine is left as it was found.

mod common;

use std::{
    collections::BTreeSet,
    fs::File,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{deb, lab::require_root};

/// The commands of README's Deploy section, one per line of its code blocks;
/// the test takes each by its start and checks at the end that none was left.
struct Readme {
    lines: Vec<String>,
    taken: BTreeSet<usize>,
}

impl Readme {
    fn deploy_section() -> Self {
        let text = include_str!("../README.md");
        let start = text
            .find("\n## Deploy")
            .expect("README has a Deploy section");
        let section = &text[start + 1..];
        let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
        let lines = section
            .lines()
            .filter_map(|l| l.strip_prefix("    "))
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        Readme {
            lines,
            taken: BTreeSet::new(),
        }
    }

    /// The one command starting with `start`.
    fn take(&mut self, start: &str) -> String {
        let found: Vec<usize> = (0..self.lines.len())
            .filter(|&i| self.lines[i].starts_with(start))
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one README Deploy command starts with {start:?}: {:?}",
            self.lines
        );
        self.taken.insert(found[0]);
        self.lines[found[0]].clone()
    }

    fn assert_all_taken(&self) {
        let left: Vec<&String> = (0..self.lines.len())
            .filter(|i| !self.taken.contains(i))
            .map(|i| &self.lines[i])
            .collect();
        assert!(
            left.is_empty(),
            "README commands this test does not run: {left:?}"
        );
    }
}

/// A throwaway system: this machine's root under an overlay whose writes go
/// to a tmpfs, booted by systemd in namespaces of its own, in a cgroup of
/// its own (removed afterwards).
struct System {
    dir: tempfile::TempDir,
    unshare: Child,
    /// systemd, PID 1 inside; its PID here.
    init: u32,
    cgroup: PathBuf,
}

/// Run in the new namespaces: the root, /proc, a read-only /sys with the
/// cgroup below (the cgroup namespace makes this test's cgroup its root), a
/// minimal /dev, empty /run and /tmp; then systemd, up to basic.target
/// only: the services this machine has enabled (DNS servers for benchmarks,
/// a database) stay stopped, as on a fresh system.
const BOOT: &str = r#"
set -eu
d=$1
mount -t tmpfs -o mode=0755 tmpfs "$d"
mkdir "$d/lower" "$d/upper" "$d/work" "$d/root"
mount --bind / "$d/lower"
mount -t overlay overlay -o "lowerdir=$d/lower,upperdir=$d/upper,workdir=$d/work" "$d/root"
r=$d/root
mount -t proc proc "$r/proc"
mount -t sysfs -o ro sysfs "$r/sys"
mount -t cgroup2 cgroup2 "$r/sys/fs/cgroup"
mount -t tmpfs -o mode=0755 tmpfs "$r/dev"
for n in null zero full random urandom tty; do
    touch "$r/dev/$n"
    mount --bind "/dev/$n" "$r/dev/$n"
done
mkdir "$r/dev/pts" "$r/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$r/dev/pts"
ln -s pts/ptmx "$r/dev/ptmx"
mount -t tmpfs -o mode=1777 tmpfs "$r/dev/shm"
mount -t tmpfs -o mode=0755 tmpfs "$r/run"
mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
exec chroot "$r" /usr/bin/env -i container=mgnt-test /lib/systemd/systemd --unit=basic.target
"#;

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl System {
    fn boot() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cgroup = cgroup2_mount().join(format!("mgnt-deploy-{}", std::process::id()));
        std::fs::create_dir(&cgroup).unwrap();
        let console = File::create(dir.path().join("console.log")).unwrap();
        let root = dir.path().join("system");
        std::fs::create_dir(&root).unwrap();
        let unshare = Command::new("sh")
            .arg("-c")
            .arg(
                r#"echo $$ > "$1/cgroup.procs" && exec unshare --mount --uts --ipc --net --pid \
                    --cgroup --fork --propagation private bash -c "$2" boot "$3""#,
            )
            .args(["sh".as_ref(), cgroup.as_os_str(), BOOT.as_ref()])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .unwrap();
        let mut system = System {
            dir,
            init: 0,
            unshare,
            cgroup,
        };
        system.init = system.wait_for_init();
        // Early in the boot systemctl cannot ask yet (no answer, or
        // "offline" before systemd marks itself booted): ask again.
        let deadline = Instant::now() + Duration::from_secs(120);
        let (state, said) = loop {
            let out = system.sh("systemctl is-system-running --wait");
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let booted = state == "running" || state == "degraded";
            if booted || Instant::now() > deadline {
                break (state, String::from_utf8_lossy(&out.stderr).into_owned());
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            state == "running" || state == "degraded",
            "the throwaway system did not boot ({state}{said}): {}\n{}",
            system.ok("systemctl --failed --no-pager || true"),
            system.console()
        );
        // This machine's image forbids maintainer scripts to start services
        // (a policy-rc.d that exits 101, as container images ship); a real
        // system has none, and the install starts mgnt.
        system.ok("rm -f /usr/sbin/policy-rc.d");
        // The operator's "yes" at apt's prompt before a removal.
        system.ok("echo 'APT::Get::Assume-Yes \"true\";' > /etc/apt/apt.conf.d/90yes");
        system
    }

    /// systemd's PID here: `unshare --fork`'s one child.
    fn wait_for_init(&mut self) -> u32 {
        let pid = self.unshare.id();
        let children = format!("/proc/{pid}/task/{pid}/children");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = std::fs::read_to_string(&children).unwrap_or_default();
            if let Some(child) = found.split_whitespace().next() {
                let child: u32 = child.parse().unwrap();
                // It is systemd once bash has exec'd it (after the mounts).
                let comm =
                    std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
                if comm.trim() == "systemd" {
                    return child;
                }
            }
            if let Ok(Some(status)) = self.unshare.try_wait() {
                panic!("booting failed ({status}): {}", self.console());
            }
            assert!(Instant::now() < deadline, "no systemd: {}", self.console());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// Runs `script` as root in the system, in /root, with a clean environment.
    fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .arg(format!("--target={}", self.init))
            .args(["--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup"])
            .args(["--root", "--wd", "/usr/bin/env", "-i"])
            .args([
                &format!("PATH={PATH}"),
                "HOME=/root",
                "LANG=C.UTF-8",
                "DEBIAN_FRONTEND=noninteractive",
                "sh",
                "-ec",
            ])
            .arg(format!("cd /root\n{script}"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// [`System::sh`], which must succeed; its standard output.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "`{script}` failed ({}): {}{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&self.sh("journalctl -u mgnt --no-pager | tail -40").stdout),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A path of the system, seen from here.
    fn path(&self, p: &str) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.init)).join(p.trim_start_matches('/'))
    }

    fn main_pid(&self) -> String {
        self.ok("systemctl show -P MainPID mgnt").trim().to_owned()
    }

    /// The service is up, as mgnt, and answers the geo name on port 53.
    fn assert_serving(&self) {
        assert_eq!(self.ok("systemctl is-active mgnt").trim(), "active");
        let answer = self.ok("dig @127.0.0.1 -p 53 +tries=1 +time=5 mgnt.mkcld.io A");
        assert!(answer.contains("status: NOERROR"), "{answer}");
        assert!(answer.contains("\tIN\tA\t"), "a region's address: {answer}");
        let pid = self.main_pid();
        let status = self.ok(&format!("cat /proc/{pid}/status"));
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
                .unwrap_or_default()
        };
        let uid = self.ok("id -u mgnt");
        assert_eq!(field("Uid:"), uid.trim(), "runs as mgnt");
        assert_eq!(
            field("CapEff:"),
            "0000000000000400",
            "CAP_NET_BIND_SERVICE only"
        );
    }

    /// Puts `deb` in the system as /root/target/debian/`name`, alone there.
    fn put_package(&self, deb: &Path, name: &str) {
        let dir = self.path("/root/target/debian");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(deb, dir.join(name)).unwrap();
    }
}

impl Drop for System {
    fn drop(&mut self) {
        // PID 1 gone, the kernel kills the rest of its namespace; the mounts
        // go with the mount namespace.
        unsafe { libc::kill(self.init as i32, libc::SIGKILL) };
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        let deadline = Instant::now() + Duration::from_secs(30);
        while remove_cgroup(&self.cgroup).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Where the unified cgroup hierarchy is mounted here.
fn cgroup2_mount() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .expect("a cgroup2 hierarchy is mounted (systemd needs one)")
}

/// Removes a cgroup and the ones systemd made below it, deepest first.
fn remove_cgroup(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_cgroup(&entry.path())?;
        }
    }
    std::fs::remove_dir(dir)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
#[ignore = "needs root (namespaces, mounts, a booted systemd); scripts/test runs it as root"]
fn the_deploy_section_runs_as_written_on_a_throwaway_system() {
    require_root(&[
        ("dpkg-deb", "dpkg"),
        ("unshare", "util-linux"),
        ("nsenter", "util-linux"),
        ("dig", "bind9-dnsutils"),
    ]);
    assert!(
        Path::new("/lib/systemd/systemd").exists(),
        "systemd is not installed (Debian package systemd; scripts/test installs it)"
    );
    let mut readme = Readme::deploy_section();
    let debs = tempfile::tempdir().unwrap();
    let first = deb::build(debs.path(), Some("0.1.0-1"));
    let next = deb::build(debs.path(), Some("0.1.1-1"));
    let system = System::boot();

    // Install: the user, its private state, both units, mgnt started.
    system.put_package(&first, "mgnt_0.1.0-1_amd64.deb");
    let install = readme.take("apt install ");
    system.ok(&install);
    system.assert_serving();
    assert_eq!(system.ok("systemctl is-enabled mgnt").trim(), "enabled");
    let agent = system.sh("systemctl is-enabled mgnt-agent");
    assert_eq!(String::from_utf8_lossy(&agent.stdout).trim(), "disabled");
    let user = system.ok("getent passwd mgnt");
    let uid: u32 = user.split(':').nth(2).unwrap().parse().unwrap();
    assert!(uid < 1000, "a system user: {user}");
    assert_eq!(
        system.ok("stat -c '%a %U %G' /var/lib/mgnt").trim(),
        "700 mgnt mgnt"
    );
    let token = system.path("/var/lib/mgnt/admin.token");
    assert_eq!(mode(&token), 0o600);
    let admin_token = read(&token);
    let journal = system.ok("journalctl -u mgnt --no-pager");
    assert!(
        journal.contains("127.0.0.1:53"),
        "logs in the journal: {journal}"
    );

    // Reload: SIGHUP, audited, the same process.
    let pid = system.main_pid();
    system.ok(&readme.take("systemctl reload mgnt"));
    let audit = system.path("/var/lib/mgnt/audit.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    let audited = || std::fs::read_to_string(&audit).unwrap_or_default();
    while !audited().contains("\"reload\"") {
        assert!(
            Instant::now() < deadline,
            "no reload audited: {}",
            audited()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(system.main_pid(), pid);
    system.assert_serving();

    // Backup while it runs, as the service user.
    system.ok(&readme.take("install -d -o mgnt"));
    system.ok(&readme.take("runuser -u mgnt"));
    let today = system.ok("date +%F").trim().to_owned();
    let saved = system.path(&format!(
        "/var/backups/mgnt/{today}/var/lib/mgnt/admin.token"
    ));
    assert_eq!(read(&saved), admin_token);
    assert_eq!(mode(&saved), 0o600);

    // Restore onto the stopped node, its state lost meanwhile.
    system.ok(&readme.take("systemctl stop mgnt"));
    system.ok("rm -rf /var/lib/mgnt/*");
    let copy = readme.take("cp -a ");
    let example = copy
        .split("/var/backups/mgnt/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("the restore names a dated backup");
    system.ok(&copy.replace(example, &today));
    system.ok(&readme.take("systemctl start mgnt"));
    system.assert_serving();
    assert_eq!(read(&token), admin_token, "the restored token is in use");

    // Upgrade: the same install with the next package; edits and state kept,
    // the service restarted on the new binary.
    let config = system.path("/etc/mgnt/mgnt.toml");
    let edited = format!("{}\n# an operator's edit\n", read(&config));
    std::fs::write(&config, &edited).unwrap();
    let pid = system.main_pid();
    system.put_package(&next, "mgnt_0.1.1-1_amd64.deb");
    system.ok(&install);
    assert_eq!(
        system.ok("dpkg-query -W -f '${Version}' mgnt").trim(),
        "0.1.1-1"
    );
    assert_eq!(read(&config), edited, "the edit survives the upgrade");
    assert_eq!(read(&token), admin_token, "the state survives the upgrade");
    assert_ne!(system.main_pid(), pid, "restarted on the new binary");
    system.assert_serving();

    // Removal keeps configuration and state; purge deletes both.
    system.ok(&readme.take("apt remove mgnt"));
    assert!(!system.path("/usr/bin/mgnt").exists());
    let stopped = system.sh("systemctl is-active mgnt");
    assert_ne!(String::from_utf8_lossy(&stopped.stdout).trim(), "active");
    assert_eq!(read(&config), edited);
    assert_eq!(read(&token), admin_token);
    system.ok(&readme.take("apt purge mgnt"));
    assert!(!system.path("/var/lib/mgnt").exists(), "state purged");
    assert!(!system.path("/etc/mgnt").exists(), "configuration purged");

    readme.assert_all_taken();
}
