//! What the libraries say through `tracing`, one line each on standard error: a server started
//! again, a policy reloaded, each audit entry under `audit.tracing`. The project's own crates
//! speak from `info` up; others (rmcp, hyper) only of errors.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Prints events on standard error; keeps no spans.
struct StderrLog;

/// Installs it for the whole process (once: a second call changes nothing).
pub(crate) fn install() {
    let _ = tracing::subscriber::set_global_default(StderrLog);
}

fn ours(target: &str) -> bool {
    target.starts_with("halt_") || target.starts_with("agenthalt")
}

/// An event's message first, then its other fields as `name=value`.
struct Line(String);

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.insert_str(0, &format!("{value:?}"));
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for StderrLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let floor = if ours(metadata.target()) { Level::INFO } else { Level::ERROR };
        metadata.is_event() && *metadata.level() <= floor
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    #[allow(clippy::print_stderr, reason = "standard error is where a command-line tool speaks")]
    fn event(&self, event: &Event<'_>) {
        let mut line = Line(String::new());
        event.record(&mut line);
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        eprintln!("agenthalt: {level}: {}", line.0.trim_start());
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}
