//! The CPU side of the MMU: TLB invalidation through [`Tlb`].

use slat_pt::{FlushBatch, FlushRange};

/// Invalidates cached stage-2 translations on every CPU running the guest.
pub trait Tlb {
    /// Invalidate translations of `range.gpa .. range.gpa + range.len`, which were mapped with
    /// leaves of at least `range.size`.
    fn flush_range(&self, range: &FlushRange);
    /// Invalidate every stage-2 translation of this guest.
    fn flush_all(&self);
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
}

impl<T: Tlb + ?Sized> Tlb for alloc::sync::Arc<T> {
    fn flush_range(&self, range: &FlushRange) {
        (**self).flush_range(range)
    }
    fn flush_all(&self) {
        (**self).flush_all()
    }
}
