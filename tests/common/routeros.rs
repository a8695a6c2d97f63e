//! A RouterOS API stand-in: a TCP server speaking the API as MikroTik's
//! manual describes it, with its own codec (so it does not share the
//! library's mistakes; Python's librouteros checks it in tests/routeros_api.rs).
//!
//! Users with passwords and policies, interfaces with synthetic rates for
//! `monitor-traffic`, log entries the test pushes, `/system/resource/print`
//! with an uptime that restarts after a reboot, both reboot behaviours seen
//! in the field, read-only and unknown-command traps, `!empty` from 7.18 on,
//! and `/cancel` followed, like a real router, by late sentences for the dead
//! tag. Runs on a runtime of its own thread, so sync and async tests use it
//! alike, or as tasks of the caller's runtime ([`RouterOs::spawn_on`]: a
//! thousand stand-ins for a benchmark); counters tell a test what reached
//! the router.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{broadcast, mpsc, oneshot},
    task::AbortHandle,
};

/// The live-view user's password in a job script as the router endpoint
/// delivers it.
pub fn live_password(script: &str) -> String {
    script
        .lines()
        .find(|l| l.starts_with("/user add name=\"mgnt-live\""))
        .and_then(|l| l.split("password=\"").nth(1))
        .and_then(|r| r.split('"').next())
        .expect("the job makes the live-view user")
        .to_owned()
}

/// What a router does with its first job: fetches it from the router
/// endpoint at `base` (`http://addr`) with its router token and reports it
/// applied. The live-view password the job carried.
pub fn apply_first_job(agent: &ureq::Agent, base: &str, router_token: &str) -> String {
    let auth = format!("Bearer {router_token}");
    let mut job = agent
        .get(&format!("{base}/router/v1/job?version=7.16"))
        .header("Authorization", &auth)
        .call()
        .expect("the router's job");
    assert_eq!(job.status().as_u16(), 200, "the router's job");
    let id = job.headers()["x-job-id"].to_str().unwrap().to_owned();
    let script = job.body_mut().read_to_string().unwrap();
    let applied = agent
        .post(&format!("{base}/router/v1/jobs/{id}/result"))
        .header("Authorization", &auth)
        .header("Content-Type", "application/json")
        .send(r#"{"status":"applied"}"#)
        .expect("the job's result");
    assert_eq!(applied.status().as_u16(), 200, "the job's result");
    live_password(&script)
}

pub struct User {
    pub name: &'static str,
    pub password: &'static str,
    /// Group policy `read,api` (no `write`): configuration changes trapped.
    pub read_only: bool,
    /// Policy `reboot`.
    pub reboot: bool,
}

pub struct Interface {
    pub name: &'static str,
    pub kind: &'static str,
    pub running: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Reboot {
    /// `!done`, then the connection drops.
    DoneThenDrop,
    /// The connection drops without a reply.
    Drop,
}

pub struct Config {
    /// `7.18` and later answer `!empty` to a print that finds nothing.
    pub version: &'static str,
    pub users: Vec<User>,
    pub interfaces: Vec<Interface>,
    /// Between `monitor-traffic` rounds when the command gives no `=interval=`.
    pub interval: Duration,
    pub reboot: Reboot,
    /// Uptime when started; a reboot starts it again from zero.
    pub uptime: Duration,
}

impl Config {
    /// With the live-view user a job makes (`read,api,reboot`, or without
    /// `reboot`), knowing `password`.
    pub fn with_live_user(mut self, password: &str, reboot: bool) -> Self {
        self.users.push(User {
            name: "mgnt-live",
            password: Box::leak(password.to_owned().into_boxed_str()),
            read_only: true,
            reboot,
        });
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        let user = |name, password, read_only, reboot| User {
            name,
            password,
            read_only,
            reboot,
        };
        let iface = |name, kind, running| Interface {
            name,
            kind,
            running,
        };
        Self {
            version: "7.18",
            users: vec![
                user("admin", "secret", false, true),
                user("viewer", "view", true, true),
                user("watcher", "watch", true, false),
            ],
            interfaces: vec![
                iface("ether1", "ether", true),
                iface("ether2", "ether", false),
                iface("bridge1", "bridge", true),
            ],
            interval: Duration::from_millis(100),
            reboot: Reboot::DoneThenDrop,
            uptime: Duration::from_secs(3 * 86_400 + 4 * 3600 + 5),
        }
    }
}

#[derive(Clone)]
enum Kill {
    Fatal(String),
    Drop,
}

#[derive(Clone)]
struct LogEntry {
    id: u64,
    topics: String,
    message: String,
}

struct Shared {
    config: Config,
    connections: AtomicU64,
    logins: AtomicU64,
    active_streams: AtomicUsize,
    empties: AtomicU64,
    late: AtomicU64,
    reboots: AtomicU64,
    samples: AtomicU64,
    commands: Mutex<Vec<Vec<String>>>,
    booted: Mutex<Instant>,
    logs: Mutex<Vec<LogEntry>>,
    log_feed: broadcast::Sender<LogEntry>,
    kill: broadcast::Sender<Kill>,
}

pub struct RouterOs {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RouterOs {
    /// Listens on 127.0.0.1 on a free port.
    pub fn start(config: Config) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), config)
    }

    pub fn start_on(addr: SocketAddr, config: Config) -> Self {
        let (listener, shared) = Self::bind(addr, config);
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let serving = shared.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(run(listener, serving, stopped));
        });
        Self {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Like [`Self::start_on`], but served by tasks of the calling tokio
    /// runtime instead of a thread of its own, so many stand-ins share a few
    /// threads. Stops on drop, closing its connections.
    pub fn spawn_on(addr: SocketAddr, config: Config) -> Self {
        let (listener, shared) = Self::bind(addr, config);
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(run(listener, shared.clone(), stopped));
        Self {
            addr,
            shared,
            stop: Some(stop),
            thread: None,
        }
    }

    fn bind(addr: SocketAddr, config: Config) -> (std::net::TcpListener, Arc<Shared>) {
        let listener = std::net::TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("stand-in: binding {addr}: {e}"));
        listener.set_nonblocking(true).unwrap();
        let shared = Arc::new(Shared {
            booted: Mutex::new(Instant::now() - config.uptime),
            config,
            connections: AtomicU64::new(0),
            logins: AtomicU64::new(0),
            active_streams: AtomicUsize::new(0),
            empties: AtomicU64::new(0),
            late: AtomicU64::new(0),
            reboots: AtomicU64::new(0),
            samples: AtomicU64::new(0),
            commands: Mutex::new(Vec::new()),
            logs: Mutex::new(Vec::new()),
            log_feed: broadcast::channel(1024).0,
            kill: broadcast::channel(16).0,
        });
        (listener, shared)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Successful logins so far.
    pub fn logins(&self) -> u64 {
        self.shared.logins.load(Ordering::SeqCst)
    }

    /// Streaming commands running now (monitor-traffic, log follow or listen).
    pub fn active_streams(&self) -> usize {
        self.shared.active_streams.load(Ordering::SeqCst)
    }

    /// `!empty` sentences sent.
    pub fn empties(&self) -> u64 {
        self.shared.empties.load(Ordering::SeqCst)
    }

    /// Sentences sent for a tag after its `!done` (as real routers do after a cancel).
    pub fn late(&self) -> u64 {
        self.shared.late.load(Ordering::SeqCst)
    }

    pub fn reboots(&self) -> u64 {
        self.shared.reboots.load(Ordering::SeqCst)
    }

    /// Traffic rows `monitor-traffic` streams have sent so far.
    pub fn samples(&self) -> u64 {
        self.shared.samples.load(Ordering::Relaxed)
    }

    /// Every sentence received, in order, as words.
    pub fn commands(&self) -> Vec<Vec<String>> {
        self.shared.commands.lock().unwrap().clone()
    }

    /// Adds a log entry; log followers get it at once.
    pub fn push_log(&self, topics: &str, message: &str) {
        let mut logs = self.shared.logs.lock().unwrap();
        let entry = LogEntry {
            id: logs.len() as u64 + 1,
            topics: topics.to_owned(),
            message: message.to_owned(),
        };
        logs.push(entry.clone());
        let _ = self.shared.log_feed.send(entry);
    }

    /// Sends `!fatal MESSAGE` on every connection and closes them.
    pub fn fatal_all(&self, message: &str) {
        let _ = self.shared.kill.send(Kill::Fatal(message.to_owned()));
    }

    /// Closes every connection without a word.
    pub fn drop_all(&self) {
        let _ = self.shared.kill.send(Kill::Drop);
    }

    /// Waits (20 s at most, for a loaded machine) until `done` holds.
    pub async fn until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(self) {
            assert!(Instant::now() < deadline, "stand-in: still not {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for RouterOs {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Serves `listener` until `stopped` fires (or its sender is dropped), then
/// closes every connection (tasks of a shared runtime outlive this one).
async fn run(listener: std::net::TcpListener, shared: Arc<Shared>, stopped: oneshot::Receiver<()>) {
    let listener = TcpListener::from_std(listener).unwrap();
    tokio::select! {
        () = accept(listener, shared.clone()) => {}
        _ = stopped => {}
    }
    let _ = shared.kill.send(Kill::Drop);
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    while let Ok((stream, _)) = listener.accept().await {
        shared.connections.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(serve(stream, shared.clone()));
    }
}

/// What goes to a connection's writer: sentences, or the order to close.
enum Out {
    Sentence(Vec<u8>),
    Close,
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    let (mut read, mut write) = stream.into_split();
    let (out, mut queue) = mpsc::unbounded_channel();
    let writer = tokio::spawn(async move {
        while let Some(Out::Sentence(bytes)) = queue.recv().await {
            if write.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    });
    let mut kill = shared.kill.subscribe();
    let mut session = Session {
        shared: shared.clone(),
        out: Sender(out),
        user: None,
        streams: HashMap::new(),
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    'connection: loop {
        tokio::select! {
            got = read.read(&mut chunk) => match got {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            },
            kill = kill.recv() => {
                if let Ok(Kill::Fatal(message)) = kill {
                    session.out.send(&["!fatal", &message], None);
                }
                break;
            }
        }
        while let Some(words) = take_sentence(&mut buf) {
            shared.commands.lock().unwrap().push(words.clone());
            if session.handle(&words) == Next::Close {
                break 'connection;
            }
        }
    }
    for (_, stream) in session.streams.drain() {
        stream.abort();
    }
    session.out.close();
    let _ = writer.await;
}

/// The next sentence at the front of `buf`, removed from it.
fn take_sentence(buf: &mut Vec<u8>) -> Option<Vec<String>> {
    let mut pos = 0;
    let mut words = Vec::new();
    loop {
        let first = *buf.get(pos)?;
        let (extra, mask) = match first {
            0x00..=0x7F => (0, 0x7F),
            0x80..=0xBF => (1, 0x3F),
            0xC0..=0xDF => (2, 0x1F),
            0xE0..=0xEF => (3, 0x0F),
            _ => (4, 0x00),
        };
        let prefix = buf.get(pos + 1..pos + 1 + extra)?;
        let len = prefix.iter().fold(usize::from(first & mask), |acc, &b| {
            (acc << 8) | usize::from(b)
        });
        pos += 1 + extra;
        if len == 0 {
            buf.drain(..pos);
            return Some(words);
        }
        let word = buf.get(pos..pos + len)?;
        words.push(String::from_utf8_lossy(word).into_owned());
        pos += len;
    }
}

/// The stand-in's own encoding, not the library's: it is the other side of
/// the protocol, so a mistake in one does not hide in both.
fn encode(words: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for word in words.iter().chain(&[""]) {
        let len = word.len() as u32;
        match len {
            0..0x80 => out.push(len as u8),
            0x80..0x4000 => out.extend_from_slice(&(len | 0x8000).to_be_bytes()[2..]),
            0x4000..0x20_0000 => out.extend_from_slice(&(len | 0xC0_0000).to_be_bytes()[1..]),
            0x20_0000..0x1000_0000 => out.extend_from_slice(&(len | 0xE000_0000).to_be_bytes()),
            _ => {
                out.push(0xF0);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        out.extend_from_slice(word.as_bytes());
    }
    out
}

#[derive(Clone)]
struct Sender(mpsc::UnboundedSender<Out>);

impl Sender {
    /// Sends a sentence, with `.tag=TAG` last when the command had a tag.
    fn send(&self, words: &[&str], tag: Option<&str>) -> bool {
        let tag_word = tag.map(|t| format!(".tag={t}"));
        let mut all: Vec<&str> = words.to_vec();
        all.extend(tag_word.as_deref());
        self.0.send(Out::Sentence(encode(&all))).is_ok()
    }

    fn item(&self, row: &[(&str, String)], props: Option<&[String]>, tag: Option<&str>) -> bool {
        let words: Vec<String> = row
            .iter()
            .filter(|(name, _)| props.is_none_or(|p| p.iter().any(|p| p == name)))
            .map(|(name, value)| format!("={name}={value}"))
            .collect();
        let mut all = vec!["!re"];
        all.extend(words.iter().map(String::as_str));
        self.send(&all, tag)
    }

    fn close(&self) {
        let _ = self.0.send(Out::Close);
    }
}

#[derive(PartialEq, Eq)]
enum Next {
    Continue,
    Close,
}

struct Session {
    shared: Arc<Shared>,
    out: Sender,
    user: Option<usize>,
    /// Streaming commands by tag.
    streams: HashMap<String, AbortHandle>,
}

mod session;
