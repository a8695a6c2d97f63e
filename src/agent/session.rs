//! The agent's connection to OpenVPN's management interface: every login
//! (`>CLIENT:CONNECT`, `>CLIENT:REAUTH`) is answered from the credential
//! cache, and a tunnel that leaves the cache (its site was deleted) has its
//! sessions killed. A connection that fails, ends or stops answering for
//! `management_timeout` is made again ([`crate::management::keep`]); OpenVPN
//! admits nobody meanwhile. Each connection first reads OpenVPN's client
//! list ([`client_list`]): the sessions opened before it are followed,
//! pinged and ended like the others, and those of tunnels deleted meanwhile
//! are ended at once.

use std::{
    collections::{HashMap, hash_map::Entry},
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
use tracing::{debug, info, warn};

use super::{
    AgentConfig,
    cache::{Cache, Decision},
    client_list::{self, Asking, List, Unlisted},
    outbox::Outbox,
    wire::{self, Event, Kind, Reader},
};
use crate::{
    clock::now,
    management::{Lines, ManagementError, Reconnects, Watchdog},
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

/// The tunnel a login names: by its username (else the common name), which
/// may be the tunnel's UUID. The client list names sessions the same way.
fn tunnel(event: &Event) -> String {
    let name = event
        .get("username")
        .or_else(|| event.get("common_name"))
        .unwrap_or_default();
    wire::tunnel(name)
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
#[derive(Debug, PartialEq, Eq)]
struct Live {
    user: String,
    peer: Option<SocketAddr>,
    address: Option<IpAddr>,
}

/// What the session task keeps and reports to, for one connection.
struct State<'a> {
    reader: Reader,
    /// The client list until it came.
    asking: Option<Asking>,
    sessions: HashMap<u64, Live>,
    counters: &'a Counters,
    outbox: &'a Outbox,
    /// The live tunnels, for the pinger (published when they change).
    targets: &'a watch::Sender<Vec<(String, IpAddr)>>,
}

impl<'a> State<'a> {
    /// A new connection's: it knows no session until the client list came.
    fn new(
        counters: &'a Counters,
        outbox: &'a Outbox,
        targets: &'a watch::Sender<Vec<(String, IpAddr)>>,
    ) -> Self {
        Self {
            reader: Reader::default(),
            asking: Some(Asking::default()),
            sessions: HashMap::new(),
            counters,
            outbox,
            targets,
        }
    }

    /// Reads one line from the interface; what to write back goes to `out`.
    fn line(&mut self, line: &str, cache: &Cache, out: &mut String) {
        if let Some((cid, received, sent)) = wire::bytecount(line) {
            self.bytes(cid, received, sent);
        } else if let Some(event) = self.reader.line(line) {
            out.push_str(&self.handle(event, cache));
        } else if let Some(asking) = &mut self.asking
            && let Some(listed) = asking.line(line)
        {
            self.asking = None;
            self.seed(listed, cache, out);
        }
    }

    /// Follows the sessions the client list shows that this connection has
    /// not heard of, then ends those of tunnels deleted meanwhile.
    fn seed(&mut self, listed: Result<List, Unlisted>, cache: &Cache, out: &mut String) {
        let list = match listed {
            Ok(list) => list,
            Err(e) => {
                warn!(problem = %e, "sessions opened before this connection stay unknown");
                return;
            }
        };
        if !list.complete {
            warn!("rows of OpenVPN's client list not read: those sessions stay unknown");
        }
        let listed = list.sessions.len();
        let mut added = 0;
        for l in list.sessions {
            // One heard of meanwhile is known better from its notifications.
            if let Entry::Vacant(v) = self.sessions.entry(l.cid) {
                v.insert(Live {
                    user: l.user,
                    peer: Some(l.peer),
                    address: l.address,
                });
                added += 1;
            }
        }
        info!(listed, added, "sessions from OpenVPN's client list");
        self.publish();
        self.end_deleted(cache, out);
    }

    /// Ends the sessions of tunnels `cache` no longer holds (their sites
    /// were deleted); the commands go to `out`.
    fn end_deleted(&mut self, cache: &Cache, out: &mut String) {
        if !cache.known() {
            return;
        }
        let gone: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, live)| !cache.contains(&live.user))
            .map(|(&cid, _)| cid)
            .collect();
        if gone.is_empty() {
            return;
        }
        for cid in gone {
            // Its DISCONNECT still comes, with the address in it.
            self.sessions.remove(&cid);
            self.counters.killed.fetch_add(1, Relaxed);
            info!(cid, "ending the session of a deleted tunnel");
            out.push_str(&wire::kill(cid));
        }
        self.publish();
    }

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
                if let Some(asking) = &mut self.asking {
                    asking.ended(event.cid);
                }
                let live = self.sessions.remove(&event.cid);
                self.publish();
                let number = |k: &str| event.get(k).and_then(|v| v.parse::<u64>().ok());
                let at = peer(&event, "trusted").or(live.and_then(|l| l.peer));
                if let Some(peer) = at {
                    // When it ended by OpenVPN's account: connected at
                    // time_unix, for time_duration.
                    let ended = number("time_unix").zip(number("time_duration"));
                    self.outbox.report(Report::Disconnect {
                        time: ended.map_or_else(now, |(at, lasted)| at + lasted),
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
    // The client list first, so that nothing else is answered before it.
    let opening = format!(
        "{}bytecount {}\n",
        client_list::ASK,
        BYTECOUNT_EVERY.as_secs()
    );
    stream.write_all(opening.as_bytes()).await?;
    info!(addr = %config.management, "answering OpenVPN logins");
    let mut state = State::new(counters, outbox, targets);
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
                let current = Arc::clone(&cache.borrow());
                lines.feed(&chunk[..n], |line| state.line(line, &current, &mut out))?;
                if !out.is_empty() {
                    stream.write_all(out.as_bytes()).await?;
                }
            }
            changed = cache.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let current = cache.borrow_and_update().clone();
                let mut out = String::new();
                state.end_deleted(&current, &mut out);
                if !out.is_empty() {
                    stream.write_all(out.as_bytes()).await?;
                }
            }
            due = watchdog.due() => {
                due?;
                stream.write_all(b"pid\n").await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        agent::cache::tests::{changes, site},
        tunnels::keys::Keys,
    };

    /// A cache from the control plane with tunnels `r1` (secret `s1`) and `r2`.
    fn cache() -> Cache {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::load_or_create(&dir.path().join("k")).unwrap();
        let sites = vec![site(&keys, "r1", "s1", None), site(&keys, "r2", "s2", None)];
        let mut cache = Cache::default();
        cache.apply(changes(&keys, true, sites, vec![])).unwrap();
        cache
    }

    fn row(name: &str, address: &str, cid: u64) -> String {
        format!(
            "CLIENT_LIST\t{name}\t169.254.98.{cid}:4000\t{address}\t\t10\t20\t\
             2026-11-26 17:46:31\t1795715191\t{name}\t{cid}\t0\tAES-256-CBC"
        )
    }

    const HEADER: &str = "HEADER\tCLIENT_LIST\tCommon Name\tReal Address\tVirtual Address\t\
        Virtual IPv6 Address\tBytes Received\tBytes Sent\tConnected Since\t\
        Connected Since (time_t)\tUsername\tClient ID\tPeer ID\tData Channel Cipher";

    fn feed(state: &mut State, cache: &Cache, lines: &[String]) -> String {
        let mut out = String::new();
        for l in lines {
            state.line(l, cache, &mut out);
        }
        out
    }

    fn targets(rx: &watch::Receiver<Vec<(String, IpAddr)>>) -> Vec<(String, IpAddr)> {
        let mut t = rx.borrow().clone();
        t.sort();
        t
    }

    #[test]
    fn a_connection_follows_the_listed_sessions_and_ends_the_deleted_ones() {
        let cache = cache();
        let counters = Counters::default();
        let (outbox, mut reports) = Outbox::detached();
        let (tx, rx) = watch::channel(Vec::new());
        let mut state = State::new(&counters, &outbox, &tx);
        let lines: Vec<String> = [
            ">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info",
            "TITLE\tOpenVPN 2.6.14 x86_64-pc-linux-gnu",
            "TIME\t2026-11-26 17:46:32\t1795715192",
            // A login in the middle of the reply is answered at once.
            ">CLIENT:CONNECT,7,1",
            ">CLIENT:ENV,untrusted_ip=169.254.98.7",
            ">CLIENT:ENV,untrusted_port=4000",
            ">CLIENT:ENV,username=r1",
            ">CLIENT:ENV,password=s1",
            ">CLIENT:ENV,END",
            HEADER,
            &row("r1", "100.64.0.3", 3),
            // Gone while the list was on its way: the list must not bring it back.
            ">CLIENT:DISCONNECT,5",
            ">CLIENT:ENV,END",
            &row("deleted-meanwhile", "100.64.0.4", 4),
            &row("r2", "100.64.0.5", 5),
            "END",
            "SUCCESS: bytecount interval changed",
            "SUCCESS: pid=1234",
        ]
        .map(str::to_owned)
        .into();
        let out = feed(&mut state, &cache, &lines);
        assert_eq!(
            out,
            "client-auth 7 1\nifconfig-push 100.64.0.2 255.192.0.0\nEND\nclient-kill 4\n"
        );
        let mut cids: Vec<u64> = state.sessions.keys().copied().collect();
        cids.sort_unstable();
        assert_eq!(cids, [3, 7]);
        assert_eq!(
            state.sessions[&3],
            Live {
                user: "r1".into(),
                peer: Some("169.254.98.3:4000".parse().unwrap()),
                address: Some("100.64.0.3".parse().unwrap()),
            }
        );
        assert_eq!(
            (counters.killed.load(Relaxed), counters.live.load(Relaxed)),
            (1, 2)
        );
        let r1 = |a: &str| ("r1".to_owned(), a.parse().unwrap());
        assert_eq!(targets(&rx), [r1("100.64.0.2"), r1("100.64.0.3")]);

        // Asked once per connection: a later reply is not a list to follow.
        let again = [
            "TITLE\tx".to_owned(),
            HEADER.to_owned(),
            row("r2", "100.64.0.9", 9),
            "END".to_owned(),
        ];
        assert_eq!(feed(&mut state, &cache, &again), "");
        assert!(!state.sessions.contains_key(&9));
        // A listed session ends as any other.
        let bye = [
            ">CLIENT:DISCONNECT,3".to_owned(),
            ">CLIENT:ENV,time_unix=1795715191".to_owned(),
            ">CLIENT:ENV,time_duration=42".to_owned(),
            ">CLIENT:ENV,END".to_owned(),
        ];
        feed(&mut state, &cache, &bye);
        assert_eq!(targets(&rx), [r1("100.64.0.2")]);
        // It ended when OpenVPN says: connected at time_unix, for time_duration.
        let mut ended = None;
        while let Ok(r) = reports.try_recv() {
            if let Report::Disconnect { time, peer, .. } = r {
                ended = Some((time, peer));
            }
        }
        assert_eq!(
            ended,
            Some((1_795_715_233, "169.254.98.3:4000".parse().unwrap()))
        );
    }

    #[test]
    fn a_cache_that_never_heard_from_the_control_plane_ends_nobody() {
        let counters = Counters::default();
        let (outbox, _reports) = Outbox::detached();
        let (tx, rx) = watch::channel(Vec::new());
        let mut state = State::new(&counters, &outbox, &tx);
        let lines = [
            "TITLE\tx".to_owned(),
            HEADER.to_owned(),
            row("r1", "100.64.0.3", 3),
            row("gone", "100.64.0.4", 4),
            "END".to_owned(),
        ];
        assert_eq!(feed(&mut state, &Cache::default(), &lines), "");
        assert_eq!(counters.live.load(Relaxed), 2);
        assert_eq!(targets(&rx).len(), 2);
        // The control plane's first answer ends what it does not hold.
        let mut out = String::new();
        state.end_deleted(&cache(), &mut out);
        assert_eq!(out, "client-kill 4\n");
        assert_eq!(counters.live.load(Relaxed), 1);
    }

    #[test]
    fn a_refused_list_leaves_the_connection_answering() {
        let cache = cache();
        let counters = Counters::default();
        let (outbox, _reports) = Outbox::detached();
        let (tx, _rx) = watch::channel(Vec::new());
        let mut state = State::new(&counters, &outbox, &tx);
        let lines: Vec<String> = [
            "ERROR: unknown command",
            ">CLIENT:CONNECT,1,0",
            ">CLIENT:ENV,username=r2",
            ">CLIENT:ENV,password=wrong",
            ">CLIENT:ENV,END",
        ]
        .map(str::to_owned)
        .into();
        assert_eq!(
            feed(&mut state, &cache, &lines),
            "client-deny 1 0 \"wrong secret\"\n"
        );
        assert!(state.asking.is_none() && state.sessions.is_empty());
    }
}
