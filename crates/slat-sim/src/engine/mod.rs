//! The scenario engine: builds the host, the MMU and the hardware from a [`Scenario`], plays the
//! workload through the hardware model (stage-2 faults go to the MMU), fires the timed events,
//! audits after every event, samples metrics, and checks the expectations.
//!
//! Deterministic: the same scenario and seed produce the same report, byte for byte.

mod events;
mod host;
mod metrics;
mod setup;
mod written;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use slat_mmu::{FaultError, FaultOutcome, Gpa, HostError, Mmu, Parts};
use slat_pt::{Access as HwAccess, Format, SimFrameAllocator};

use crate::hw::{AccessOutcome, Hardware, HwStats, SimTlb};
use crate::report::{EventMark, PhaseSummary, RunReport, Sample, SCHEMA_VERSION};
use crate::scenario::{Format as FormatName, OnSigbus, Scenario};
use crate::workload::{Access, AccessKind};

pub use host::{named_numbers, ScenarioHost};
pub use setup::SetupError;

/// The MMU as the engine instantiates it over host `H`.
pub(crate) type SimMmu<F, H> = Mmu<F, Parts<SimFrameAllocator, Arc<H>, SimTlb>>;

/// Options of a run.
#[derive(Default)]
pub struct RunOptions<'a> {
    /// Called now and then with (accesses done, accesses in total).
    pub progress: Option<&'a mut dyn FnMut(u64, u64)>,
    /// Target number of time-series points (0: 200).
    pub samples: usize,
    /// Called after each event with the event and the wall time its action took (not the
    /// audit after it). For benchmarks: wall time is kept out of the report, which stays the
    /// same to the byte.
    pub event_time: Option<&'a mut EventTimer<'a>>,
}

/// A callback given each event and the wall time of its action ([`RunOptions::event_time`]).
pub type EventTimer<'a> = dyn FnMut(&crate::scenario::Event, std::time::Duration) + 'a;

/// Why a run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario could not be turned into a host, MMU and hardware.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The workload failed (e.g. a malformed trace line).
    #[error("workload: {0}")]
    Workload(#[from] crate::workload::WorkloadError),
    /// The host ran out of memory for a backing that cannot fall back: an empty hugetlbfs pool
    /// (the fault is a SIGBUS to the VMM, `KVM_RUN` fails with `EFAULT`; with
    /// `vm.on_sigbus = "stop"`) or host RAM (the OOM killer takes the VMM).
    #[error("{location}: memslot {slot} ({kind}) at gpa {gpa:#x}: host out of memory; {hint}")]
    HostOutOfMemory {
        /// Where the memslot is written (`file:line`).
        location: String,
        /// Memslot.
        slot: u32,
        /// Faulting guest-physical address.
        gpa: u64,
        /// Backing kind.
        kind: &'static str,
        /// What happened to the pool and what to change.
        hint: String,
    },
    /// An event could not be applied.
    #[error("{location}: event {kind}: {message}")]
    Event {
        /// Where the event is written (`file:line`).
        location: String,
        /// Event kind.
        kind: String,
        /// What went wrong.
        message: String,
    },
    /// The hardware model refused an access.
    #[error("hardware model: {0}")]
    Hardware(#[from] crate::hw::HwError),
    /// A fault kept retrying (a livelock in the MMU or host model).
    #[error("fault at gpa {gpa:#x} still retrying after {tries} attempts")]
    Livelock {
        /// The address.
        gpa: u64,
        /// Attempts.
        tries: u32,
    },
    /// The MMU refused a fault for a reason other than the guest's.
    #[error("fault at gpa {gpa:#x}: {source}")]
    Fault {
        /// The address.
        gpa: u64,
        /// The MMU error.
        source: FaultError,
    },
}

/// Run a scenario on the simulated host its `[host]` table describes.
pub fn run(scenario: &Scenario, opts: RunOptions) -> Result<RunReport, SimError> {
    let host = Arc::new(setup::sim_host(scenario)?);
    run_on(scenario, host, opts)
}

/// Run a scenario on `host`: the same workload, events, audits and report as [`run`], with the
/// memslots backed, faulted in and changed by `host` (a real host, for instance).
pub fn run_on<H: ScenarioHost>(scenario: &Scenario, host: Arc<H>, opts: RunOptions) -> Result<RunReport, SimError> {
    use slat_pt::format::*;
    match scenario.vm.format {
        FormatName::Ept4 => Engine::<Ept4, H>::new(scenario, host)?.run(opts),
        FormatName::Ept5 => Engine::<Ept5, H>::new(scenario, host)?.run(opts),
        FormatName::Npt => Engine::<Npt, H>::new(scenario, host)?.run(opts),
        FormatName::Arm64L0 => Engine::<Arm64S2L0, H>::new(scenario, host)?.run(opts),
        FormatName::Arm64L1 => Engine::<Arm64S2L1, H>::new(scenario, host)?.run(opts),
        FormatName::Sv39x4 => Engine::<Sv39x4, H>::new(scenario, host)?.run(opts),
        FormatName::Sv48x4 => Engine::<Sv48x4, H>::new(scenario, host)?.run(opts),
    }
}

/// Where a memslot lives now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotPlace {
    pub gpa: u64,
    pub size: u64,
    pub hva: u64,
    pub present: bool,
}

/// Guest-physical to host-virtual map of the present memslots, shared with the walk checker.
pub(crate) type SlotMap = Arc<Mutex<BTreeMap<u32, SlotPlace>>>;

/// Counters the engine keeps beside the MMU, host and hardware.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct EngineCounters {
    pub mmio_exits: u64,
    pub readonly_exits: u64,
    pub write_tracked_exits: u64,
    pub host_unmapped: u64,
    /// hugetlbfs faults on an empty pool the VMM survived (`vm.on_sigbus = "continue"`).
    pub sigbus_exits: u64,
    pub guest_faults: u64,
    pub dirty_lost: u64,
    pub audit_failures: u64,
    pub audits: u64,
}

pub(crate) struct Engine<'s, F: Format, H: ScenarioHost> {
    pub s: &'s Scenario,
    pub host: Arc<H>,
    pub mmu: SimMmu<F, H>,
    pub hw: Hardware,
    pub slots: SlotMap,
    pub counters: EngineCounters,
    /// Guest writes to logged slots since their last harvest (page offsets into the slot), for
    /// the I5 check.
    pub written: BTreeMap<u32, written::WrittenPages>,
    /// Balloon chunks inflated per slot (hva, len), for deflation.
    pub balloon: BTreeMap<u32, Vec<(u64, u64)>>,
    pub report: RunReport,
    pub done: u64,
    pub last_hw: HwStats,
    pub last_sample_access: u64,
    pub peak_4k: u64,
    pub audit_detail: Option<String>,
    /// Wall time of the last event's action ([`RunOptions::event_time`]).
    pub last_event_time: std::time::Duration,
    /// Metric snapshots at the end of each phase, for `after_phase` expectations.
    pub phase_metrics: Vec<metrics::Snapshot>,
}

impl<'s, F: Format, H: ScenarioHost> Engine<'s, F, H> {
    fn run(mut self, mut opts: RunOptions) -> Result<RunReport, SimError> {
        let mut total = self.s.total_accesses();
        let samples = if opts.samples == 0 { 200 } else { opts.samples } as u64;
        // An open-ended phase (a trace from a pipe) has no known length: sample often and halve
        // the series whenever it grows past twice the target.
        let open_ended = self.s.phases.iter().any(|p| p.open_ended);
        let mut sample_every = if open_ended { 1024 } else { (total / samples).max(1) };
        // Where each phase ends; cut short when the workload ends early.
        let mut ends: Vec<u64> = self.s.phases.iter().map(|p| p.end()).collect();
        let mut phase_first = 0;
        let mut workload = self.s.workload()?;
        let mut buf = vec![Access { vcpu: 0, gva: 0, kind: AccessKind::Read }; 4096];
        let events = self.s.events.clone();
        let mut next_event = 0;
        let mut phase = 0;
        let mut phase_start = self.phase_start_state();
        self.sample();

        loop {
            // Events due now, phase ends and phase starts, in scenario order.
            loop {
                let due = events.get(next_event).filter(|e| e.access == self.done && e.phase == phase);
                if let Some(e) = due {
                    self.fire(e)?;
                    if let Some(f) = opts.event_time.as_mut() {
                        f(e, self.last_event_time);
                    }
                    next_event += 1;
                    continue;
                }
                if phase < ends.len() && self.done == ends[phase] {
                    self.close_phase(phase, &phase_start, self.done - phase_first);
                    phase_first = self.done;
                    phase += 1;
                    phase_start = self.phase_start_state();
                    continue;
                }
                break;
            }
            if self.done >= total {
                break;
            }
            // Run up to the next stop: event, phase end or sample point.
            let mut stop = ends[phase];
            if let Some(e) = events.get(next_event) {
                stop = stop.min(e.access.max(self.done));
            }
            stop = stop.min((self.done / sample_every + 1) * sample_every).max(self.done + 1).min(total);
            while self.done < stop {
                let want = ((stop - self.done) as usize).min(buf.len());
                let n = workload.fill(&mut buf[..want]);
                if n == 0 {
                    if let Some(e) = workload.take_error() {
                        return Err(e.into());
                    }
                    // The workload ended early (a short trace, or the end of a piped one):
                    // the run ends here.
                    for e in &mut ends[phase..] {
                        *e = self.done;
                    }
                    total = self.done;
                    break;
                }
                self.play(&buf[..n])?;
                self.done += n as u64;
            }
            if let Some(e) = workload.take_error() {
                return Err(e.into());
            }
            if self.done % sample_every == 0 || self.done == total {
                self.sample();
                if open_ended && self.report.samples.len() as u64 > 2 * samples {
                    sample_every *= 2;
                    let last = self.report.samples.len() - 1;
                    let mut i = 0;
                    self.report.samples.retain(|s| {
                        i += 1;
                        s.access % sample_every == 0 || i - 1 == last
                    });
                }
            }
            if let Some(p) = opts.progress.as_mut() {
                p(self.done, if open_ended { 0 } else { total });
            }
        }
        self.finish()
    }

    /// Play a batch of accesses through the hardware; stage-2 faults go to the MMU.
    fn play(&mut self, batch: &[Access]) -> Result<(), SimError> {
        self.host.sync(&self.mmu, false);
        let logging = !self.written.is_empty();
        let mut i = 0;
        let mut tries = 0u32;
        let mut guest_faults = 0;
        while i < batch.len() {
            let hw = &mut self.hw;
            let guest_faults = &mut guest_faults;
            let stop = self.mmu.with_tables(|pt| -> Result<Option<crate::hw::Stage2Fault>, SimError> {
                while i < batch.len() {
                    let a = &batch[i];
                    match hw.access(a.vcpu as usize, a.gva, hw_kind(a.kind), pt)? {
                        AccessOutcome::Stage2Fault(f) => return Ok(Some(f)),
                        AccessOutcome::GuestFault { .. } => *guest_faults += 1,
                        _ => {}
                    }
                    i += 1;
                    tries = 0;
                }
                Ok(None)
            })?;
            let Some(fault) = stop else { break };
            // The guard counts retries of this one access only: an access that exits to the VMM
            // (read-only slot, no memslot, host-unmapped, write-tracked) completes and resets it.
            tries += 1;
            if tries > 64 {
                return Err(SimError::Livelock { gpa: fault.gpa, tries });
            }
            let handled = self.mmu.handle_fault(Gpa(fault.gpa), fault.access);
            self.host.sync(&self.mmu, false);
            match handled {
                Ok(FaultOutcome::Mapped { .. }) | Ok(FaultOutcome::Retry) => {
                    if logging && fault.access == HwAccess::Write && !fault.on_guest_table {
                        self.note_write(fault.gpa);
                    }
                }
                Ok(FaultOutcome::WriteTracked) => {
                    self.counters.write_tracked_exits += 1;
                    i += 1;
                    tries = 0;
                }
                Err(FaultError::NoMemslot { .. }) => {
                    self.counters.mmio_exits += 1;
                    i += 1;
                    tries = 0;
                }
                Err(FaultError::ReadOnly { .. }) => {
                    self.counters.readonly_exits += 1;
                    i += 1;
                    tries = 0;
                }
                Err(FaultError::Host(HostError::OutOfMemory { kind, .. })) => {
                    let slot = self.slot_of_gpa(fault.gpa).unwrap_or(u32::MAX);
                    let index = self.s.memslots.iter().position(|m| m.id == slot);
                    let pool = index.and_then(|i| self.s.memslots[i].backing.hugetlb_page());
                    if pool.is_some() && self.s.vm.on_sigbus == OnSigbus::Continue {
                        // The VMM handles the memory-fault exit and runs on: the access is lost.
                        self.counters.sigbus_exits += 1;
                        i += 1;
                        tries = 0;
                        continue;
                    }
                    let location = match index.and_then(|i| Some((i, self.s.memslot_locations.get(i)?))) {
                        Some((i, at)) => format!("{at}: memslot[{i}]"),
                        None => self.s.file.clone(),
                    };
                    return Err(SimError::HostOutOfMemory {
                        location,
                        slot,
                        gpa: fault.gpa,
                        kind: kind.name(),
                        hint: self.oom_hint(pool),
                    });
                }
                Err(FaultError::Host(_)) => {
                    // The VMM unmapped or protected the memory: the access is lost (SIGBUS).
                    self.counters.host_unmapped += 1;
                    i += 1;
                    tries = 0;
                }
                Err(source) => return Err(SimError::Fault { gpa: fault.gpa, source }),
            }
        }
        self.counters.guest_faults += guest_faults;
        if logging {
            // Writes that hit the TLB or walked without faulting are writes too.
            for a in batch.iter().filter(|a| a.kind == AccessKind::Write) {
                if let Some(t) = self.hw.guest().translate(a.gva) {
                    self.note_write(t.gpa);
                }
            }
        }
        Ok(())
    }

    /// What an out-of-memory fault means and what to change: for hugetlbfs, the pool's state.
    fn oom_hint(&self, pool: Option<slat_pt::PageSize>) -> String {
        let Some(ps) = pool else {
            return "the OOM killer would take the VMM; grow host.memory".into();
        };
        let key = if ps == slat_pt::PageSize::Size1G { "hugetlb_1g" } else { "hugetlb_2m" };
        let p = self.host.hugetlb_pool(ps);
        format!(
            "the hugetlb pool of {} pages is empty ({} pages, all in use): the fault is a SIGBUS to the VMM \
             (KVM_RUN fails with EFAULT); grow host.{key} (or shrink the pool less with hugetlb-resize), or set \
             vm.on_sigbus = \"continue\" to drop the access and go on",
            crate::scenario::page_size_name(ps),
            p.total
        )
    }

    /// Record a guest write for the I5 check, as a page offset into its memslot (so a slot
    /// moved between the write and the harvest still finds it).
    fn note_write(&mut self, gpa: u64) {
        let place = {
            let slots = self.slots.lock().unwrap();
            slots.iter().find(|(_, p)| p.present && gpa >= p.gpa && gpa < p.gpa + p.size).map(|(id, p)| (*id, p.gpa))
        };
        if let Some((id, base)) = place {
            if let Some(set) = self.written.get_mut(&id) {
                set.insert((gpa - base) >> 12);
            }
        }
    }

    pub(crate) fn slot_of_gpa(&self, gpa: u64) -> Option<u32> {
        let slots = self.slots.lock().unwrap();
        slots.iter().find(|(_, p)| p.present && gpa >= p.gpa && gpa < p.gpa + p.size).map(|(id, _)| *id)
    }

    /// Audit the MMU and the host; a failure is counted and recorded, the run goes on.
    pub(crate) fn audit(&mut self, at: &str) {
        self.host.sync(&self.mmu, true);
        self.counters.audits += 1;
        let mut fail = None;
        if let Err(e) = self.mmu.audit() {
            fail = Some(format!("{at}: MMU audit: {e}"));
        }
        if let Err(e) = self.host.audit() {
            fail = Some(format!("{at}: host audit: {e}"));
        }
        if let Some(f) = fail {
            self.counters.audit_failures += 1;
            self.report.events.push(EventMark { access: self.done, kind: "audit-failed".into(), detail: f.clone() });
            self.audit_detail.get_or_insert(f);
        }
    }

    fn sample(&mut self) {
        let s = self.mmu.stats();
        let hw = self.hw.stats();
        let da = hw.accesses.saturating_sub(self.last_hw.accesses);
        let per = |now: u64, then: u64| if da == 0 { 0.0 } else { (now - then) as f64 / da as f64 };
        let sample = Sample {
            access: self.done,
            leaves: metrics::leaves(&s),
            faults: s.faults,
            retries: s.retries,
            splits: s.splits + s.eager_splits,
            recoveries: s.recoveries,
            flushes: s.remote_tlb_flush,
            tlb_misses_per_1k: per(hw.misses, self.last_hw.misses) * 1000.0,
            walk_refs_per_access: per(hw.walk_refs, self.last_hw.walk_refs),
            table_pages: s.table_pages,
        };
        let mut sample = sample;
        self.peak_4k = self.peak_4k.max(s.pages_4k);
        if self.report.samples.last().is_some_and(|l| l.access == sample.access) {
            // A second sample at the same point (the end of the run) covers an empty interval:
            // it updates the counts but keeps the rates measured over the real one.
            let last = self.report.samples.pop().unwrap();
            if da == 0 {
                sample.tlb_misses_per_1k = last.tlb_misses_per_1k;
                sample.walk_refs_per_access = last.walk_refs_per_access;
            }
        }
        self.report.samples.push(sample);
        self.last_hw = hw;
        self.last_sample_access = self.done;
    }

    fn phase_start_state(&mut self) -> (slat_mmu::Stats, HwStats) {
        self.peak_4k = self.mmu.stats().pages_4k;
        (self.mmu.stats(), self.hw.stats())
    }

    fn close_phase(&mut self, index: usize, start: &(slat_mmu::Stats, HwStats), accesses: u64) {
        let s = self.mmu.stats();
        let hw = self.hw.stats();
        self.peak_4k = self.peak_4k.max(s.pages_4k);
        let da = hw.accesses.saturating_sub(start.1.accesses);
        let per = |now: u64, then: u64| if da == 0 { 0.0 } else { (now - then) as f64 / da as f64 };
        let p = &self.s.phases[index];
        self.report.phases.push(PhaseSummary {
            name: p.name.clone(),
            accesses,
            leaves_before: metrics::leaves(&start.0),
            leaves_after: metrics::leaves(&s),
            peak_4k: self.peak_4k,
            faults: s.faults - start.0.faults,
            tlb_misses_per_1k: per(hw.misses, start.1.misses) * 1000.0,
            walk_refs_per_access: per(hw.walk_refs, start.1.walk_refs),
            why_not_huge: slat_mmu::WhyNotHuge::ALL
                .iter()
                .map(|r| (r.name().to_string(), s.why(*r).saturating_sub(start.0.why(*r))))
                .filter(|(_, n)| *n > 0)
                .collect(),
        });
        let snap = self.snapshot();
        self.phase_metrics.push(snap);
    }

    fn finish(mut self) -> Result<RunReport, SimError> {
        self.audit("end of run");
        self.sample();
        let stats = self.mmu.stats();
        let hw = self.hw.stats();
        let why = self.mmu.why_not_huge();
        self.report.why_not_huge = metrics::why_rows(&why);
        self.report.totals = self.totals(&stats, &hw);
        self.report.expectations = self.check_expectations();
        self.report.schema = SCHEMA_VERSION;
        self.report.scenario = self.s.name.clone();
        self.report.description = self.s.description.clone();
        self.report.seed = self.s.seed;
        self.report.format = F::NAME.to_string();
        self.report.overrides = self.s.overrides.iter().map(|o| format!("{}={}", o.key, o.value)).collect();
        self.report.host = self.host_report();
        Ok(self.report)
    }
}

fn hw_kind(k: AccessKind) -> HwAccess {
    match k {
        AccessKind::Read => HwAccess::Read,
        AccessKind::Write => HwAccess::Write,
        AccessKind::Exec => HwAccess::Exec,
    }
}
