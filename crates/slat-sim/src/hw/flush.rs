//! The MMU's view of the TLBs: [`SimTlb`], a shared handle implementing [`slat_mmu::Tlb`].
//!
//! The MMU owns its `Tlb` value while the hardware owns the TLB arrays, so the handle does not
//! touch the arrays: it records each invalidation in a log shared with the
//! [`Hardware`](super::Hardware), and raises a flag. The hardware checks the flag (one atomic
//! load) before every access and every inspection, and applies everything logged to the TLBs
//! and walk caches of every vCPU first (a "remote" flush reaches all vCPUs). In a
//! single-threaded simulation this is indistinguishable from an immediate flush: no access and
//! no inspection can observe the TLB between the MMU's call and its application. It keeps the
//! TLB-hit path free of locks and reference counting.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use slat_mmu::{CacheMaintenance, Tlb};
use slat_pt::FlushRange;

/// Invalidations logged by the MMU and not yet applied to the TLBs.
#[derive(Debug, Default)]
pub(crate) struct PendingFlushes {
    /// Flush everything.
    pub all: bool,
    /// gpa ranges `(start, end)` to flush.
    pub ranges: Vec<(u64, u64)>,
}

impl PendingFlushes {
    /// Sort and merge the ranges, so that [`overlaps`](Self::overlaps) can binary-search.
    pub(crate) fn normalise(&mut self) {
        self.ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(self.ranges.len());
        for &(s, e) in &self.ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.ranges = merged;
    }

    /// Whether `start..end` overlaps a (normalised) range.
    #[inline]
    pub(crate) fn overlaps(&self, start: u64, end: u64) -> bool {
        let i = self.ranges.partition_point(|&(_, e)| e <= start);
        self.ranges.get(i).is_some_and(|&(s, _)| s < end)
    }
}

/// State shared by the hardware and every [`SimTlb`] handle.
#[derive(Debug, Default)]
pub(crate) struct FlushLog {
    pending_flag: AtomicBool,
    pending: Mutex<PendingFlushes>,
    range_flushes: AtomicU64,
    full_flushes: AtomicU64,
    /// The modelled CPU's cache-maintenance needs, and the operations the MMU asked for.
    cache: Mutex<CacheMaintenance>,
    dcache_cleans: AtomicU64,
    icache_invalidations: AtomicU64,
}

impl FlushLog {
    fn log(&self, f: impl FnOnce(&mut PendingFlushes)) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut p);
        self.pending_flag.store(true, Ordering::Release);
    }

    /// Whether invalidations are waiting.
    #[inline]
    pub(crate) fn is_pending(&self) -> bool {
        self.pending_flag.load(Ordering::Acquire)
    }

    /// Take every waiting invalidation.
    pub(crate) fn take(&self) -> PendingFlushes {
        self.pending_flag.store(false, Ordering::Release);
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *p)
    }

    /// Model a CPU that needs `cache` maintenance before leaves are installed.
    pub(crate) fn set_cache_maintenance(&self, cache: CacheMaintenance) {
        *self.cache.lock().unwrap_or_else(|e| e.into_inner()) = cache;
    }

    /// `(data-cache cleans, instruction-cache invalidations)` requested so far.
    pub(crate) fn cache_ops(&self) -> (u64, u64) {
        (self.dcache_cleans.load(Ordering::Relaxed), self.icache_invalidations.load(Ordering::Relaxed))
    }

    /// `(range flushes, full flushes)` requested so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.range_flushes.load(Ordering::Relaxed), self.full_flushes.load(Ordering::Relaxed))
    }
}

/// A handle to the simulated TLBs of every vCPU, for the MMU.
///
/// Cheap to clone; `Send + Sync`. [`Tlb::flush_range`] invalidates, on every vCPU, each cached
/// translation whose *stage-2 leaf* overlaps the range (the hardware invalidates by gpa, and an
/// entry caching part of a huge stage-2 leaf goes when any part of the leaf is flushed), and
/// each walk-cache entry derived from such a leaf. [`Tlb::flush_all`] empties every TLB and walk
/// cache.
#[derive(Debug, Clone)]
pub struct SimTlb {
    log: Arc<FlushLog>,
}

impl SimTlb {
    pub(crate) fn new(log: Arc<FlushLog>) -> Self {
        SimTlb { log }
    }
}

impl Tlb for SimTlb {
    fn flush_range(&self, range: &FlushRange) {
        self.log.range_flushes.fetch_add(1, Ordering::Relaxed);
        let end = range.gpa.0.saturating_add(range.len);
        if range.len == 0 {
            return;
        }
        self.log.log(|p| {
            if !p.all {
                p.ranges.push((range.gpa.0, end));
            }
        });
    }

    fn flush_all(&self) {
        self.log.full_flushes.fetch_add(1, Ordering::Relaxed);
        self.log.log(|p| {
            p.all = true;
            p.ranges.clear();
        });
    }

    fn cache_maintenance(&self) -> CacheMaintenance {
        *self.log.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counted only: the simulated caches are coherent.
    fn clean_dcache(&self, _pa: u64, _len: u64) {
        self.log.dcache_cleans.fetch_add(1, Ordering::Relaxed);
    }

    /// Counted only: the simulated caches are coherent.
    fn invalidate_icache(&self, _pa: u64, _len: u64) {
        self.log.icache_invalidations.fetch_add(1, Ordering::Relaxed);
    }
}
