//! Large-page bookkeeping of a memslot, as KVM's `lpage_info`: per huge size, whether gfn and
//! hva are congruent, and per block a write-track count plus a mixed-attribute mark.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use lock_api::RawRwLock;
use slat_pt::PageSize;

use super::Memslot;

/// Mark bit in a block's disallow word: the block has mixed memory attributes.
pub(super) const MIXED: u32 = 1 << 31;

/// Per-size large-page information.
#[derive(Debug)]
pub(super) struct LpageInfo {
    pub(super) size: PageSize,
    /// gfn and hva are not congruent modulo the size: the size is disallowed for the whole slot.
    pub(super) misaligned: bool,
    /// Per block (indexed from the block containing `base_gfn`): write-track count, and `MIXED`.
    pub(super) disallow: Vec<AtomicU32>,
}

impl<R: RawRwLock> Memslot<R> {
    pub(super) fn info(&self, size: PageSize) -> Option<&LpageInfo> {
        self.lpage.iter().find(|l| l.size == size)
    }

    pub(super) fn block_index(&self, gfn: u64, size: PageSize) -> usize {
        (gfn / size.pages() - self.base_gfn / size.pages()) as usize
    }

    /// Whether the `size` block around `gfn` lies wholly inside the slot.
    pub fn block_inside(&self, gfn: u64, size: PageSize) -> bool {
        let start = gfn & !(size.pages() - 1);
        start >= self.base_gfn && start + size.pages() <= self.end_gfn()
    }

    /// Whether gfn and hva are congruent modulo `size` for this slot.
    pub fn congruent(&self, size: PageSize) -> bool {
        self.info(size).is_none_or(|l| !l.misaligned)
    }

    /// Write-track count of the `size` block around `gfn` (0 if none).
    pub fn disallow_count(&self, gfn: u64, size: PageSize) -> u32 {
        self.info(size)
            .and_then(|l| l.disallow.get(self.block_index(gfn, size)))
            .map_or(0, |w| w.load(Ordering::Acquire) & !MIXED)
    }

    /// Whether the `size` block around `gfn` has mixed memory attributes.
    pub fn mixed(&self, gfn: u64, size: PageSize) -> bool {
        self.info(size)
            .and_then(|l| l.disallow.get(self.block_index(gfn, size)))
            .is_some_and(|w| w.load(Ordering::Acquire) & MIXED != 0)
    }
}
