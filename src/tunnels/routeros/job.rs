//! The job script that (re)creates a site's management tunnel.
//!
//! Made to be run with `/import` (and to survive a terminal paste): RouterOS
//! gives every top-level line of an imported file its own scope, so the whole
//! job is one `{ }` block and no value is carried between top-level lines.
//! It is idempotent: it first removes everything any version of it added (the
//! ovpn-client and PPP profile by name, firewall rules and address-list
//! entries by their `comment` tag), then adds the tunnel disabled, its rules
//! ahead of the router's own, and only then enables it — a line that fails
//! leaves no unfiltered tunnel. Jobs arrive over the router endpoint's public
//! name, not through the tunnel, so removing the tunnel never cuts the channel
//! the job came by. Every `find` names its property: a bare `[find]`, or a
//! variable named like the property it filters on, matches everything.
//!
//! It also (re)creates the read-only user the live view logs in with
//! ([`LIVE_USER`]: group policy `read,api,reboot`, nothing else, accepted only
//! from the OpenVPN server's tunnel address and the management networks),
//! with the password the job carries; a script rendered for the admin API
//! carries none and leaves that user as it is.
//!
//! The job records its progress in two globals the poller reads after the
//! import: `mgntJob` (its id) and `mgntJobError` (the step it stopped at, or
//! empty once everything is in place).

use std::{fmt::Write as _, net::Ipv4Addr};

use ipnet::Ipv4Net;
use uuid::Uuid;

use super::{ScriptError, Version, text::quote};
use crate::tunnels::ports::{INBOUND, OUTBOUND};

/// The CA that signed the OpenVPN servers' (and the router endpoint's)
/// certificates, as the router gets it.
#[derive(Debug, Clone, Copy)]
pub struct Ca<'a> {
    /// Where the router downloads the PEM file.
    pub url: &'a str,
    /// SHA-256 of each certificate (lowercase hex, as RouterOS shows
    /// `fingerprint`): the download is trusted only if these match.
    pub fingerprints: &'a [String],
}

/// The tunnel parameters a job carries.
#[derive(Debug, Clone)]
pub struct TunnelScript<'a> {
    pub uuid: Uuid,
    pub job: Uuid,
    pub username: &'a str,
    pub password: &'a str,
    /// The geo name routers connect to (`mgnt.mkcld.io`).
    pub connect_to: &'a str,
    pub port: u16,
    /// The data-channel HMAC; must equal the server's (`[provision] auth`).
    pub auth: &'a str,
    /// The OpenVPN server's own tunnel address: latency pings come from it.
    pub server_address: Ipv4Addr,
    /// Where management connections may come from (besides the server).
    pub management: &'a [Ipv4Net],
    /// `None`: the router cannot verify the server (said in the script).
    pub ca: Option<Ca<'a>>,
    /// The live-view user's password; `None` leaves the user as it is.
    pub live_password: Option<&'a str>,
}

/// The read-only RouterOS user (and group) the live view logs in as.
pub const LIVE_USER: &str = "mgnt-live";

/// Its group's policies: read, the API, reboot — no write, no sensitive.
pub const LIVE_POLICY: &str = "read,api,reboot";

/// The file a downloaded CA is written to before it is imported.
const CA_FILE: &str = "mgnt-ca.pem";

impl TunnelScript<'_> {
    /// Renders the job for `version`.
    pub fn render(&self, version: Version) -> Result<String, ScriptError> {
        let version = version.supported()?;
        let auth = self.auth.to_ascii_lowercase();
        version.check_auth(&auth)?;
        let mut s = String::with_capacity(8192);
        self.header(&mut s, version);
        s.push_str("{\n");
        let _ = writeln!(s, ":global mgntJob {}", quote(&self.job.to_string()));
        let _ = writeln!(s, ":global mgntJobError \"installing the CA\"");
        let _ = writeln!(s, ":local tag {}", quote(&tag(self.uuid)));
        self.ca(&mut s);
        self.remove(&mut s);
        self.tunnel(&mut s, version, &auth);
        self.firewall(&mut s);
        self.live_user(&mut s);
        let _ = writeln!(s, ":set mgntJobError \"enabling the tunnel\"");
        let _ = writeln!(
            s,
            "/interface ovpn-client enable [find name={}]",
            self.name()
        );
        let _ = writeln!(s, ":set mgntJobError \"\"");
        s.push_str("}\n");
        Ok(s)
    }

    fn name(&self) -> String {
        quote(&self.uuid.to_string())
    }

    fn header(&self, s: &mut String, version: Version) {
        let _ = writeln!(s, "# mgnt job {}", self.job);
        let _ = writeln!(
            s,
            "# mgnt management tunnel {} (RouterOS {version})",
            self.uuid
        );
        let _ = writeln!(
            s,
            "# One block: an imported file gives each top-level line its own scope."
        );
    }

    /// Installs the CA unless it is there: downloaded unverified (the router
    /// may not trust anything yet) and accepted only by its fingerprints, which
    /// came in this script.
    fn ca(&self, s: &mut String) {
        let Some(ca) = self.ca else {
            return;
        };
        let missing: Vec<String> = ca
            .fingerprints
            .iter()
            .map(|f| format!("([:len [/certificate find fingerprint={}]] = 0)", quote(f)))
            .collect();
        let missing = missing.join(" || ");
        let file = quote(CA_FILE);
        let _ = writeln!(s, ":if ({missing}) do={{");
        let _ = writeln!(
            s,
            "/tool fetch url={} dst-path={file} check-certificate=no",
            quote(ca.url)
        );
        let _ = writeln!(s, "/certificate import file-name={file} passphrase=\"\"");
        let _ = writeln!(s, "/file remove [find name={file}]");
        s.push_str("}\n");
        let _ = writeln!(
            s,
            ":if ({missing}) do={{:error \"the downloaded mgnt CA does not match its fingerprint\"}}"
        );
    }

    /// Removes what any version of the job added; the tunnel goes first, so
    /// it is never up without its rules.
    fn remove(&self, s: &mut String) {
        let name = self.name();
        let _ = writeln!(s, ":set mgntJobError \"removing the previous tunnel\"");
        let _ = writeln!(s, "/interface ovpn-client remove [find name={name}]");
        let _ = writeln!(s, "/ppp profile remove [find name={name}]");
        let _ = writeln!(s, "/ip firewall filter remove [find comment=$tag]");
        let _ = writeln!(s, "/ip firewall address-list remove [find comment=$tag]");
    }

    fn tunnel(&self, s: &mut String, version: Version, auth: &str) {
        let name = self.name();
        let _ = writeln!(s, ":set mgntJobError \"adding the tunnel, disabled\"");
        let _ = writeln!(
            s,
            "/ppp profile add name={name} change-tcp-mss=yes use-encryption=required"
        );
        let verify = match (self.ca.is_some(), version.has_verify_server_certificate()) {
            (true, true) => " verify-server-certificate=yes",
            (false, true) => " verify-server-certificate=no",
            (_, false) => "",
        };
        if self.ca.is_none() {
            s.push_str("# The server is not verified: [provision] ca_file is not set.\n");
        } else if !version.has_verify_server_certificate() {
            let _ = writeln!(
                s,
                "# RouterOS {version} cannot verify an OpenVPN server; 7.1 and later do."
            );
        }
        let _ = writeln!(
            s,
            "/interface ovpn-client add name={name} connect-to={} port={} mode=ip \
             user={} password={} profile={name} certificate=none{verify} cipher={} auth={auth} \
             add-default-route=no disabled=yes comment=$tag",
            quote(self.connect_to),
            self.port,
            quote(self.username),
            quote(self.password),
            version.aes256_cbc(),
        );
    }

    /// Management traffic only, with the management networks; latency pings
    /// only from the server's own address; nothing routed through the tunnel.
    fn firewall(&self, s: &mut String) {
        let name = self.name();
        let _ = writeln!(s, ":set mgntJobError \"adding the firewall rules\"");
        let mut networks = vec![self.server_address.to_string()];
        networks.extend(self.management.iter().map(|n| n.to_string()));
        networks.dedup();
        for n in networks {
            let _ = writeln!(
                s,
                "/ip firewall address-list add list=$tag address={n} comment=$tag"
            );
        }
        let mut rules = vec![format!(
            "chain=input in-interface={name} connection-state=established,related action=accept"
        )];
        for &(proto, ports) in INBOUND {
            rules.push(format!(
                "chain=input in-interface={name} src-address-list=$tag protocol={proto} dst-port={ports} action=accept"
            ));
        }
        rules.push(format!(
            "chain=input in-interface={name} src-address={} protocol=icmp action=accept",
            self.server_address
        ));
        rules.push(format!("chain=input in-interface={name} action=drop"));
        rules.push(format!(
            "chain=output out-interface={name} connection-state=established,related action=accept"
        ));
        for &(proto, ports) in OUTBOUND {
            rules.push(format!(
                "chain=output out-interface={name} dst-address-list=$tag protocol={proto} dst-port={ports} action=accept"
            ));
        }
        rules.push(format!(
            "chain=output out-interface={name} dst-address={} protocol=icmp action=accept",
            self.server_address
        ));
        rules.push(format!("chain=output out-interface={name} action=drop"));
        rules.push(format!("chain=forward in-interface={name} action=drop"));
        rules.push(format!("chain=forward out-interface={name} action=drop"));
        // Ahead of the router's own rules, in this order: each goes before the
        // first static rule there was when the block started (a dynamic rule,
        // such as fasttrack's counter, cannot have a rule placed before it).
        let _ = writeln!(s, ":local top [/ip firewall filter find dynamic=no]");
        for r in rules {
            let _ = writeln!(
                s,
                ":if ([:len $top] > 0) do={{/ip firewall filter add {r} comment=$tag \
                 place-before=[:pick $top 0]}} else={{/ip firewall filter add {r} comment=$tag}}"
            );
        }
    }

    /// The live view's user, made again with this job's password: the user
    /// before the group it belongs to goes, and the group before the user.
    fn live_user(&self, s: &mut String) {
        let Some(password) = self.live_password else {
            s.push_str(
                "# The live-view user is left as it is: jobs fetched on the router endpoint carry its password.\n",
            );
            return;
        };
        let user = quote(LIVE_USER);
        let mut from = vec![format!("{}/32", self.server_address)];
        from.extend(self.management.iter().map(|n| n.to_string()));
        from.dedup();
        let _ = writeln!(s, ":set mgntJobError \"adding the live-view user\"");
        let _ = writeln!(s, "/user remove [find name={user}]");
        let _ = writeln!(s, "/user group remove [find name={user}]");
        let _ = writeln!(s, "/user group add name={user} policy={LIVE_POLICY}");
        let _ = writeln!(
            s,
            "/user add name={user} group={user} password={} address={}",
            quote(password),
            from.join(",")
        );
    }
}

/// The comment (and address list) that marks what a site's jobs added.
pub fn tag(site: Uuid) -> String {
    format!("mgnt:{site}")
}
