//! The OpenVPN management interface, read as a stream of lines (pure).
//!
//! What we ask for: `bytecount N` (per-client `>BYTECOUNT_CLI:` updates) and
//! `status 3` on an interval (the whole client list, which is also how a
//! session ends when OpenVPN sends no `>CLIENT:DISCONNECT`: 2.6 sends none
//! without `--management-client-auth`). What we read: `>CLIENT:` notifications
//! with their `>CLIENT:ENV,` blocks, byte counts and the status reply.
//! Blocks are bounded: a runaway peer cannot make us buffer without limit.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use super::status::{Client, Snapshot, parse_status};

/// Most `>CLIENT:ENV,` lines in one notification (OpenVPN sends about 50).
const MAX_ENV: usize = 1024;
/// Most bytes of one `status` reply (about 200 bytes per client).
pub const MAX_STATUS: usize = 64 << 20;

/// Something the management interface told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `>CLIENT:ESTABLISHED` (or CONNECT/REAUTH): a client and its details.
    Client { id: u64, client: Option<Client> },
    /// `>CLIENT:DISCONNECT`: the client left; env carries its final byte counts.
    Disconnect { id: u64, client: Option<Client> },
    /// `>BYTECOUNT_CLI:id,received,sent`.
    Bytes { id: u64, received: u64, sent: u64 },
    /// The reply to `status`.
    Status(Snapshot),
    /// A reply we could not use (`ERROR: …`, an unreadable status).
    Error(String),
}

#[derive(Debug)]
struct ClientBlock {
    disconnect: bool,
    id: u64,
    env: HashMap<String, String>,
    lines: usize,
}

/// Turns lines into notices; keeps the blocks being read (a notification
/// may arrive in the middle of a status reply).
#[derive(Debug, Default)]
pub struct Reader {
    client: Option<ClientBlock>,
    status: Option<String>,
    /// Whether lines of the status reply being read did not fit.
    cut: bool,
}

impl Reader {
    /// Feeds one line (without its line ending).
    pub fn line(&mut self, line: &str) -> Option<Notice> {
        if let Some(env) = line.strip_prefix(">CLIENT:ENV,") {
            return self.env(env);
        }
        if let Some(text) = &mut self.status {
            if line == "END" {
                let mut text = self.status.take().unwrap_or_default();
                // Its END, unless lines were left out: a cut list proves
                // no client gone.
                if !std::mem::take(&mut self.cut) {
                    text.push_str("END\n");
                }
                return Some(match parse_status(&text) {
                    Ok(s) => Notice::Status(s),
                    Err(e) => Notice::Error(e.to_string()),
                });
            }
            if !line.starts_with('>') {
                if text.len() + line.len() < MAX_STATUS {
                    text.push_str(line);
                    text.push('\n');
                } else {
                    self.cut = true;
                }
                return None;
            }
        }
        if let Some(rest) = line.strip_prefix(">CLIENT:") {
            let (kind, args) = rest.split_once(',').unwrap_or((rest, ""));
            let id = args.split(',').next().and_then(|c| c.parse().ok())?;
            let disconnect = match kind {
                "DISCONNECT" => true,
                "ESTABLISHED" | "CONNECT" | "REAUTH" => false,
                _ => return None,
            };
            self.client = Some(ClientBlock {
                disconnect,
                id,
                env: HashMap::new(),
                lines: 0,
            });
            return None;
        }
        if let Some(rest) = line.strip_prefix(">BYTECOUNT_CLI:") {
            let mut f = rest.split(',').map(|v| v.trim().parse::<u64>());
            if let (Some(Ok(id)), Some(Ok(received)), Some(Ok(sent))) =
                (f.next(), f.next(), f.next())
            {
                return Some(Notice::Bytes { id, received, sent });
            }
            return Some(Notice::Error(format!("unreadable `{line}`")));
        }
        if line.starts_with("TITLE\t") || line.starts_with("TITLE,") {
            self.status = Some(format!("{line}\n"));
            return None;
        }
        if let Some(e) = line.strip_prefix("ERROR:") {
            return Some(Notice::Error(e.trim().to_owned()));
        }
        None
    }

    fn env(&mut self, kv: &str) -> Option<Notice> {
        let Some(ClientBlock { env, lines, .. }) = &mut self.client else {
            return None;
        };
        if kv != "END" {
            *lines += 1;
            if *lines <= MAX_ENV
                && let Some((k, v)) = kv.split_once('=')
            {
                env.insert(k.to_owned(), v.to_owned());
            }
            return None;
        }
        let ClientBlock {
            disconnect,
            id,
            env,
            ..
        } = self.client.take()?;
        let client = client_of(&env);
        Some(if disconnect {
            Notice::Disconnect { id, client }
        } else {
            Notice::Client { id, client }
        })
    }
}

/// A client from a notification's environment: `common_name` (or `username`),
/// `trusted_ip`/`trusted_ip6` and `trusted_port`, `ifconfig_pool_remote_ip`,
/// `time_unix`, and at disconnect `bytes_received`/`bytes_sent`.
fn client_of(env: &HashMap<String, String>) -> Option<Client> {
    let get = |k: &str| env.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let number = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok());
    let ip: IpAddr = get("trusted_ip")
        .or_else(|| get("trusted_ip6"))?
        .parse()
        .ok()?;
    let port = get("trusted_port")?.parse().ok()?;
    Some(Client {
        common_name: get("common_name").or_else(|| get("username"))?.to_owned(),
        username: get("username").map(str::to_owned),
        peer: SocketAddr::new(ip, port),
        virtual_addr: get("ifconfig_pool_remote_ip").and_then(|v| v.parse().ok()),
        bytes: number("bytes_received").zip(number("bytes_sent")),
        since: number("time_unix"),
        client_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notices(text: &str) -> Vec<Notice> {
        let mut r = Reader::default();
        text.lines().filter_map(|l| r.line(l)).collect()
    }

    #[test]
    fn a_real_openvpn_26_transcript() {
        let n = notices(include_str!("../../tests/data/openvpn-2.6-management.txt"));
        let Notice::Client {
            id: 0,
            client: Some(c),
        } = &n[1]
        else {
            panic!("{:?}", &n[..2])
        };
        assert_eq!(c.common_name, "user1");
        assert_eq!(c.peer, "169.254.77.2:48148".parse().unwrap());
        assert_eq!(c.virtual_addr, Some("100.64.0.2".parse().unwrap()));
        assert_eq!(c.since, Some(1_795_632_664));
        assert!(n.contains(&Notice::Bytes {
            id: 0,
            received: 910,
            sent: 1918
        }));
        let statuses: Vec<&Snapshot> = n
            .iter()
            .filter_map(|n| match n {
                Notice::Status(s) => Some(s),
                _ => None,
            })
            .collect();
        assert!(statuses.len() >= 6);
        assert!(statuses.iter().all(|s| s.complete() && s.taken.is_some()));
        assert_eq!(statuses[0].clients.len(), 0);
        assert_eq!(statuses[1].clients[0].client_id, Some(0));
        assert!(!n.iter().any(|n| matches!(n, Notice::Error(_))), "{n:?}");
    }

    #[test]
    fn disconnect_carries_final_bytes_and_errors_surface() {
        let n = notices(
            ">CLIENT:DISCONNECT,7\n>CLIENT:ENV,trusted_ip6=2001:db8::9\n>CLIENT:ENV,trusted_port=5\n\
             >CLIENT:ENV,common_name=r\n>CLIENT:ENV,bytes_received=10\n>CLIENT:ENV,bytes_sent=20\n\
             >CLIENT:ENV,END\nERROR: unknown command\n>BYTECOUNT_CLI:1,x,2\n",
        );
        let Notice::Disconnect {
            id: 7,
            client: Some(c),
        } = &n[0]
        else {
            panic!("{n:?}")
        };
        assert_eq!((c.peer.port(), c.bytes), (5, Some((10, 20))));
        assert_eq!(n[1], Notice::Error("unknown command".into()));
        assert!(matches!(n[2], Notice::Error(_)));
    }

    #[test]
    fn a_notification_inside_a_status_reply_is_still_seen() {
        let n = notices(
            "TITLE\tx\nTIME\tx\t5\n>BYTECOUNT_CLI:1,2,3\n>CLIENT:ESTABLISHED,4\n\
             CLIENT_LIST\tr\t198.51.100.1:9\n>CLIENT:ENV,END\nEND\n",
        );
        assert_eq!(
            n[0],
            Notice::Bytes {
                id: 1,
                received: 2,
                sent: 3
            }
        );
        assert_eq!(
            n[1],
            Notice::Client {
                id: 4,
                client: None
            }
        );
        let Notice::Status(s) = &n[2] else {
            panic!("{n:?}")
        };
        assert_eq!((s.taken, s.clients.len()), (Some(5), 1));
    }
}
