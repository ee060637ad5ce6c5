//! What can stop the `slat` command, as one message and an exit code.
//!
//! Exit codes: 0 everything held, 1 an expectation failed (the run itself worked), 2 bad input
//! (scenario, value, path, trace, `--set` key, `--vary` spec, unwritable output). Every error
//! prints as one `error: ...` line on stderr; library errors are mapped to their message, never
//! to a panic or a backtrace.

use std::fmt;
use std::io;
use std::path::Path;

/// Exit code for bad input.
pub const EXIT_INPUT: u8 = 2;
/// Exit code for a run whose expectations did not hold.
pub const EXIT_EXPECTATION: u8 = 1;

/// An error that ends the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    /// The message, without the `error: ` prefix.
    pub message: String,
    /// Process exit code.
    pub code: u8,
}

impl CliError {
    /// Bad input (exit 2).
    pub fn input(message: impl Into<String>) -> Self {
        CliError { message: message.into(), code: EXIT_INPUT }
    }

    /// A file that cannot be read or written: `cannot {action} {path}: {reason}` (exit 2).
    pub fn io(action: &str, path: &Path, error: &io::Error) -> Self {
        CliError::input(format!("cannot {action} {}: {}", path.display(), io_reason(error)))
    }

    /// A library error: its message, then those of its sources that it does not already
    /// include, joined by `: ` (exit 2).
    pub fn from_error(error: &(dyn std::error::Error + 'static)) -> Self {
        CliError::input(error_chain(error))
    }

    /// The same error with `context: ` in front.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// An I/O error's reason without Rust's ` (os error N)` suffix: `No such file or directory`.
pub fn io_reason(error: &io::Error) -> String {
    let s = error.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_string(),
        _ => s,
    }
}

/// `error` and its sources as one line, skipping sources whose text is already shown.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = s.source();
    }
    // Keep it on one line.
    let message = message.trim_end().replace('\n', "; ");
    if let Some(i) = message.rfind(" (os error ") {
        if message.ends_with(')') {
            return message[..i].to_string();
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_read_plainly() {
        let e = io::Error::from(io::ErrorKind::NotFound);
        let raw = io::Error::from_raw_os_error(2);
        assert_eq!(io_reason(&raw), "No such file or directory");
        let c = CliError::io("read", Path::new("trace.out"), &raw);
        assert_eq!(c.to_string(), "cannot read trace.out: No such file or directory");
        assert_eq!(c.code, EXIT_INPUT);
        assert!(!io_reason(&e).is_empty());
    }

    #[derive(Debug)]
    struct Outer(io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "loading x")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn chains_sources_once() {
        let e = Outer(io::Error::from_raw_os_error(2));
        assert_eq!(error_chain(&e), "loading x: No such file or directory");
        let c = CliError::from_error(&e).context("scenario");
        assert_eq!(c.message, "scenario: loading x: No such file or directory");
    }
}
