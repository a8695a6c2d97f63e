//! `--log-format json`: one JSON object per line, for journald and log
//! stacks. Numbers and booleans stay numbers and booleans, everything else
//! is a string (JSON escapes every control character):
//!
//! `{"timestamp":"2025-06-01T10:00:00.123456Z","level":"INFO","node":"ns1","target":"mgnt::server","message":"serving DNS over UDP and TCP","fields":{"addr":"127.0.0.1:53"}}`
//!
//! tracing-subscriber's own JSON format cannot put the node's name on
//! every line; this is its layout, with that name, in a few lines.

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::{Number, Value};
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::Writer,
        time::{FormatTime, SystemTime},
    },
    registry::LookupSpan,
};

/// The JSON line format; `node`: the name every line carries.
pub(super) struct Line {
    pub node: Option<String>,
}

/// One line's object, its keys in this order.
#[derive(Serialize)]
struct Object<'a> {
    timestamp: String,
    level: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    spans: Vec<&'static str>,
    target: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "in_order")]
    fields: Vec<(&'static str, Value)>,
}

/// The fields as an object, in the order the event gives them (as the
/// text lines have them).
fn in_order<S: Serializer>(fields: &[(&'static str, Value)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(fields.iter().map(|(name, value)| (name, value)))
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = Fields::default();
        event.record(&mut fields);
        let spans = ctx
            .event_scope()
            .map(|scope| scope.from_root().map(|span| span.name()).collect())
            .unwrap_or_default();
        let object = Object {
            timestamp,
            level: meta.level().as_str(),
            node: self.node.as_deref(),
            spans,
            target: meta.target(),
            message: fields.message,
            fields: fields.values,
        };
        let line = serde_json::to_string(&object).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

/// An event's message and its other fields as JSON values.
#[derive(Default)]
struct Fields {
    message: String,
    values: Vec<(&'static str, Value)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        match (field.name(), value) {
            ("message", Value::String(text)) => self.message = text,
            (name, value) => self.values.push((name, value)),
        }
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities have no JSON number.
        let value =
            Number::from_f64(value).map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.put(field, value);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }

    /// `%value` (Display) arrives here too, as does the message.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logging::tests::written;

    #[test]
    fn one_object_per_line_with_values_as_values() {
        let line = Line {
            node: Some("ns1".into()),
        };
        let text = written(line, || {
            tracing::warn!(
                region = "europe1",
                down = 2u64,
                offset = -3i64,
                rtt_ms = 1.5f64,
                serving = false,
                addr = %std::net::SocketAddr::from(([127, 0, 0, 1], 53)),
                missing = None::<u64>,
                "region health changed"
            );
            tracing::info!(reason = %"x\n{\"forged\":1}\u{1b}[31m", "drained");
        });
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first = &lines[0];
        let time = first["timestamp"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");
        assert_eq!(first["level"], "WARN");
        assert_eq!(first["node"], "ns1");
        assert_eq!(first["target"], "mgnt::logging::json::tests");
        assert_eq!(first["message"], "region health changed");
        assert_eq!(
            first["fields"],
            serde_json::json!({"region": "europe1", "down": 2, "offset": -3, "rtt_ms": 1.5,
                "serving": false, "addr": "127.0.0.1:53"})
        );
        assert!(
            text.contains(r#""fields":{"region":"europe1","down":2,"offset":-3,"rtt_ms":1.5,"serving":false,"addr":"127.0.0.1:53"}"#),
            "in the event's order: {text}"
        );
        assert_eq!(lines[1]["level"], "INFO");
        assert_eq!(lines[1]["fields"]["reason"], "x\n{\"forged\":1}\u{1b}[31m");
        assert!(!text.contains('\u{1b}'), "escaped: {text}");
    }
}
