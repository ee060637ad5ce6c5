//! Changing leaves in place: attributes ([`PageTable::update_leaves`], [`PageTable::protect`]),
//! dirty state ([`PageTable::harvest_dirty`]) and accessed state ([`PageTable::test_young`],
//! [`PageTable::clear_young`]). Each is one pass of the cursor over the present leaves.

use alloc::vec::Vec;

use super::{Leaf, PageTable, PtError};
use crate::addr::Gpa;
use crate::attrs::{LeafAttrs, Perms};
use crate::flush::FlushBatch;
use crate::format::{Format, Pte};
use crate::frame::FrameAllocator;
use crate::size::{level_bytes, PageSize, PAGE_SIZE};

impl<F: Format, A: FrameAllocator> PageTable<F, A> {
    /// Rewrite the attributes of every leaf overlapping the range (whole leaves): `f` returns the
    /// new attributes or `None` to leave the leaf alone. Narrowing changes (fewer permissions, a
    /// different memory type, cleared dirty state) are recorded for flushing. Returns the number
    /// of leaves changed.
    ///
    /// # Errors
    /// [`PtError::Misaligned`] or [`PtError::OutOfRange`] for a bad range (nothing changed).
    pub fn update_leaves(
        &mut self,
        gpa: Gpa,
        len: u64,
        batch: &mut FlushBatch,
        mut f: impl FnMut(&Leaf) -> Option<LeafAttrs>,
    ) -> Result<u64, PtError> {
        let gpa = gpa.0;
        self.check_range(gpa, len, PageSize::Size4K)?;
        let mut changed = 0;
        self.for_each_leaf_slot(gpa, gpa + len, |lgpa, level, slot, old| {
            let Pte::Leaf { pa, attrs } = F::decode(level, old) else { return };
            let size = PageSize::from_level(level).unwrap();
            let Some(new) = f(&Leaf { gpa: Gpa(lgpa), size, pa, attrs }) else { return };
            if new != attrs {
                slot.store(F::leaf(level, pa, &new));
                changed += 1;
                let narrowed =
                    !new.perms.contains(attrs.perms) || new.mem_type != attrs.mem_type || (attrs.dirty && !new.dirty);
                if narrowed {
                    batch.add(Gpa(lgpa), size.bytes(), size);
                }
            }
        });
        Ok(changed)
    }

    /// Set the permissions of every leaf overlapping the range (whole leaves) to `perms`.
    ///
    /// # Errors
    /// As [`update_leaves`](Self::update_leaves).
    pub fn protect(&mut self, gpa: Gpa, len: u64, perms: Perms, batch: &mut FlushBatch) -> Result<u64, PtError> {
        self.update_leaves(gpa, len, batch, |l| Some(l.attrs.with_perms(perms)))
    }

    /// Harvest hardware dirty state over `npages` 4 KiB pages from `gpa`: returns a bitmap with
    /// one bit per page (bit `i % 64` of word `i / 64`) set where a leaf covering the page is
    /// dirty. A dirty leaf lying wholly inside the range has its dirty state cleared (recorded
    /// for flushing); a dirty huge leaf sticking out of the range is reported but left dirty, so
    /// the pages outside are not lost.
    ///
    /// # Errors
    /// [`PtError::Misaligned`] or [`PtError::OutOfRange`] for a bad range (nothing changed).
    pub fn harvest_dirty(&mut self, gpa: Gpa, npages: u64, batch: &mut FlushBatch) -> Result<Vec<u64>, PtError> {
        let gpa = gpa.0;
        let len = npages * PAGE_SIZE;
        self.check_range(gpa, len, PageSize::Size4K)?;
        let mut bitmap = alloc::vec![0u64; npages.div_ceil(64) as usize];
        let end = gpa + len;
        self.for_each_leaf_slot(gpa, end, |lgpa, level, slot, old| {
            if !F::is_dirty(old) {
                return;
            }
            let size = level_bytes(level);
            let (from, to) = (lgpa.max(gpa), (lgpa + size).min(end));
            for page in (from - gpa) / PAGE_SIZE..(to - gpa) / PAGE_SIZE {
                bitmap[(page / 64) as usize] |= 1 << (page % 64);
            }
            if lgpa >= gpa && lgpa + size <= end {
                slot.store(F::clear_dirty(old));
                batch.add(Gpa(lgpa), size, PageSize::from_level(level).unwrap());
            }
        });
        Ok(bitmap)
    }

    /// Whether any leaf overlapping the range has its accessed flag set.
    pub fn test_young(&self, gpa: Gpa, len: u64) -> bool {
        let gpa = gpa.0;
        let mut young = false;
        let end = gpa.saturating_add(len).min(self.input_limit());
        self.for_each_leaf_slot(gpa, end, |_, _, _, raw| young |= F::is_accessed(raw));
        young
    }

    /// Clear the accessed flag of every leaf overlapping the range; returns whether any was set.
    /// No flush is recorded: a stale accessed state in the TLB only delays aging. Shared: each
    /// clear is a compare-and-swap from the value just read.
    pub fn clear_young(&self, gpa: Gpa, len: u64) -> bool {
        let gpa = gpa.0;
        let mut young = false;
        let end = gpa.saturating_add(len).min(self.input_limit());
        let mut c = self.cursor(gpa, end);
        while !c.is_done() {
            let (slot, level) = (c.slot(), c.level());
            let raw = slot.load();
            if F::is_present(raw) {
                if !F::is_leaf(level, raw) {
                    c.down(raw);
                    continue;
                }
                if F::is_accessed(raw) && slot.cas(raw, F::clear_accessed(raw)).is_err() {
                    // Changed under us (hardware state, or split or replaced by a fault): walk
                    // to the same address again from the root.
                    c.restart(c.gpa());
                    continue;
                }
                young |= F::is_accessed(raw);
            }
            c.next();
        }
        young
    }
}
