//! Command-line arguments (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Scenario argument help, shared by `run` and `compare`.
const SCENARIO_HELP: &str = "Embedded scenario name (see `slat scenarios`) or a TOML file. \
An argument containing '/' or ending in '.toml' is a file path; anything else names an embedded scenario. \
Default: the embedded `default` scenario";

/// slat: simulate a hypervisor's stage-2 MMU (EPT/NPT/arm64/RISC-V) on a modelled host and guest,
/// and see what happens to the VM's huge pages.
#[derive(Debug, Parser)]
#[command(name = "slat", version, propagate_version = true, max_term_width = 110)]
#[command(after_help = "Exit codes: 0 all expectations held, 1 an expectation failed, 2 bad input, 3 internal error.")]
pub struct Cli {
    /// When to colour the output: auto (terminals, unless NO_COLOR is set; CLICOLOR_FORCE=1
    /// forces it), always or never.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a scenario and summarise what happened to guest memory.
    #[command(after_help = "Examples:\n  slat run\n  slat run default --set policy.recover=zap --report out.html\n  \
slat run ./my.toml --json -\n  slat run --trace lackey.out --quiet")]
    Run(RunArgs),
    /// Run variants of a scenario on identical inputs and show them side by side.
    #[command(after_help = "Example:\n  slat compare default --vary policy.recover=zap,in-place --report cmp.html")]
    Compare(CompareArgs),
    /// List the embedded scenarios, or print one's TOML.
    Scenarios(ScenariosArgs),
    /// Validate a scenario (and its overrides) without running it; print what it would cost.
    Check(CheckArgs),
    /// List every key a scenario or `--set` can set, with its type and default.
    Keys,
    /// Print a shell completion script, e.g. `slat completions bash > /etc/bash_completion.d/slat`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `slat man > slat.1 && man ./slat.1`.
    Man,
    /// Inspect a running VMM (QEMU, or any with --range): how its guest RAM is backed and mapped on
    /// this host, what stage 2 could map huge and why not, what KVM mapped, and the fix.
    #[command(after_help = "Examples:\n  slat inspect --pid $(pgrep -f qemu-system)\n  \
slat inspect --pid 1234 --range 0x7f0000000000:1G@0x100000000 --json")]
    Inspect(crate::inspect::InspectArgs),
    /// What will this host's KVM map for a VM backed like this? Runs a micro-VM and shows KVM's
    /// leaves beside slat's prediction and reasons (needs /dev/kvm).
    #[command(
        after_help = "Examples:\n  slat probe-host\n  slat probe-host --backing memfd --size 16M --stride 64K --json"
    )]
    ProbeHost(crate::probe_host::ProbeHostArgs),
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour on terminals (see `NO_COLOR`, `CLICOLOR_FORCE`).
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// `slat check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The scenario.
    #[command(flatten)]
    pub scenario: ScenarioArgs,
}

/// Which scenario, and how to change it.
#[derive(Debug, Clone, Args)]
pub struct ScenarioArgs {
    /// Scenario to run.
    #[arg(value_name = "SCENARIO", help = SCENARIO_HELP)]
    pub scenario: Option<String>,
    /// Override a scenario field (repeatable), e.g. `--set policy.recover=zap`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Seed for every random choice (default: the scenario's).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Replay a valgrind lackey trace (`valgrind --tool=lackey --trace-mem=yes`) on the scenario's VM:
    /// its workload phases are replaced by one phase replaying the trace once (its events and
    /// expectations, which belong to that workload, are dropped).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Resource limits checked before the run.
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Resource limits: a scenario estimated to exceed one fails before it runs.
#[derive(Debug, Clone, Default, Args)]
pub struct LimitArgs {
    /// Most memory the simulator may use, e.g. `64G` (default: the memory available on this
    /// machine). Scenarios estimated to need more fail at once.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_memory: Option<u64>,
    /// Most guest accesses in a run (default: 2^32, minutes of simulation).
    #[arg(long, value_name = "N")]
    pub max_accesses: Option<u64>,
    /// Most timed events in a scenario (default: 10,000; each audits the whole VM).
    #[arg(long, value_name = "N")]
    pub max_events: Option<usize>,
    /// Most real memory a `host.kind = "linux"` run may map for its memslots, e.g. `2G`
    /// (default: 1G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_real_memory: Option<u64>,
}

/// A size argument: `4096`, `512M`, `64G`, `1T`.
fn parse_size(text: &str) -> Result<u64, String> {
    slat_sim::scenario::Bytes::parse(text).map(|b| b.0)
}

/// Where results go.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Write the results as pretty JSON to FILE (`-` for stdout, which then carries only the JSON).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report (inline CSS and SVG charts, no scripts) to FILE.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// Hide the progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long, short)]
    pub quiet: bool,
    /// Points in the time series (charts and JSON).
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub samples: u32,
}

/// `slat run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The scenario.
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// The outputs.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `slat compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// The scenario.
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Vary a field over values (repeatable; several give their cartesian product), e.g.
    /// `--vary policy.recover=zap,in-place`.
    #[arg(long = "vary", value_name = "KEY=V1,V2,...", required = true)]
    pub vary: Vec<String>,
    /// The outputs.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `slat scenarios`.
#[derive(Debug, Clone, Args)]
pub struct ScenariosArgs {
    /// Without a subcommand: list the embedded scenarios.
    #[command(subcommand)]
    pub command: Option<ScenariosCommand>,
}

/// `slat scenarios show`.
#[derive(Debug, Clone, Subcommand)]
pub enum ScenariosCommand {
    /// Print an embedded scenario's TOML (a starting point for your own: `slat scenarios show default > my.toml`).
    Show {
        /// Scenario name.
        name: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_run_and_compare() {
        let c = Cli::try_parse_from(["slat", "run", "x.toml", "--set", "a=1", "--set", "b=2", "--json", "-", "-q"])
            .unwrap();
        let Command::Run(r) = c.command else { panic!() };
        assert_eq!(r.scenario.scenario.as_deref(), Some("x.toml"));
        assert_eq!(r.scenario.set, ["a=1", "b=2"]);
        assert!(r.output.quiet);
        assert_eq!(r.output.samples, 200);
        let c = Cli::try_parse_from(["slat", "compare", "default", "--vary", "a=1,2"]).unwrap();
        assert!(matches!(c.command, Command::Compare(_)));
        assert!(Cli::try_parse_from(["slat", "compare", "default"]).is_err());
        let c = Cli::try_parse_from(["slat", "scenarios", "show", "default"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Scenarios(ScenariosArgs { command: Some(ScenariosCommand::Show { .. }) })
        ));
    }
}
