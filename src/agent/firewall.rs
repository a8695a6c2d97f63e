//! Isolation on the OpenVPN server: an nftables table of the agent's own
//! (`inet mgnt`) that drops forwarding between tunnel addresses and lets
//! through only the management traffic between tunnels and the management
//! networks. Everything comes from the control plane (the pool, `[provision]
//! management_networks`, the port table), never from the agent's files.
//! OpenVPN must not forward inside itself (`client-to-client`), where
//! nftables never sees the packets: the agent refuses to run beside it.

use std::{fmt::Write as _, io::Write as _, process::Stdio};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// The table the agent owns (replaced whole, atomically, on every change).
pub const TABLE: &str = "mgnt";

/// One entry of the port table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub protocol: String,
    /// Ports, comma-separated (`8728,8729`).
    pub ports: String,
}

/// What may cross the server between tunnels and the management networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub pool: Ipv4Net,
    pub networks: Vec<Ipv4Net>,
    /// Towards the tunnels, from the management networks.
    pub inbound: Vec<Port>,
    /// From the tunnels, to the management networks.
    pub outbound: Vec<Port>,
}

/// `(protocol, port set)` for the protocols of `ports`, in table order.
fn by_protocol(ports: &[Port]) -> Vec<(String, String)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for p in ports {
        let list: Vec<String> = p.ports.split(',').map(|v| v.trim().to_owned()).collect();
        match out.iter_mut().find(|(proto, _)| *proto == p.protocol) {
            Some((_, all)) => all.extend(list),
            None => out.push((p.protocol.clone(), list)),
        }
    }
    out.into_iter()
        .map(|(proto, list)| (proto, list.join(", ")))
        .collect()
}

/// Whether `s` is safe inside an nft rule (a protocol name or port list).
fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ',' | ' ' | '-'))
}

impl Policy {
    /// The `nft -f` input that replaces the table in one transaction.
    pub fn rules(&self) -> Result<String, String> {
        let pool = self.pool.trunc();
        let mut s = String::with_capacity(2048);
        let _ = writeln!(s, "add table inet {TABLE}");
        let _ = writeln!(s, "delete table inet {TABLE}");
        let _ = writeln!(s, "table inet {TABLE} {{");
        s.push_str("\tset management {\n\t\ttype ipv4_addr\n\t\tflags interval\n");
        if !self.networks.is_empty() {
            let nets: Vec<String> = self
                .networks
                .iter()
                .map(|n| n.trunc().to_string())
                .collect();
            let _ = writeln!(s, "\t\telements = {{ {} }}", nets.join(", "));
        }
        s.push_str("\t}\n");
        s.push_str(
            "\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n",
        );
        let _ = writeln!(
            s,
            "\t\tip saddr {pool} ip daddr {pool} drop comment \"no tunnel reaches another\""
        );
        s.push_str("\t\tct state established,related accept\n");
        for (proto, set) in by_protocol(&self.inbound) {
            if !(plain(&proto) && plain(&set)) {
                return Err(format!("unusable port entry `{proto} {set}`"));
            }
            let _ = writeln!(
                s,
                "\t\tip saddr @management ip daddr {pool} {proto} dport {{ {set} }} accept"
            );
        }
        let _ = writeln!(
            s,
            "\t\tip saddr @management ip daddr {pool} icmp type echo-request accept"
        );
        for (proto, set) in by_protocol(&self.outbound) {
            if !(plain(&proto) && plain(&set)) {
                return Err(format!("unusable port entry `{proto} {set}`"));
            }
            let _ = writeln!(
                s,
                "\t\tip saddr {pool} ip daddr @management {proto} dport {{ {set} }} accept"
            );
        }
        let _ = writeln!(
            s,
            "\t\tip daddr {pool} drop comment \"nothing else reaches a tunnel\""
        );
        let _ = writeln!(
            s,
            "\t\tip saddr {pool} drop comment \"a tunnel reaches nothing else\""
        );
        s.push_str("\t}\n}\n");
        Ok(s)
    }
}

/// Checks that rules can be loaded here (nft installed, the privilege to
/// use it) without changing anything (`nft --check`).
pub fn check(policy: &Policy) -> Result<(), String> {
    run_nft(&["--check", "-f", "-"], &policy.rules()?)
}

/// Renders and loads the rules of `policy`.
pub fn install(policy: &Policy) -> Result<(), String> {
    apply(&policy.rules()?)
}

/// Loads `rules` with `nft -f -`.
pub fn apply(rules: &str) -> Result<(), String> {
    run_nft(&["-f", "-"], rules)
}

fn run_nft(args: &[&str], rules: &str) -> Result<(), String> {
    let mut child = std::process::Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running nft (Debian package nftables): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rules.as_bytes())
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft refused the rules: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// What in an OpenVPN server config keeps the agent from doing its work.
pub fn openvpn_problems(config: &str) -> Vec<&'static str> {
    let options: Vec<&str> = config
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_whitespace().next())
        .map(|o| o.trim_start_matches("--"))
        .collect();
    let mut problems = Vec::new();
    if options.contains(&"client-to-client") {
        problems.push("it has client-to-client: OpenVPN would forward between tunnels itself, where no firewall sees it");
    }
    if !options.contains(&"management-client-auth") {
        problems
            .push("it has no management-client-auth: the agent would not be asked about logins");
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(networks: &[&str]) -> Policy {
        let port = |protocol: &str, ports: &str| Port {
            protocol: protocol.into(),
            ports: ports.into(),
        };
        Policy {
            pool: "100.64.0.7/10".parse().unwrap(),
            networks: networks.iter().map(|n| n.parse().unwrap()).collect(),
            inbound: vec![
                port("tcp", "179"),
                port("udp", "161"),
                port("tcp", "8728,8729"),
            ],
            outbound: vec![port("udp", "53"), port("tcp", "53")],
        }
    }

    #[test]
    fn the_rules_replace_one_table_and_drop_tunnel_to_tunnel_first() {
        let r = policy(&["10.20.0.0/16"]).rules().unwrap();
        let lines: Vec<&str> = r.lines().map(str::trim).collect();
        assert_eq!(
            &lines[..3],
            [
                "add table inet mgnt",
                "delete table inet mgnt",
                "table inet mgnt {"
            ]
        );
        assert!(lines.contains(&"elements = { 10.20.0.0/16 }"));
        let drop = lines
            .iter()
            .position(|l| l.starts_with("ip saddr 100.64.0.0/10 ip daddr 100.64.0.0/10 drop"))
            .unwrap();
        let established = lines
            .iter()
            .position(|l| l.starts_with("ct state"))
            .unwrap();
        assert!(
            drop < established,
            "tunnel to tunnel never passes, not even established"
        );
        assert!(lines.contains(
            &"ip saddr @management ip daddr 100.64.0.0/10 tcp dport { 179, 8728, 8729 } accept"
        ));
        assert!(
            lines.contains(&"ip saddr 100.64.0.0/10 ip daddr @management udp dport { 53 } accept")
        );
        assert!(lines.last().unwrap().is_empty() || *lines.last().unwrap() == "}");
        // No management network: an empty set, still valid.
        assert!(!policy(&[]).rules().unwrap().contains("elements"));
        let mut bad = policy(&[]);
        bad.inbound[0].ports = "22; flush ruleset".into();
        assert!(bad.rules().is_err());
    }

    #[test]
    fn client_to_client_and_a_missing_client_auth_are_problems() {
        assert!(openvpn_problems("port 8443\nmanagement-client-auth\n").is_empty());
        assert_eq!(
            openvpn_problems("client-to-client\nmanagement-client-auth\n").len(),
            1
        );
        assert_eq!(openvpn_problems("# client-to-client\nport 1\n").len(), 1);
    }
}
