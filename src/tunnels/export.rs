//! Writes the OpenVPN server's files from the store: one ccd file per tunnel
//! (named by its username) and the server fragment, each replaced atomically.
//! Files of deleted tunnels are removed, so with `ccd-exclusive` a deleted
//! site can no longer connect even if its secret leaked.

use std::{collections::HashSet, io, path::Path};

use super::{
    openvpn,
    pool::Pool,
    store::{Site, Store},
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

/// Exports every site of `store` into `dir` for the server `config_file` describes;
/// the auth hook is this program with that config.
pub fn export_store(
    store: &dyn Store,
    provision: &ProvisionConfig,
    config_file: &Path,
    dir: &Path,
) -> Result<Exported, ExportError> {
    let io_err = |source| ExportError::Io {
        dir: dir.to_owned(),
        source,
    };
    let dir = std::path::absolute(dir).map_err(io_err)?;
    let verify = format!(
        "{} --config {} auth-verify",
        std::env::current_exe().map_err(io_err)?.display(),
        std::path::absolute(config_file).map_err(io_err)?.display()
    );
    let ccd = dir.join("ccd");
    let server = openvpn::Server {
        pool: provision.pool,
        gateway: Pool::new(provision.pool, 0)?.gateway(),
        port: provision.port,
        auth: &provision.auth,
        ccd_dir: &ccd.to_string_lossy(),
        verify_command: &verify,
    };
    export(&dir, &store.sites()?, &server).map_err(io_err)
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
