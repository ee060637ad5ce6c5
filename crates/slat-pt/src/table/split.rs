//! Changing leaf sizes: [`PageTable::split`], [`PageTable::split_range`] and its shared form
//! [`PageTable::split_range_shared`] (huge leaves into full tables of the same translation), and
//! [`PageTable::collapse_range`] (tables into the huge leaves the caller says, in place, under the
//! shared lock: in-place recovery).

use super::map::Place;
use super::{CollapseProgress, Delta, Mapping, PageTable, PtError, SplitProgress};
use crate::addr::Gpa;
use crate::flush::{FlushBatch, Tlb};
use crate::format::Format;
use crate::frame::FrameAllocator;
use crate::size::{Level, PageSize};

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
        let slot = Self::descend_to(&mut c, level).ok_or(PtError::NoLeaf { gpa: Gpa(gpa), size })?;
        let old = slot.load_relaxed();
        if !F::is_present(old) || !F::is_leaf(level, old) {
            return Err(PtError::NoLeaf { gpa: Gpa(gpa), size });
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
                let (child, _) = match self.split_live(slot, cur, c.base(), tlb) {
                    Ok(Some(split)) => split,
                    Ok(None) => continue, // changed under us: read it again
                    Err(err) => break Err(err),
                };
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

    /// Replace page tables in `gpa..gpa+len` with huge leaves, in place, under the *shared*
    /// lock (KVM's `recover_huge_pages_range`, since 6.13). The cursor walks the 1G- and
    /// 2M-level entries in address order; for each table entry whose block the range covers
    /// whole and that holds at least one leaf, `want(block, size)` says which leaf replaces
    /// it (`None`: leave it; a 1G block not wanted is tried again as 2M blocks). The caller
    /// answers from the host and its rules, not from the children: the new leaf's output comes
    /// from `want`, and only its accessed flag from the children (set if any child's was).
    ///
    /// Each replacement is a compare-and-swap that freezes the entry, detaches the old subtree
    /// frozen into `batch` with a flush of the block (on break-before-make formats the flush
    /// goes through `tlb` before the leaf is written), then publishes the leaf; `made` sees
    /// each leaf made. An entry that changed under the walk is read again; one another thread
    /// has frozen is skipped. After `max_blocks` leaves the walk stops with
    /// [`CollapseProgress::resume_at`] at the cursor's finished mark: call again from there
    /// (after dropping the lock and flushing, as the cursor's yield point does) to continue.
    ///
    /// # Errors
    /// [`PtError::Misaligned`] or [`PtError::OutOfRange`] for a bad range (nothing changed).
    #[allow(clippy::too_many_arguments)]
    pub fn collapse_range(
        &self,
        gpa: Gpa,
        len: u64,
        max_blocks: u64,
        want: &mut dyn FnMut(Gpa, PageSize) -> Option<Mapping>,
        made: &mut dyn FnMut(Gpa, &Mapping),
        batch: &mut FlushBatch,
        tlb: &dyn Tlb,
    ) -> Result<CollapseProgress, PtError> {
        let gpa = gpa.0;
        self.check_range(gpa, len, PageSize::Size4K)?;
        let mut p = CollapseProgress::default();
        let mut d = Delta::default();
        let mut c = self.cursor(gpa, gpa + len);
        while !c.is_done() {
            let (level, slot) = (c.level(), c.slot());
            let raw = slot.load();
            // Empty, a leaf, frozen (another thread is changing it: skipped, as a busy
            // install is), or below the 2M level: nothing to collapse here.
            if level == 0 || !F::is_present(raw) || F::is_leaf(level, raw) {
                c.next();
                continue;
            }
            let size = PageSize::from_level(level).filter(|_| F::leaf_allowed(level));
            if let Some(size) = size.filter(|_| c.whole() && self.has_leaf_below(level, raw)) {
                if p.collapsed >= max_blocks {
                    p.resume_at = Some(Gpa(c.done()));
                    break;
                }
                if let Some(m) = want(Gpa(c.base()), size) {
                    let place = Place { slot, level, base: c.base(), old: raw, new: 0 };
                    if !self.install_over(place, size, Some(&m), batch, tlb, &mut d) {
                        // Changed under us: read it again.
                        continue;
                    }
                    self.count_shared_here(&c, 1);
                    p.collapsed += 1;
                    made(Gpa(c.base()), &m);
                    c.next();
                    continue;
                }
            }
            if level > 1 {
                c.down(raw);
            } else {
                c.next();
            }
        }
        self.apply(gpa, &d);
        Ok(p)
    }

    /// Whether the table that `raw` (a table entry at `level`) points to holds a present leaf,
    /// at any depth: from the entry's recorded leaf count where it has one, reading otherwise.
    fn has_leaf_below(&self, level: Level, raw: u64) -> bool {
        if level == 1 {
            if let Some(n) = Self::table_leaves(raw) {
                return n > 0;
            }
        }
        let below = level - 1;
        self.child_node(level, raw)
            .values()
            .any(|v| F::is_present(v) && (F::is_leaf(below, v) || (below > 0 && self.has_leaf_below(below, v))))
    }
}
