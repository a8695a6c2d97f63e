//! The allowlist: the only sentences mgnt sends to a router's API. The live
//! view reads; nothing here changes a router's configuration, and a sentence
//! relayed from the control plane is applied only if [`Command::parse`] takes
//! it, which it does for exactly the sentences [`Command::render`] produces.

use std::fmt;

/// Longest interface name accepted (RouterOS names are far shorter).
pub const MAX_INTERFACE_NAME: usize = 64;
/// Most interfaces one `monitor-traffic` watches.
pub const MAX_INTERFACES: usize = 32;

/// What `/interface/print` returns.
pub const INTERFACE_PROPS: &str = "name,type,running";
/// What each `monitor-traffic` sample returns.
pub const TRAFFIC_PROPS: &str =
    "name,rx-bits-per-second,tx-bits-per-second,rx-packets-per-second,tx-packets-per-second";
/// What each log entry returns.
pub const LOG_PROPS: &str = "time,topics,message";
/// What `/system/resource/print` returns.
pub const RESOURCE_PROPS: &str = "uptime,version,cpu-load,free-memory,total-memory";

/// The command words of [`Command`], in the order of its variants.
const PATHS: [&str; 8] = [
    "/login",
    "/cancel",
    "/interface/print",
    "/interface/monitor-traffic",
    "/log/print",
    "/log/listen",
    "/system/resource/print",
    "/system/reboot",
];

/// A command mgnt may send, with everything it may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Plain login (RouterOS 6.43 and later).
    Login {
        name: String,
        password: String,
    },
    /// Stops the command tagged `tag`.
    Cancel {
        tag: u32,
    },
    InterfacePrint,
    /// Samples of the interfaces' rates: one per interface per second until
    /// cancelled, or a single round then `!done` when `once`.
    MonitorTraffic {
        interfaces: Interfaces,
        once: bool,
    },
    /// `/log/print =follow-only=`: new log entries until cancelled.
    LogFollow,
    /// `/log/listen` (RouterOS 7): new log entries until cancelled.
    LogListen,
    ResourcePrint,
    Reboot,
}

/// A non-empty list of valid interface names (see [`Interfaces::new`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Interfaces(Vec<String>);

/// Why a sentence or a value is not on the allowlist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAllowed {
    #[error("empty sentence")]
    Empty,
    #[error("command {0:?} is not allowed")]
    Command(String),
    #[error("{command}: queries are not allowed ({word:?})")]
    Query { command: String, word: String },
    #[error("{command}: word {word:?} is not allowed")]
    Word { command: String, word: String },
    #[error("{command}: attribute {name:?} given twice")]
    Repeated { command: String, name: String },
    #[error("{command}: attribute {name:?} is missing")]
    Missing { command: String, name: String },
    #[error("{command}: {name} must be {expected:?}, not {got:?}")]
    Value {
        command: String,
        name: String,
        expected: String,
        got: String,
    },
    #[error("{command}: no .tag")]
    NoTag { command: String },
    #[error("{command}: tag {tag:?} is not a number as render writes it")]
    BadTag { command: String, tag: String },
    #[error("{command}: words out of order: {words:?}")]
    Order { command: String, words: Vec<String> },
    #[error("interface name {name:?}: {reason}")]
    Interface { name: String, reason: &'static str },
    #[error("no interfaces given")]
    NoInterfaces,
    #[error("more than {MAX_INTERFACES} interfaces")]
    TooManyInterfaces,
}

impl Interfaces {
    /// Names that cannot carry another attribute: `,` separates names and
    /// `=` would end the value for RouterOS's own parsing.
    pub fn new<I, S>(names: I) -> Result<Self, NotAllowed>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        if names.is_empty() {
            return Err(NotAllowed::NoInterfaces);
        }
        if names.len() > MAX_INTERFACES {
            return Err(NotAllowed::TooManyInterfaces);
        }
        for name in &names {
            let reason = if name.is_empty() {
                Some("empty")
            } else if name.len() > MAX_INTERFACE_NAME {
                Some("too long")
            } else if name.contains([',', '=']) {
                Some("contains ',' or '='")
            } else if name.chars().any(char::is_control) {
                Some("contains a control character")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(NotAllowed::Interface {
                    name: name.clone(),
                    reason,
                });
            }
        }
        Ok(Self(names))
    }

    pub fn names(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for Interfaces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

impl Command {
    /// The command word.
    pub fn path(&self) -> &'static str {
        match self {
            Command::Login { .. } => "/login",
            Command::Cancel { .. } => "/cancel",
            Command::InterfacePrint => "/interface/print",
            Command::MonitorTraffic { .. } => "/interface/monitor-traffic",
            Command::LogFollow => "/log/print",
            Command::LogListen => "/log/listen",
            Command::ResourcePrint => "/system/resource/print",
            Command::Reboot => "/system/reboot",
        }
    }

    /// Whether replies keep coming until the command is cancelled.
    pub fn is_stream(&self) -> bool {
        match self {
            Command::MonitorTraffic { once, .. } => !once,
            Command::LogFollow | Command::LogListen => true,
            _ => false,
        }
    }

    /// The sentence's words, tagged `tag` (the tag last).
    pub fn render(&self, tag: u32) -> Vec<String> {
        let mut words = vec![self.path().to_owned()];
        match self {
            Command::Login { name, password } => {
                words.push(format!("=name={name}"));
                words.push(format!("=password={password}"));
            }
            Command::Cancel { tag } => words.push(format!("=tag={tag}")),
            Command::InterfacePrint => words.push(format!("=.proplist={INTERFACE_PROPS}")),
            Command::MonitorTraffic { interfaces, once } => {
                words.push(format!("=interface={interfaces}"));
                words.push(format!("=.proplist={TRAFFIC_PROPS}"));
                if *once {
                    words.push("=once=".to_owned());
                }
            }
            Command::LogFollow => {
                words.push("=follow-only=".to_owned());
                words.push(format!("=.proplist={LOG_PROPS}"));
            }
            Command::LogListen => words.push(format!("=.proplist={LOG_PROPS}")),
            Command::ResourcePrint => words.push(format!("=.proplist={RESOURCE_PROPS}")),
            Command::Reboot => {}
        }
        words.push(format!(".tag={tag}"));
        words
    }
}

mod parse;
#[cfg(test)]
mod tests;
