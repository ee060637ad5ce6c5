//! Invalidation state: the sequence count and in-progress range that make a racing fault retry.
//!
//! Protocol (as in KVM's `mmu_invalidate_*`): a fault snapshots `seq` (acquire) *before* asking
//! the host for the page; under the MMU lock it retries if an invalidation is in progress over
//! any gfn of the candidate block, or if `seq` moved. `begin` runs under the exclusive lock
//! before zapping; `end` increments `seq` and *then* drops the in-progress count (release), so a
//! fault that sees the count drop also sees the new sequence.

use core::sync::atomic::{AtomicU64, Ordering};

/// Sequence count and merged in-progress gfn range.
#[derive(Debug, Default)]
pub(crate) struct Invalidation {
    seq: AtomicU64,
    in_progress: AtomicU64,
    start: AtomicU64,
    end: AtomicU64,
}

impl Invalidation {
    /// Snapshot for a fault.
    #[inline]
    pub(crate) fn snapshot(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Start an invalidation of gfns `start..end` (call with the MMU lock held exclusively).
    pub(crate) fn begin(&self, start: u64, end: u64) {
        if self.in_progress.fetch_add(1, Ordering::AcqRel) == 0 {
            self.start.store(start, Ordering::Release);
            self.end.store(end, Ordering::Release);
        } else {
            self.start.fetch_min(start, Ordering::AcqRel);
            self.end.fetch_max(end, Ordering::AcqRel);
        }
    }

    /// Widen the in-progress range (an invalidation that hits several slots).
    pub(crate) fn add_range(&self, start: u64, end: u64) {
        self.start.fetch_min(start, Ordering::AcqRel);
        self.end.fetch_max(end, Ordering::AcqRel);
    }

    /// Finish an invalidation.
    pub(crate) fn end(&self) {
        self.seq.fetch_add(1, Ordering::Release);
        let prev = self.in_progress.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(prev > 0, "invalidate end without begin");
        if prev == 1 {
            self.start.store(u64::MAX, Ordering::Release);
            self.end.store(0, Ordering::Release);
        }
    }

    /// Whether a fault that snapshotted `seq` and wants gfns `start..end` must retry.
    #[inline]
    pub(crate) fn must_retry(&self, seq: u64, start: u64, end: u64) -> bool {
        if self.in_progress.load(Ordering::Acquire) > 0 {
            let (s, e) = (self.start.load(Ordering::Acquire), self.end.load(Ordering::Acquire));
            if start < e && s < end {
                return true;
            }
        }
        self.seq.load(Ordering::Acquire) != seq
    }
}
