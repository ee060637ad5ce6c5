//! Hardware counters and derived metrics.

use serde::Serialize;

/// A snapshot of the hardware counters, summed over vCPUs.
///
/// Every access is exactly one of: a first-level hit, an STLB hit or a miss
/// (`accesses == l1_hits + stlb_hits + misses`). A cached translation that does not permit the
/// access (a write through a read-only or clean entry) counts as a miss: the hardware walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct HwStats {
    /// Guest accesses.
    pub accesses: u64,
    /// Hits in a first-level array.
    pub l1_hits: u64,
    /// Hits in the second-level TLB.
    pub stlb_hits: u64,
    /// TLB misses (each starts a walk).
    pub misses: u64,
    /// 2D walks started (equals `misses`).
    pub walks: u64,
    /// Memory references made by walks, faulting ones included.
    pub walk_refs: u64,
    /// Walks that ended in a stage-2 fault.
    pub stage2_faults: u64,
    /// Walks that ended in a guest page fault (gva not mapped by the guest).
    pub guest_faults: u64,
    /// Walks started below the root thanks to a paging-structure cache hit.
    pub psc_hits: u64,
    /// Guest table reads translated by the nested TLB.
    pub nested_tlb_hits: u64,
    /// Range flushes requested by the MMU.
    pub range_flushes: u64,
    /// Full flushes requested by the MMU.
    pub full_flushes: u64,
    /// Data-cache cleans to PoC the MMU asked for (arm64 without FEAT_S2FWB).
    pub dcache_cleans: u64,
    /// Instruction-cache invalidations the MMU asked for (arm64 without FEAT_DIC).
    pub icache_invalidations: u64,
    /// TLB entries removed by flushes (all vCPUs).
    pub entries_invalidated: u64,
    /// Walk-cache entries removed by flushes (all vCPUs).
    pub walk_cache_invalidated: u64,
    /// Isolation violations found (checked mode and the external checker).
    pub isolation_violations: u64,
    /// Dirty-tracking hazards found (checked mode).
    pub dirty_violations: u64,
}

impl HwStats {
    /// Accesses served by a TLB.
    pub fn hits(&self) -> u64 {
        self.l1_hits + self.stlb_hits
    }

    /// TLB misses per 1000 accesses (MPKA); 0 with no accesses.
    pub fn misses_per_kilo_access(&self) -> f64 {
        ratio(self.misses * 1000, self.accesses)
    }

    /// Walk memory references per access; 0 with no accesses.
    pub fn refs_per_access(&self) -> f64 {
        ratio(self.walk_refs, self.accesses)
    }

    /// Walk memory references per walk; 0 with no walks.
    pub fn refs_per_walk(&self) -> f64 {
        ratio(self.walk_refs, self.walks)
    }

    /// Fraction of accesses served by a TLB; 0 with no accesses.
    pub fn hit_rate(&self) -> f64 {
        ratio(self.hits(), self.accesses)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}
