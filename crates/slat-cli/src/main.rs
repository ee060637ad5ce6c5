//! `slat`: see `slat --help` and the `slat_cli` crate docs.

use std::process::ExitCode;

use clap::Parser;
use slat_cli::cli::Cli;

fn main() -> ExitCode {
    // clap prints usage errors itself and exits with 2 (0 for --help and --version).
    let cli = Cli::parse();
    slat_cli::commands::main(cli)
}
