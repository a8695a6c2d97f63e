//! Opening a router's API as the live-view user: where the router is (its
//! tunnel address) and which passwords it may hold (its last applied job's,
//! then its open job's — the two-until-applied rule of tunnel secrets).

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::{
    api::{Client, ClientError, Timeouts},
    hub::Connector,
};
use crate::{
    clock,
    tunnels::{routeros::job::LIVE_USER, store::Store},
};

/// Logs in as [`LIVE_USER`] with each password in turn (the router closes a
/// connection after a refused login, so each try has its own).
pub async fn login_any(
    addr: SocketAddr,
    passwords: &[String],
    timeouts: Timeouts,
) -> Result<Client, String> {
    for password in passwords {
        let client = Client::connect(addr, timeouts)
            .await
            .map_err(|e| format!("the router's API at {addr} does not answer: {e}"))?;
        match client.login(LIVE_USER, password).await {
            Ok(()) => return Ok(client),
            Err(ClientError::LoginRefused(_)) => continue,
            Err(e) => return Err(format!("logging in to the router's API at {addr}: {e}")),
        }
    }
    Err(format!(
        "the router at {addr} refuses the live-view user `{LIVE_USER}`: its tunnel was made by a \
         job older than the live view, or changed since; recreate the tunnel (POST \
         /v1/sites/{{uuid}}/recreate) and let the router apply the job"
    ))
}

/// Straight to the router's tunnel address: on the machine whose OpenVPN
/// server holds the tunnel (a single machine, where the agent runs beside
/// `mgnt serve`).
pub struct Direct {
    pub store: Arc<dyn Store>,
    /// `[live] api_port`, as the running config has it.
    pub port: Arc<dyn Fn() -> u16 + Send + Sync>,
    pub timeouts: Timeouts,
}

impl Connector for Direct {
    fn open(&self, site: Uuid) -> BoxFuture<'static, Result<Client, String>> {
        let (store, port, timeouts) = (self.store.clone(), (self.port)(), self.timeouts);
        Box::pin(async move {
            let looked_up = tokio::task::spawn_blocking(move || {
                let found = store.get(site)?;
                let jobs = store.live_jobs(site, clock::now())?;
                let passwords: Vec<String> =
                    jobs.iter().map(|j| store.live_password(site, *j)).collect();
                Ok::<_, crate::tunnels::store::StoreError>(found.map(|s| (s, passwords)))
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            let Some((found, passwords)) = looked_up else {
                return Err(format!("no site {site}"));
            };
            let addr = SocketAddr::new(IpAddr::V4(found.address), port);
            login_any(addr, &passwords, timeouts).await
        })
    }
}
