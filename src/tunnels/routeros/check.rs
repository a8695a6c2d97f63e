//! A checker for RouterOS scripts meant for `/import`: the mistakes that
//! make a job do something other than it says, found without a router.
//!
//! - **Scope**: `/import` (and a terminal paste) gives every top-level line its
//!   own scope, so a variable set by `:local` on one top-level line is empty on
//!   the next; a variable used where nothing declared it is empty too.
//! - **Version**: an argument or value the release refuses stops the import
//!   there (the table in [`super::version`]).
//! - **Placement**: `place-before` naming a rule found without `dynamic=no` may
//!   name a dynamic rule, which RouterOS refuses to place before.
//! - **Order and trust**: an ovpn-client added enabled before its firewall
//!   rules; a v7 client that does not verify the server; management ports
//!   accepted from any address on the tunnel.

use std::collections::{HashMap, HashSet};

use super::Version;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Scope,
    Undeclared,
    Version,
    DynamicPlacement,
    EnabledBeforeRules,
    Unverified,
    OpenToTunnel,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub line: usize,
    pub kind: Kind,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// One command: its text (quotes kept), the line it starts on and the
/// top-level statement it belongs to.
#[derive(Debug)]
struct Command {
    line: usize,
    statement: usize,
    text: String,
}

/// Splits `script` into commands at line ends, `;` and braces (outside
/// quotes), dropping comments and joining `\`-continued lines.
fn commands(script: &str) -> Vec<Command> {
    let mut out = Vec::new();
    let (mut line, mut depth, mut statement) = (1, 0usize, 0);
    let (mut quoted, mut escaped, mut comment) = (false, false, false);
    let mut cur = String::new();
    let mut start = 1;
    let flush = |cur: &mut String, start: usize, statement: usize, out: &mut Vec<Command>| {
        let text = cur.trim();
        if !text.is_empty() {
            out.push(Command {
                line: start,
                statement,
                text: text.to_owned(),
            });
        }
        cur.clear();
    };
    for c in script.chars() {
        if c == '\n' {
            line += 1;
        }
        if comment {
            comment = c != '\n';
            continue;
        }
        if escaped {
            escaped = false;
            if c == '\n' {
                continue; // a continued line
            }
            cur.push(c);
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                if quoted {
                    cur.push(c);
                }
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            _ if quoted => cur.push(c),
            '#' if cur.trim().is_empty() => comment = true,
            '{' | '}' | ';' | '\n' => {
                flush(&mut cur, start, statement, &mut out);
                match c {
                    '{' => depth += 1,
                    '}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
                if depth == 0 && matches!(c, '}' | '\n' | ';') {
                    statement += 1;
                }
                start = line;
            }
            c => {
                if cur.trim().is_empty() {
                    start = line;
                }
                cur.push(c);
            }
        }
    }
    flush(&mut cur, start, statement, &mut out);
    out
}

/// Variables a command reads (`$name`, also inside strings, not `\$`).
fn uses(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    let mut escaped = false;
    while let Some((_, c)) = chars.next() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '$' => {
                let mut name = String::new();
                while let Some(&(_, n)) = chars.peek() {
                    if !(n.is_ascii_alphanumeric() || n == '_') {
                        break;
                    }
                    name.push(n);
                    chars.next();
                }
                if !name.is_empty() {
                    out.push(name);
                }
            }
            _ => {}
        }
    }
    out
}

/// The variable a command declares (`:local x …`, `:global x`).
fn declares(text: &str) -> Option<&str> {
    let rest = text
        .strip_prefix(":local ")
        .or_else(|| text.strip_prefix(":global "))?;
    rest.split_whitespace().next()
}

/// The `key=value` arguments of a command, honouring quotes and brackets.
pub fn arguments(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let (mut key, mut val, mut in_val) = (String::new(), String::new(), false);
    let (mut quoted, mut escaped, mut nest) = (false, false, 0usize);
    for c in text.chars().chain(std::iter::once(' ')) {
        let target = if in_val { &mut val } else { &mut key };
        if escaped {
            target.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '[' | '(' if !quoted => {
                nest += 1;
                target.push(c);
            }
            ']' | ')' if !quoted => {
                nest = nest.saturating_sub(1);
                target.push(c);
            }
            '=' if !in_val && !quoted && nest == 0 => in_val = true,
            ' ' if !quoted && nest == 0 => {
                if in_val {
                    out.insert(std::mem::take(&mut key), std::mem::take(&mut val));
                }
                key.clear();
                in_val = false;
            }
            c => target.push(c),
        }
    }
    out
}

/// Checks `script` as imported on RouterOS `version`.
pub fn check(script: &str, version: Version) -> Vec<Finding> {
    let commands = commands(script);
    let mut findings = Vec::new();
    scope(&commands, &mut findings);
    let mut finds: HashMap<String, String> = HashMap::new();
    let mut tunnel_enabled = None;
    for c in &commands {
        let add = |kind, message: String| Finding {
            line: c.line,
            kind,
            message,
        };
        if let (Some(name), Some(expr)) = (declares(&c.text), c.text.find('[')) {
            finds.insert(name.to_owned(), c.text[expr..].to_owned());
        }
        let args = arguments(&c.text);
        if c.text.contains("ovpn-client add") {
            ovpn_client(&args, version, |k, m| findings.push(add(k, m)));
            if args.get("disabled").map(String::as_str) != Some("yes") {
                tunnel_enabled = Some(c.line);
            }
        }
        if c.text.contains("/ppp profile add") && args.contains_key("comment") && version < v715() {
            findings.push(add(
                Kind::Version,
                format!("RouterOS {version} has no `comment` on PPP profiles (from 7.15)"),
            ));
        }
        if c.text.contains("firewall filter add") {
            if let Some(line) = tunnel_enabled.take() {
                findings.push(add(
                    Kind::EnabledBeforeRules,
                    format!("the tunnel added enabled on line {line} runs unfiltered until its rules are in"),
                ));
            }
            if let Some(before) = args.get("place-before") {
                let expr = before
                    .strip_prefix("[:pick $")
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|var| finds.get(var))
                    .unwrap_or(before);
                if expr.contains("find") && !expr.contains("dynamic=no") {
                    findings.push(add(
                        Kind::DynamicPlacement,
                        format!("place-before={before} may name a dynamic rule (found without dynamic=no)"),
                    ));
                }
            }
            let input = args.get("chain").map(String::as_str) == Some("input");
            let accept = args.get("action").map(String::as_str) == Some("accept");
            let restricted = ["src-address", "src-address-list", "connection-state"]
                .iter()
                .any(|k| args.contains_key(*k));
            if input && accept && args.contains_key("in-interface") && !restricted {
                findings.push(add(
                    Kind::OpenToTunnel,
                    "accepts management traffic from any address on the tunnel".into(),
                ));
            }
        }
    }
    findings.sort_by_key(|f| f.line);
    findings
}

fn v715() -> Version {
    Version {
        major: 7,
        minor: 15,
    }
}

fn ovpn_client(
    args: &HashMap<String, String>,
    version: Version,
    mut found: impl FnMut(Kind, String),
) {
    if let Some(auth) = args.get("auth")
        && !version.auths().contains(&auth.as_str())
    {
        found(
            Kind::Version,
            format!("RouterOS {version} has no OpenVPN auth={auth} (SHA-2 from 7.8)"),
        );
    }
    if let Some(cipher) = args.get("cipher")
        && !version.ciphers().contains(&cipher.as_str())
    {
        found(
            Kind::Version,
            format!("RouterOS {version} has no OpenVPN cipher={cipher}"),
        );
    }
    if args.contains_key("protocol") && version < (Version { major: 7, minor: 9 }) {
        found(
            Kind::Version,
            format!("`protocol` is not proven on RouterOS {version} (7.9 and later)"),
        );
    }
    match args.get("verify-server-certificate") {
        Some(_) if !version.has_verify_server_certificate() => found(
            Kind::Version,
            format!("RouterOS {version} has no verify-server-certificate"),
        ),
        Some(v) if v == "yes" => {}
        _ if version.has_verify_server_certificate() => found(
            Kind::Unverified,
            "the router does not verify the OpenVPN server".into(),
        ),
        _ => {}
    }
}

/// Variables used in a top-level statement that no declaration in it sets.
fn scope(commands: &[Command], findings: &mut Vec<Finding>) {
    let mut declared: HashMap<usize, HashSet<&str>> = HashMap::new();
    let mut first: HashMap<&str, usize> = HashMap::new();
    for c in commands {
        if let Some(name) = declares(&c.text) {
            declared.entry(c.statement).or_default().insert(name);
            first.entry(name).or_insert(c.line);
        }
    }
    let mut reported = HashSet::new();
    for c in commands {
        for name in uses(&c.text) {
            let here = declared
                .get(&c.statement)
                .is_some_and(|d| d.contains(name.as_str()));
            if here || !reported.insert((c.statement, name.clone())) {
                continue;
            }
            let (kind, message) = match first.get(name.as_str()) {
                Some(line) => (
                    Kind::Scope,
                    format!(
                        "${name} was declared on line {line}, another top-level line: under /import it is empty here"
                    ),
                ),
                None => (Kind::Undeclared, format!("${name} is never declared")),
            };
            findings.push(Finding {
                line: c.line,
                kind,
                message,
            });
        }
    }
}
