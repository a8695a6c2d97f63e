//! The agent's connection to OpenVPN's management interface: every login
//! (`>CLIENT:CONNECT`, `>CLIENT:REAUTH`) is answered from the credential
//! cache, and a tunnel that leaves the cache (its site was deleted) has its
//! sessions killed. A connection that fails, ends or stops answering is
//! made again ([`crate::management::keep`]); OpenVPN admits nobody meanwhile.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::watch,
    time::{Instant, interval},
};
use tracing::info;
use uuid::Uuid;

use super::{
    AgentConfig,
    cache::{Cache, Decision},
    wire::{self, Event, Kind, Reader},
};
use crate::{
    clock::now,
    management::{Lines, ManagementError},
    tunnels::username::username,
};

/// How often the interface is asked something, and how long it may stay silent.
const PROBE_EVERY: Duration = Duration::from_secs(15);
const SILENT_FOR: Duration = Duration::from_secs(45);

/// What the agent counted.
#[derive(Default)]
pub struct Counters {
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
    pub killed: AtomicU64,
    pub reconnects: AtomicU64,
}

/// Runs for as long as the agent does.
pub async fn run(
    config: Arc<AgentConfig>,
    cache: watch::Receiver<Arc<Cache>>,
    counters: Arc<Counters>,
) {
    let label = "agent (nobody is admitted until it is back)";
    crate::management::keep(config.management, label, || {
        counters.reconnects.fetch_add(1, Relaxed);
        serve(&config, cache.clone(), &counters)
    })
    .await;
}

/// The tunnel a login names: its username, or its UUID.
fn tunnel(event: &Event) -> String {
    let name = event.get("username").unwrap_or_default();
    Uuid::parse_str(name).map_or_else(|_| name.to_owned(), |u| username(&u))
}

/// The answer to a login.
fn answer(event: &Event, cache: &Cache, counters: &Counters) -> Option<String> {
    let kid = event.kid?;
    let user = tunnel(event);
    let password = event.get("password").unwrap_or_default();
    Some(match cache.decide(&user, password, now()) {
        Decision::Allow { address, netmask } => {
            counters.allowed.fetch_add(1, Relaxed);
            wire::allow(event.cid, kid, address, netmask)
        }
        Decision::Deny(reason) => {
            counters.denied.fetch_add(1, Relaxed);
            info!(user = %user, cid = event.cid, reason, "login refused");
            wire::deny(event.cid, kid, reason)
        }
    })
}

async fn serve(
    config: &AgentConfig,
    mut cache: watch::Receiver<Arc<Cache>>,
    counters: &Counters,
) -> Result<(), ManagementError> {
    let password = config.management_password_file.as_deref();
    let mut stream = crate::management::connect(config.management, password).await?;
    info!(addr = %config.management, "answering OpenVPN logins");
    let mut reader = Reader::default();
    // Live sessions: client id → tunnel username.
    let mut sessions: HashMap<u64, String> = HashMap::new();
    let mut lines = Lines::new(password.is_some());
    let mut chunk = vec![0u8; 16 * 1024];
    let mut probe = interval(PROBE_EVERY);
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            read = stream.read(&mut chunk) => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                heard = Instant::now();
                let mut out = String::new();
                lines.feed(&chunk[..n], |line| {
                    if let Some(event) = reader.line(line) {
                        out.push_str(&handle(event, &cache.borrow(), &mut sessions, counters));
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
                let gone: Vec<u64> = sessions
                    .iter()
                    .filter(|(_, user)| !current.contains(user))
                    .map(|(&cid, _)| cid)
                    .collect();
                for cid in gone {
                    sessions.remove(&cid);
                    counters.killed.fetch_add(1, Relaxed);
                    info!(cid, "ending the session of a deleted tunnel");
                    stream.write_all(wire::kill(cid).as_bytes()).await?;
                }
            }
            _ = probe.tick() => {
                if heard.elapsed() > SILENT_FOR {
                    return Err(ManagementError::Silent);
                }
                stream.write_all(b"pid\n").await?;
            }
        }
    }
}

/// What to write back for one notification.
fn handle(
    event: Event,
    cache: &Cache,
    sessions: &mut HashMap<u64, String>,
    counters: &Counters,
) -> String {
    match event.kind {
        Kind::Connect | Kind::Reauth => {
            let reply = answer(&event, cache, counters).unwrap_or_default();
            if reply.starts_with("client-auth") {
                sessions.insert(event.cid, tunnel(&event));
            }
            reply
        }
        Kind::Established => {
            sessions.insert(event.cid, tunnel(&event));
            String::new()
        }
        Kind::Disconnect => {
            sessions.remove(&event.cid);
            String::new()
        }
    }
}
