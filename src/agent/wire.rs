//! OpenVPN's management interface as the agent speaks it with
//! `--management-client-auth` (pure): the `>CLIENT:` notifications it reads
//! and the commands it answers with.

use std::{collections::HashMap, net::Ipv4Addr};

use uuid::Uuid;

use crate::tunnels::username::username;

/// Most `>CLIENT:ENV,` lines kept of one notification (OpenVPN sends ~50).
const MAX_ENV: usize = 256;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Reauth,
    Established,
    Disconnect,
}

/// One `>CLIENT:` notification with its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: Kind,
    pub cid: u64,
    /// The key id (CONNECT and REAUTH only).
    pub kid: Option<u64>,
    pub env: HashMap<String, String>,
}

impl Event {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.env.get(key).map(String::as_str)
    }
}

/// Collects notifications line by line.
#[derive(Debug, Default)]
pub struct Reader {
    open: Option<Event>,
}

impl Reader {
    /// Feeds one line (without its line ending); an event once its `END` came.
    pub fn line(&mut self, line: &str) -> Option<Event> {
        if let Some(kv) = line.strip_prefix(">CLIENT:ENV,") {
            if kv == "END" {
                return self.open.take();
            }
            if let (Some(open), Some((k, v))) = (&mut self.open, kv.split_once('='))
                && open.env.len() < MAX_ENV
            {
                open.env.insert(k.to_owned(), v.to_owned());
            }
            return None;
        }
        let rest = line.strip_prefix(">CLIENT:")?;
        let (kind, args) = rest.split_once(',')?;
        let kind = match kind {
            "CONNECT" => Kind::Connect,
            "REAUTH" => Kind::Reauth,
            "ESTABLISHED" => Kind::Established,
            "DISCONNECT" => Kind::Disconnect,
            _ => return None,
        };
        let mut ids = args.split(',').map(|v| v.trim().parse::<u64>());
        let cid = ids.next()?.ok()?;
        let kid = ids.next().and_then(Result::ok);
        self.open = Some(Event {
            kind,
            cid,
            kid,
            env: HashMap::new(),
        });
        None
    }
}

/// The tunnel a login's name (its username, or the tunnel's UUID) stands for.
pub fn tunnel(name: &str) -> String {
    Uuid::parse_str(name).map_or_else(|_| name.to_owned(), |u| username(&u))
}

/// `>BYTECOUNT_CLI:cid,received,sent`: a client's counters.
pub fn bytecount(line: &str) -> Option<(u64, u64, u64)> {
    let mut f = line
        .strip_prefix(">BYTECOUNT_CLI:")?
        .split(',')
        .map(|v| v.trim().parse::<u64>().ok());
    Some((f.next()??, f.next()??, f.next()??))
}

/// Admits a client and pushes its address (no ccd file needed).
pub fn allow(cid: u64, kid: u64, address: Ipv4Addr, netmask: Ipv4Addr) -> String {
    format!("client-auth {cid} {kid}\nifconfig-push {address} {netmask}\nEND\n")
}

/// Refuses a client; `reason` goes to OpenVPN's log (quotes and line breaks
/// are dropped so it stays one argument).
pub fn deny(cid: u64, kid: u64, reason: &str) -> String {
    let reason: String = reason
        .chars()
        .filter(|c| !matches!(c, '"' | '\\' | '\n' | '\r'))
        .collect();
    format!("client-deny {cid} {kid} \"{reason}\"\n")
}

/// Ends a client's session.
pub fn kill(cid: u64) -> String {
    format!("client-kill {cid}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_block_becomes_one_event() {
        let mut r = Reader::default();
        let lines = [
            ">INFO:OpenVPN Management Interface Version 5",
            ">CLIENT:CONNECT,3,1",
            ">CLIENT:ENV,untrusted_ip=169.254.1.2",
            ">CLIENT:ENV,username=h4vwyhu2jvhixmocpvpj6cq3fq",
            ">CLIENT:ENV,password=s=cr,et",
            "SUCCESS: client-auth command succeeded",
            ">CLIENT:ENV,END",
        ];
        let events: Vec<Event> = lines.iter().filter_map(|l| r.line(l)).collect();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!((e.kind, e.cid, e.kid), (Kind::Connect, 3, Some(1)));
        assert_eq!(e.get("password"), Some("s=cr,et"));
        assert_eq!(e.get("untrusted_ip"), Some("169.254.1.2"));
        let d: Vec<Event> = [
            ">CLIENT:DISCONNECT,3",
            ">CLIENT:ENV,bytes_sent=9",
            ">CLIENT:ENV,END",
        ]
        .iter()
        .filter_map(|l| r.line(l))
        .collect();
        assert_eq!((d[0].kind, d[0].kid), (Kind::Disconnect, None));
    }

    #[test]
    fn stray_and_runaway_lines_are_bounded() {
        let mut r = Reader::default();
        assert_eq!(r.line(">CLIENT:ENV,x=1"), None, "env outside a block");
        assert_eq!(r.line(">CLIENT:CR_RESPONSE,1,2,xx"), None);
        assert_eq!(r.line(">CLIENT:CONNECT,x,1"), None, "not a client id");
        r.line(">CLIENT:REAUTH,1,2");
        for i in 0..10_000 {
            r.line(&format!(">CLIENT:ENV,k{i}=v"));
        }
        let e = r.line(">CLIENT:ENV,END").unwrap();
        assert_eq!(e.env.len(), MAX_ENV);
    }

    #[test]
    fn byte_counts_are_read() {
        assert_eq!(bytecount(">BYTECOUNT_CLI:3,100,200"), Some((3, 100, 200)));
        assert_eq!(bytecount(">BYTECOUNT_CLI:3,x,200"), None);
        assert_eq!(bytecount(">BYTECOUNT:1,2"), None);
    }

    #[test]
    fn commands_are_one_argument_each() {
        assert_eq!(
            allow(
                3,
                1,
                Ipv4Addr::new(100, 64, 0, 2),
                Ipv4Addr::new(255, 192, 0, 0)
            ),
            "client-auth 3 1\nifconfig-push 100.64.0.2 255.192.0.0\nEND\n"
        );
        assert_eq!(
            deny(3, 1, "no \"such\"\ntunnel"),
            "client-deny 3 1 \"no suchtunnel\"\n"
        );
        assert_eq!(kill(7), "client-kill 7\n");
    }
}
