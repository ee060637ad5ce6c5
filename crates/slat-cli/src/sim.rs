//! The one place that drives the simulator: [`slat_sim::engine::run`] with the progress bar, or
//! [`slat_sim::engine::run_on`] this machine's kernel for `host.kind = "linux"`.

use slat_sim::engine::{self, RunOptions};
use slat_sim::report::RunReport;
use slat_sim::scenario::{HostKind, Scenario};

use crate::error::CliError;
use crate::progress::Progress;

/// Run `scenario`, sampling about `samples` time-series points, reporting progress to
/// `progress`. The report's `overrides` list the scenario's `--set`/`--vary` overrides when the
/// engine leaves them empty.
pub fn simulate(scenario: &Scenario, samples: usize, progress: &Progress) -> Result<RunReport, CliError> {
    let mut on_progress = |done: u64, total: u64| progress.update(done, total);
    let opts = RunOptions { progress: Some(&mut on_progress), samples, ..Default::default() };
    let run = match scenario.host.kind {
        HostKind::Simulated => engine::run(scenario, opts),
        HostKind::Linux => crate::linux_host::host_for(scenario)
            .map_err(engine::SimError::from)
            .and_then(|host| engine::run_on(scenario, host, opts)),
    };
    let mut report = run.map_err(|e| CliError::from_error(&e))?;
    if report.overrides.is_empty() {
        report.overrides = scenario.overrides.iter().map(|o| format!("{}={}", o.key, o.value)).collect();
    }
    Ok(report)
}
