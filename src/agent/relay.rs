//! The live view's relay, agent side (the node's side is
//! [`crate::live::relay`]). A channel to every control URL; on each request
//! the agent opens the router's API, if the address is a tunnel its OpenVPN
//! server holds now, and pipes the bytes. What the node sends is read as API
//! sentences and passed on only when [`Command::parse`] takes them: even a
//! node that misbehaves can send a router nothing outside the allowlist.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{mpsc, watch},
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, protocol::WebSocketConfig},
};
use tracing::{info, warn};

use crate::edge::ws::{self, Io};
use crate::live::{
    api::{
        Command,
        word::{Limits, Parser, compose_sentence},
    },
    relay::{Failed, Open},
};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A router that does not accept within this is reported unreachable.
const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// Largest frame taken from the node.
const MAX_FRAME: usize = 256 * 1024;
/// Router connections relayed at once; more are refused (and counted).
const MAX_PIPES: u64 = 1024;

/// What the relay did, for metrics.
#[derive(Default)]
pub struct Counters {
    pub pipes: AtomicU64,
    pub opened: AtomicU64,
    pub failed: AtomicU64,
    /// Sentences from a node that the allowlist refused (the pipe ended).
    pub refused_sentences: AtomicU64,
}

/// The live tunnels' usernames and addresses, as the management session
/// publishes them.
pub type Tunnels = watch::Receiver<Vec<(String, IpAddr)>>;

/// What every pipe of one channel shares.
#[derive(Clone)]
struct Ctx {
    base: String,
    token: Arc<str>,
    tls: Option<tokio_rustls::TlsConnector>,
    tunnels: Tunnels,
    counters: Arc<Counters>,
}

/// Keeps a channel to each of `urls` for as long as the agent runs.
pub fn start(
    urls: &[String],
    token: &str,
    ca_file: Option<&std::path::Path>,
    tunnels: Tunnels,
) -> Result<Arc<Counters>, String> {
    let counters = Arc::new(Counters::default());
    let token: Arc<str> = token.into();
    for base in urls {
        let tls = ws::tls_for(base, ca_file)?;
        let ctx = Ctx {
            base: base.trim_end_matches('/').to_owned(),
            token: token.clone(),
            tls,
            tunnels: tunnels.clone(),
            counters: counters.clone(),
        };
        tokio::spawn(channel(ctx));
    }
    Ok(counters)
}

/// One control URL's channel, opened again (with backoff) whenever it ends.
async fn channel(ctx: Ctx) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match connect(&ctx, "/agent/v1/live").await {
            Ok(socket) => {
                info!(control = %ctx.base, "relay channel open");
                backoff = FIRST_BACKOFF;
                serve(&ctx, socket).await;
                info!(control = %ctx.base, "relay channel closed");
            }
            Err(e) => warn!(control = %ctx.base, error = %e, "relay channel"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Answers the node's requests until the channel ends.
async fn serve(ctx: &Ctx, socket: WebSocketStream<Box<dyn Io>>) {
    let (mut to_node, mut from_node) = socket.split();
    let (failures, mut failed) = mpsc::channel::<Failed>(64);
    loop {
        tokio::select! {
            frame = from_node.next() => match frame {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<Open>(&text) {
                    Ok(open) => {
                        tokio::spawn(pipe(ctx.clone(), open, failures.clone()));
                    }
                    Err(e) => warn!(control = %ctx.base, error = %e, "unreadable relay request"),
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            Some(f) = failed.recv() => {
                let text = serde_json::to_string(&f).unwrap_or_default();
                if to_node.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Opens the router for `open` and pipes it, or tells the node why not.
async fn pipe(ctx: Ctx, open: Open, failures: mpsc::Sender<Failed>) {
    let id = open.open;
    let refuse = |error: String| {
        ctx.counters.failed.fetch_add(1, Relaxed);
        let _ = failures.try_send(Failed { failed: id, error });
    };
    if !holds(&ctx.tunnels.borrow(), open.address) {
        return refuse(format!(
            "{} is no tunnel this agent's OpenVPN server holds now",
            open.address
        ));
    }
    if ctx.counters.pipes.load(Relaxed) >= MAX_PIPES {
        return refuse(format!("the agent relays {MAX_PIPES} connections already"));
    }
    let addr = SocketAddr::new(IpAddr::V4(open.address), open.port);
    let router = match tokio::time::timeout(CONNECT_WAIT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return refuse(format!("{addr}: {e}")),
        Err(_) => return refuse(format!("{addr}: no connection within {CONNECT_WAIT:?}")),
    };
    let _ = router.set_nodelay(true);
    let socket = match connect(&ctx, &format!("/agent/v1/live/{id}")).await {
        Ok(s) => s,
        Err(e) => return warn!(control = %ctx.base, error = %e, "relay pipe"),
    };
    ctx.counters.opened.fetch_add(1, Relaxed);
    ctx.counters.pipes.fetch_add(1, Relaxed);
    let ended = relay(socket, router, &ctx.counters).await;
    ctx.counters.pipes.fetch_sub(1, Relaxed);
    if let Err(why) = ended {
        warn!(router = %addr, error = %why, "relay pipe ended");
    }
}

/// Whether `address` is a live tunnel's.
fn holds(tunnels: &[(String, IpAddr)], address: Ipv4Addr) -> bool {
    tunnels.iter().any(|(_, a)| *a == IpAddr::V4(address))
}

/// Copies the router's bytes to the node as they come, and the node's
/// sentences to the router once the allowlist takes them.
async fn relay(
    socket: WebSocketStream<Box<dyn Io>>,
    router: TcpStream,
    counters: &Counters,
) -> Result<(), String> {
    let (mut to_node, mut from_node) = socket.split();
    let (mut router_in, mut router_out) = router.into_split();
    let mut gate = Gate::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            frame = from_node.next() => match frame {
                Some(Ok(Message::Binary(bytes))) => {
                    let allowed = gate.pass(&bytes).inspect_err(|_| {
                        counters.refused_sentences.fetch_add(1, Relaxed);
                    })?;
                    router_out.write_all(&allowed).await.map_err(|e| e.to_string())?;
                }
                Some(Ok(Message::Close(_))) | None => return Ok(()),
                Some(Err(e)) => return Err(e.to_string()),
                Some(Ok(_)) => {}
            },
            read = router_in.read(&mut buf) => match read {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    let chunk = buf[..n].to_vec();
                    to_node.send(Message::Binary(chunk.into())).await.map_err(|e| e.to_string())?;
                }
                Err(e) => return Err(e.to_string()),
            },
        }
    }
}

/// Reads the node's bytes as API sentences; only whole sentences the
/// allowlist takes go on, re-encoded (so nothing but what was checked).
#[derive(Default)]
pub struct Gate {
    parser: Parser,
}

impl Gate {
    /// The bytes to send the router for `bytes` from the node, or why the
    /// pipe must end.
    pub fn pass(&mut self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        self.parser.feed(bytes);
        let mut out = Vec::new();
        while let Some(sentence) = self.parser.next_sentence().map_err(|e| e.to_string())? {
            Command::parse(&sentence).map_err(|e| format!("refused a sentence: {e}"))?;
            let encoded =
                compose_sentence(&sentence, &Limits::default()).map_err(|e| e.to_string())?;
            out.extend_from_slice(&encoded);
        }
        Ok(out)
    }
}

/// A WebSocket to `path` of the control URL, under the agent's token.
async fn connect(ctx: &Ctx, path: &str) -> Result<WebSocketStream<Box<dyn Io>>, String> {
    // The read buffer is allocated whole for each connection (128 KiB by
    // default); what the node sends is small.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .max_message_size(Some(MAX_FRAME))
        .max_frame_size(Some(MAX_FRAME));
    let url = format!("{}{path}", ctx.base);
    ws::connect(&url, Some(&ctx.token), ctx.tls.as_ref(), config).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::api::Interfaces;

    fn sentence(command: &Command, tag: u32) -> Vec<u8> {
        compose_sentence(&command.render(tag), &Limits::default()).unwrap()
    }

    #[test]
    fn only_allowlisted_sentences_pass_whole_and_as_they_were() {
        let mut gate = Gate::default();
        let monitor = sentence(
            &Command::MonitorTraffic {
                interfaces: Interfaces::new(["ether1"]).unwrap(),
                once: false,
            },
            7,
        );
        let resource = sentence(&Command::ResourcePrint, 8);
        let mut both = monitor.clone();
        both.extend_from_slice(&resource);
        // Cut anywhere: nothing passes until a sentence is whole.
        let (a, b) = both.split_at(monitor.len() - 3);
        assert!(gate.pass(a).unwrap().is_empty());
        assert_eq!(gate.pass(b).unwrap(), both);
        let write = compose_sentence(
            &[
                "/ip/address/add",
                "=address=10.0.0.1/24",
                "=interface=ether1",
            ],
            &Limits::default(),
        )
        .unwrap();
        let refused = gate.pass(&write).unwrap_err();
        assert!(refused.contains("refused"), "{refused}");
        let mut smuggled = Gate::default();
        let extra = compose_sentence(
            &[
                "/system/resource/print",
                "=.proplist=uptime",
                "=.tag=1",
                "=x=1",
            ],
            &Limits::default(),
        )
        .unwrap();
        assert!(smuggled.pass(&extra).is_err());
    }

    #[test]
    fn only_live_tunnels_are_opened() {
        let tunnels = vec![("t1".to_owned(), "100.64.0.7".parse().unwrap())];
        assert!(holds(&tunnels, "100.64.0.7".parse().unwrap()));
        assert!(!holds(&tunnels, "100.64.0.8".parse().unwrap()));
        assert!(!holds(&tunnels, "127.0.0.1".parse().unwrap()));
    }
}
