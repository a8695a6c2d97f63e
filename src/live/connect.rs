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
    hub::{Claim, Connector, Elsewhere, RENEW_EVERY},
    relay::Relays,
};
use crate::{
    clock,
    config::DEFAULT_LIVE_API_PORT,
    state::Reader,
    tunnels::{
        routeros::job::LIVE_USER,
        store::{
            Store,
            leases::{Holder, Lessee},
        },
    },
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
    /// The running config: `[live] api_port`, and `[node]` for the claim.
    pub state: Reader,
    pub timeouts: Timeouts,
}

/// How long a claim on a router's connection lasts unless renewed.
const LEASE_TTL: u64 = 3 * RENEW_EVERY.as_secs();

impl Reach {
    fn port(&self) -> u16 {
        let snapshot = self.state.load();
        (snapshot.data.config.live.as_ref()).map_or(DEFAULT_LIVE_API_PORT, |l| l.api_port)
    }

    /// This node's name and API URL when it shares routers with other
    /// nodes (`[store]` and `[node] api_url`); without them it claims none.
    fn lessee(&self) -> Option<(String, String)> {
        let snapshot = self.state.load();
        let config = &snapshot.data.config;
        config.store.as_ref()?;
        let url = config.node.api_url.clone()?;
        Some((config.node.name.clone(), url))
    }
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
            self.port(),
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

    fn claim(&self, site: Uuid) -> BoxFuture<'static, Claim> {
        let (store, lessee) = (self.store.clone(), self.lessee());
        Box::pin(async move {
            let Some((node, api_url)) = lessee else {
                return Claim::Ours;
            };
            let taken = tokio::task::spawn_blocking(move || {
                let now = clock::now();
                let who = Lessee {
                    node: &node,
                    api_url: &api_url,
                };
                store.take_live_lease(site, who, now, now + LEASE_TTL)
            })
            .await;
            match taken {
                Ok(Ok(Holder::Us)) => Claim::Ours,
                Ok(Ok(Holder::Other { node, api_url })) => {
                    Claim::Elsewhere(Elsewhere { node, api_url })
                }
                Ok(Err(e)) => Claim::Unknown(e.to_string()),
                Err(e) => Claim::Unknown(e.to_string()),
            }
        })
    }

    fn release(&self, site: Uuid) {
        let (store, lessee) = (self.store.clone(), self.lessee());
        if let Some((node, _)) = lessee {
            // Best effort: an unreleased lease expires by itself.
            tokio::task::spawn_blocking(move || store.release_live_lease(site, &node));
        }
    }

    fn elsewhere(&self, site: Uuid) -> BoxFuture<'static, Option<Elsewhere>> {
        let (store, lessee) = (self.store.clone(), self.lessee());
        Box::pin(async move {
            let (node, _) = lessee?;
            let holder = tokio::task::spawn_blocking(move || {
                store.live_lease_holder(site, &node, clock::now())
            })
            .await;
            match holder {
                Ok(Ok(Holder::Other { node, api_url })) => Some(Elsewhere { node, api_url }),
                _ => None,
            }
        })
    }
}
