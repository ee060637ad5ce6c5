//! The MMU's two pairing rules as types.
//!
//! * [`Exclusive`]: the page table locked for writing together with the [`FlushBatch`] of
//!   everything the section changed. Dropping it flushes the batch and then frees every page-table
//!   page the section (and faults before it) detached, so no early return can skip the flush or
//!   leak a frame. [`Exclusive::yield_now`] flushes first, then lets waiting faults in (KVM's
//!   `tdp_mmu_iter_cond_resched`: flush before yielding).
//! * [`InvalidateGuard`]: one invalidation in progress over a gfn range; dropping it ends the
//!   invalidation (sequence up, count down), so faults that raced it retry.
//!
//! Declare an `InvalidateGuard` *before* the `Exclusive` it covers: locals drop in reverse
//! order, so the flush happens before the invalidation ends, as the protocol requires.

use crate::platform::Platform;
use core::ops::{Deref, DerefMut};

use lock_api::{RawRwLock, RwLockWriteGuard};
use slat_pt::{FlushBatch, Format, PageTable};

use crate::invalidate::Invalidation;
use crate::mmu::Mmu;

/// An exclusive section over the page table: write lock + flush batch, settled in `Drop`.
pub(crate) struct Exclusive<'a, F: Format, P: Platform> {
    mmu: &'a Mmu<F, P>,
    pt: RwLockWriteGuard<'a, P::Lock, PageTable<F, P::Frames>>,
    /// TLB obligations and detached pages of the section so far.
    pub(crate) batch: FlushBatch,
    /// Leaf updates since the lock was last released.
    work: u64,
}

impl<'a, F: Format, P: Platform> Exclusive<'a, F, P> {
    pub(crate) fn new(mmu: &'a Mmu<F, P>) -> Self {
        Exclusive { mmu, pt: mmu.tables.write(), batch: FlushBatch::new(), work: 0 }
    }

    /// The table and the batch at once (most operations need both).
    pub(crate) fn parts(&mut self) -> (&mut PageTable<F, P::Frames>, &mut FlushBatch) {
        (&mut self.pt, &mut self.batch)
    }

    /// Flush what the section changed so far and free what it detached, keeping the lock.
    pub(crate) fn settle(&mut self) {
        let batch = core::mem::take(&mut self.batch);
        self.mmu.finish(&self.pt, batch);
    }

    /// End one bounded chunk of a long operation: flush and free first (nothing the TLB may
    /// cache from this section survives the unlock), then release the lock so waiting faults
    /// run, then take it again. The caller resumes from a position it recorded (forward
    /// progress: every chunk completes at least one unit of work before yielding).
    pub(crate) fn yield_now(&mut self) {
        self.settle();
        self.work = 0;
        RwLockWriteGuard::unlocked(&mut self.pt, relax);
    }

    /// Count `units` of work (leaves changed or removed, at least one per walked chunk) and
    /// [`yield_now`](Self::yield_now) once [`YIELD_WORK`] have been done under this hold: the
    /// bound on an exclusive hold is work, not address space, so a slot of 2 MiB leaves is
    /// protected in a few holds and a slot of 4 KiB leaves in many.
    pub(crate) fn account(&mut self, units: u64) {
        self.work += units.max(1);
        if self.work >= YIELD_WORK {
            self.yield_now();
        }
    }
}

/// Leaf updates an exclusive hold may do before it flushes and yields (a few hundred
/// microseconds of work).
pub(crate) const YIELD_WORK: u64 = 1 << 16;

/// Give other threads a chance to take the lock between two exclusive chunks.
fn relax() {
    #[cfg(feature = "std")]
    std::thread::yield_now();
    #[cfg(not(feature = "std"))]
    for _ in 0..64 {
        core::hint::spin_loop();
    }
}

impl<F: Format, P: Platform> Deref for Exclusive<'_, F, P> {
    type Target = PageTable<F, P::Frames>;
    fn deref(&self) -> &PageTable<F, P::Frames> {
        &self.pt
    }
}

impl<F: Format, P: Platform> DerefMut for Exclusive<'_, F, P> {
    fn deref_mut(&mut self) -> &mut PageTable<F, P::Frames> {
        &mut self.pt
    }
}

impl<F: Format, P: Platform> Drop for Exclusive<'_, F, P> {
    fn drop(&mut self) {
        self.settle();
    }
}

/// One MMU-initiated invalidation in progress; ends when dropped.
#[must_use = "the invalidation ends when the guard is dropped"]
pub(crate) struct InvalidateGuard<'a, R: RawRwLock> {
    inval: &'a Invalidation<R>,
}

impl<'a, R: RawRwLock> InvalidateGuard<'a, R> {
    /// Begin an invalidation of gfns `start..end`.
    pub(crate) fn begin(inval: &'a Invalidation<R>, start: u64, end: u64) -> Self {
        inval.begin(start, end);
        InvalidateGuard { inval }
    }
}

impl<R: RawRwLock> Drop for InvalidateGuard<'_, R> {
    fn drop(&mut self) {
        self.inval.end();
    }
}
