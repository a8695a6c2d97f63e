//! What a viewer receives: the JSON messages of the live view's WebSocket,
//! made from the router's API replies (pure).

use serde::Serialize;

use super::api::Attrs;

/// One message to a viewer (`{"type": …}`); `time` in epoch seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Message {
    Traffic {
        interface: String,
        rx_bps: u64,
        tx_bps: u64,
        rx_pps: u64,
        tx_pps: u64,
        time: u64,
    },
    Log {
        time: u64,
        topics: Vec<String>,
        message: String,
    },
    Error {
        code: &'static str,
        message: String,
    },
}

impl Message {
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }

    /// A `/interface/monitor-traffic` sample, taken at `now`; `None` without
    /// an interface name. Rates RouterOS leaves out are 0.
    pub fn traffic(attrs: &Attrs, now: u64) -> Option<Self> {
        let rate = |key: &str| attrs.get(key).map_or(0, |v| rate(v));
        Some(Self::Traffic {
            interface: attrs.get("name")?.clone(),
            rx_bps: rate("rx-bits-per-second"),
            tx_bps: rate("tx-bits-per-second"),
            rx_pps: rate("rx-packets-per-second"),
            tx_pps: rate("tx-packets-per-second"),
            time: now,
        })
    }

    /// A `/log/print follow-only` entry, received at `now` (the router's own
    /// `time` is its local wall clock without a date or zone, so not used).
    pub fn log(attrs: &Attrs, now: u64) -> Option<Self> {
        Some(Self::Log {
            time: now,
            topics: attrs
                .get("topics")
                .map(|t| {
                    t.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            message: attrs.get("message")?.clone(),
        })
    }
}

/// A RouterOS rate: digits, or with a unit suffix as the CLI shows them
/// (`12.5kbps`, `3Mbps`); anything else is 0.
fn rate(text: &str) -> u64 {
    if let Ok(n) = text.parse() {
        return n;
    }
    let digits = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let Ok(number) = number.parse::<f64>() else {
        return 0;
    };
    let scale = match unit.chars().next() {
        Some('k') => 1e3,
        Some('M') => 1e6,
        Some('G') => 1e9,
        _ => 1.0,
    };
    (number * scale) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::api::reply::attrs;

    #[test]
    fn traffic_samples_become_the_documented_json() {
        let sample = attrs(&[
            ("name", "ether1"),
            ("rx-bits-per-second", "123456"),
            ("tx-bits-per-second", "1.5kbps"),
            ("rx-packets-per-second", "12"),
        ]);
        let m = Message::traffic(&sample, 1_795_000_000).unwrap();
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"type": "traffic", "interface": "ether1", "rx_bps": 123456,
                "tx_bps": 1500, "rx_pps": 12, "tx_pps": 0, "time": 1_795_000_000u64})
        );
        assert_eq!(
            Message::traffic(&attrs(&[("rx-bits-per-second", "1")]), 1),
            None
        );
        assert_eq!(rate("3Mbps"), 3_000_000);
        assert_eq!(rate("junk"), 0);
    }

    #[test]
    fn log_entries_and_errors_become_the_documented_json() {
        let entry = attrs(&[
            ("time", "12:00:01"),
            ("topics", "system,info,account"),
            ("message", "user admin logged in"),
        ]);
        let m = Message::log(&entry, 7).unwrap();
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            serde_json::json!({"type": "log", "time": 7, "topics": ["system", "info", "account"],
                "message": "user admin logged in"})
        );
        let e = Message::error("router_unreachable", "no answer");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"type": "error", "code": "router_unreachable", "message": "no answer"})
        );
    }
}
