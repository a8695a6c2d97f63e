//! The log lines of the command line: standard error, the level from
//! `RUST_LOG` (default `info`), and for `mgnt serve` the node's name on
//! every line, so the logs of several nodes can be read together:
//!
//! `2025-06-01T10:00:00.123456Z  INFO node=ns1 mgnt::server: serving DNS addr=…`

use std::{fmt, path::Path};

use tracing::{Event, Subscriber};
use tracing_subscriber::{
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::Writer,
        time::{FormatTime, SystemTime},
    },
    registry::LookupSpan,
};

/// Installs the logger; `node`: the name every line carries.
pub fn init(node: Option<String>) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Field names in italics on a terminal; plain text for a file or journald.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .event_format(Line { node })
        .init();
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
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
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

    fn logged(node: Option<&str>) -> String {
        let buffer = Buffer::default();
        let out = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .with_ansi(false)
            .event_format(Line {
                node: node.map(str::to_owned),
            })
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(region = "europe1", "region health changed");
        });
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn every_line_carries_the_time_the_level_and_the_node() {
        let line = logged(Some("ns1"));
        let (time, rest) = line.split_once(' ').unwrap();
        assert!(humantime::parse_rfc3339(time).is_ok(), "{line}");
        assert_eq!(
            rest,
            " WARN node=ns1 mgnt::logging::tests: region health changed region=\"europe1\"\n"
        );
        assert!(!logged(None).contains("node="));
    }
}
