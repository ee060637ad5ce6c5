//! Counters: KVM's names where KVM has them, slat's own beside them.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::reason::WhyNotHuge;

/// Stripes of the fault-path counters.
pub(crate) const STRIPES: usize = 8;

/// Counters the fault path updates, one stripe per cache line, chosen by the fault's 2 MiB
/// block, so vCPUs faulting on different memory do not bounce one line between them.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct Hot {
    pub faults: AtomicU64,
    pub retries: AtomicU64,
    pub spurious: AtomicU64,
    pub splits: AtomicU64,
    pub huge_on_fault: AtomicU64,
    pub why: [AtomicU64; WhyNotHuge::COUNT],
}

/// Live counters (atomics, updated by every operation).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub hot: [Hot; STRIPES],
    pub mmio: AtomicU64,
    pub eager_splits: AtomicU64,
    pub recoveries: AtomicU64,
    pub zapped_leaves: AtomicU64,
    pub invalidations: AtomicU64,
    pub remote_tlb_flush: AtomicU64,
    pub remote_tlb_flush_requests: AtomicU64,
    pub remote_tlb_flush_ranges: AtomicU64,
    pub write_protected: AtomicU64,
    pub dirty_pages_harvested: AtomicU64,
    pub nx_recovered: AtomicU64,
    pub dirty_ring_full: AtomicU64,
}

impl Counters {
    /// The stripe for a fault at `gfn`.
    #[inline]
    pub(crate) fn hot(&self, gfn: u64) -> &Hot {
        // Multiplicative hash of the 2 MiB block (see slat-pt's counter stripes).
        &self.hot[((gfn >> 9).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 61) as usize % STRIPES]
    }

    /// Sum of one hot counter over all stripes.
    pub(crate) fn sum(&self, f: impl Fn(&Hot) -> &AtomicU64) -> u64 {
        self.hot.iter().map(|h| f(h).load(Ordering::Relaxed)).sum()
    }

    #[inline]
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    #[inline]
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        if n != 0 {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// A snapshot of every statistic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// 4 KiB leaves present (KVM `pages_4k`).
    pub pages_4k: u64,
    /// 2 MiB leaves present (KVM `pages_2m`).
    pub pages_2m: u64,
    /// 1 GiB leaves present (KVM `pages_1g`).
    pub pages_1g: u64,
    /// Flushes performed (KVM `remote_tlb_flush`): one per request that flushed anything, so
    /// never more than `remote_tlb_flush_requests`.
    pub remote_tlb_flush: u64,
    /// Operations that asked for a flush (KVM `remote_tlb_flush_requests`).
    pub remote_tlb_flush_requests: u64,
    /// Calls made to the [`Tlb`](crate::Tlb) by those flushes: one per range invalidation, one
    /// per full flush (slat's own figure; KVM flushes the whole VM instead of ranges).
    pub remote_tlb_flush_ranges: u64,
    /// Huge blocks currently split by the NX workaround (KVM `nx_lpage_splits`).
    pub nx_lpage_splits: u64,
    /// Stage-2 faults handled.
    pub faults: u64,
    /// Faults that retried (raced an invalidation, or met a frozen entry).
    pub retries: u64,
    /// Faults that found the translation already there.
    pub spurious: u64,
    /// Faults outside every memslot (MMIO exits).
    pub mmio: u64,
    /// Huge leaves split on faults (split-on-fault, NX, write tracking).
    pub splits: u64,
    /// Huge leaves split eagerly when dirty logging started or a log was cleared.
    pub eager_splits: u64,
    /// Faults that replaced a table by a huge leaf.
    pub huge_on_fault: u64,
    /// Huge blocks recovered after dirty logging (rebuilt in place, or zapped for refault).
    pub recoveries: u64,
    /// Leaves removed by invalidations and zaps.
    pub zapped_leaves: u64,
    /// Invalidations (host notifier and MMU-initiated) that hit a memslot.
    pub invalidations: u64,
    /// Leaves write-protected for dirty logging.
    pub write_protected: u64,
    /// Dirty pages reported by harvests.
    pub dirty_pages_harvested: u64,
    /// NX-split blocks zapped for recovery.
    pub nx_recovered: u64,
    /// Times a vCPU's dirty ring reached its soft limit: each is a `KVM_EXIT_DIRTY_RING_FULL`
    /// the hypervisor owes before re-entering that vCPU.
    pub dirty_ring_full: u64,
    /// Page-table pages in the tree.
    pub table_pages: u64,
    /// Fault decisions below 1 GiB, by primary reason (index = `WhyNotHuge as usize`).
    pub why_not_huge: [u64; WhyNotHuge::COUNT],
}

impl Stats {
    /// Faults whose decision was capped below 1 GiB with `r` as the primary reason.
    pub fn why(&self, r: WhyNotHuge) -> u64 {
        self.why_not_huge[r as usize]
    }

    /// `(name, value)` pairs for every scalar statistic, in a stable order.
    pub fn named(&self) -> [(&'static str, u64); 22] {
        [
            ("pages_4k", self.pages_4k),
            ("pages_2m", self.pages_2m),
            ("pages_1g", self.pages_1g),
            ("remote_tlb_flush", self.remote_tlb_flush),
            ("remote_tlb_flush_requests", self.remote_tlb_flush_requests),
            ("remote_tlb_flush_ranges", self.remote_tlb_flush_ranges),
            ("nx_lpage_splits", self.nx_lpage_splits),
            ("faults", self.faults),
            ("retries", self.retries),
            ("spurious", self.spurious),
            ("mmio", self.mmio),
            ("splits", self.splits),
            ("eager_splits", self.eager_splits),
            ("huge_on_fault", self.huge_on_fault),
            ("recoveries", self.recoveries),
            ("zapped_leaves", self.zapped_leaves),
            ("invalidations", self.invalidations),
            ("write_protected", self.write_protected),
            ("dirty_pages_harvested", self.dirty_pages_harvested),
            ("nx_recovered", self.nx_recovered),
            ("dirty_ring_full", self.dirty_ring_full),
            ("table_pages", self.table_pages),
        ]
    }
}
