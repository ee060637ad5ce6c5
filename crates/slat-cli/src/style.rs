//! Terminal styling: bold headings and green/red verdicts when the output is a terminal, plain
//! text otherwise (and always when `NO_COLOR` is set).

use std::io::IsTerminal;

/// Whether to emit ANSI styles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Style {
    /// Emit escape sequences.
    pub color: bool,
}

impl Style {
    /// Plain text, no escape sequences.
    pub const PLAIN: Style = Style { color: false };

    /// Colour if stdout is a terminal and `NO_COLOR` is unset or empty.
    pub fn for_stdout() -> Style {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style { color: !no_color && std::io::stdout().is_terminal() }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    /// Bold.
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }

    /// Dimmed (secondary information).
    pub fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }

    /// Green (a held expectation).
    pub fn good(&self, s: &str) -> String {
        self.paint("32", s)
    }

    /// Bold red (a failure).
    pub fn bad(&self, s: &str) -> String {
        self.paint("1;31", s)
    }

    /// `PASS` in green or `FAIL` in red.
    pub fn verdict(&self, ok: bool) -> String {
        if ok {
            self.good("PASS")
        } else {
            self.bad("FAIL")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_has_no_escapes() {
        assert_eq!(Style::PLAIN.bold("x"), "x");
        assert_eq!(Style::PLAIN.verdict(false), "FAIL");
        assert_eq!(Style { color: true }.good("ok"), "\x1b[32mok\x1b[0m");
    }
}
