//! OpenVPN's client list (`status 3`), asked on every (re)connect: the
//! notifications that told of the sessions open now went to the connection
//! before (the agent restarted, or the connection was made again), so the
//! list is the only place this one learns of them. Pure: lines in, listed
//! sessions out. The reply is assembled and parsed by the log watcher's
//! reader ([`crate::vpnlog::management`]), which finds columns by name.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
};

use super::wire;
use crate::vpnlog::{
    management::{Notice, Reader},
    status::{Client, Snapshot},
};

/// The command: the client list with tab-separated columns named in a
/// `HEADER` line (their order changed between OpenVPN releases).
pub const ASK: &str = "status 3\n";

/// A session as the client list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub cid: u64,
    /// The tunnel, named as its login named it ([`wire::tunnel`]).
    pub user: String,
    pub peer: SocketAddr,
    pub address: Option<IpAddr>,
}

/// What a reply listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List {
    pub sessions: Vec<Listed>,
    /// Whether every row was read (the reply ended, no unreadable row, a
    /// client ID in each): sessions in rows not read stay unknown.
    pub complete: bool,
}

/// Why a reply listed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("OpenVPN refused its client list: {0}")]
pub struct Unlisted(pub String);

/// The reply to [`ASK`] while it is read.
#[derive(Debug, Default)]
pub struct Asking {
    reader: Reader,
    /// Sessions whose `>CLIENT:DISCONNECT` came while the reply was awaited:
    /// a list written before that must not bring them back (client IDs are
    /// never reused by one OpenVPN process). Bounded by the wait, which ends
    /// with the reply or with the connection (the management watchdog).
    ended: HashSet<u64>,
}

impl Asking {
    /// A session ended while the reply is awaited.
    pub fn ended(&mut self, cid: u64) {
        self.ended.insert(cid);
    }

    /// Feeds one line (without its line ending); the list once its `END`
    /// came. Sent first on a connection, the command gets its answer before
    /// any other: an `ERROR:` until then is its refusal.
    pub fn line(&mut self, line: &str) -> Option<Result<List, Unlisted>> {
        // Real-time notifications (`>…`) can come between the lines of a
        // reply; they are the session's to read, not part of the list.
        if line.starts_with('>') {
            return None;
        }
        match self.reader.line(line)? {
            Notice::Status(snapshot) => Some(Ok(self.list(snapshot))),
            Notice::Error(e) => Some(Err(Unlisted(e))),
            Notice::Client { .. } | Notice::Disconnect { .. } | Notice::Bytes { .. } => None,
        }
    }

    fn list(&self, snapshot: Snapshot) -> List {
        let complete =
            snapshot.complete() && snapshot.clients.iter().all(|c| c.client_id.is_some());
        let sessions = snapshot
            .clients
            .into_iter()
            .filter_map(|c| {
                let cid = c.client_id.filter(|cid| !self.ended.contains(cid))?;
                Some(Listed {
                    cid,
                    user: wire::tunnel(login_name(&c)?),
                    peer: c.peer,
                    address: c.virtual_addr,
                })
            })
            .collect();
        List { sessions, complete }
    }
}

/// The name a row's login gave: its `Username` (a login names its tunnel by
/// the username it sent; `username-as-common-name` makes the two the same,
/// while a server without it may give every client one certificate's name),
/// or the common name where the list has no such column (before 2.4).
/// `None` while the client is still logging in (`UNDEF`).
fn login_name(c: &Client) -> Option<&str> {
    match c.username.as_deref() {
        Some("UNDEF" | "") => None,
        Some(name) => Some(name),
        None => Some(&c.common_name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(asking: &mut Asking, text: &str) -> Vec<Result<List, Unlisted>> {
        text.lines().filter_map(|l| asking.line(l)).collect()
    }

    const HEADER: &str = "HEADER\tCLIENT_LIST\tCommon Name\tReal Address\tVirtual Address\t\
        Virtual IPv6 Address\tBytes Received\tBytes Sent\tConnected Since\t\
        Connected Since (time_t)\tUsername\tClient ID\tPeer ID\tData Channel Cipher";

    fn row(name: &str, peer: &str, address: &str, username: &str, cid: &str) -> String {
        format!(
            "CLIENT_LIST\t{name}\t{peer}\t{address}\t\t10\t20\t2026-11-26 17:46:31\t1795715191\t\
             {username}\t{cid}\t0\tAES-256-CBC"
        )
    }

    #[test]
    fn a_real_openvpn_26_client_list() {
        let mut asking = Asking::default();
        let got = read(
            &mut asking,
            include_str!("../../tests/data/openvpn-2.6-status3.txt"),
        );
        let [Ok(list)] = &got[..] else {
            panic!("{got:?}")
        };
        assert!(list.complete);
        assert_eq!(
            list.sessions,
            [Listed {
                cid: 0,
                user: "user1".into(),
                peer: "169.254.77.2:46472".parse().unwrap(),
                address: Some("100.64.0.2".parse().unwrap()),
            }]
        );
    }

    #[test]
    fn the_tunnel_is_the_username_a_uuid_stands_for_its_username() {
        let uuid = "7b716c84-3078-497e-beb0-e7ced6703e65";
        let tunnel = wire::tunnel(uuid);
        assert_ne!(tunnel, uuid);
        let text = [
            "TITLE\tOpenVPN 2.6.14".to_owned(),
            "TIME\t2026-11-26 17:46:32\t1795715192".to_owned(),
            HEADER.to_owned(),
            // One certificate for all: the username tells them apart.
            row("router", "169.254.98.2:1", "100.64.0.2", "r1", "3"),
            row("router", "169.254.98.3:1", "100.64.0.3", uuid, "4"),
            // Still logging in: no username yet, nothing to name it by.
            row("router", "169.254.98.4:1", "", "UNDEF", "5"),
            "END".to_owned(),
        ]
        .join("\n");
        let got = read(&mut Asking::default(), &text);
        let [Ok(list)] = &got[..] else {
            panic!("{got:?}")
        };
        let named: Vec<(u64, &str)> = list
            .sessions
            .iter()
            .map(|l| (l.cid, l.user.as_str()))
            .collect();
        assert_eq!(named, [(3, "r1"), (4, tunnel.as_str())]);

        // Without a Username column (an older server), the common name.
        let old = "TITLE,OpenVPN 2.3\nHEADER,CLIENT_LIST,Common Name,Real Address,Client ID\n\
                   CLIENT_LIST,r2,198.51.100.1:5,9\nEND\n";
        let got = read(&mut Asking::default(), old);
        let [Ok(list)] = &got[..] else {
            panic!("{got:?}")
        };
        assert_eq!((list.sessions[0].cid, &*list.sessions[0].user), (9, "r2"));
        assert_eq!(list.sessions[0].address, None);
    }

    #[test]
    fn notifications_between_the_lines_and_sessions_ended_meanwhile() {
        let mut asking = Asking::default();
        let text = [
            "TITLE\tOpenVPN 2.6.14".to_owned(),
            ">CLIENT:CONNECT,8,1".to_owned(),
            ">CLIENT:ENV,username=r8".to_owned(),
            "TIME\t2026-11-26 17:46:32\t1795715192".to_owned(),
            ">CLIENT:ENV,END".to_owned(),
            HEADER.to_owned(),
            row("r1", "169.254.98.2:1", "100.64.0.2", "r1", "3"),
            ">BYTECOUNT_CLI:3,1,2".to_owned(),
            row("r2", "169.254.98.3:1", "100.64.0.3", "r2", "4"),
            // `END` alone ends the reply, not a notification's `ENV,END`.
            ">CLIENT:DISCONNECT,4".to_owned(),
            ">CLIENT:ENV,END".to_owned(),
        ]
        .join("\n");
        assert!(read(&mut asking, &text).is_empty());
        asking.ended(4);
        let got = read(&mut asking, "END\n");
        let [Ok(list)] = &got[..] else {
            panic!("{got:?}")
        };
        let cids: Vec<u64> = list.sessions.iter().map(|l| l.cid).collect();
        assert_eq!(cids, [3], "4 ended while the list was on its way");
        assert!(list.complete);
    }

    #[test]
    fn a_refusal_and_unreadable_rows_are_told() {
        let got = read(
            &mut Asking::default(),
            ">INFO:OpenVPN Management Interface Version 5\n\
             ENTER PASSWORD:SUCCESS: password is correct\nERROR: unknown command\n",
        );
        assert_eq!(got, [Err(Unlisted("unknown command".into()))]);
        let text = format!(
            "TITLE\tx\n{HEADER}\n{}\n{}\nEND\n",
            row("r1", "nowhere", "", "r1", "3"),
            row("r2", "169.254.98.3:1", "100.64.0.3", "r2", "4"),
        );
        let got = read(&mut Asking::default(), &text);
        let [Ok(list)] = &got[..] else {
            panic!("{got:?}")
        };
        assert!(!list.complete, "a row not read");
        assert_eq!(list.sessions.len(), 1);
        // Rows without a client ID cannot be ended or followed.
        let no_id = "TITLE,x\nHEADER,CLIENT_LIST,Common Name,Real Address\n\
                     CLIENT_LIST,r2,198.51.100.1:5\nEND\n";
        let got = read(&mut Asking::default(), no_id);
        assert!(matches!(&got[..], [Ok(l)] if l.sessions.is_empty() && !l.complete));
    }
}
