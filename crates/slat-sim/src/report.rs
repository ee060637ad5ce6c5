//! What a simulation run produces: a time series of metrics, event marks, per-phase summaries and
//! the final state. Plain serialisable data; the CLI renders it as a terminal summary, JSON and an
//! HTML report. Field names are part of the JSON schema: add fields, never rename them.

use serde::{Deserialize, Serialize};

/// Schema version of [`RunReport`] JSON.
pub const SCHEMA_VERSION: u32 = 1;

/// Leaves by size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LeafCounts {
    /// 4 KiB leaves.
    pub pages_4k: u64,
    /// 2 MiB leaves.
    pub pages_2m: u64,
    /// 1 GiB leaves.
    pub pages_1g: u64,
}

impl LeafCounts {
    /// Guest memory mapped, in bytes.
    pub fn mapped_bytes(&self) -> u64 {
        (self.pages_4k << 12) + (self.pages_2m << 21) + (self.pages_1g << 30)
    }
}

/// One point of the time series (cumulative counters, instantaneous gauges).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Guest accesses executed so far.
    pub access: u64,
    /// Leaves by size now.
    pub leaves: LeafCounts,
    /// Stage-2 faults so far.
    pub faults: u64,
    /// Fault retries so far.
    pub retries: u64,
    /// Huge leaves split so far (on fault and eagerly).
    pub splits: u64,
    /// Huge blocks recovered so far.
    pub recoveries: u64,
    /// TLB flush operations so far.
    pub flushes: u64,
    /// TLB misses per 1000 accesses over the last interval.
    pub tlb_misses_per_1k: f64,
    /// Memory references per access spent in page walks over the last interval.
    pub walk_refs_per_access: f64,
    /// Page-table pages now.
    pub table_pages: u64,
}

/// An event on the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMark {
    /// Access count at which it happened.
    pub access: u64,
    /// Event kind as written in the scenario (e.g. `dirty-log-on`).
    pub kind: String,
    /// Human detail (slot, range, outcome).
    pub detail: String,
}

/// Summary of one workload phase.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PhaseSummary {
    /// Phase name.
    pub name: String,
    /// Accesses executed.
    pub accesses: u64,
    /// Leaves when the phase began.
    pub leaves_before: LeafCounts,
    /// Leaves when it ended.
    pub leaves_after: LeafCounts,
    /// Largest number of 4K leaves seen during the phase (e.g. while dirty logging).
    pub peak_4k: u64,
    /// Faults during the phase.
    pub faults: u64,
    /// TLB misses per 1000 accesses during the phase.
    pub tlb_misses_per_1k: f64,
    /// Walk references per access during the phase.
    pub walk_refs_per_access: f64,
    /// Leaf-size decisions made smaller than 1 GiB during the phase, by reason (`dirty-logging`,
    /// `host-leaf-2m`, ...): the why-not-huge story over time. Reasons with none are left out.
    #[serde(default)]
    pub why_not_huge: Vec<(String, u64)>,
}

/// One row of the why-not-huge table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhyRow {
    /// Reason name (stable, e.g. `misaligned`).
    pub reason: String,
    /// Human description.
    pub description: String,
    /// 4 KiB guest pages mapped below 1 GiB because of it.
    pub pages: u64,
    /// Share of all mapped pages.
    pub share: f64,
}

/// Result of one checked expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectationResult {
    /// What was expected, as written (`pages_2m >= 10`).
    pub expectation: String,
    /// The actual value.
    pub actual: String,
    /// Whether it held.
    pub ok: bool,
}

/// Final counters.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Totals {
    /// Guest accesses executed.
    pub accesses: u64,
    /// Every MMU statistic by its name (KVM names: `pages_4k`, `remote_tlb_flush`, ...).
    pub mmu: Vec<(String, u64)>,
    /// Hardware-model counters by name (`tlb_hits`, `tlb_misses`, `walk_refs`, ...).
    pub hw: Vec<(String, u64)>,
    /// Host counters by name (`thp_alloc`, `thp_fallback`, ...).
    pub host: Vec<(String, u64)>,
    /// TLB misses per 1000 accesses over the run.
    pub tlb_misses_per_1k: f64,
    /// Walk references per access over the run.
    pub walk_refs_per_access: f64,
    /// Page-table memory in bytes.
    pub table_bytes: u64,
    /// MMU bookkeeping in bytes.
    pub bookkeeping_bytes: u64,
    /// Stale-TLB or I1 violations the hardware model caught (must be 0).
    pub isolation_violations: u64,
    /// Audits run (one per event and at the end), all of which passed.
    pub audits: u64,
}

/// Everything about one run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RunReport {
    /// JSON schema version ([`SCHEMA_VERSION`]).
    pub schema: u32,
    /// Scenario name.
    pub scenario: String,
    /// One-line description.
    pub description: String,
    /// Seed used.
    pub seed: u64,
    /// Stage-2 format.
    pub format: String,
    /// Overrides applied (`key=value`).
    pub overrides: Vec<String>,
    /// Time series.
    pub samples: Vec<Sample>,
    /// Events in order.
    pub events: Vec<EventMark>,
    /// Per-phase summaries.
    pub phases: Vec<PhaseSummary>,
    /// Why-not-huge table at the end, largest first.
    pub why_not_huge: Vec<WhyRow>,
    /// Final counters.
    pub totals: Totals,
    /// Expectations checked at the end.
    pub expectations: Vec<ExpectationResult>,
    /// The real host's own view of the run's memory; absent for the simulated host (whose
    /// counters are in [`Totals::host`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostReport>,
}

/// What a real host says about the memory a run used, read from the kernel at the end of the
/// run (`host.kind = "linux"`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostReport {
    /// Which host (`linux`).
    pub kind: String,
    /// Facts about the host as `(name, value)`: kernel, THP mode, where the sizes come from,
    /// pools reserved for the run.
    pub facts: Vec<(String, String)>,
    /// Each memslot's host memory.
    pub memslots: Vec<HostSlotReport>,
    /// What the reader should know when comparing with the simulated host.
    pub notes: Vec<String>,
}

/// One memslot's host memory at the end of a real-host run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostSlotReport {
    /// Memslot id.
    pub slot: u32,
    /// How the memory was made, in the host's words (`anonymous + MADV_HUGEPAGE`).
    pub backing: String,
    /// Host virtual address of the slot's first byte.
    pub hva: u64,
    /// Bytes.
    pub len: u64,
    /// Present bytes the host maps with 4 KiB PTEs (`PAGEMAP_SCAN`).
    pub bytes_4k: u64,
    /// Present bytes the host maps with 2 MiB leaves (`PAGEMAP_SCAN` `PAGE_IS_HUGE`).
    pub bytes_2m: u64,
    /// Present bytes the host maps with 1 GiB leaves.
    pub bytes_1g: u64,
    /// Of the present bytes, those on the (huge) zero page.
    pub bytes_zero: u64,
    /// Bytes not present.
    pub bytes_absent: u64,
    /// PMD-mapped THP bytes smaps reports for the VMAs of the slot (`AnonHugePages` +
    /// `ShmemPmdMapped` + `FilePmdMapped`; whole VMAs, so it may cover a little more than the slot).
    pub smaps_pmd_bytes: u64,
    /// hugetlb bytes smaps reports for those VMAs (`Shared_Hugetlb` + `Private_Hugetlb`).
    pub smaps_hugetlb_bytes: u64,
    /// Stage-2 leaves the MMU holds in the slot: `[4K, 2M, 1G]`.
    pub stage2: [u64; 3],
}

impl RunReport {
    /// Whether every expectation held and no isolation violation was seen.
    pub fn passed(&self) -> bool {
        self.expectations.iter().all(|e| e.ok) && self.totals.isolation_violations == 0
    }

    /// Final leaf counts (from the last sample).
    pub fn final_leaves(&self) -> LeafCounts {
        self.samples.last().map(|s| s.leaves).unwrap_or_default()
    }

    /// A final MMU statistic by name.
    pub fn mmu_stat(&self, name: &str) -> Option<u64> {
        self.totals.mmu.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}
