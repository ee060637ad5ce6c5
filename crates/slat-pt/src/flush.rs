//! TLB obligations as values.
//!
//! Every operation that removes or narrows a translation the TLB may cache returns a
//! [`FlushBatch`]: the guest-physical ranges to invalidate, each with the leaf size that was
//! mapped there (so a range TLBI can pick its stride), and the page-table subtrees it detached.
//! The caller flushes, then frees the subtrees with
//! [`PageTable::free_detached`](crate::PageTable::free_detached) once no walker can hold them.
//! Nothing here flushes anything by itself.

use alloc::vec::Vec;

use crate::size::PageSize;

/// Ranges kept before a batch degrades to "flush everything".
pub const MAX_RANGES: usize = 32;

/// One guest-physical range to invalidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushRange {
    /// Start (aligned to `size`).
    pub gpa: u64,
    /// Length in bytes (a multiple of `size`).
    pub len: u64,
    /// Smallest leaf size that was mapped in the range.
    pub size: PageSize,
}

/// A page-table subtree unlinked from the tree, to be freed after the flush that retires every
/// translation cached from it.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a detached subtree leaks unless freed with PageTable::free_detached after the flush"]
pub struct Detached {
    /// Physical address of the subtree's table.
    pub pa: u64,
    /// Level of that table (its entries are at this level).
    pub level: u8,
}

/// Pending TLB invalidations and the subtrees waiting on them.
///
/// ```
/// use slat_pt::{FlushBatch, PageSize};
/// let mut b = FlushBatch::new();
/// b.add(0x20_0000, 0x20_0000, PageSize::Size2M);
/// b.add(0x40_0000, 0x20_0000, PageSize::Size2M); // coalesces with the previous range
/// assert_eq!(b.ranges().len(), 1);
/// assert!(!b.is_empty());
/// ```
#[derive(Debug, Default)]
#[must_use = "a flush batch must be applied to the TLB (and its detached subtrees freed)"]
pub struct FlushBatch {
    ranges: Vec<FlushRange>,
    all: bool,
    detached: Vec<Detached>,
}

impl FlushBatch {
    /// An empty batch.
    pub const fn new() -> Self {
        FlushBatch { ranges: Vec::new(), all: false, detached: Vec::new() }
    }

    /// Record `len` bytes at `gpa` that were mapped with leaves of `size` (or smaller tables'
    /// leaves of at least `size`). Adjacent or overlapping ranges of the same size coalesce; past
    /// [`MAX_RANGES`] the batch becomes "flush everything".
    pub fn add(&mut self, gpa: u64, len: u64, size: PageSize) {
        if self.all || len == 0 {
            return;
        }
        if let Some(last) = self.ranges.last_mut() {
            if last.size == size && gpa >= last.gpa && gpa <= last.gpa + last.len {
                let end = (gpa + len).max(last.gpa + last.len);
                last.len = end - last.gpa;
                return;
            }
        }
        if self.ranges.len() == MAX_RANGES {
            self.set_all();
            return;
        }
        self.ranges.push(FlushRange { gpa, len, size });
    }

    /// Require a flush of every translation of this address space.
    pub fn set_all(&mut self) {
        self.all = true;
        self.ranges.clear();
    }

    /// Record a detached subtree to free after the flush.
    pub fn push_detached(&mut self, d: Detached) {
        self.detached.push(d);
    }

    /// Merge another batch into this one.
    pub fn merge(&mut self, other: FlushBatch) {
        let FlushBatch { ranges, all, detached } = other;
        if all {
            self.set_all();
        }
        for r in ranges {
            self.add(r.gpa, r.len, r.size);
        }
        self.detached.extend(detached);
    }

    /// Whether the whole address space must be flushed.
    pub fn is_all(&self) -> bool {
        self.all
    }

    /// Ranges to flush (empty when [`is_all`](Self::is_all)).
    pub fn ranges(&self) -> &[FlushRange] {
        &self.ranges
    }

    /// Whether nothing needs flushing (there may still be detached subtrees, which then need
    /// no flush: they held no translations).
    pub fn is_empty(&self) -> bool {
        !self.all && self.ranges.is_empty()
    }

    /// Whether `gpa` is covered by this batch.
    pub fn covers(&self, gpa: u64) -> bool {
        self.all || self.ranges.iter().any(|r| gpa >= r.gpa && gpa < r.gpa + r.len)
    }

    /// Subtrees detached so far.
    pub fn detached(&self) -> &[Detached] {
        &self.detached
    }

    /// Take the detached subtrees, leaving the flush ranges. Call after flushing.
    pub fn take_detached(&mut self) -> Vec<Detached> {
        core::mem::take(&mut self.detached)
    }

    /// Mark the ranges as flushed and return the detached subtrees for freeing.
    pub fn into_detached(self) -> Vec<Detached> {
        self.detached
    }
}
