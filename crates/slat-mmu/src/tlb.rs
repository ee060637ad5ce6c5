//! The CPU side of the MMU: TLB invalidation and cache maintenance through [`Tlb`].

use slat_pt::{FlushBatch, FlushRange};

/// Cache maintenance a CPU needs before a stage-2 leaf is installed.
///
/// arm64 without FEAT_S2FWB must clean the data cache to the point of coherency for memory
/// the guest may access with its caches off, and without FEAT_DIC must invalidate the
/// instruction cache before the guest executes newly mapped memory (KVM's
/// `clean_dcache_guest_page` / `invalidate_icache_guest_page`, for the whole block of a huge
/// leaf). x86 and RISC-V need neither: [`CacheMaintenance::NOT_NEEDED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheMaintenance {
    /// Clean the data cache to PoC for every cacheable leaf installed (arm64 without FWB).
    pub clean_dcache: bool,
    /// Invalidate the instruction cache for every executable leaf installed (arm64 without DIC).
    pub invalidate_icache: bool,
}

impl CacheMaintenance {
    /// Coherent caches: x86, RISC-V, arm64 with FEAT_S2FWB and FEAT_DIC.
    pub const NOT_NEEDED: CacheMaintenance = CacheMaintenance { clean_dcache: false, invalidate_icache: false };
    /// arm64 without FEAT_S2FWB and without FEAT_DIC.
    pub const ARM64_NO_FWB_NO_DIC: CacheMaintenance = CacheMaintenance { clean_dcache: true, invalidate_icache: true };
}

/// Invalidates cached stage-2 translations on every CPU running the guest, and performs the
/// cache maintenance the CPU needs before a new leaf is installed.
pub trait Tlb {
    /// Invalidate translations of `range.gpa .. range.gpa + range.len`, which were mapped with
    /// leaves of at least `range.size`.
    fn flush_range(&self, range: &FlushRange);
    /// Invalidate every stage-2 translation of this guest.
    fn flush_all(&self);
    /// What this CPU needs before leaves are installed; asked once per fault. Return
    /// [`CacheMaintenance::NOT_NEEDED`] on x86, RISC-V and arm64 with FEAT_S2FWB + FEAT_DIC.
    fn cache_maintenance(&self) -> CacheMaintenance;
    /// Clean the data cache to the point of coherency for host-physical `pa .. pa + len` (the
    /// whole block of the leaf about to be installed). Called only when
    /// [`cache_maintenance`](Self::cache_maintenance) asks for it, for cacheable memory.
    fn clean_dcache(&self, pa: u64, len: u64);
    /// Invalidate the instruction cache for host-physical `pa .. pa + len` before an executable
    /// leaf is installed. Called only when [`cache_maintenance`](Self::cache_maintenance) asks
    /// for it.
    fn invalidate_icache(&self, pa: u64, len: u64);
}

/// Apply a batch to a TLB: nothing when the batch is empty, one full flush when it says so,
/// otherwise one call per range. Returns whether anything was flushed.
pub fn apply<T: Tlb + ?Sized>(tlb: &T, batch: &FlushBatch) -> bool {
    if batch.is_all() {
        tlb.flush_all();
        true
    } else {
        for r in batch.ranges() {
            tlb.flush_range(r);
        }
        !batch.ranges().is_empty()
    }
}

impl<T: Tlb + ?Sized> Tlb for &T {
    fn flush_range(&self, range: &FlushRange) {
        (**self).flush_range(range)
    }
    fn flush_all(&self) {
        (**self).flush_all()
    }
    fn cache_maintenance(&self) -> CacheMaintenance {
        (**self).cache_maintenance()
    }
    fn clean_dcache(&self, pa: u64, len: u64) {
        (**self).clean_dcache(pa, len)
    }
    fn invalidate_icache(&self, pa: u64, len: u64) {
        (**self).invalidate_icache(pa, len)
    }
}

impl<T: Tlb + ?Sized> Tlb for alloc::sync::Arc<T> {
    fn flush_range(&self, range: &FlushRange) {
        (**self).flush_range(range)
    }
    fn flush_all(&self) {
        (**self).flush_all()
    }
    fn cache_maintenance(&self) -> CacheMaintenance {
        (**self).cache_maintenance()
    }
    fn clean_dcache(&self, pa: u64, len: u64) {
        (**self).clean_dcache(pa, len)
    }
    fn invalidate_icache(&self, pa: u64, len: u64) {
        (**self).invalidate_icache(pa, len)
    }
}
