//! OpenVPN's client list — status files (`status-version` 1, 2 and 3) and the
//! management interface's `status 3` reply — parsed into who is connected.
//!
//! Versions 2 and 3 name their columns in a `HEADER,CLIENT_LIST,…` line, whose
//! order changed between OpenVPN releases, so columns are found by name.
//! Version 1 splits the client list from the routing table (which holds the
//! tunnel address) and has no machine-readable times.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
};

use super::parse::parse_peer;

/// One connected client as OpenVPN lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub common_name: String,
    /// The `Username` column as it stands (`UNDEF` while the client logs
    /// in), where the format has one (status 2 and 3).
    pub username: Option<String>,
    pub peer: SocketAddr,
    pub virtual_addr: Option<IpAddr>,
    /// Received from the router, sent to it.
    pub bytes: Option<(u64, u64)>,
    /// Connected since (seconds since 1970), where the format says.
    pub since: Option<u64>,
    /// The management interface's client ID.
    pub client_id: Option<u64>,
}

/// The client list at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// When OpenVPN wrote it, where the format says (versions 2 and 3).
    pub taken: Option<u64>,
    pub clients: Vec<Client>,
    /// Rows that could not be read (`line number: reason`). A snapshot with
    /// any is incomplete: absence from it proves nothing.
    pub bad_rows: Vec<String>,
    /// Whether the report's `END` line was there: without it the report was
    /// read while OpenVPN was still writing it (or it was cut).
    pub ended: bool,
}

impl Snapshot {
    /// Whether absence from this report means a client is gone.
    pub fn complete(&self) -> bool {
        self.ended && self.bad_rows.is_empty()
    }
}

/// Why a text is not a status report at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an OpenVPN status report: {0}")]
pub struct NotStatus(pub String);

/// Parses a status file or `status` reply of any version.
pub fn parse_status(text: &str) -> Result<Snapshot, NotStatus> {
    let first = text.lines().next().unwrap_or("");
    if first.starts_with("OpenVPN CLIENT LIST") {
        return Ok(version1(text));
    }
    for sep in [',', '\t'] {
        if first.starts_with(&format!("TITLE{sep}")) {
            return Ok(versions2and3(text, sep));
        }
    }
    let shown: String = first.chars().take(60).collect();
    Err(NotStatus(format!("first line is `{shown}`")))
}

/// The 2.6 column order, for a report without a HEADER line.
const DEFAULT_COLUMNS: [&str; 13] = [
    "Common Name",
    "Real Address",
    "Virtual Address",
    "Virtual IPv6 Address",
    "Bytes Received",
    "Bytes Sent",
    "Connected Since",
    "Connected Since (time_t)",
    "Username",
    "Client ID",
    "Peer ID",
    "Data Channel Cipher",
    "",
];

fn versions2and3(text: &str, sep: char) -> Snapshot {
    let mut snap = Snapshot::default();
    let mut columns: HashMap<&str, usize> = DEFAULT_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, i))
        .collect();
    for (n, line) in text.lines().enumerate() {
        let mut fields = line.split(sep);
        match fields.next() {
            Some("END") => snap.ended = true,
            Some("TIME") => snap.taken = fields.nth(1).and_then(|t| t.trim().parse().ok()),
            Some("HEADER") if fields.next() == Some("CLIENT_LIST") => {
                columns = fields.enumerate().map(|(i, c)| (c, i)).collect();
            }
            Some("CLIENT_LIST") => {
                let row: Vec<&str> = fields.collect();
                let get = |name: &str| columns.get(name).and_then(|&i| row.get(i)).copied();
                match client(&get) {
                    Ok(Some(c)) => snap.clients.push(c),
                    Ok(None) => {}
                    Err(why) => snap.bad_rows.push(format!("line {}: {why}", n + 1)),
                }
            }
            _ => {}
        }
    }
    snap
}

/// One row by column name; `None` for a client not yet authenticated.
fn client<'a>(get: &dyn Fn(&str) -> Option<&'a str>) -> Result<Option<Client>, String> {
    let common_name = get("Common Name").ok_or("no Common Name")?;
    if common_name == "UNDEF" || common_name.is_empty() {
        return Ok(None);
    }
    let real = get("Real Address").ok_or("no Real Address")?;
    let peer = parse_peer(real).ok_or_else(|| format!("Real Address `{real}` is not IP:port"))?;
    let number = |name: &str| -> Result<Option<u64>, String> {
        match get(name).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("{name} `{v}` is not a number")),
        }
    };
    let bytes = number("Bytes Received")?.zip(number("Bytes Sent")?);
    Ok(Some(Client {
        common_name: common_name.to_owned(),
        username: get("Username").map(str::to_owned),
        peer,
        virtual_addr: get("Virtual Address").and_then(|v| v.parse().ok()),
        bytes,
        since: number("Connected Since (time_t)")?,
        client_id: number("Client ID")?,
    }))
}

fn version1(text: &str) -> Snapshot {
    #[derive(PartialEq)]
    enum Part {
        Clients,
        Routes,
        Other,
    }
    let mut snap = Snapshot::default();
    let mut routes: HashMap<SocketAddr, IpAddr> = HashMap::new();
    let mut part = Part::Other;
    for (n, line) in text.lines().enumerate() {
        match line {
            "OpenVPN CLIENT LIST" => part = Part::Clients,
            "ROUTING TABLE" => part = Part::Routes,
            "GLOBAL STATS" => part = Part::Other,
            "END" => {
                part = Part::Other;
                snap.ended = true;
            }
            _ if line.starts_with("Updated,")
                || line.starts_with("Common Name,")
                || line.starts_with("Virtual Address,") => {}
            _ if part == Part::Clients => {
                let f: Vec<&str> = line.split(',').collect();
                let get = |name: &str| {
                    let i = [
                        "Common Name",
                        "Real Address",
                        "Bytes Received",
                        "Bytes Sent",
                    ]
                    .iter()
                    .position(|c| *c == name)?;
                    f.get(i).copied()
                };
                match client(&get) {
                    Ok(Some(c)) => snap.clients.push(c),
                    Ok(None) => {}
                    Err(why) => snap.bad_rows.push(format!("line {}: {why}", n + 1)),
                }
            }
            _ if part == Part::Routes => {
                let f: Vec<&str> = line.split(',').collect();
                // Learned routes (`100.64.0.0/24C`) are not the client's own address.
                if let (Some(Ok(v)), Some(Some(p))) = (
                    f.first().map(|v| v.parse::<IpAddr>()),
                    f.get(2).map(|p| parse_peer(p)),
                ) {
                    routes.entry(p).or_insert(v);
                }
            }
            _ => {}
        }
    }
    for c in &mut snap.clients {
        c.virtual_addr = routes.get(&c.peer).copied();
    }
    snap
}

#[cfg(test)]
mod tests {
    use super::*;

    fn the_client(s: &Snapshot) -> &Client {
        assert!(s.complete(), "{:?}", s.bad_rows);
        assert_eq!(s.clients.len(), 1, "{s:?}");
        let c = &s.clients[0];
        assert_eq!(c.common_name, "user1");
        assert_eq!(c.peer.ip(), "169.254.77.2".parse::<IpAddr>().unwrap());
        assert_eq!(c.virtual_addr, Some("100.64.0.2".parse().unwrap()));
        c
    }

    #[test]
    fn a_report_read_before_its_end_line_proves_nothing() {
        for text in [
            include_str!("../../tests/data/openvpn-2.6-status1.txt"),
            include_str!("../../tests/data/openvpn-2.6-status2.txt"),
            include_str!("../../tests/data/openvpn-2.6-status3.txt"),
        ] {
            let end = text.rfind("END").unwrap();
            for cut in (0..end).filter(|&c| text.is_char_boundary(c)) {
                if let Ok(s) = parse_status(&text[..cut]) {
                    assert!(!s.complete(), "cut at {cut}: {s:?}");
                }
            }
            assert!(parse_status(text).unwrap().complete());
        }
    }

    #[test]
    fn real_openvpn_26_status_files_of_every_version() {
        let v1 = parse_status(include_str!("../../tests/data/openvpn-2.6-status1.txt")).unwrap();
        let c = the_client(&v1);
        assert_eq!(
            (c.bytes, c.since, v1.taken),
            (Some((1048, 2023)), None, None)
        );
        for (text, peer, bytes) in [
            (
                include_str!("../../tests/data/openvpn-2.6-status2.txt"),
                52254,
                (1152, 1916),
            ),
            (
                include_str!("../../tests/data/openvpn-2.6-status3.txt"),
                46472,
                (1048, 2024),
            ),
        ] {
            let s = parse_status(text).unwrap();
            let c = the_client(&s);
            assert_eq!((c.peer.port(), c.bytes), (peer, Some(bytes)));
            assert!(c.since.is_some() && s.taken >= c.since && c.client_id.is_some());
        }
    }

    #[test]
    fn columns_are_found_by_name_and_bad_rows_make_the_snapshot_incomplete() {
        let text = "TITLE,OpenVPN 2.4.12\nTIME,Mon,1700000000\n\
            HEADER,CLIENT_LIST,Real Address,Common Name,Bytes Sent,Bytes Received,Connected Since (time_t)\n\
            CLIENT_LIST,[AF_INET6]2001:db8::7:40000,r7,10,20,1699999999\n\
            CLIENT_LIST,198.51.100.1:5,UNDEF,0,0,1\n\
            CLIENT_LIST,nowhere,r8,1,2,3\nEND\n";
        let s = parse_status(text).unwrap();
        assert_eq!(s.taken, Some(1_700_000_000));
        assert_eq!(s.clients.len(), 1);
        assert_eq!(s.clients[0].bytes, Some((20, 10)));
        assert_eq!(s.clients[0].peer, "[2001:db8::7]:40000".parse().unwrap());
        assert!(!s.complete());
        assert!(
            s.bad_rows[0].starts_with("line 6: Real Address"),
            "{:?}",
            s.bad_rows
        );
    }

    #[test]
    fn other_text_is_refused_and_cut_reports_never_panic() {
        assert!(parse_status("hello\n").is_err());
        assert!(parse_status("").is_err());
        let full = include_str!("../../tests/data/openvpn-2.6-status3.txt");
        for cut in 0..full.len() {
            if full.is_char_boundary(cut) {
                let _ = parse_status(&full[..cut]);
            }
        }
    }
}
