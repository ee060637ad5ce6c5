//! The host-to-MMU direction: [`MmuNotifier`], called by the host memory manager around every
//! change of a host mapping (the Linux `mmu_notifier` contract).

use slat_pt::Hva;

/// Callbacks a host memory manager makes into the MMU. Ranges are host virtual addresses,
/// `start..end`, page aligned.
///
/// Contract: `invalidate_range_start` before the host changes or removes any mapping in the
/// range (split, collapse, migrate, unmap, mprotect, KSM merge); `invalidate_range_end` with the
/// same range after the change is complete. When `invalidate_range_start` returns, no stage-2
/// leaf and no TLB entry translates into the range, and until `invalidate_range_end` no fault
/// can install one.
pub trait MmuNotifier {
    /// The host is about to change mappings in `start..end`.
    fn invalidate_range_start(&self, start: Hva, end: Hva);
    /// The change of `start..end` is complete.
    fn invalidate_range_end(&self, start: Hva, end: Hva);
    /// Clear the accessed state of stage-2 leaves mapping the range; returns whether any was
    /// young (host reclaim aging).
    fn clear_young(&self, start: Hva, end: Hva) -> bool;
    /// Whether any stage-2 leaf mapping the range is young, without clearing.
    fn test_young(&self, start: Hva, end: Hva) -> bool;
}
