//! Routers reached through their agents. A tunnel address routes only on
//! the OpenVPN server that holds the tunnel, so the agent beside it opens
//! the router's API and relays the bytes. Each agent keeps a channel to
//! every node (`GET /agent/v1/live`, a WebSocket); a node that needs a
//! router asks the agent holding the router's session to open it, and the
//! agent answers with a pipe of its own (`GET /agent/v1/live/{id}`), checking
//! every sentence the node sends against the allowlist before the router
//! sees it. This module is the node's side: who is connected, and the opens
//! waiting for their pipe.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::DuplexStream,
    sync::{mpsc, oneshot},
};
use uuid::Uuid;

use super::lock;

/// Opens queued for one agent's channel before more are refused.
const CHANNEL_QUEUE: usize = 64;
/// Opens waiting for their pipe at once, over every agent.
pub const MAX_PENDING: usize = 4096;

/// What the node asks of an agent on its channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Open {
    /// Names the pipe the agent opens for it.
    pub open: Uuid,
    pub address: Ipv4Addr,
    pub port: u16,
}

/// What an agent says on its channel when it cannot open a router.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failed {
    pub failed: Uuid,
    pub error: String,
}

struct Pending {
    agent: String,
    reply: oneshot::Sender<Result<DuplexStream, String>>,
}

#[derive(Default)]
pub struct Metrics {
    pub opened: AtomicU64,
    pub failed: AtomicU64,
    /// Opens refused at once: the queue or the pending map full.
    pub refused: AtomicU64,
}

/// The agents connected to this node and the opens waiting on them.
#[derive(Default)]
pub struct Relays {
    agents: Mutex<HashMap<String, (u64, mpsc::Sender<Open>)>>,
    pending: Mutex<HashMap<Uuid, Pending>>,
    next: AtomicU64,
    pub metrics: Metrics,
}

/// An agent's channel, registered until dropped.
pub struct Channel {
    relays: Arc<Relays>,
    agent: String,
    id: u64,
    pub opens: mpsc::Receiver<Open>,
}

impl Drop for Channel {
    fn drop(&mut self) {
        let mut agents = lock(&self.relays.agents);
        // A newer channel of the same agent replaced this one: leave it.
        if agents
            .get(&self.agent)
            .is_some_and(|(id, _)| *id == self.id)
        {
            agents.remove(&self.agent);
        }
    }
}

impl Channel {
    pub fn agent(&self) -> &str {
        &self.agent
    }
}

impl Relays {
    /// Registers `agent`'s channel (replacing an older one of its own).
    pub fn join(self: &Arc<Self>, agent: &str) -> Channel {
        let (to, opens) = mpsc::channel(CHANNEL_QUEUE);
        let id = self.next.fetch_add(1, Relaxed);
        lock(&self.agents).insert(agent.to_owned(), (id, to));
        Channel {
            relays: self.clone(),
            agent: agent.to_owned(),
            id,
            opens,
        }
    }

    /// Whether `agent` has a channel to this node.
    pub fn holds(&self, agent: &str) -> bool {
        lock(&self.agents).contains_key(agent)
    }

    /// Asks `agent` to open `address:port`; the pipe, or why not within `wait`.
    pub async fn open(
        &self,
        agent: &str,
        address: Ipv4Addr,
        port: u16,
        wait: Duration,
    ) -> Result<DuplexStream, String> {
        let to = lock(&self.agents).get(agent).map(|(_, to)| to.clone());
        let Some(to) = to else {
            return Err(format!("the agent `{agent}` has no channel to this node"));
        };
        let id = Uuid::new_v4();
        let (reply, answer) = oneshot::channel();
        {
            let mut pending = lock(&self.pending);
            if pending.len() >= MAX_PENDING {
                self.metrics.refused.fetch_add(1, Relaxed);
                return Err("too many router connections are being opened at once".into());
            }
            let agent = agent.to_owned();
            pending.insert(id, Pending { agent, reply });
        }
        let open = Open {
            open: id,
            address,
            port,
        };
        if to.try_send(open).is_err() {
            lock(&self.pending).remove(&id);
            self.metrics.refused.fetch_add(1, Relaxed);
            return Err(format!("the agent `{agent}`'s channel is full or closing"));
        }
        let got = tokio::time::timeout(wait, answer).await;
        lock(&self.pending).remove(&id);
        let result = match got {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(format!("the agent `{agent}` went away")),
            Err(_) => Err(format!(
                "the agent `{agent}` did not open {address}:{port} within {wait:?}"
            )),
        };
        let counter = match &result {
            Ok(_) => &self.metrics.opened,
            Err(_) => &self.metrics.failed,
        };
        counter.fetch_add(1, Relaxed);
        result
    }

    /// Hands the pipe `agent` opened for `id` to the open waiting for it;
    /// false (and the pipe dropped) when none waits, or it was another's.
    pub fn attach(&self, agent: &str, id: Uuid, pipe: DuplexStream) -> bool {
        let Some(pending) = self.take(agent, id) else {
            return false;
        };
        pending.reply.send(Ok(pipe)).is_ok()
    }

    /// The agent could not open `id`'s router.
    pub fn failed(&self, agent: &str, failed: Failed) {
        if let Some(pending) = self.take(agent, failed.failed) {
            let _ = pending.reply.send(Err(failed.error));
        }
    }

    /// The open `id`, if `agent` is the one it was asked of (an agent names
    /// only its own pipes).
    fn take(&self, agent: &str, id: Uuid) -> Option<Pending> {
        let mut pending = lock(&self.pending);
        if pending.get(&id).is_some_and(|p| p.agent == agent) {
            pending.remove(&id)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An open of `addr` asked of `ovpn-1`, running.
    fn opening(
        relays: &Arc<Relays>,
        addr: Ipv4Addr,
    ) -> tokio::task::JoinHandle<Result<DuplexStream, String>> {
        let relays = relays.clone();
        tokio::spawn(async move {
            relays
                .open("ovpn-1", addr, 8728, Duration::from_secs(5))
                .await
        })
    }

    #[tokio::test]
    async fn an_open_reaches_its_agent_and_only_that_agent_answers_it() {
        let relays = Arc::new(Relays::default());
        let mut channel = relays.join("ovpn-1");
        assert!(relays.holds("ovpn-1") && !relays.holds("ovpn-2"));
        let addr: Ipv4Addr = "100.64.0.7".parse().unwrap();
        let opening = opening(&relays, addr);
        let open = channel.opens.recv().await.unwrap();
        assert_eq!((open.address, open.port), (addr, 8728));
        let (near, _far) = tokio::io::duplex(64);
        let (other, _) = tokio::io::duplex(64);
        assert!(
            !relays.attach("ovpn-2", open.open, other),
            "another agent's pipe"
        );
        assert!(relays.attach("ovpn-1", open.open, near));
        assert!(opening.await.unwrap().is_ok());
        let (late, _) = tokio::io::duplex(64);
        assert!(!relays.attach("ovpn-1", open.open, late), "answered once");
        assert_eq!(relays.metrics.opened.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn a_failure_or_silence_is_the_answer() {
        let relays = Arc::new(Relays::default());
        let mut channel = relays.join("ovpn-1");
        let addr: Ipv4Addr = "100.64.0.7".parse().unwrap();
        let opening = opening(&relays, addr);
        let open = channel.opens.recv().await.unwrap();
        let error = "connection refused".to_owned();
        relays.failed(
            "ovpn-1",
            Failed {
                failed: open.open,
                error,
            },
        );
        assert_eq!(opening.await.unwrap().unwrap_err(), "connection refused");
        let silent = relays
            .open("ovpn-1", addr, 8728, Duration::from_millis(10))
            .await;
        assert!(silent.unwrap_err().contains("did not open"));
        assert!(
            relays
                .open("ovpn-9", addr, 8728, Duration::from_secs(1))
                .await
                .is_err()
        );
        assert_eq!(relays.metrics.failed.load(Relaxed), 2);
    }

    #[test]
    fn a_newer_channel_replaces_an_older_one_which_leaves_it_alone() {
        let relays = Arc::new(Relays::default());
        let old = relays.join("ovpn-1");
        let new = relays.join("ovpn-1");
        drop(old);
        assert!(relays.holds("ovpn-1"));
        drop(new);
        assert!(!relays.holds("ovpn-1"));
    }
}
