//! Writes the OpenVPN server's files from the store: one ccd file per tunnel
//! (named by its username) and the server fragment, each replaced atomically.
//! Files of deleted tunnels are removed, so with `ccd-exclusive` a deleted
//! site can no longer connect even if its secret leaked.
//!
//! These files serve an OpenVPN server on the machine of `mgnt serve` (with
//! the `auth-verify` hook); servers elsewhere are fed by their agents. In
//! `mgnt serve` one task, the [`Exporter`], writes them: the whole directory
//! at start, then one site per change (with `[store]`, changes made through
//! other nodes too, as they are announced). For each change it reads that site's
//! current row, so changes reported out of order still end in the state the
//! store holds, and nothing it writes can be undone by an older snapshot.

use std::{
    collections::HashSet,
    io,
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};
use uuid::Uuid;

use super::{
    openvpn,
    pool::Pool,
    store::{Site, Store, StoreError},
    username::tunnel_of,
};
use crate::{config::ProvisionConfig, durable::write_atomic};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{dir}: {source}")]
    Io {
        dir: std::path::PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] super::store::StoreError),
    #[error(transparent)]
    Pool(#[from] super::pool::PoolError),
}

/// Where the files go and what the server fragment says.
struct Target {
    dir: PathBuf,
    pool: ipnet::Ipv4Net,
    gateway: std::net::Ipv4Addr,
    port: u16,
    auth: String,
    verify: String,
}

impl Target {
    fn new(
        provision: &ProvisionConfig,
        config_file: &Path,
        dir: &Path,
    ) -> Result<Self, ExportError> {
        let io_err = |source| ExportError::Io {
            dir: dir.to_owned(),
            source,
        };
        let verify = format!(
            "{} --config {} auth-verify",
            std::env::current_exe().map_err(io_err)?.display(),
            std::path::absolute(config_file).map_err(io_err)?.display()
        );
        Ok(Self {
            dir: std::path::absolute(dir).map_err(io_err)?,
            pool: provision.pool,
            gateway: Pool::new(provision.pool, 0)?.gateway(),
            port: provision.port,
            auth: provision.auth.clone(),
            verify,
        })
    }

    fn io(&self, source: io::Error) -> ExportError {
        ExportError::Io {
            dir: self.dir.clone(),
            source,
        }
    }

    /// Everything: the fragment, a file per site, stale files removed.
    fn all(&self, store: &dyn Store) -> Result<Exported, ExportError> {
        let ccd = self.dir.join("ccd");
        let server = openvpn::Server {
            pool: self.pool,
            gateway: self.gateway,
            port: self.port,
            auth: &self.auth,
            ccd_dir: &ccd.to_string_lossy(),
            verify_command: &self.verify,
        };
        export(&self.dir, &store.sites()?, &server).map_err(|e| self.io(e))
    }

    /// One site's file, as the store has it now (gone if the site is).
    fn site(&self, store: &dyn Store, uuid: Uuid) -> Result<(), ExportError> {
        let file = self.dir.join("ccd").join(super::username::username(&uuid));
        match store.get(uuid)? {
            Some(site) => write_atomic(&file, openvpn::ccd(site.address, self.pool).as_bytes()),
            None => match std::fs::remove_file(&file) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        }
        .map_err(|e| self.io(e))
    }
}

/// Exports every site of `store` into `dir` for the server `config_file` describes;
/// the auth hook is this program with that config.
pub fn export_store(
    store: &dyn Store,
    provision: &ProvisionConfig,
    config_file: &Path,
    dir: &Path,
) -> Result<Exported, ExportError> {
    Target::new(provision, config_file, dir)?.all(store)
}

/// What the exporter is asked to bring up to date.
struct Change {
    site: Uuid,
    done: oneshot::Sender<()>,
}

/// The one writer of the OpenVPN files in `mgnt serve`.
#[derive(Clone)]
pub struct Exporter {
    changes: mpsc::Sender<Change>,
}

impl Exporter {
    /// Writes everything once, then follows changes.
    pub async fn start(
        store: Arc<dyn Store>,
        provision: &ProvisionConfig,
        config_file: &Path,
        dir: &Path,
    ) -> Result<Self, ExportError> {
        let target = Arc::new(Target::new(provision, config_file, dir)?);
        // Changes made through other nodes (`[store]`): those after this
        // number, taken before the full export so none falls between.
        let announced = match store.changes() {
            Some(rx) => {
                let s = store.clone();
                let seen = tokio::task::spawn_blocking(move || s.credentials(u64::MAX))
                    .await
                    .map_err(|e| target.io(io::Error::other(e)))?;
                match seen {
                    Ok(c) => Some((rx, c.seq)),
                    // Away at start: every site is written once it answers.
                    Err(StoreError::Unavailable(_)) => Some((rx, 0)),
                    Err(e) => return Err(e.into()),
                }
            }
            None => None,
        };
        let (t, s) = (target.clone(), store.clone());
        let all = tokio::task::spawn_blocking(move || t.all(s.as_ref()))
            .await
            .map_err(|e| target.io(io::Error::other(e)))?;
        match all {
            Ok(all) => {
                info!(dir = %target.dir.display(), tunnels = all.tunnels, removed = all.removed, "exported the OpenVPN files");
            }
            Err(ExportError::Store(StoreError::Unavailable(error))) if announced.is_some() => {
                warn!(%error, "the OpenVPN files are written once the database answers");
            }
            Err(e) => return Err(e),
        }
        let (changes, queue) = mpsc::channel(1024);
        tokio::spawn(follow(target, store.clone(), queue));
        let exporter = Self { changes };
        if let Some((rx, seen)) = announced {
            tokio::spawn(exporter.clone().follow_announced(store, rx, seen));
        }
        Ok(exporter)
    }

    /// Queues every site whose credentials changed after `seen` — created,
    /// renumbered or deleted through any node — as each change is announced.
    async fn follow_announced(
        self,
        store: Arc<dyn Store>,
        mut announced: tokio::sync::watch::Receiver<u64>,
        mut seen: u64,
    ) {
        let mut failing = false;
        loop {
            if announced.wait_for(|&seq| seq > seen).await.is_err() {
                return;
            }
            let s = store.clone();
            let changed = match tokio::task::spawn_blocking(move || s.credentials(seen)).await {
                Ok(Ok(changed)) => changed,
                Ok(Err(e)) => {
                    // Said once per outage, not at every try.
                    if !std::mem::replace(&mut failing, true) {
                        error!(error = %e, "reading changed sites for the OpenVPN files failed; trying again every second");
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
                Err(_) => return,
            };
            if std::mem::take(&mut failing) {
                info!("the OpenVPN files follow the changed sites again");
            }
            let usernames = changed.sites.iter().map(|c| &c.username);
            for site in usernames
                .chain(&changed.deleted)
                .filter_map(|u| tunnel_of(u).ok())
            {
                let (done, _) = oneshot::channel();
                if self.changes.send(Change { site, done }).await.is_err() {
                    return;
                }
            }
            seen = changed.seq;
        }
    }

    /// Brings `site`'s file up to date; returns once it is written.
    pub async fn site(&self, site: Uuid) {
        let (done, written) = oneshot::channel();
        if self.changes.send(Change { site, done }).await.is_ok() {
            let _ = written.await;
        }
    }
}

/// Applies changes in batches: each site once per batch, as the store has it.
async fn follow(target: Arc<Target>, store: Arc<dyn Store>, mut queue: mpsc::Receiver<Change>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = queue.try_recv() {
            batch.push(more);
        }
        let mut sites: Vec<Uuid> = batch.iter().map(|c| c.site).collect();
        sites.sort_unstable();
        sites.dedup();
        let (t, s) = (target.clone(), store.clone());
        let written = tokio::task::spawn_blocking(move || {
            sites.iter().try_for_each(|&site| t.site(s.as_ref(), site))
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => error!(error = %e, "exporting the OpenVPN files failed"),
            Err(e) => error!(error = %e, "exporting the OpenVPN files failed"),
        }
        batch.into_iter().for_each(|c| {
            let _ = c.done.send(());
        });
    }
}

/// What an export wrote.
#[derive(Debug, PartialEq, Eq)]
pub struct Exported {
    pub tunnels: usize,
    pub removed: usize,
}

pub fn export(dir: &Path, sites: &[Site], server: &openvpn::Server) -> io::Result<Exported> {
    let ccd = dir.join("ccd");
    std::fs::create_dir_all(&ccd)?;
    let mut keep = HashSet::with_capacity(sites.len());
    for site in sites {
        write_atomic(
            &ccd.join(&site.username),
            openvpn::ccd(site.address, server.pool).as_bytes(),
        )?;
        keep.insert(site.username.clone());
    }
    let mut removed = 0;
    for entry in std::fs::read_dir(&ccd)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name) && !name.starts_with('.') {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    write_atomic(&dir.join("server.conf"), server.fragment().as_bytes())?;
    Ok(Exported {
        tunnels: sites.len(),
        removed,
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use uuid::Uuid;

    use super::*;
    use crate::tunnels::username::username;

    fn site(n: u8) -> Site {
        let uuid = Uuid::new_v4();
        Site {
            uuid,
            username: username(&uuid),
            address: Ipv4Addr::new(100, 64, 0, n),
            created: 0,
        }
    }

    #[test]
    fn writes_one_file_per_tunnel_and_drops_stale_ones() {
        let dir = tempfile::tempdir().unwrap();
        let server = openvpn::Server {
            pool: "100.64.0.0/10".parse().unwrap(),
            gateway: Ipv4Addr::new(100, 64, 0, 1),
            port: 8443,
            auth: "sha1",
            ccd_dir: "/x/ccd",
            verify_command: "mgnt auth-verify",
        };
        let (a, b) = (site(2), site(3));
        assert_eq!(
            export(dir.path(), &[a.clone(), b.clone()], &server)
                .unwrap()
                .tunnels,
            2
        );
        let text = std::fs::read_to_string(dir.path().join("ccd").join(&a.username)).unwrap();
        assert_eq!(text, "ifconfig-push 100.64.0.2 255.192.0.0\n");
        let again = export(dir.path(), &[b], &server).unwrap();
        assert_eq!(
            again,
            Exported {
                tunnels: 1,
                removed: 1
            }
        );
        assert!(!dir.path().join("ccd").join(&a.username).exists());
        assert!(dir.path().join("server.conf").exists());
    }
}
