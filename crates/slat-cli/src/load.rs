//! Finding the scenario to run and changing it as the command line says: an embedded name or a
//! file, `--set key=value` overrides, `--seed`, and `--trace` (replace the workload by a lackey
//! trace replay). Library errors become one-line [`CliError`]s.
//!
//! The scenario argument: one containing `/` or ending in `.toml` is a file path; anything else
//! names an embedded scenario (`slat scenarios` lists them). So `slat run default` runs the
//! embedded scenario and `slat run ./default.toml` a file.

use std::fs::File;
use std::path::{Path, PathBuf};

use slat_sim::scenario::{library, ErrorKind, Limits, Location, Phase, Scenario, ScenarioError, ScenarioSource};
use slat_sim::workload::{lackey, GvaRange, Pattern, PhaseSpec};

use crate::cli::LimitArgs;
use crate::error::{error_chain, CliError};

/// The scenario run when none is named.
pub const DEFAULT_SCENARIO: &str = "default";

/// Whether a scenario argument is a file path (contains a path separator or ends in `.toml`)
/// rather than the name of an embedded scenario.
pub fn is_path(arg: &str) -> bool {
    arg.contains('/') || arg.contains(std::path::MAIN_SEPARATOR) || arg.ends_with(".toml")
}

/// The names of the embedded scenarios, comma-separated.
pub fn known_names() -> String {
    library().iter().map(|e| e.name).collect::<Vec<_>>().join(", ")
}

/// An unknown embedded scenario name.
pub fn unknown_scenario(name: &str) -> CliError {
    CliError::input(format!(
        "unknown scenario {name:?}; embedded scenarios: {} (a file path must contain '/' or end in .toml)",
        known_names()
    ))
}

/// A scenario library error as a one-line message; an unreadable file reads
/// `cannot read FILE: REASON`.
pub fn scenario_error(e: ScenarioError) -> CliError {
    if e.kind == ErrorKind::Io {
        if let Some(io) = &e.io {
            return CliError::io("read", Path::new(e.location.file()), io);
        }
    }
    CliError::from_error(&e)
}

/// The scenario source for the argument (`None`: the default scenario).
pub fn source(arg: Option<&str>) -> Result<ScenarioSource, CliError> {
    let arg = arg.unwrap_or(DEFAULT_SCENARIO);
    if is_path(arg) {
        ScenarioSource::load(arg).map_err(scenario_error)
    } else {
        ScenarioSource::from_library(arg).ok_or_else(|| unknown_scenario(arg))
    }
}

/// Split a `--set` argument into key and value.
pub fn split_set(arg: &str) -> Result<(&str, &str), CliError> {
    match arg.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim(), v.trim())),
        _ => Err(CliError::input(format!("--set {arg:?}: expected key=value, e.g. policy.recover=zap"))),
    }
}

/// Apply `--set key=value` overrides in order; each is checked against the schema at once.
pub fn apply_sets(source: &mut ScenarioSource, sets: &[String]) -> Result<(), CliError> {
    for arg in sets {
        let (k, v) = split_set(arg)?;
        source.set(k, v).map_err(scenario_error)?;
    }
    Ok(())
}

/// The memory the simulator may use by default: what this machine has available
/// (`MemAvailable`), or 8 GiB where that cannot be read.
pub fn available_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(8 << 30, |kib| kib * 1024)
}

/// The limits of a run: the defaults, or what `--max-memory`, `--max-accesses`,
/// `--max-events` and `--max-real-memory` say.
pub fn limits(args: &LimitArgs) -> Limits {
    let mut l = Limits::with_memory(args.max_memory.unwrap_or_else(available_memory));
    if let Some(n) = args.max_accesses {
        l.accesses = n;
    }
    if let Some(n) = args.max_events {
        l.events = n;
    }
    if let Some(n) = args.max_real_memory {
        l.real_memory = n;
    }
    l
}

/// Validate the source within `limits` and apply `--seed` and `--trace`.
pub fn build(
    source: &ScenarioSource,
    seed: Option<u64>,
    trace: Option<&Path>,
    limits: &Limits,
) -> Result<Scenario, CliError> {
    let mut scenario = source.parse_within(limits).map_err(scenario_error)?;
    if let Some(seed) = seed {
        scenario.seed = seed;
    }
    if let Some(path) = trace {
        replay_trace(&mut scenario, path, limits.accesses)?;
        let n = scenario.total_accesses();
        if n > limits.accesses {
            return Err(CliError::input(format!(
                "{}: the trace holds {n} accesses; the limit is {} (raise it with --max-accesses)",
                path.display(),
                limits.accesses
            )));
        }
    }
    Ok(scenario)
}

/// Replace the scenario's workload by one phase replaying the lackey trace at `path` once, on one
/// vCPU, folded into the guest's largest virtual region. The scenario's events and expectations
/// belong to its own workload and are dropped; host, VM, memslots and policy stay.
///
/// A regular file is read twice (once to count and check its lines, then to replay them); a
/// pipe, `-` (standard input) or `/dev/stdin` is read once, streamed: the phase is open-ended,
/// with at most `max_accesses` accesses.
pub fn replay_trace(scenario: &mut Scenario, path: &Path, max_accesses: u64) -> Result<(), CliError> {
    let path = if path == Path::new("-") { Path::new("/dev/stdin") } else { path };
    let file = File::open(path).map_err(|e| CliError::io("read", path, &e))?;
    let meta = file.metadata().map_err(|e| CliError::io("read", path, &e))?;
    if meta.is_dir() {
        return Err(CliError::input(format!("{}: is a directory, not a trace", path.display())));
    }
    let streamed = !meta.is_file();
    let accesses = if streamed {
        max_accesses
    } else {
        let n = lackey::count_accesses(path).map_err(|e| CliError::input(error_chain(&e)))?;
        if n == 0 {
            return Err(CliError::input(format!("{}: the trace holds no accesses", path.display())));
        }
        n
    };
    let region = scenario.guest_regions().into_iter().max_by_key(|r| r.len.0).ok_or_else(|| {
        CliError::input(format!("{}: the scenario has no guest memory to replay a trace on", scenario.name))
    })?;
    let range = GvaRange::new(region.gva.0, region.len.0);
    let pattern = if streamed {
        Pattern::TraceOnce { path: PathBuf::from(path) }
    } else {
        Pattern::Trace { path: PathBuf::from(path) }
    };
    let spec = PhaseSpec::new("trace", pattern, range, accesses);
    scenario.phases = vec![Phase {
        name: "trace".into(),
        start: 0,
        spec,
        location: Location::File { file: path.display().to_string() },
        open_ended: streamed,
    }];
    scenario.events.clear();
    scenario.checks.clear();
    scenario.description = format!("lackey trace {} replayed on the VM of scenario {}", path.display(), scenario.name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_names() {
        assert!(is_path("x.toml"));
        assert!(is_path("./default"));
        assert!(is_path("dir/x"));
        assert!(!is_path("default"));
        assert!(!is_path("dirty-log"));
    }

    #[test]
    fn embedded_default_exists() {
        assert!(source(None).is_ok());
        let e = source(Some("no-such-scenario")).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.message.contains("unknown scenario \"no-such-scenario\""));
        assert!(e.message.contains(DEFAULT_SCENARIO));
    }

    #[test]
    fn missing_file_reads_plainly() {
        let e = source(Some("/nonexistent/x.toml")).unwrap_err();
        assert_eq!(e.message, "cannot read /nonexistent/x.toml: No such file or directory");
    }

    #[test]
    fn set_needs_an_equals_sign() {
        assert_eq!(split_set("a.b=c").unwrap(), ("a.b", "c"));
        assert!(split_set("a.b").unwrap_err().message.contains("expected key=value"));
        assert!(split_set("=x").is_err());
    }

    #[test]
    fn missing_trace_reads_plainly() {
        let mut s = source(None).unwrap().parse().unwrap();
        let e = replay_trace(&mut s, Path::new("/nonexistent/trace.out"), u64::MAX).unwrap_err();
        assert_eq!(e.message, "cannot read /nonexistent/trace.out: No such file or directory");
    }

    #[test]
    fn trace_replaces_the_workload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.lackey");
        std::fs::write(&path, "==1== Lackey\nI  04010173,3\n L 04222cac,8\n M 0421b3e8,4\n").unwrap();
        let mut s = source(None).unwrap().parse().unwrap();
        replay_trace(&mut s, &path, u64::MAX).unwrap();
        assert_eq!(s.phases.len(), 1);
        assert_eq!(s.phases[0].spec.accesses, 4);
        assert!(s.events.is_empty() && s.checks.is_empty());
        std::fs::write(&path, "==1== only a banner\n").unwrap();
        assert!(replay_trace(&mut s, &path, u64::MAX).unwrap_err().message.contains("holds no accesses"));
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(replay_trace(&mut s, &path, u64::MAX).unwrap_err().message.contains(":1: malformed lackey line"));
    }
}
