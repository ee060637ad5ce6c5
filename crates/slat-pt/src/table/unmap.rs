//! Removing leaves and detaching subtrees: [`PageTable::unmap`], and the retiring of an entry's
//! old content that every replacing operation shares.

use super::{Delta, Leaf, PageTable, PtError};
use crate::addr::Gpa;
use crate::cursor::Cursor;
use crate::flush::{Detached, FlushBatch};
use crate::format::{Format, Pte};
use crate::frame::FrameAllocator;
use crate::node::Node;
use crate::size::{level_bytes, Level, PageSize, ENTRIES_PER_TABLE};

/// Where an operation puts what it retires: the flush batch, the counter change, the caller's
/// leaf visitor, and whether detached subtrees are frozen (shared operations) or handed over
/// whole (exclusive ones).
pub(crate) struct Retire<'b, 'v> {
    pub(crate) batch: &'b mut FlushBatch,
    pub(crate) d: &'b mut Delta,
    pub(crate) visit: Option<&'b mut (dyn FnMut(&Leaf) + 'v)>,
    /// Shared operations: swap every entry of a detached subtree to frozen, so a racing
    /// installer that still holds a pointer into it fails its compare-and-swap; every table
    /// then goes into the batch on its own (its frozen entries no longer lead to its children).
    pub(crate) freeze: bool,
}

impl<F: Format, A: FrameAllocator> PageTable<F, A> {
    /// Remove every leaf overlapping `gpa..gpa+len` (a huge leaf that overlaps the range only in
    /// part is removed whole), detach tables the range covers entirely, and call `visit` (if any)
    /// for each removed leaf, for example to carry its dirty state to the host. Leaves inside
    /// detached tables are read without being cleared; hardware may still dirty a writable one
    /// until the flush, so treat writable leaves as dirty.
    ///
    /// A table the range covers whole is detached without reading its leaves where the format
    /// keeps per-table leaf counts ([`Format::TABLE_LEAVES_SHIFT`]) and no `visit` asks for
    /// them; nothing is allocated on the heap unless the batch outgrows its inline room.
    ///
    /// # Errors
    /// [`PtError::Misaligned`] or [`PtError::OutOfRange`] for a bad range (nothing changed).
    pub fn unmap(
        &mut self,
        gpa: Gpa,
        len: u64,
        batch: &mut FlushBatch,
        visit: Option<&mut dyn FnMut(&Leaf)>,
    ) -> Result<(), PtError> {
        let gpa = gpa.0;
        self.check_range(gpa, len, PageSize::Size4K)?;
        let mut d = Delta::default();
        let mut r = Retire { batch, d: &mut d, visit, freeze: false };
        let (mut c, end) = (self.cursor(gpa, gpa + len), gpa + len);
        while !c.is_done() {
            // Step down through tables the range covers in part (a short range: straight to
            // its leaves).
            while c.level() > 0 {
                let raw = c.slot().load_relaxed();
                if !F::is_present(raw) || F::is_leaf(c.level(), raw) || c.whole() {
                    break;
                }
                c.down(raw);
            }
            // The entries of the current table in range, as one run: leaves and tables the
            // range covers whole are removed; the first table it covers in part is stepped into.
            let (node, n, level, step) = (c.node(), c.run_len(), c.level(), c.entry_bytes());
            let (first, from) = (node.index_of(c.gpa()), c.gpa());
            let (mut at, mut removed, mut partial) = (c.base(), 0, None);
            for i in 0..n {
                let slot = node.slot(first + i);
                let old = slot.load_relaxed();
                if F::is_present(old) {
                    let leaf = F::is_leaf(level, old);
                    if !leaf && (at < from || at + step > end) {
                        partial = Some((i, old));
                        break;
                    }
                    // Swap, not store: hardware may have set the dirty bit since the load.
                    let old = slot.swap(0);
                    removed += leaf as i64;
                    self.retire(level, at, old, &mut r);
                }
                at += step;
            }
            Self::count_exclusive(&c, -removed);
            match partial {
                Some((i, old)) => {
                    c.advance(i);
                    c.down(old);
                }
                None => c.advance(n),
            }
        }
        self.apply(gpa, &d);
        Ok(())
    }

    /// Retire `old`, the former content of the entry at `level` covering `gpa` (already
    /// replaced): count it out, show its leaves to the visitor, record the flush and detach its
    /// subtree.
    pub(crate) fn retire(&self, level: Level, gpa: u64, old: u64, r: &mut Retire<'_, '_>) {
        if !F::is_present(old) {
            return;
        }
        let size = level_bytes(level);
        if F::is_leaf(level, old) {
            r.d.leaves[level as usize] -= 1;
            if let (Some(v), Pte::Leaf { pa, attrs }) = (r.visit.as_deref_mut(), F::decode(level, old)) {
                v(&Leaf { gpa: Gpa(gpa), size: PageSize::from_level(level).unwrap(), pa, attrs });
            }
            r.batch.add(Gpa(gpa), size, PageSize::from_level(level).unwrap());
            return;
        }
        let (child, pa) = (self.child_node(level, old), F::addr(level, old));
        let min = if r.freeze || r.visit.is_some() {
            let min = self.detach_subtree(child, pa, gpa, r);
            if !r.freeze {
                // Exclusive: the subtree is intact below its root; `free_detached` frees it whole.
                r.batch.push_detached(Detached { pa, level: level - 1, childless: false });
            }
            min
        } else {
            let (min, children) = self.count_subtree(child, old, gpa, r.d);
            r.batch.push_detached(Detached { pa, level: level - 1, childless: !children });
            min
        };
        r.batch.add(Gpa(gpa), size, PageSize::from_level(min).unwrap_or(PageSize::Size1G));
    }

    /// Detach the subtree under `table` (at `pa`, covering from `gpa`) entry by entry: count what was
    /// there, show each leaf to the visitor and, when freezing, swap every entry to frozen and
    /// list every table in the batch. Returns the smallest leaf level seen.
    fn detach_subtree(&self, table: Node<'_>, pa: u64, gpa: u64, r: &mut Retire<'_, '_>) -> Level {
        let top = table.level();
        r.d.tables -= 1;
        if r.freeze {
            r.batch.push_detached(Detached { pa, level: top, childless: true });
        }
        let mut min = top;
        let mut c = Cursor::over(self, table, gpa, gpa + level_bytes(top + 1));
        while !c.is_done() {
            let (slot, level) = (c.slot(), c.level());
            let old = if r.freeze { slot.swap(F::FROZEN) } else { slot.load_relaxed() };
            if F::is_present(old) {
                if !F::is_leaf(level, old) {
                    r.d.tables -= 1;
                    if r.freeze {
                        // Frozen entries lead nowhere: this record frees this table alone.
                        r.batch.push_detached(Detached { pa: F::addr(level, old), level: level - 1, childless: true });
                    }
                    c.down(old);
                    continue;
                }
                r.d.leaves[level as usize] -= 1;
                min = min.min(level);
                if let (Some(v), Pte::Leaf { pa, attrs }) = (r.visit.as_deref_mut(), F::decode(level, old)) {
                    v(&Leaf { gpa: Gpa(c.base()), size: PageSize::from_level(level).unwrap(), pa, attrs });
                }
            }
            c.next();
        }
        min
    }

    /// Count out the subtree under `table` (pointed to by `raw`, covering from `gpa`) for an
    /// exclusive operation with no visitor, reading as little as it can: a leaf table whose
    /// parent entry records its leaves is not read at all, another one with one load and a
    /// bit test per entry. Returns the smallest leaf level seen and whether `table` links to
    /// child tables.
    fn count_subtree(&self, table: Node<'_>, raw: u64, gpa: u64, d: &mut Delta) -> (Level, bool) {
        let top = table.level();
        d.tables -= 1;
        if top == 0 {
            let n = match Self::table_leaves(raw) {
                Some(n) => n as usize,
                None => table.count_run(0, ENTRIES_PER_TABLE, F::is_present),
            };
            d.leaves[0] -= n as i64;
            return (0, false);
        }
        let (mut min, mut children) = (top, false);
        let mut c = Cursor::over(self, table, gpa, gpa + level_bytes(top + 1));
        while !c.is_done() {
            let (node, n, level) = (c.node(), c.run_len(), c.level());
            let first = node.index_of(c.gpa());
            if level == 0 {
                // A leaf table whose parent entry keeps no count.
                d.leaves[0] -= node.count_run(first, n, F::is_present) as i64;
                min = 0;
                c.advance(n);
                continue;
            }
            // Most runs hold only leaves, or (level 1) leaf tables whose entries record their
            // leaves: one pass with no branches counts them.
            let counted = level == 1 && F::TABLE_LEAVES_SHIFT.is_some();
            let (mut present, mut tables) = (0i64, 0i64);
            for raw in node.values_run(first, n) {
                let p = F::is_present(raw);
                present += p as i64;
                tables += (p & !F::is_leaf(level, raw)) as i64;
            }
            if tables == 0 || counted {
                let below: u64 = if tables > 0 {
                    node.values_run(first, n)
                        .filter(|&raw| F::is_present(raw) && !F::is_leaf(level, raw))
                        .map(|raw| Self::table_leaves(raw).unwrap_or(0))
                        .sum()
                } else {
                    0
                };
                d.leaves[level as usize] -= present - tables;
                d.leaves[0] -= below as i64;
                d.tables -= tables;
                children |= level == top && tables > 0;
                if present > tables {
                    min = min.min(level);
                }
                if tables > 0 {
                    min = 0;
                }
                c.advance(n);
                continue;
            }
            // Tables to read: count leaves, take leaf tables' counts from their entries, stop
            // at the first table that has to be read.
            let (mut leaves, mut table) = (0, None);
            for i in 0..n {
                let raw = node.slot(first + i).load_relaxed();
                if !F::is_present(raw) {
                    continue;
                }
                if F::is_leaf(level, raw) {
                    leaves += 1;
                    continue;
                }
                d.tables -= 1;
                children |= level == top;
                match Self::table_leaves(raw) {
                    Some(k) if level == 1 => {
                        d.leaves[0] -= k as i64;
                        min = 0;
                    }
                    _ => {
                        table = Some((i, raw));
                        break;
                    }
                }
            }
            d.leaves[level as usize] -= leaves;
            if leaves > 0 {
                min = min.min(level);
            }
            match table {
                Some((i, raw)) => {
                    c.advance(i);
                    c.down(raw);
                }
                None => c.advance(n),
            }
        }
        (min, children)
    }
}
