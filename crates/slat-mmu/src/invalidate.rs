//! Invalidation state: the sequence count and in-progress range that make a racing fault retry.
//!
//! Protocol (as in KVM's `mmu_invalidate_*`): a fault snapshots `seq` (acquire) *before* asking
//! the host for the page; under the MMU lock it retries if an invalidation is in progress over
//! any gfn of the candidate block, or if `seq` moved. `begin` runs before zapping; `end`
//! increments `seq` and *then* drops the in-progress count (release), so a fault that sees the
//! count drop also sees the new sequence.
//!
//! The count and the merged range change together under one small lock, because `end` (and
//! `begin` for a host range outside every memslot) runs without the MMU lock: a bare atomic
//! reset of the range there could wipe the range of an invalidation that began meanwhile. Faults
//! read an atomic mirror of the count and take the small lock only while an invalidation is in
//! flight.

use core::sync::atomic::{AtomicU64, Ordering};

use lock_api::RawRwLock;

use crate::lock::Mutex;

#[derive(Debug)]
struct Range {
    count: u64,
    start: u64,
    end: u64,
}

/// Sequence count and merged in-progress gfn range.
#[derive(Debug)]
pub(crate) struct Invalidation<R: RawRwLock> {
    seq: AtomicU64,
    in_progress: AtomicU64,
    range: Mutex<R, Range>,
}

impl<R: RawRwLock> Default for Invalidation<R> {
    fn default() -> Self {
        Invalidation {
            seq: AtomicU64::new(0),
            in_progress: AtomicU64::new(0),
            range: Mutex::new(Range { count: 0, start: u64::MAX, end: 0 }),
        }
    }
}

impl<R: RawRwLock> Invalidation<R> {
    /// Snapshot for a fault.
    #[inline]
    pub(crate) fn snapshot(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Start an invalidation of gfns `start..end` (an empty range, `start >= end`, for host
    /// ranges that hit no memslot: counted so begin/end stay balanced, never retried on).
    pub(crate) fn begin(&self, start: u64, end: u64) {
        let mut r = self.range.lock();
        if r.count == 0 {
            (r.start, r.end) = (u64::MAX, 0);
        }
        r.count += 1;
        if start < end {
            r.start = r.start.min(start);
            r.end = r.end.max(end);
        }
        self.in_progress.store(r.count, Ordering::Release);
    }

    /// Widen the in-progress range (an invalidation that hits several slots).
    pub(crate) fn add_range(&self, start: u64, end: u64) {
        let mut r = self.range.lock();
        debug_assert!(r.count > 0, "add_range outside begin/end");
        r.start = r.start.min(start);
        r.end = r.end.max(end);
    }

    /// Cover gfns `start..end` by every invalidation in progress, if any: a memslot published
    /// while the host is changing memory (KVM's `kvm_swap_active_memslots` waits for
    /// `mn_active_invalidate_count == 0` instead) must not let a fault install a page the host is
    /// replacing. Faults on the new gfns retry until the last invalidation in flight ends.
    /// Returns whether anything was in flight.
    pub(crate) fn cover(&self, start: u64, end: u64) -> bool {
        let mut r = self.range.lock();
        if r.count == 0 {
            return false;
        }
        r.start = r.start.min(start);
        r.end = r.end.max(end);
        true
    }

    /// Finish an invalidation.
    pub(crate) fn end(&self) {
        self.seq.fetch_add(1, Ordering::Release);
        let mut r = self.range.lock();
        debug_assert!(r.count > 0, "invalidate end without begin");
        r.count -= 1;
        if r.count == 0 {
            (r.start, r.end) = (u64::MAX, 0);
        }
        self.in_progress.store(r.count, Ordering::Release);
    }

    /// Whether a fault that snapshotted `seq` and wants gfns `start..end` must retry.
    #[inline]
    pub(crate) fn must_retry(&self, seq: u64, start: u64, end: u64) -> bool {
        if self.in_progress.load(Ordering::Acquire) > 0 {
            let r = self.range.lock();
            if r.count > 0 && start < r.end && r.start < end {
                return true;
            }
        }
        self.seq.load(Ordering::Acquire) != seq
    }
}
