//! # slat-cli: the `slat` command
//!
//! Thin: parses arguments ([`cli`]), finds and overrides scenarios ([`load`]), drives the
//! simulator ([`sim`], with a [`progress`] bar) and renders its
//! [`RunReport`](slat_sim::report::RunReport) as a terminal summary ([`summary`], [`compare`]),
//! JSON, or one self-contained HTML file ([`html`] with [`svg`] charts). [`commands`] ties them
//! together; [`error`] defines the one-line errors and exit codes.
//!
//! ```text
//! slat run [SCENARIO] [--set KEY=VALUE]... [--seed N] [--trace FILE] [--json FILE|-] [--report FILE.html] [--quiet]
//! slat compare [SCENARIO] --vary KEY=V1,V2,... [--vary ...] [--set ...] [--json ...] [--report ...]
//! slat scenarios [show NAME]
//! slat inspect --pid PID [--range HVA:LEN[@GPA]]... [--qmp SOCKET] [--json] [--smaps] [--no-debugfs]
//! ```
//!
//! SCENARIO is an embedded scenario's name (`slat scenarios`) or, when it contains `/` or ends
//! in `.toml`, a file. Exit codes: 0 every expectation held, 1 one failed, 2 bad input,
//! 3 internal error.
#![warn(missing_docs)]

pub mod cli;
pub mod commands;
pub mod compare;
pub mod error;
pub mod html;
pub mod inspect;
pub mod linux_host;
pub mod load;
pub mod output;
pub mod probe_host;
pub mod progress;
pub mod sim;
pub mod style;
pub mod summary;
pub mod svg;
pub mod table;
pub mod units;

#[cfg(test)]
mod fixtures;
