//! Changing leaf sizes: [`PageTable::split`], [`PageTable::split_range`] and its shared form
//! [`PageTable::split_range_shared`] (huge leaves into full tables of the same translation), and
//! [`PageTable::collapse`] (a full, contiguous, uniform table into one huge leaf).

use super::{CollapseError, Delta, PageTable, PtError, Retire, SplitProgress};
use crate::addr::Gpa;
use crate::attrs::LeafAttrs;
use crate::flush::{FlushBatch, FlushRange, Tlb};
use crate::format::{Format, Pte};
use crate::frame::FrameAllocator;
use crate::size::{level_bytes, PageSize};

impl<F: Format, A: FrameAllocator> PageTable<F, A> {
    /// Split the `size` leaf mapping `gpa` into a fully populated table of the next smaller
    /// leaves with the same translation.
    ///
    /// # Errors
    /// [`PtError::NoLeaf`] when no `size` leaf maps `gpa`; [`PtError::LeafNotAllowed`] for 4K;
    /// [`PtError::OutOfFrames`].
    pub fn split(&mut self, gpa: Gpa, size: PageSize, tlb: &dyn Tlb) -> Result<(), PtError> {
        let gpa = gpa.0;
        let base = size.align_down(gpa);
        self.check_range(base, size.bytes(), size)?;
        let level = size.level();
        if level == 0 {
            return Err(PtError::LeafNotAllowed { size });
        }
        let mut c = self.cursor(base, base + size.bytes());
        let slot = Self::descend_to(&mut c, level).ok_or(PtError::NoLeaf { gpa, size })?;
        let old = slot.load_relaxed();
        if !F::is_present(old) || !F::is_leaf(level, old) {
            return Err(PtError::NoLeaf { gpa, size });
        }
        let (_, entry) = self.build_split(level, old)?;
        Self::replace_live(slot, old, entry, base, tlb);
        Self::count_exclusive(&c, -1);
        let mut d = Delta::default();
        d.split(level);
        self.apply(base, &d);
        Ok(())
    }

    /// Split every leaf larger than `target` overlapping the range (1G leaves go down through
    /// 2M to 4K when `target` is 4K), allocating at most `max_tables` page-table pages; resume
    /// from [`SplitProgress::resume_at`] to continue. Translations never change.
    ///
    /// # Errors
    /// [`PtError::Misaligned`] or [`PtError::OutOfRange`] for a bad range;
    /// [`PtError::OutOfFrames`] part-way (what was split stays split).
    pub fn split_range(
        &mut self,
        gpa: Gpa,
        len: u64,
        target: PageSize,
        max_tables: u64,
        tlb: &dyn Tlb,
    ) -> Result<SplitProgress, PtError> {
        // Exclusive access: no other thread freezes entries or races the compare-and-swaps, so
        // the shared walk does exactly the exclusive split.
        self.split_range_shared(gpa, len, target, max_tables, tlb)
    }

    /// [`split_range`](Self::split_range) for the shared lock: every split is a
    /// compare-and-swap from the huge leaf just read, so faults ([`install`](Self::install)) and
    /// other shared operations run beside it. A leaf that changed under it is read again; an
    /// entry another thread has frozen stops the pass with [`SplitProgress::resume_at`] at that
    /// address (call again to continue: the other thread finishes its change without waiting),
    /// as does the end of the `max_tables` budget: the cursor's yield, handed to the caller.
    ///
    /// # Errors
    /// As [`split_range`](Self::split_range).
    pub fn split_range_shared(
        &self,
        gpa: Gpa,
        len: u64,
        target: PageSize,
        max_tables: u64,
        tlb: &dyn Tlb,
    ) -> Result<SplitProgress, PtError> {
        let gpa = gpa.0;
        self.check_range(gpa, len, PageSize::Size4K)?;
        let target = target.level();
        let mut p = SplitProgress::default();
        let mut d = Delta::default();
        let mut c = self.cursor(gpa, gpa + len);
        let r = loop {
            if c.is_done() {
                break Ok(());
            }
            let level = c.level();
            if level <= target {
                c.advance(c.run_len());
                continue;
            }
            let slot = c.slot();
            let cur = slot.load();
            if cur == F::FROZEN {
                p.resume_at = Some(Gpa(c.done()));
                break Ok(());
            }
            if !F::is_present(cur) {
                c.next();
                continue;
            }
            if F::is_leaf(level, cur) {
                if p.tables_allocated >= max_tables {
                    p.resume_at = Some(Gpa(c.done()));
                    break Ok(());
                }
                let (child, entry) = match self.build_split(level, cur) {
                    Ok(split) => split,
                    Err(err) => break Err(err),
                };
                let lock = if F::BREAK_BEFORE_MAKE { F::FROZEN } else { entry };
                if slot.cas(cur, lock).is_err() {
                    // Changed under us: read it again.
                    self.free_unlinked(F::addr(level, entry));
                    continue;
                }
                if F::BREAK_BEFORE_MAKE {
                    let size = PageSize::from_level(level).unwrap();
                    tlb.flush_range(&FlushRange { gpa: Gpa(c.base()), len: size.bytes(), size });
                    slot.store(entry);
                }
                d.split(level);
                p.splits += 1;
                p.tables_allocated += 1;
                self.count_shared_here(&c, -1);
                c.down_new(child, false);
            } else {
                c.down(cur);
            }
        };
        self.apply(gpa, &d);
        r.map(|()| p)
    }

    /// Collapse the table under the `size` block containing `gpa` into one `size` leaf. Every
    /// child must be a present leaf, the children must map one contiguous run starting at a
    /// `size`-aligned output, and their permissions, memory type and software bits must match.
    /// The new leaf is accessed/dirty if any child was. The old table is detached into `batch`
    /// with a flush of the whole block.
    ///
    /// # Errors
    /// A [`CollapseError`] naming the first child that prevents it (nothing changed).
    pub fn collapse(
        &mut self,
        gpa: Gpa,
        size: PageSize,
        batch: &mut FlushBatch,
        tlb: &dyn Tlb,
    ) -> Result<(), CollapseError> {
        let gpa = gpa.0;
        let level = size.level();
        let base = size.align_down(gpa);
        if level == 0
            || !F::leaf_allowed(level)
            || base.checked_add(size.bytes()).is_none_or(|e| e > self.input_limit())
        {
            return Err(CollapseError::LeafNotAllowed { size });
        }
        let mut c = self.cursor(base, base + size.bytes());
        let slot = Self::descend_to(&mut c, level).ok_or(CollapseError::NotATable { gpa: base })?;
        let old = slot.load_relaxed();
        if !F::is_present(old) || F::is_leaf(level, old) {
            return Err(CollapseError::NotATable { gpa: base });
        }
        let step = level_bytes(level - 1);
        let mut first: Option<(u64, LeafAttrs)> = None;
        let (mut accessed, mut dirty) = (false, false);
        for (i, raw) in self.child_node(level, old).values().enumerate() {
            let cgpa = base + i as u64 * step;
            let Pte::Leaf { pa, attrs } = F::decode(level - 1, raw) else {
                return Err(CollapseError::NotFull { gpa: cgpa });
            };
            match first {
                None if !size.is_aligned(pa) => return Err(CollapseError::Misaligned { pa, size }),
                None => first = Some((pa, attrs)),
                Some((pa0, _)) if pa != pa0 + i as u64 * step => {
                    return Err(CollapseError::NotContiguous { gpa: cgpa })
                }
                Some((_, a0)) if !attrs.uniform_with(&a0) => return Err(CollapseError::MixedAttrs { gpa: cgpa }),
                Some(_) => {}
            }
            accessed |= attrs.accessed;
            dirty |= attrs.dirty;
        }
        let (pa0, a0) = first.expect("512 children checked");
        let new = F::leaf(level, pa0, &LeafAttrs { accessed, dirty, ..a0 });
        Self::replace_live(slot, old, new, base, tlb);
        Self::count_exclusive(&c, 1);
        let mut d = Delta::default();
        d.leaves[level as usize] += 1;
        self.retire(level, base, old, &mut Retire { batch, d: &mut d, visit: None, freeze: false });
        self.apply(base, &d);
        Ok(())
    }
}
