//! The agent's connection to OpenVPN's management interface: every login
//! (`>CLIENT:CONNECT`, `>CLIENT:REAUTH`) is answered from the credential
//! cache, and a tunnel that leaves the cache (its site was deleted) has its
//! sessions killed. A connection that fails, ends or stops answering for
//! `management_timeout` is made again ([`crate::management::keep`]); OpenVPN
//! admits nobody meanwhile.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::watch,
};
use tracing::{debug, info};
use uuid::Uuid;

use super::{
    AgentConfig,
    cache::{Cache, Decision},
    outbox::Outbox,
    wire::{self, Event, Kind, Reader},
};
use crate::{
    clock::now,
    management::{Lines, ManagementError, Reconnects, Watchdog},
    tunnels::username::username,
    vpnlog::report::Report,
};

/// How often OpenVPN reports each client's byte counts.
const BYTECOUNT_EVERY: Duration = Duration::from_secs(30);

/// What the agent counted.
#[derive(Default)]
pub struct Counters {
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
    pub killed: AtomicU64,
    /// Sessions OpenVPN has open now (as far as this connection knows).
    pub live: AtomicU64,
    /// 1 while a management connection is open and has answered.
    pub management_up: AtomicU64,
    pub reconnects: Reconnects,
}

/// Runs for as long as the agent does.
pub async fn run(
    config: Arc<AgentConfig>,
    cache: watch::Receiver<Arc<Cache>>,
    counters: Arc<Counters>,
    outbox: Outbox,
    targets: watch::Sender<Vec<(String, IpAddr)>>,
) {
    let label = "agent (nobody is admitted until it is back)";
    crate::management::keep(config.management, label, &counters.reconnects, || async {
        let ended = serve(&config, cache.clone(), &counters, &outbox, &targets).await;
        // What the next connection finds is counted afresh.
        counters.management_up.store(0, Relaxed);
        counters.live.store(0, Relaxed);
        ended
    })
    .await;
}

/// The tunnel a login names: its username, or its UUID.
fn tunnel(event: &Event) -> String {
    let name = event
        .get("username")
        .or_else(|| event.get("common_name"))
        .unwrap_or_default();
    Uuid::parse_str(name).map_or_else(|_| name.to_owned(), |u| username(&u))
}

/// The client's address as OpenVPN gives it (`trusted_` once established,
/// `untrusted_` while logging in).
fn peer(event: &Event, prefix: &str) -> Option<SocketAddr> {
    let ip: IpAddr = event
        .get(&format!("{prefix}_ip"))
        .or_else(|| event.get(&format!("{prefix}_ip6")))?
        .parse()
        .ok()?;
    let port = event.get(&format!("{prefix}_port"))?.parse().ok()?;
    Some(SocketAddr::new(ip, port))
}

/// A live session: its tunnel, client address and tunnel address.
struct Live {
    user: String,
    peer: Option<SocketAddr>,
    address: Option<IpAddr>,
}

/// What the session task keeps and reports to.
struct State<'a> {
    sessions: HashMap<u64, Live>,
    counters: &'a Counters,
    outbox: &'a Outbox,
    /// The live tunnels, for the pinger (published when they change).
    targets: &'a watch::Sender<Vec<(String, IpAddr)>>,
}

impl State<'_> {
    /// The answer to a login, reported.
    fn login(&mut self, event: &Event, cache: &Cache) -> String {
        let Some(kid) = event.kid else {
            return String::new();
        };
        let user = tunnel(event);
        let password = event.get("password").unwrap_or_default();
        let time = now();
        let (reply, pushed) = match cache.decide(&user, password, time) {
            Decision::Allow { address, netmask } => {
                self.counters.allowed.fetch_add(1, Relaxed);
                (wire::allow(event.cid, kid, address, netmask), Some(address))
            }
            Decision::Deny(reason) => {
                self.counters.denied.fetch_add(1, Relaxed);
                debug!(user = %user, cid = event.cid, reason, "login refused");
                (wire::deny(event.cid, kid, reason), None)
            }
        };
        let peer = peer(event, "untrusted");
        if let Some(address) = pushed {
            let live = Live {
                user: user.clone(),
                peer,
                address: Some(address.into()),
            };
            self.sessions.insert(event.cid, live);
            self.publish();
        }
        self.outbox.report(Report::Login {
            time,
            user,
            peer,
            ok: pushed.is_some(),
        });
        reply
    }

    /// What to write back for one notification.
    fn handle(&mut self, event: Event, cache: &Cache) -> String {
        match event.kind {
            Kind::Connect | Kind::Reauth => return self.login(&event, cache),
            Kind::Established => {
                let user = tunnel(&event);
                let peer = peer(&event, "trusted");
                let address = event
                    .get("ifconfig_pool_remote_ip")
                    .and_then(|a| a.parse().ok());
                if let Some(peer) = peer {
                    self.outbox.report(Report::Established {
                        time: event
                            .get("time_unix")
                            .and_then(|t| t.parse().ok())
                            .unwrap_or_else(now),
                        user: user.clone(),
                        peer,
                        address,
                    });
                }
                let known = self.sessions.get(&event.cid).and_then(|l| l.address);
                let live = Live {
                    user,
                    peer,
                    address: address.or(known),
                };
                self.sessions.insert(event.cid, live);
                self.publish();
            }
            Kind::Disconnect => {
                let live = self.sessions.remove(&event.cid);
                self.publish();
                let number = |k: &str| event.get(k).and_then(|v| v.parse::<u64>().ok());
                let at = peer(&event, "trusted").or(live.and_then(|l| l.peer));
                if let Some(peer) = at {
                    self.outbox.report(Report::Disconnect {
                        time: now(),
                        peer,
                        bytes: number("bytes_received").zip(number("bytes_sent")),
                    });
                }
            }
        }
        String::new()
    }

    /// Tells the pinger (and the metrics) which tunnels are live.
    fn publish(&self) {
        self.counters
            .live
            .store(self.sessions.len() as u64, Relaxed);
        let live = self
            .sessions
            .values()
            .filter_map(|l| Some((l.user.clone(), l.address?)))
            .collect();
        self.targets.send_replace(live);
    }

    fn bytes(&self, cid: u64, received: u64, sent: u64) {
        if let Some(peer) = self.sessions.get(&cid).and_then(|l| l.peer) {
            self.outbox.report(Report::Bytes {
                peer,
                received,
                sent,
            });
        }
    }
}

async fn serve(
    config: &AgentConfig,
    mut cache: watch::Receiver<Arc<Cache>>,
    counters: &Counters,
    outbox: &Outbox,
    targets: &watch::Sender<Vec<(String, IpAddr)>>,
) -> Result<(), ManagementError> {
    let password = config.management_password_file.as_deref();
    let mut stream = crate::management::connect(config.management, password).await?;
    stream
        .write_all(format!("bytecount {}\n", BYTECOUNT_EVERY.as_secs()).as_bytes())
        .await?;
    info!(addr = %config.management, "answering OpenVPN logins");
    let mut reader = Reader::default();
    let mut state = State {
        sessions: HashMap::new(),
        counters,
        outbox,
        targets,
    };
    state.publish();
    let mut lines = Lines::new(password.is_some());
    let mut chunk = vec![0u8; 16 * 1024];
    let mut watchdog = Watchdog::new(config.probe_every(), config.management_timeout);
    loop {
        tokio::select! {
            read = stream.read(&mut chunk) => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                watchdog.heard();
                // Up once it answers: a stopped OpenVPN's kernel still
                // accepts the connection.
                counters.management_up.store(1, Relaxed);
                let mut out = String::new();
                lines.feed(&chunk[..n], |line| {
                    if let Some((cid, received, sent)) = wire::bytecount(line) {
                        state.bytes(cid, received, sent);
                    } else if let Some(event) = reader.line(line) {
                        out.push_str(&state.handle(event, &cache.borrow()));
                    }
                })?;
                if !out.is_empty() {
                    stream.write_all(out.as_bytes()).await?;
                }
            }
            changed = cache.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let current = cache.borrow_and_update().clone();
                let gone: Vec<u64> = state
                    .sessions
                    .iter()
                    .filter(|(_, live)| !current.contains(&live.user))
                    .map(|(&cid, _)| cid)
                    .collect();
                for cid in gone {
                    // Its DISCONNECT still comes, with the address in it.
                    state.sessions.remove(&cid);
                    state.publish();
                    counters.killed.fetch_add(1, Relaxed);
                    info!(cid, "ending the session of a deleted tunnel");
                    stream.write_all(wire::kill(cid).as_bytes()).await?;
                }
            }
            due = watchdog.due() => {
                due?;
                stream.write_all(b"pid\n").await?;
            }
        }
    }
}
