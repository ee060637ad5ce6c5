//! The subcommands: `run`, `compare` and `scenarios`, from parsed arguments to output and exit
//! code. Everything that can be checked before the simulation starts (scenario, overrides,
//! variants, trace, output directories) is checked first, so bad input fails in milliseconds.

use std::io::{self, Write};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;
use serde::Serialize;
use slat_sim::report::{RunReport, SCHEMA_VERSION};
use slat_sim::scenario::{human_bytes, library, Location, Scenario, ScenarioError, ScenarioSource, KEYS};
use slat_sim::workload::Pattern;

use crate::cli::{
    CheckArgs, Cli, Command, CompareArgs, OutputArgs, RunArgs, ScenarioArgs, ScenariosArgs, ScenariosCommand,
};
use crate::compare::{self, Comparison, Variant};
use crate::error::{CliError, EXIT_EXPECTATION};
use crate::load;
use crate::output::{self, Output, Staged};
use crate::progress::Progress;
use crate::sim::simulate;
use crate::style::Style;
use crate::summary;
use crate::table::{Align, TextTable};
use crate::{html, style};

/// Exit code for an internal error (a panic: a bug in slat).
pub const EXIT_INTERNAL: u8 = 3;

/// Run the command and turn its outcome into an exit code, printing any error as one
/// `error: ...` line on stderr. A panic (a bug) is reported the same way, without a backtrace.
pub fn main(cli: Cli) -> ExitCode {
    panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        let place = info.location().map(|l| format!(" ({}:{})", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: internal error: {msg}{place}; this is a bug in slat, please report it");
    }));
    match panic::catch_unwind(AssertUnwindSafe(|| dispatch(cli))) {
        Ok(Ok(code)) => ExitCode::from(code),
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(e.code)
        }
        Err(_) => ExitCode::from(EXIT_INTERNAL),
    }
}

/// Run the command; `Ok` carries the exit code (0 or 1).
pub fn dispatch(cli: Cli) -> Result<u8, CliError> {
    style::set_color_choice(cli.color);
    match cli.command {
        Command::Run(args) => run(&args),
        Command::Compare(args) => compare(&args),
        Command::Scenarios(args) => scenarios(&args),
        Command::Check(args) => check(&args),
        Command::Keys => keys(),
        Command::Completions { shell } => completions(shell),
        Command::Man => man(),
        Command::Inspect(args) => crate::inspect::run(&args),
        Command::ProbeHost(args) => crate::probe_host::run(&args),
    }
}

/// Write human-readable `text` to stdout (also for other command modules), in ASCII where the
/// locale is not UTF-8; a closed pipe is not an error.
pub(crate) fn emit_text(text: &str) -> Result<(), CliError> {
    emit(&Style::for_stdout().chars(text))
}

/// Write `text` to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(CliError::input(format!("cannot write to stdout: {e}"))),
        _ => Ok(()),
    }
}

/// Whether `--json -` sends JSON to stdout (which then carries nothing else).
fn json_to_stdout(out: &OutputArgs) -> bool {
    out.json.as_deref() == Some(Path::new("-"))
}

/// The outputs asked for, with their options.
fn outputs(out: &OutputArgs) -> Vec<Output<'_>> {
    let mut v = Vec::new();
    if let Some(p) = &out.json {
        v.push(Output { option: "--json", path: p });
    }
    if let Some(p) = &out.report {
        v.push(Output { option: "--report", path: p });
    }
    v
}

/// The files a run reads: the scenario file, `--trace`, and traces named by the scenario.
fn inputs<'a>(args: &'a ScenarioArgs, scenarios: &'a [&'a Scenario]) -> Vec<&'a Path> {
    let mut v: Vec<&Path> = Vec::new();
    if let Some(s) = args.scenario.as_deref().filter(|s| load::is_path(s)) {
        v.push(Path::new(s));
    }
    if let Some(t) = &args.trace {
        v.push(t);
    }
    for s in scenarios {
        for p in &s.phases {
            if let Pattern::Trace { path } | Pattern::TraceOnce { path } = &p.spec.pattern {
                v.push(path);
            }
        }
    }
    v
}

/// Check the outputs before the run (see [`output::check`]).
fn check_outputs(out: &OutputArgs, inputs: &[&Path]) -> Result<(), CliError> {
    if out.report.as_deref().is_some_and(output::is_stdout) {
        return Err(CliError::input("--report needs a file name (the report is a whole HTML file)"));
    }
    output::check(&outputs(out), inputs)
}

/// Write the JSON and HTML outputs that were asked for: both are staged first, then renamed
/// into place, so a failure leaves neither half-written.
fn write_outputs(out: &OutputArgs, json: &impl Serialize, html: impl FnOnce() -> String) -> Result<(), CliError> {
    let mut staged = Vec::new();
    if let Some(path) = &out.json {
        let mut text =
            serde_json::to_string_pretty(json).map_err(|e| CliError::input(format!("cannot encode JSON: {e}")))?;
        text.push('\n');
        if output::is_stdout(path) {
            emit(&text)?;
        } else {
            staged.push((Staged::write(path, text.as_bytes())?, format!("JSON written to {}", path.display())));
        }
    }
    if let Some(path) = &out.report {
        staged.push((Staged::write(path, html().as_bytes())?, format!("HTML report written to {}", path.display())));
    }
    for (file, message) in staged {
        file.commit()?;
        note(out, &message);
    }
    Ok(())
}

/// A line for the user on stderr (not with `--quiet`).
fn note(out: &OutputArgs, text: &str) {
    if !out.quiet {
        eprintln!("{text}");
    }
}

/// The exit code for a verdict; with the summary not shown, the failures go to stderr.
fn verdict_code(passed: bool, failures: &[String], summary_shown: bool) -> u8 {
    if passed {
        return 0;
    }
    if !summary_shown {
        for f in failures {
            eprintln!("FAIL: {f}");
        }
    }
    EXIT_EXPECTATION
}

/// Load, override and validate the scenario of `run`/`compare` (without variants).
fn prepare(scenario: Option<&str>, sets: &[String]) -> Result<ScenarioSource, CliError> {
    let mut source = load::source(scenario)?;
    load::apply_sets(&mut source, sets)?;
    Ok(source)
}

/// `slat run`.
fn run(args: &RunArgs) -> Result<u8, CliError> {
    let a = &args.scenario;
    let source = prepare(a.scenario.as_deref(), &a.set)?;
    let scenario = load::build(&source, a.seed, a.trace.as_deref(), &load::limits(&a.limits))?;
    check_outputs(&args.output, &inputs(a, &[&scenario]))?;

    let progress = Progress::new(args.output.quiet, &scenario.name, scenario.total_accesses());
    let report = simulate(&scenario, args.output.samples as usize, &progress)?;
    progress.finish();

    let shown = !json_to_stdout(&args.output);
    if shown {
        emit_text(&summary::render(&report, Style::for_stdout()))?;
        if let Some(host) = crate::linux_host::render(&report) {
            emit_text(&host)?;
        }
    }
    write_outputs(&args.output, &report, || html::run_report(&report))?;
    Ok(verdict_code(report.passed(), &summary::failures(&report), shown))
}

/// A scenario error about a `--vary` value, worded as such (the library words it as `--set`).
fn vary_error(e: ScenarioError) -> CliError {
    if let Location::Override { file, key, value } = &e.location {
        let full = e.to_string();
        let tail = full.strip_prefix(&format!("{}: ", e.location)).unwrap_or(&full);
        return CliError::input(format!("{file} (--vary {key}={value}): {tail}"));
    }
    load::scenario_error(e)
}

/// `slat compare`.
fn compare(args: &CompareArgs) -> Result<u8, CliError> {
    let a = &args.scenario;
    let source = prepare(a.scenario.as_deref(), &a.set)?;
    let specs = args.vary.iter().map(|s| compare::parse_vary(s)).collect::<Result<Vec<_>, _>>()?;
    compare::check_conflicts(&specs, a.seed, &a.set)?;
    let combos = compare::expand(&specs)?;
    // Build and validate every variant before running any.
    let limits = load::limits(&a.limits);
    let mut planned: Vec<(Vec<(String, String)>, Scenario)> = Vec::with_capacity(combos.len());
    for settings in combos {
        let mut s = source.clone();
        for (k, v) in &settings {
            s.set(k, v).map_err(vary_error)?;
        }
        let scenario = load::build(&s, a.seed, a.trace.as_deref(), &limits)
            .map_err(|e| e.context(format!("variant {}", compare::label(&settings))))?;
        planned.push((settings, scenario));
    }
    let all: Vec<&Scenario> = planned.iter().map(|(_, s)| s).collect();
    check_outputs(&args.output, &inputs(a, &all))?;

    let n = planned.len();
    let bar_label = |i: usize, settings: &[(String, String)]| format!("[{}/{n}] {}", i + 1, compare::label(settings));
    let first_total = planned.first().map_or(0, |(_, s)| s.total_accesses());
    let progress = Progress::new(
        args.output.quiet,
        &planned.first().map(|(s, _)| bar_label(0, s)).unwrap_or_default(),
        first_total,
    );
    let mut variants = Vec::with_capacity(n);
    let mut name = String::new();
    for (i, (settings, scenario)) in planned.into_iter().enumerate() {
        let label = compare::label(&settings);
        if i > 0 {
            progress.restart(&bar_label(i, &settings), scenario.total_accesses());
        }
        let report: RunReport = simulate(&scenario, args.output.samples as usize, &progress)?;
        name = scenario.name.clone();
        variants.push(Variant { label, settings, report });
    }
    progress.finish();

    let cmp = Comparison {
        schema: SCHEMA_VERSION,
        scenario: name,
        keys: specs.iter().map(|s| s.key.clone()).collect(),
        common: a.set.clone(),
        variants,
    };
    let shown = !json_to_stdout(&args.output);
    if shown {
        emit_text(&compare::render(&cmp, Style::for_stdout()))?;
    }
    write_outputs(&args.output, &cmp, || html::compare_report(&cmp))?;
    let failures: Vec<String> = cmp
        .variants
        .iter()
        .flat_map(|v| summary::failures(&v.report).into_iter().map(move |f| format!("{}: {f}", v.label)))
        .collect();
    Ok(verdict_code(cmp.passed(), &failures, shown))
}

/// `slat scenarios` and `slat scenarios show NAME`.
fn scenarios(args: &ScenariosArgs) -> Result<u8, CliError> {
    match &args.command {
        None => {
            let st = style::Style::for_stdout();
            let mut t = TextTable::new(&[("name", Align::Left), ("description", Align::Left)]);
            for e in library() {
                t.row([e.name, e.description]);
            }
            let mut text = String::new();
            for (i, line) in t.lines_within(st.width).iter().enumerate() {
                text.push_str(&if i < 2 { st.dim(line) } else { line.clone() });
                text.push('\n');
            }
            text.push_str(&st.dim("\nRun one with `slat run NAME`; print its TOML with `slat scenarios show NAME`.\n"));
            emit_text(&text)?;
        }
        Some(ScenariosCommand::Show { name }) => {
            let entry = library().iter().find(|e| e.name == name).ok_or_else(|| load::unknown_scenario(name))?;
            emit(entry.toml)?;
            if !entry.toml.ends_with('\n') {
                emit("\n")?;
            }
        }
    }
    Ok(0)
}

/// `slat check`: load, override and validate within the limits; print the estimate.
fn check(args: &CheckArgs) -> Result<u8, CliError> {
    let a = &args.scenario;
    let source = prepare(a.scenario.as_deref(), &a.set)?;
    let limits = load::limits(&a.limits);
    let scenario = load::build(&source, a.seed, a.trace.as_deref(), &limits)?;
    let est = scenario.estimate();
    let st = Style::for_stdout();
    let mut text = format!(
        "{}: {} ({} phase{}, {} event{}, {} expectation{}, {} accesses)\n",
        st.good("ok"),
        scenario.label(),
        scenario.phases.len(),
        if scenario.phases.len() == 1 { "" } else { "s" },
        scenario.events.len(),
        if scenario.events.len() == 1 { "" } else { "s" },
        scenario.checks.len(),
        if scenario.checks.len() == 1 { "" } else { "s" },
        crate::units::count(est.accesses),
    );
    text.push_str(&format!(
        "memory: at most about {} (limit {})\n",
        human_bytes(est.memory()),
        human_bytes(limits.memory)
    ));
    for p in &est.parts {
        text.push_str(&st.dim(&format!("  {:<38} {:>10}  {} ({})\n", p.what, human_bytes(p.bytes), p.how, p.field)));
    }
    emit_text(&text)?;
    Ok(0)
}

/// `slat keys`.
fn keys() -> Result<u8, CliError> {
    let st = Style::for_stdout();
    let mut t = TextTable::new(&[
        ("key", Align::Left),
        ("default", Align::Left),
        ("meaning", Align::Left),
        ("type or values", Align::Left),
    ]);
    for k in KEYS {
        t.row([k.key, k.default, k.about, k.kind]);
    }
    let mut text = String::new();
    for (i, line) in t.lines_within(st.width).iter().enumerate() {
        text.push_str(&if i < 2 { st.dim(line) } else { line.clone() });
        text.push('\n');
    }
    text.push_str(&st.dim(
        "\n[i] is an array index (memslot[0], phase[1]).\nSet any key in a scenario file or with --set KEY=VALUE.\n",
    ));
    emit_text(&text)?;
    Ok(0)
}

/// `slat completions SHELL`.
fn completions(shell: clap_complete::Shell) -> Result<u8, CliError> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "slat", &mut out);
    emit(&String::from_utf8_lossy(&out))?;
    Ok(0)
}

/// `slat man`.
fn man() -> Result<u8, CliError> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .map_err(|e| CliError::input(format!("cannot render the man page: {e}")))?;
    emit(&String::from_utf8_lossy(&out))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_directories_are_checked() {
        let check = |p: &str| output::check(&[Output { option: "--json", path: Path::new(p) }], &[]);
        assert!(check("-").is_ok());
        let e = check("/nonexistent/dir/out.html").unwrap_err();
        assert_eq!(e.message, "cannot write /nonexistent/dir/out.html: no directory /nonexistent/dir");
        assert!(check("/").is_err());
    }

    #[test]
    fn vary_errors_say_vary() {
        let mut s = load::source(None).unwrap();
        let e = s.set("policy.recover", "inplace").unwrap_err();
        let c = vary_error(e);
        assert!(c.message.contains("(--vary policy.recover=inplace)"), "{}", c.message);
        assert!(!c.message.contains("--set"), "{}", c.message);
    }
}
