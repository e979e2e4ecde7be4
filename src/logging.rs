//! The log format: env_logger's `[time LEVEL target] message` on stderr, one line per
//! record. Every control character in a message (a newline, a carriage return, an escape
//! sequence) is written escaped (`\n`, `\r`, `\u{1b}`), so a value that came from outside
//! (an API answer, a register string, a config value) can never start a line of its own that
//! looks like the gateway's.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};

/// `text` with every control character escaped as Rust writes it (`\n`, `\t`, `\u{1b}`).
/// Borrowed when there is nothing to escape (the usual case).
pub(crate) fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Install the logger: `RUST_LOG` (default `info`) to stderr.
pub(crate) fn init() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .target(env_logger::Target::Stderr)
        .format(format)
        // The HTTP client logs request URIs with their query (an API key) at debug and the
        // raw request bytes at trace: never below info, whatever RUST_LOG says.
        .filter_module("ureq", log::LevelFilter::Info)
        .filter_module("ureq_proto", log::LevelFilter::Info)
        .init();
}

fn format(buf: &mut env_logger::fmt::Formatter, record: &log::Record<'_>) -> io::Result<()> {
    let style = buf.default_level_style(record.level());
    let message = match record.args().as_str() {
        Some(s) => escape_controls(s).into_owned(),
        None => escape_controls(&record.args().to_string()).into_owned(),
    };
    writeln!(
        buf,
        "[{} {style}{:<5}{style:#} {}] {message}",
        buf.timestamp_seconds(),
        record.level(),
        escape_controls(record.target()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_kept() {
        assert!(matches!(
            escape_controls("batch `B-1` on JET-01 (Müller)"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_controls("JET-7\n[2020-01-01T00:00:00Z ERROR x] forged\r\u{1b}[2J\t\u{7f}"),
            "JET-7\\n[2020-01-01T00:00:00Z ERROR x] forged\\r\\u{1b}[2J\\t\\u{7f}"
        );
    }
}
