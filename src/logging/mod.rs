//! The log lines of the command line: standard error, the level from
//! `RUST_LOG` (default `info`), and for `mgnt serve` the node's name on
//! every line, so the logs of several nodes can be read together. As text
//! (the default):
//!
//! `2025-06-01T10:00:00.123456Z  INFO node=ns1 mgnt::server: serving DNS addr=…`
//!
//! or with `--log-format json` one JSON object per line ([`json`]). What the
//! network can set off again and again is written through
//! [`throttled!`](crate::throttled): at most one line per kind per [`INTERVAL`].

mod json;
mod throttle;

use std::{fmt, path::Path};

use tracing::{Event, Subscriber};
use tracing_subscriber::{
    EnvFilter,
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::Writer,
        time::{FormatTime, SystemTime},
    },
    registry::LookupSpan,
};

pub use throttle::{INTERVAL, Throttle, report_suppressed};

/// The DNS protocol library logs per packet (a spoofed flood of malformed
/// options would write a line each); such packets are counted in the
/// metrics instead.
const QUIET: &str = "hickory_proto=off,hickory_server=off";

/// Without `RUST_LOG`: info, and nothing from the DNS protocol library.
const DEFAULT: &str = "info,hickory_proto=off,hickory_server=off";

/// How lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// One line of text per event.
    #[default]
    Text,
    /// One JSON object per line (journald, log stacks).
    Json,
}

/// Installs the logger; `node`: the name every line carries.
pub fn init(node: Option<String>, format: Format) {
    let env = std::env::var("RUST_LOG").ok();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(env.as_deref()))
        .with_writer(std::io::stderr)
        // Plain text everywhere: no escape codes in files or journald.
        .with_ansi(false);
    match format {
        Format::Text => builder.event_format(Line { node }).init(),
        Format::Json => builder.event_format(json::Line { node }).init(),
    }
}

/// The filter of `RUST_LOG` (`env`), or [`DEFAULT`] when it is unset or
/// not a filter.
fn filter(env: Option<&str>) -> EnvFilter {
    EnvFilter::try_new(directives(env)).unwrap_or_else(|_| EnvFilter::new(DEFAULT))
}

/// `RUST_LOG` with the protocol library kept quiet unless it names that
/// library itself: `RUST_LOG=warn` must not bring back its line per packet.
fn directives(env: Option<&str>) -> String {
    match env.map(str::trim).filter(|s| !s.is_empty()) {
        None => DEFAULT.to_owned(),
        Some(spec) if spec.contains("hickory") => spec.to_owned(),
        Some(spec) => format!("{spec},{QUIET}"),
    }
}

/// The node name of the config at `path`, if it loads (if it does not, the
/// command that loads it says why).
pub fn node_name(path: &Path) -> Option<String> {
    crate::config::Config::load(path).ok().map(|c| c.node.name)
}

/// Time (RFC 3339, UTC), level, node, spans, target, fields.
struct Line {
    node: Option<String>,
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
        SystemTime.format_time(&mut writer)?;
        write!(writer, " {:>5} ", meta.level())?;
        if let Some(node) = &self.node {
            write!(writer, "node={node} ")?;
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(writer, "{}: ", span.name())?;
            }
        }
        write!(writer, "{}: ", meta.target())?;
        // Values come from the network and from operators (a drain's
        // reason): a control character must not start a forged line.
        let mut fields = String::new();
        ctx.field_format()
            .format_fields(Writer::new(&mut fields), event)?;
        write_escaped(&mut writer, &fields)?;
        writeln!(writer)
    }
}

/// `text` with every control character written as an escape (`\n`, `\u{1b}`).
fn write_escaped(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    for c in text.chars() {
        if c.is_control() {
            write!(out, "{}", c.escape_default())?;
        } else {
            out.write_char(c)?;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// A subscriber writing `format`'s lines into the buffer, with `filter`.
    fn subscriber<F>(format: F, filter: EnvFilter) -> (impl Subscriber + Send + Sync, Buffer)
    where
        F: FormatEvent<
                tracing_subscriber::Registry,
                tracing_subscriber::fmt::format::DefaultFields,
            > + Send
            + Sync
            + 'static,
    {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(move || out.clone())
            .with_ansi(false)
            .event_format(format)
            .finish();
        (subscriber, buffer)
    }

    /// What `format` writes of `run`'s events (level info and above).
    pub(crate) fn written<F>(format: F, run: impl FnOnce()) -> String
    where
        F: FormatEvent<
                tracing_subscriber::Registry,
                tracing_subscriber::fmt::format::DefaultFields,
            > + Send
            + Sync
            + 'static,
    {
        let (subscriber, buffer) = subscriber(format, EnvFilter::new("info"));
        tracing::subscriber::with_default(subscriber, run);
        buffer.text()
    }

    /// The text lines written on this thread while `run`'s future runs.
    pub(crate) async fn capture<F, R>(run: F) -> String
    where
        F: FnOnce() -> R,
        R: std::future::Future<Output = ()>,
    {
        let (subscriber, buffer) = subscriber(Line { node: None }, EnvFilter::new("info"));
        let _default = tracing::subscriber::set_default(subscriber);
        run().await;
        buffer.text()
    }

    fn events() {
        tracing::warn!(region = "europe1", "region health changed");
        tracing::warn!(reason = %"x\n2026-01-01T00:00:00Z ERROR forged", "drained");
    }

    fn logged(node: Option<&str>) -> String {
        let node = node.map(str::to_owned);
        written(Line { node }, events)
    }

    #[test]
    fn every_line_carries_the_time_the_level_and_the_node() {
        let line = logged(Some("ns1"));
        let (time, rest) = line.split_once(' ').unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{line}");
        let (first, second) = rest.split_once('\n').unwrap();
        assert_eq!(
            first,
            " WARN node=ns1 mgnt::logging::tests: region health changed region=\"europe1\""
        );
        assert!(
            second.ends_with(" drained reason=x\\n2026-01-01T00:00:00Z ERROR forged\n"),
            "{second:?}"
        );
        assert_eq!(line.lines().count(), 2, "no forged line");
        assert!(!logged(None).contains("node="));
    }

    #[test]
    fn rust_log_keeps_the_protocol_library_quiet_unless_it_names_it() {
        assert_eq!(directives(None), DEFAULT);
        assert_eq!(directives(Some(" ")), DEFAULT);
        assert_eq!(directives(Some("warn")), format!("warn,{QUIET}"));
        assert_eq!(
            directives(Some("debug,hickory_server=warn")),
            "debug,hickory_server=warn"
        );
        for env in [None, Some("warn"), Some("trace"), Some("not a filter ==")] {
            let (subscriber, buffer) = subscriber(Line { node: None }, filter(env));
            tracing::subscriber::with_default(subscriber, || {
                tracing::warn!(target: "hickory_proto::op::message", "malformed option");
                tracing::warn!(target: "hickory_server::server", "dropped");
                tracing::warn!("ours");
            });
            let text = buffer.text();
            assert_eq!(text.lines().count(), 1, "{env:?}: {text}");
            assert!(text.contains("ours"), "{env:?}: {text}");
        }
    }
}
