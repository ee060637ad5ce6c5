//! The progress bar on stderr (indicatif), hidden with `--quiet` or when stderr is not a
//! terminal, so pipes, files and CI logs never see it.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::units::short_count;

/// A progress bar over guest accesses (possibly hidden).
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar over `total` accesses labelled `label`; hidden if `quiet` or stderr is not a
    /// terminal.
    pub fn new(quiet: bool, label: &str, total: u64) -> Self {
        let visible = !quiet && std::io::stderr().is_terminal();
        let bar = if visible {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(10));
            let style = ProgressStyle::with_template(
                "{prefix:.bold} {bar:32.cyan/blue} {percent:>3}%  {human_pos}/{human_len} accesses  {rate}  eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{} accesses/s", short_count(state.per_sec()));
            })
            .progress_chars("━╸─");
            bar.set_style(style);
            bar.set_prefix(label.to_string());
            bar.enable_steady_tick(Duration::from_millis(250));
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress { bar }
    }

    /// Report `done` of `total` accesses (`total` 0: not known, a trace from a pipe).
    pub fn update(&self, done: u64, total: u64) {
        let total = if total == 0 { done.max(1) } else { total };
        if self.bar.length() != Some(total) {
            self.bar.set_length(total);
        }
        self.bar.set_position(done);
    }

    /// Relabel the bar (the next compare variant) and restart it over `total` accesses.
    pub fn restart(&self, label: &str, total: u64) {
        self.bar.set_prefix(label.to_string());
        self.bar.reset();
        self.bar.set_length(total);
    }

    /// Remove the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// Whether the bar is drawn.
    pub fn is_visible(&self) -> bool {
        !self.bar.is_hidden()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_hides_the_bar() {
        let p = Progress::new(true, "x", 10);
        assert!(!p.is_visible());
        p.update(5, 10);
        p.restart("y", 20);
        p.finish();
    }
}
