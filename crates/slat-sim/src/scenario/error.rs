//! Scenario errors: where (file and line, or the `--set` override), which field, what value,
//! and what was expected.

use std::fmt;

/// Where a scenario error is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A scenario file as a whole (no line applies).
    File {
        /// File name as given when the scenario was loaded.
        file: String,
    },
    /// A line of a scenario file.
    Line {
        /// File name.
        file: String,
        /// 1-based line number.
        line: usize,
    },
    /// A `set(key, value)` override (`--set key=value`) applied on top of a file.
    Override {
        /// File name the override applies to.
        file: String,
        /// The dotted key.
        key: String,
        /// The value as given.
        value: String,
    },
}

impl Location {
    /// The file name.
    pub fn file(&self) -> &str {
        match self {
            Location::File { file } | Location::Line { file, .. } | Location::Override { file, .. } => file,
        }
    }

    /// The 1-based line number, when the location is a line.
    pub fn line(&self) -> Option<usize> {
        match self {
            Location::Line { line, .. } => Some(*line),
            _ => None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File { file } => f.write_str(file),
            Location::Line { file, line } => write!(f, "{file}:{line}"),
            Location::Override { file, key, value } => write!(f, "{file} (--set {key}={value})"),
        }
    }
}

/// What class of problem a [`ScenarioError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The file could not be read.
    Io,
    /// The text is not valid TOML.
    Syntax,
    /// A key the schema does not know.
    UnknownField,
    /// A required key is missing.
    MissingField,
    /// A value of the wrong type or not among the accepted values.
    BadValue,
    /// Values that are well-formed but inconsistent (overlapping memslots, a misaligned
    /// address, an event naming a missing slot, ...).
    Invalid,
    /// A `set` key that does not lead anywhere in the document (such as an array index past
    /// the end).
    BadOverride,
    /// The scenario would need more memory, time or events than the limits allow
    /// ([`Limits`](super::Limits)).
    TooLarge,
}

/// A scenario that cannot be loaded, overridden or validated.
///
/// Displays as `file:line: field = value: message`, for example
/// `default.toml:14: policy.recover = "inplace": expected one of "zap", "in-place"`. The parts
/// are in [`ErrorDetails`], reachable through `Deref` (`err.location`, `err.kind`, ...).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ScenarioError(Box<ErrorDetails>);

/// The parts of a [`ScenarioError`].
#[derive(Debug, thiserror::Error)]
#[error("{location}: {}", subject(.field, .value, .message))]
pub struct ErrorDetails {
    /// Where the problem is.
    pub location: Location,
    /// The dotted path of the field concerned (`policy.recover`, `memslot[1].gpa`), if any.
    pub field: Option<String>,
    /// The value as written, when the field holds a plain value.
    pub value: Option<String>,
    /// What is wrong, with the accepted values where there is a list.
    pub message: String,
    /// The class of problem.
    pub kind: ErrorKind,
    /// The I/O error behind an [`ErrorKind::Io`] error.
    #[source]
    pub io: Option<std::io::Error>,
}

impl std::ops::Deref for ScenarioError {
    type Target = ErrorDetails;

    fn deref(&self) -> &ErrorDetails {
        &self.0
    }
}

impl From<ErrorDetails> for ScenarioError {
    fn from(d: ErrorDetails) -> Self {
        ScenarioError(Box::new(d))
    }
}

impl ScenarioError {
    /// The 1-based line number, when known.
    pub fn line(&self) -> Option<usize> {
        self.location.line()
    }

    /// The dotted field path, when the error is about a field.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    pub(crate) fn new(location: Location, field: Option<String>, message: String, kind: ErrorKind) -> Self {
        ErrorDetails { location, field, value: None, message, kind, io: None }.into()
    }

    pub(crate) fn io(file: String, error: std::io::Error) -> Self {
        ErrorDetails {
            location: Location::File { file },
            field: None,
            value: None,
            message: error.to_string(),
            kind: ErrorKind::Io,
            io: Some(error),
        }
        .into()
    }

    /// Drop the value part (for errors about keys rather than values).
    pub(crate) fn without_value(mut self) -> Self {
        self.0.value = None;
        self
    }
}

fn subject(field: &Option<String>, value: &Option<String>, message: &str) -> String {
    match (field, value) {
        (Some(f), Some(v)) => format!("{f} = {v}: {message}"),
        (Some(f), None) if !f.is_empty() => format!("{f}: {message}"),
        _ => message.to_string(),
    }
}
