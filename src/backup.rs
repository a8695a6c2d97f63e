//! `mgnt backup DIR`: one node's state and secrets copied while it runs.
//!
//! The SQLite stores are copied with `VACUUM INTO` on a read-only
//! connection, a consistent snapshot taken beside the running writer (the
//! write-ahead log lets both go on); every other file is small and written
//! whole by the server (temp file and rename, or appended lines), so a plain
//! read is consistent. Each file lands at its own absolute path under DIR,
//! 0600 in 0700 directories (`DIR/var/lib/mgnt/…`), so a directory's copy
//! is put back with `cp -a DIR/var/lib/mgnt/. /var/lib/mgnt/`. With
//! `[store]` the shared state is in PostgreSQL (`pg_dump`); the node's own
//! secret files are still copied.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::config::Config;

/// How a file is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A SQLite database, copied as a consistent snapshot.
    Sqlite,
    /// A small file the server replaces whole or appends to.
    File,
}

/// One file to copy: where it is, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub from: PathBuf,
    pub kind: Kind,
}

/// What a backup did with each file of the plan.
#[derive(Debug, Default)]
pub struct Report {
    pub copied: Vec<PathBuf>,
    /// Named by the config but not there (not made yet, or not in use).
    pub missing: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{}: not empty; a backup goes into a new or empty directory", .0.display())]
    NotEmpty(PathBuf),
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", file.display())]
    Sqlite {
        file: PathBuf,
        source: rusqlite::Error,
    },
}

/// The files that make up a node, from its config: the config itself, its
/// secrets and tokens, health and audit, and the SQLite stores (not with
/// `[store]`, where the database holds them).
pub fn plan(config: &Config) -> Vec<Item> {
    let file = |p: &Path| Item {
        from: p.to_owned(),
        kind: Kind::File,
    };
    let sqlite = |p: PathBuf| Item {
        from: p,
        kind: Kind::Sqlite,
    };
    let mut items = vec![file(&config.file)];
    let dns = &config.dns;
    if dns.cookies {
        items.push(file(&dns.cookie_secret_file));
        items.extend(dns.cookie_previous_secret_file.as_deref().map(file));
    }
    items.push(file(&config.api.token_file));
    items.extend(config.api.agent_token_file.as_deref().map(file));
    items.push(file(&config.api.audit_log));
    items.push(file(&config.health.state_file));
    if let Some(p) = &config.provision {
        items.push(file(&p.secret_key_file));
        items.push(file(&p.hook_token_file));
        if config.store.is_none() {
            items.push(sqlite(p.data_dir.join("tunnels.db")));
        }
    }
    if let (Some(v), None) = (&config.vpnlog, &config.store) {
        items.push(sqlite(v.data_dir.join("vpnlog.db")));
    }
    let mut seen = std::collections::HashSet::new();
    items.retain(|i| seen.insert(i.from.clone()));
    items
}

/// Copies every file of `plan` under `into` at its absolute path.
pub fn run(plan: &[Item], into: &Path) -> Result<Report, BackupError> {
    let io = |file: &Path| {
        let file = file.to_owned();
        move |source| BackupError::Io { file, source }
    };
    if std::fs::read_dir(into).is_ok_and(|mut d| d.next().is_some()) {
        return Err(BackupError::NotEmpty(into.to_owned()));
    }
    crate::durable::private_dir(into).map_err(io(into))?;
    let mut report = Report::default();
    for item in plan {
        let from = std::path::absolute(&item.from).map_err(io(&item.from))?;
        if !from.exists() {
            report.missing.push(from);
            continue;
        }
        let to = into.join(from.strip_prefix("/").unwrap_or(&from));
        match item.kind {
            Kind::File => {
                let bytes = std::fs::read(&from).map_err(io(&from))?;
                crate::durable::create_private(&to, &bytes).map_err(io(&to))?;
            }
            Kind::Sqlite => snapshot(&from, &to)?,
        }
        report.copied.push(to);
    }
    Ok(report)
}

/// A consistent copy of a live SQLite database (`VACUUM INTO`), mode 0600.
fn snapshot(from: &Path, to: &Path) -> Result<(), BackupError> {
    let sqlite = |source| BackupError::Sqlite {
        file: from.to_owned(),
        source,
    };
    // `VACUUM INTO` fills an empty file; creating it first sets its mode.
    crate::durable::create_private(to, b"").map_err(|source| BackupError::Io {
        file: to.to_owned(),
        source,
    })?;
    let db = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sqlite)?;
    db.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sqlite)?;
    let target = to.to_string_lossy();
    db.execute("VACUUM INTO ?1", [target.as_ref()])
        .map_err(sqlite)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config in a temporary directory (kept as long as the config).
    fn config(extra: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[dns]\nlisten = [\"127.0.0.1:0\"]\nzones_dir = \"zones\"\n\
             [geoip]\ndatabase = \"g.mmdb\"\ncentroids = \"c.csv\"\n\
             [[geo]]\nname = \"a.example\"\nregions = [\"r1\"]\n\
             [regions.r1]\nhost = \"r1.example\"\nlocation = [0.0, 0.0]\n{extra}"
        );
        let file = dir.path().join("mgnt.toml");
        std::fs::write(&file, text).unwrap();
        let c = Config::load(&file).unwrap();
        (dir, c)
    }

    fn names(items: &[Item]) -> Vec<(String, Kind)> {
        items
            .iter()
            .map(|i| {
                let name = i.from.file_name().unwrap().to_string_lossy().into_owned();
                (name, i.kind)
            })
            .collect()
    }

    #[test]
    fn a_node_is_its_config_secrets_records_and_stores() {
        let (_dir, c) =
            config("[provision]\npool = \"100.64.0.0/24\"\n[vpnlog]\nlisten = \"127.0.0.1:0\"\n");
        let got = names(&plan(&c));
        let file = |n: &str| (n.to_owned(), Kind::File);
        let db = |n: &str| (n.to_owned(), Kind::Sqlite);
        assert_eq!(
            got,
            [
                file("mgnt.toml"),
                file("cookie.secret"),
                file("admin.token"),
                file("audit.log"),
                file("health.json"),
                file("secret.key"),
                file("hook.token"),
                db("tunnels.db"),
                db("vpnlog.db"),
            ]
        );
    }

    #[test]
    fn without_provisioning_or_cookies_there_is_less_to_keep() {
        let (_dir, mut c) = config("");
        let got = names(&plan(&c));
        assert!(got.iter().any(|(n, _)| n == "cookie.secret"));
        c.dns.cookies = false;
        let got = names(&plan(&c));
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got.iter().all(|(_, k)| *k == Kind::File));
    }

    #[test]
    fn a_backup_goes_into_an_empty_directory_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old"), b"x").unwrap();
        assert!(matches!(
            run(&[], dir.path()),
            Err(BackupError::NotEmpty(_))
        ));
    }
}
