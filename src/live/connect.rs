//! Opening a router's API as the live-view user: where the router is (its
//! tunnel address) and which passwords it may hold (its last applied job's,
//! then its open job's — the two-until-applied rule of tunnel secrets).

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::{
    api::{Client, ClientError, Timeouts},
    hub::Connector,
    relay::Relays,
};
use crate::{
    clock,
    tunnels::{routeros::job::LIVE_USER, store::Store},
    vpnlog::store::LogStore,
};

/// Logs in as [`LIVE_USER`] with each password in turn, on a connection
/// `dial` opens for each try (the router closes a connection after a refused
/// login). `place` names the router in errors.
pub async fn login_any<F, D>(dial: D, place: &str, passwords: &[String]) -> Result<Client, String>
where
    D: Fn() -> F,
    F: Future<Output = Result<Client, String>>,
{
    for password in passwords {
        let client = dial()
            .await
            .map_err(|e| format!("the router's API at {place} does not answer: {e}"))?;
        match client.login(LIVE_USER, password).await {
            Ok(()) => return Ok(client),
            Err(ClientError::LoginRefused(_)) => continue,
            Err(e) => return Err(format!("logging in to the router's API at {place}: {e}")),
        }
    }
    Err(format!(
        "the router at {place} refuses the live-view user `{LIVE_USER}`: its tunnel was made by a \
         job older than the live view, or changed since; recreate the tunnel (POST \
         /v1/sites/{{uuid}}/recreate) and let the router apply the job"
    ))
}

/// How long an agent has to open a router's API for us.
const RELAY_WAIT: Duration = Duration::from_secs(15);

/// Reaches a router through the agent holding its tunnel's session when that
/// agent has a channel to this node, else straight at its tunnel address
/// (a single machine: the OpenVPN server's tunnels route here).
pub struct Reach {
    pub store: Arc<dyn Store>,
    pub logs: Option<Arc<dyn LogStore>>,
    pub relays: Arc<Relays>,
    /// `[live] api_port`, as the running config has it.
    pub port: Arc<dyn Fn() -> u16 + Send + Sync>,
    pub timeouts: Timeouts,
}

/// What opening a router needs from the stores.
struct Target {
    address: Ipv4Addr,
    passwords: Vec<String>,
    /// The agent (server) whose session holds the tunnel, if one is open.
    holder: Option<String>,
}

impl Reach {
    fn target(&self, site: Uuid) -> BoxFuture<'static, Result<Target, String>> {
        let (store, logs) = (self.store.clone(), self.logs.clone());
        Box::pin(async move {
            let looked_up = tokio::task::spawn_blocking(move || {
                let Some(found) = store.get(site).map_err(|e| e.to_string())? else {
                    return Ok(None);
                };
                let jobs = store
                    .live_jobs(site, clock::now())
                    .map_err(|e| e.to_string())?;
                let passwords = jobs.iter().map(|j| store.live_password(site, *j)).collect();
                let holder = match logs {
                    Some(logs) => (logs.sessions(site, 1).map_err(|e| e.to_string())?)
                        .into_iter()
                        .find(|s| s.end.is_none())
                        .and_then(|s| s.host),
                    None => None,
                };
                Ok::<_, String>(Some(Target {
                    address: found.address,
                    passwords,
                    holder,
                }))
            })
            .await
            .map_err(|e| e.to_string())??;
            looked_up.ok_or_else(|| format!("no site {site}"))
        })
    }
}

impl Connector for Reach {
    fn open(&self, site: Uuid) -> BoxFuture<'static, Result<Client, String>> {
        let (target, relays, port, timeouts) = (
            self.target(site),
            self.relays.clone(),
            (self.port)(),
            self.timeouts,
        );
        Box::pin(async move {
            let Target {
                address,
                passwords,
                holder,
            } = target.await?;
            let addr = SocketAddr::new(IpAddr::V4(address), port);
            match holder.filter(|agent| relays.holds(agent)) {
                Some(agent) => {
                    let place = format!("{addr} (through the agent `{agent}`)");
                    let dial = || {
                        let (relays, agent) = (relays.clone(), agent.clone());
                        async move {
                            let pipe = relays.open(&agent, address, port, RELAY_WAIT).await?;
                            Ok(Client::new(pipe, timeouts))
                        }
                    };
                    login_any(dial, &place, &passwords).await
                }
                None => {
                    let dial = || async move {
                        (Client::connect(addr, timeouts).await).map_err(|e| e.to_string())
                    };
                    login_any(dial, &addr.to_string(), &passwords).await
                }
            }
        })
    }
}
