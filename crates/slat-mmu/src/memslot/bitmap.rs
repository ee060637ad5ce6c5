//! The dirty bitmap of a memslot: one bit per page, allocated when logging is first enabled.

use core::sync::atomic::{AtomicU64, Ordering};

use lock_api::RawRwLock;

use super::Memslot;

impl<R: RawRwLock> Memslot<R> {
    /// Mark `gfn` dirty in the log.
    #[inline]
    pub(crate) fn mark_dirty(&self, gfn: u64) {
        // AcqRel: a mark must be seen by the harvest that clears it (crate docs).
        let i = gfn - self.base_gfn;
        self.bitmap()[(i / 64) as usize].fetch_or(1 << (i % 64), Ordering::AcqRel);
    }

    pub(super) fn bitmap(&self) -> &[AtomicU64] {
        self.dirty.call_once(|| (0..self.npages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect())
    }

    /// Whether `gfn` is marked dirty.
    pub fn is_marked_dirty(&self, gfn: u64) -> bool {
        let i = gfn - self.base_gfn;
        self.dirty.get().is_some_and(|d| d[(i / 64) as usize].load(Ordering::Acquire) & (1 << (i % 64)) != 0)
    }

    pub(crate) fn fill_dirty(&self, value: bool) {
        for (w, word) in self.bitmap().iter().enumerate() {
            let valid = (self.npages - w as u64 * 64).min(64);
            let v = if !value {
                0
            } else if valid == 64 {
                u64::MAX
            } else {
                (1u64 << valid) - 1
            };
            word.store(v, Ordering::Release);
        }
    }

    /// Read word `word` of the log, clearing it when `clear` (0 past the end).
    pub(crate) fn read_dirty_word(&self, word: usize, clear: bool) -> u64 {
        self.bitmap()
            .get(word)
            .map_or(0, |w| if clear { w.swap(0, Ordering::AcqRel) } else { w.load(Ordering::Acquire) })
    }

    /// Clear the bits of `mask` in word `word`; returns the bits that were set and are now clear.
    pub(crate) fn clear_dirty_word(&self, word: usize, mask: u64) -> u64 {
        self.bitmap().get(word).map_or(0, |w| w.fetch_and(!mask, Ordering::AcqRel) & mask)
    }
}
