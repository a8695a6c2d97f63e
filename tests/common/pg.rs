//! A throwaway PostgreSQL cluster for one test: Debian's server binaries,
//! `initdb` in a temporary directory, run as the `postgres` user (initdb
//! refuses root) on a free loopback port, with a `mgnt` role that logs in by
//! password (SCRAM); stopped and removed on drop. Its Unix socket (trusted,
//! in the temporary directory) reaches it from any network namespace.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
};

pub struct Postgres {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
}

/// The newest `/usr/lib/postgresql/N/bin`.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server (Debian package postgresql; scripts/test installs it)")
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|b| b.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb under /usr/lib/postgresql")
}

fn as_postgres(bin: &Path, tool: &str, args: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(bin.join(tool))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub const PASSWORD: &str = "mgnt-test-password";

impl Postgres {
    pub fn start() -> Self {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let data = dir.path().join("data");
        as_postgres(
            &bin,
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = Self { dir, port, bin };
        pg.up();
        pg.psql(
            "postgres",
            &format!("CREATE ROLE mgnt LOGIN PASSWORD '{PASSWORD}'"),
        );
        pg.psql("postgres", "CREATE DATABASE mgnt OWNER mgnt");
        pg
    }

    /// Starts the server (again).
    pub fn up(&self) {
        let dir = self.dir.path().to_str().unwrap();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories={dir} -c fsync=off",
            self.port
        );
        as_postgres(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                &format!("{dir}/data"),
                "-l",
                &format!("{dir}/log"),
                "-w",
                "-o",
                &options,
                "start",
            ],
        );
    }

    /// Stops the server at once (as a crash would).
    pub fn down(&self) {
        let dir = self.dir.path().to_str().unwrap();
        as_postgres(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                &format!("{dir}/data"),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }

    /// Runs SQL in database `db` as the superuser, over the Unix socket.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("psql"))
            .args(["-h", self.dir.path().to_str().unwrap()])
            .args(["-p", &self.port.to_string(), "-d", db, "-tAc", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A `[store]` table for mgnt, over TCP on loopback, its password in
    /// `password_file`.
    pub fn store_toml(&self, password_file: &Path, reread: &str) -> String {
        self.store_toml_at("127.0.0.1", password_file, reread)
    }

    /// A `[store]` table for mgnt over the cluster's Unix socket: a path,
    /// the same in every network namespace (and local, so without TLS).
    pub fn store_toml_socket(&self, password_file: &Path, reread: &str) -> String {
        let dir = self.dir.path().to_str().unwrap().replace('/', "%2F");
        self.store_toml_at(&dir, password_file, reread)
    }

    fn store_toml_at(&self, host: &str, password_file: &Path, reread: &str) -> String {
        std::fs::write(password_file, PASSWORD).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        format!(
            "\n[store]\nurl = \"postgres://mgnt@{host}:{}/mgnt\"\npassword_file = \"{}\"\nreread_interval = \"{reread}\"\n",
            self.port,
            password_file.display()
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let dir = self.dir.path().to_str().unwrap().to_owned();
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &format!("{dir}/data"), "-m", "immediate", "stop"])
            .output();
    }
}
