//! The RouterOS script that (re)creates a site's management tunnel.
//!
//! Idempotent by construction: it first removes everything the tunnel ever
//! added — the ovpn-client and PPP profile by name, firewall rules by their
//! `comment` tag — then adds them again from the latest parameters, so running
//! it twice leaves the router as running it once. Every value is quoted and
//! every `find` names its property (`[find name="…"]`): a bare `[find]`, or a
//! script variable named like the property it filters on, matches everything.

use std::fmt::Write as _;

use uuid::Uuid;

/// A RouterOS release, as far as the script's syntax depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    #[error("`{0}` is not a RouterOS version like 6, 7, 6.49.7 or 7.16")]
    Version(String),
    #[error("RouterOS {0} supports only md5 and sha1 for OpenVPN auth, not `{1}`")]
    Auth(String, String),
    #[error("`{0}` is not an OpenVPN auth digest RouterOS offers")]
    UnknownAuth(String),
}

impl Version {
    /// The newest release of each major line, for `?version=6` and `?version=7`.
    pub const LATEST_6: Self = Self {
        major: 6,
        minor: 49,
    };
    pub const LATEST_7: Self = Self {
        major: 7,
        minor: 99,
    };

    pub fn parse(s: &str) -> Result<Self, ScriptError> {
        let err = || ScriptError::Version(s.to_owned());
        let mut parts = s.trim().split('.');
        let major: u8 = parts.next().and_then(|p| p.parse().ok()).ok_or_else(err)?;
        let minor = match parts.next() {
            None => None,
            Some(p) => Some(p.parse::<u8>().map_err(|_| err())?),
        };
        // A patch level is allowed and irrelevant; anything more is not a version.
        if let Some(p) = parts.next() {
            p.parse::<u16>().map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        match (major, minor) {
            (6, None) => Ok(Self::LATEST_6),
            (7, None) => Ok(Self::LATEST_7),
            (6 | 7, Some(minor)) => Ok(Self { major, minor }),
            _ => Err(err()),
        }
    }

    /// 7.8 renamed the cipher values and added `protocol` (OpenVPN over UDP).
    fn has_protocol(self) -> bool {
        self >= Self { major: 7, minor: 8 }
    }
}

/// The tunnel parameters the script carries.
#[derive(Debug, Clone)]
pub struct TunnelScript<'a> {
    pub uuid: Uuid,
    pub username: &'a str,
    pub password: &'a str,
    /// The geo name routers connect to (`mgnt.mkcld.io`).
    pub connect_to: &'a str,
    pub port: u16,
    /// The data-channel HMAC; must equal the server's (`[provision] auth`).
    pub auth: &'a str,
}

/// Management traffic the tunnel may carry, towards the router (input).
const INBOUND: [(&str, &str, &str); 6] = [
    ("tcp", "179", "BGP security feeds"),
    ("udp", "161", "SNMP"),
    ("tcp", "8728,8729", "RouterOS API"),
    ("tcp", "8291", "Winbox management access"),
    ("tcp", "22", "SSH management access"),
    ("icmp", "", "latency probes"),
];

/// Management traffic the router sends into the tunnel (output).
const OUTBOUND: [(&str, &str, &str); 6] = [
    ("udp", "53", "DNS for content filtering"),
    ("tcp", "53", "DNS for content filtering"),
    ("udp", "2055", "traffic-flow export"),
    ("udp", "162", "SNMP traps"),
    ("udp", "514", "system logs"),
    ("tcp", "179", "BGP security feeds"),
];

impl TunnelScript<'_> {
    /// Renders the script for `version`.
    pub fn render(&self, version: Version) -> Result<String, ScriptError> {
        let auth = self.auth.to_ascii_lowercase();
        if !["md5", "sha1", "sha256", "sha512", "null"].contains(&auth.as_str()) {
            return Err(ScriptError::UnknownAuth(self.auth.to_owned()));
        }
        if version.major == 6 && !["md5", "sha1"].contains(&auth.as_str()) {
            return Err(ScriptError::Auth(
                format!("{}.{}", version.major, version.minor),
                auth,
            ));
        }
        let id = self.uuid.to_string();
        let tag = format!("mgnt:{id}");
        let mut s = String::with_capacity(4096);
        let _ = writeln!(
            s,
            "# mgnt management tunnel {id} (RouterOS {}.{})",
            version.major, version.minor
        );
        let _ = writeln!(
            s,
            "# Remove everything this tunnel added before, then add it again."
        );
        let _ = writeln!(s, "/ip firewall filter remove [find comment=\"{tag}\"]");
        let _ = writeln!(s, "/interface ovpn-client remove [find name=\"{id}\"]");
        let _ = writeln!(s, "/ppp profile remove [find name=\"{id}\"]");
        let _ = writeln!(
            s,
            "/ppp profile add name=\"{id}\" change-tcp-mss=yes use-encryption=required"
        );
        let cipher = if version.has_protocol() {
            "aes256-cbc"
        } else {
            "aes256"
        };
        let protocol = if version.has_protocol() {
            " protocol=tcp"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "/interface ovpn-client add name=\"{id}\" connect-to=\"{}\" port={} mode=ip{protocol} \
             user=\"{}\" password=\"{}\" profile=\"{id}\" certificate=none cipher={cipher} auth={auth} \
             add-default-route=no disabled=no comment=\"{tag}\"",
            self.connect_to,
            self.port,
            self.username,
            escape(self.password),
        );
        Self::firewall(&mut s, &id, &tag);
        Ok(s)
    }

    /// Allows the listed management traffic on the tunnel and drops the rest,
    /// including anything routed between the tunnel and other interfaces.
    fn firewall(s: &mut String, id: &str, tag: &str) {
        let _ = writeln!(
            s,
            "# Only management traffic on the tunnel; no router-to-router traffic."
        );
        let mut rules: Vec<String> = vec![format!(
            "chain=input in-interface=\"{id}\" connection-state=established,related action=accept"
        )];
        for (proto, ports, _) in INBOUND {
            rules.push(rule("input", "in-interface", id, proto, ports));
        }
        rules.push(format!("chain=input in-interface=\"{id}\" action=drop"));
        rules.push(format!(
            "chain=output out-interface=\"{id}\" connection-state=established,related action=accept"
        ));
        for (proto, ports, _) in OUTBOUND {
            rules.push(rule("output", "out-interface", id, proto, ports));
        }
        rules.push(format!("chain=output out-interface=\"{id}\" action=drop"));
        rules.push(format!("chain=forward in-interface=\"{id}\" action=drop"));
        rules.push(format!("chain=forward out-interface=\"{id}\" action=drop"));
        // Ahead of the router's own rules, in this order: each goes before the
        // rule that was first when the script started.
        let _ = writeln!(s, ":local mgntTop [/ip firewall filter find]");
        for r in rules {
            let _ = writeln!(
                s,
                ":if ([:len $mgntTop] > 0) do={{/ip firewall filter add {r} comment=\"{tag}\" \
                 place-before=[:pick $mgntTop 0]}} else={{/ip firewall filter add {r} comment=\"{tag}\"}}"
            );
        }
    }
}

fn rule(chain: &str, side: &str, id: &str, proto: &str, ports: &str) -> String {
    let ports = if ports.is_empty() {
        String::new()
    } else {
        format!(" dst-port={ports}")
    };
    format!("chain={chain} {side}=\"{id}\" protocol={proto}{ports} action=accept")
}

/// Quotes a value for a RouterOS string: backslash, quote and `$` are escaped.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '\\' | '"' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn script(auth: &str) -> TunnelScript<'static> {
        let auth: &'static str = Box::leak(auth.to_owned().into_boxed_str());
        TunnelScript {
            uuid: Uuid::parse_str("3f2b6c1e-9a4d-4e8b-b1c2-7d5e9f0a1b2c").unwrap(),
            username: "h4vwyhu2jvhixmocpvpj6cq3fq",
            password: "s3cr\"et$pw",
            connect_to: "mgnt.mkcld.io",
            port: 8443,
            auth,
        }
    }

    /// Compares with `src/tunnels/golden/NAME`; `UPDATE_GOLDEN=1` rewrites it.
    fn golden(name: &str, got: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/tunnels/golden")
            .join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, got).unwrap();
        }
        let want =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(got, want, "{name} differs from the golden file");
    }

    #[test]
    fn golden_scripts_per_version() {
        for (v, file) in [
            ("6.49.7", "v6.49.rsc"),
            ("7.7", "v7.7.rsc"),
            ("7.16.2", "v7.16.rsc"),
        ] {
            let got = script("sha1").render(Version::parse(v).unwrap()).unwrap();
            golden(file, &got);
        }
    }

    #[test]
    fn versions_parse_and_default_to_the_latest() {
        assert_eq!(Version::parse("6").unwrap(), Version::LATEST_6);
        assert_eq!(Version::parse("7").unwrap(), Version::LATEST_7);
        assert_eq!(
            Version::parse("7.16.2").unwrap(),
            Version {
                major: 7,
                minor: 16
            }
        );
        for bad in ["", "5.26", "8", "7.x", "7.1.2.3", "latest"] {
            assert!(Version::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn v6_refuses_digests_it_does_not_offer() {
        let v6 = Version::parse("6.49.7").unwrap();
        assert!(matches!(
            script("sha256").render(v6),
            Err(ScriptError::Auth(..))
        ));
        assert!(
            script("sha256")
                .render(Version::parse("7.16").unwrap())
                .is_ok()
        );
        assert!(matches!(
            script("whirlpool").render(v6),
            Err(ScriptError::UnknownAuth(_))
        ));
    }

    /// Splits `a=b c="d e"` into pairs, honouring quotes and escapes.
    fn params(line: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let (mut key, mut val, mut in_val, mut quoted, mut esc) =
            (String::new(), String::new(), false, false, false);
        for c in line.chars().chain(std::iter::once(' ')) {
            if esc {
                val.push(c);
                esc = false;
                continue;
            }
            match c {
                '\\' if quoted => esc = true,
                '"' => quoted = !quoted,
                '=' if !in_val => in_val = true,
                ' ' if !quoted => {
                    if in_val {
                        out.insert(std::mem::take(&mut key), std::mem::take(&mut val));
                    }
                    key.clear();
                    in_val = false;
                }
                c if in_val => val.push(c),
                c => key.push(c),
            }
        }
        out
    }

    /// Parameters and values RouterOS accepts per command. Names follow the
    /// `community.routeros` collection's API data (`plugins/module_utils/_api_data.py`,
    /// including its per-version fields); values and the v6 and pre-7.8
    /// differences follow MikroTik's documentation.
    fn accepted(
        version: Version,
        command: &str,
    ) -> Vec<(&'static str, Option<&'static [&'static str]>)> {
        let v78 = version.has_protocol();
        match command {
            "/interface ovpn-client add" => {
                let mut p: Vec<(&str, Option<&[&str]>)> = vec![
                    ("name", None),
                    ("connect-to", None),
                    ("port", None),
                    ("mode", Some(&["ip", "ethernet"])),
                    ("user", None),
                    ("password", None),
                    ("profile", None),
                    ("certificate", None),
                    ("add-default-route", Some(&["yes", "no"])),
                    ("disabled", Some(&["yes", "no"])),
                    ("comment", None),
                ];
                if version.major == 6 {
                    p.push((
                        "cipher",
                        Some(&["null", "aes128", "aes192", "aes256", "blowfish128"]),
                    ));
                    p.push(("auth", Some(&["md5", "sha1", "null"])));
                } else {
                    let ciphers: &[&str] = if v78 {
                        &[
                            "null",
                            "aes128-cbc",
                            "aes192-cbc",
                            "aes256-cbc",
                            "aes128-gcm",
                            "aes192-gcm",
                            "aes256-gcm",
                            "blowfish128",
                        ]
                    } else {
                        &["null", "aes128", "aes192", "aes256", "blowfish128"]
                    };
                    p.push(("cipher", Some(ciphers)));
                    p.push(("auth", Some(&["md5", "sha1", "sha256", "sha512", "null"])));
                    p.push(("verify-server-certificate", Some(&["yes", "no"])));
                    p.push(("use-peer-dns", Some(&["yes", "no"])));
                    p.push(("route-nopull", Some(&["yes", "no"])));
                    if v78 {
                        p.push(("protocol", Some(&["tcp", "udp"])));
                        p.push(("tls-version", Some(&["any", "only-1.2"])));
                    }
                }
                p
            }
            // `comment` on PPP profiles exists only from 7.15 (community.routeros
            // lists it among the versioned fields), so the script never sets it.
            "/ppp profile add" => {
                let mut p: Vec<(&str, Option<&[&str]>)> = vec![
                    ("name", None),
                    ("change-tcp-mss", Some(&["yes", "no", "default"])),
                    (
                        "use-encryption",
                        Some(&["yes", "no", "required", "default"]),
                    ),
                ];
                if version
                    >= (Version {
                        major: 7,
                        minor: 15,
                    })
                {
                    p.push(("comment", None));
                }
                p
            }
            "/ip firewall filter add" => vec![
                ("chain", Some(&["input", "output", "forward"])),
                ("in-interface", None),
                ("out-interface", None),
                ("protocol", Some(&["tcp", "udp", "icmp"])),
                ("dst-port", None),
                ("connection-state", None),
                ("action", Some(&["accept", "drop"])),
                ("comment", None),
                ("place-before", None),
            ],
            other => panic!("no parameter table for `{other}`"),
        }
    }

    #[test]
    fn every_command_uses_only_parameters_the_version_accepts() {
        for v in ["6.49.7", "7.7", "7.16"] {
            let version = Version::parse(v).unwrap();
            let text = script("sha1").render(version).unwrap();
            let mut checked = 0;
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                // Firewall rules sit inside an :if; check both branches' commands.
                for cmd in line.split(['{', '}']).map(str::trim) {
                    let Some(command) = [
                        "/interface ovpn-client add",
                        "/ppp profile add",
                        "/ip firewall filter add",
                    ]
                    .into_iter()
                    .find(|c| cmd.starts_with(c)) else {
                        continue;
                    };
                    let table = accepted(version, command);
                    for (k, val) in params(&cmd[command.len()..]) {
                        let Some((_, values)) = table.iter().find(|(name, _)| *name == k) else {
                            panic!("RouterOS {v}: `{command}` has no parameter `{k}`");
                        };
                        if let Some(values) = values {
                            assert!(values.contains(&val.as_str()), "RouterOS {v}: {k}={val}");
                        }
                    }
                    checked += 1;
                }
            }
            assert!(checked > 20, "{checked} commands checked for {v}");
        }
    }

    #[test]
    fn every_find_names_its_property() {
        let text = script("sha1").render(Version::LATEST_7).unwrap();
        assert!(!text.contains("[find]"), "a bare find matches everything");
        for find in text.split("[find ").skip(1) {
            let cond = &find[..find.find(']').unwrap()];
            assert!(
                cond.starts_with("name=\"") || cond.starts_with("comment=\""),
                "{cond}"
            );
        }
        // No script variable is named like a property it could be compared with.
        assert!(!text.contains(":local name") && !text.contains(":local comment"));
    }

    #[test]
    fn passwords_are_escaped() {
        let text = script("sha1").render(Version::LATEST_7).unwrap();
        assert!(text.contains(r#"password="s3cr\"et\$pw""#), "{text}");
    }
}
