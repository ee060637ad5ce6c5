//! Terminal styling: bold headings and green/red verdicts when the output is a terminal (as
//! `--color` and the `NO_COLOR` / `CLICOLOR_FORCE` conventions say), lines fitted to the
//! terminal's width, and plain ASCII where the locale is not UTF-8.

use std::io::IsTerminal;
use std::sync::OnceLock;

use crate::cli::ColorChoice;

static COLOR: OnceLock<ColorChoice> = OnceLock::new();

/// Record the `--color` choice (once, before any output).
pub fn set_color_choice(choice: ColorChoice) {
    let _ = COLOR.set(choice);
}

/// Whether to colour, from the choice, the environment and whether the output is a terminal:
/// `never`/`always` win; under `auto`, a non-empty `NO_COLOR` turns colour off, a
/// `CLICOLOR_FORCE` other than `0` turns it on (for `| less -R`), `CLICOLOR=0` turns it off,
/// else colour goes to terminals only.
pub fn use_color(choice: ColorChoice, terminal: bool, env: impl Fn(&str) -> Option<String>) -> bool {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    match choice {
        ColorChoice::Never => false,
        ColorChoice::Always => true,
        ColorChoice::Auto => {
            if set("NO_COLOR").is_some() {
                false
            } else if set("CLICOLOR_FORCE").is_some_and(|v| v != "0") {
                true
            } else if set("CLICOLOR").is_some_and(|v| v == "0") {
                false
            } else {
                terminal
            }
        }
    }
}

/// Whether the locale says UTF-8: the first of `LC_ALL`, `LC_CTYPE`, `LANG` that is set names
/// UTF-8 (none set: assume it does).
pub fn utf8_locale(env: impl Fn(&str) -> Option<String>) -> bool {
    match ["LC_ALL", "LC_CTYPE", "LANG"].iter().find_map(|k| env(k).filter(|v| !v.is_empty())) {
        Some(v) => {
            let v = v.to_ascii_lowercase();
            v.contains("utf-8") || v.contains("utf8")
        }
        None => true,
    }
}

/// The width to fit: `COLUMNS`, else the terminal's, else unlimited (a pipe or file).
fn output_width(terminal: bool) -> usize {
    if let Some(n) = std::env::var("COLUMNS").ok().and_then(|v| v.trim().parse::<usize>().ok()).filter(|&n| n >= 40) {
        return n;
    }
    if terminal {
        if let Some((terminal_size::Width(w), _)) = terminal_size::terminal_size() {
            return (w as usize).max(40);
        }
    }
    usize::MAX
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

/// Text with every character outside ASCII replaced by an ASCII look-alike (`─` `-`, `█` `#`,
/// `·` `-`, `→` `->`, `×` `x`, `≥` `>=`, `…` `...`; anything else `?`).
pub fn to_ascii(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            c if c.is_ascii() => out.push(c),
            '─' | '━' | '╸' | '–' | '—' => out.push('-'),
            '█' | '▉' | '▊' | '▋' | '▌' | '▍' | '▎' | '▏' => out.push('#'),
            '·' => out.push('-'),
            '→' => out.push_str("->"),
            '×' => out.push('x'),
            '≥' => out.push_str(">="),
            '≤' => out.push_str("<="),
            '…' => out.push_str("..."),
            '±' => out.push_str("+/-"),
            'µ' => out.push('u'),
            _ => out.push('?'),
        }
    }
    out
}

/// Whether to emit ANSI styles, and how wide and in which characters to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Emit escape sequences.
    pub color: bool,
    /// Columns to fit (`usize::MAX`: no limit).
    pub width: usize,
    /// Write ASCII only (the locale is not UTF-8).
    pub ascii: bool,
}

impl Default for Style {
    fn default() -> Self {
        Style::PLAIN
    }
}

impl Style {
    /// Plain text, no escape sequences, no width limit.
    pub const PLAIN: Style = Style { color: false, width: usize::MAX, ascii: false };

    /// The style for standard output, from `--color`, the environment and the terminal.
    pub fn for_stdout() -> Style {
        let terminal = std::io::stdout().is_terminal();
        Style {
            color: use_color(*COLOR.get().unwrap_or(&ColorChoice::Auto), terminal, env),
            width: output_width(terminal),
            ascii: !utf8_locale(env),
        }
    }

    /// `text` in this style's characters (ASCII where the locale is not UTF-8).
    pub fn chars(&self, text: &str) -> String {
        if self.ascii {
            to_ascii(text)
        } else {
            text.to_string()
        }
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
        assert_eq!(Style { color: true, ..Style::PLAIN }.good("ok"), "\x1b[32mok\x1b[0m");
    }

    #[test]
    fn color_follows_the_conventions() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert!(!use_color(ColorChoice::Auto, false, env(&[])));
        assert!(use_color(ColorChoice::Auto, true, env(&[])));
        assert!(!use_color(ColorChoice::Auto, true, env(&[("NO_COLOR", "1")])));
        assert!(use_color(ColorChoice::Auto, false, env(&[("CLICOLOR_FORCE", "1")])));
        assert!(!use_color(ColorChoice::Auto, false, env(&[("CLICOLOR_FORCE", "0")])));
        assert!(!use_color(ColorChoice::Auto, true, env(&[("CLICOLOR", "0")])));
        assert!(use_color(ColorChoice::Always, false, env(&[("NO_COLOR", "1")])));
        assert!(!use_color(ColorChoice::Never, true, env(&[("CLICOLOR_FORCE", "1")])));
        assert!(utf8_locale(env(&[("LANG", "en_US.UTF-8")])));
        assert!(!utf8_locale(env(&[("LC_ALL", "C"), ("LANG", "en_US.UTF-8")])));
        assert!(utf8_locale(env(&[])));
        assert_eq!(to_ascii("a ─ █▌ · → ≥ …"), "a - ## - -> >= ...");
    }
}
