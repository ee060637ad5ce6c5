//! Removing leaves and detaching subtrees: [`PageTable::unmap`], and the retiring of an entry's
//! old content that every replacing operation shares.

use super::{Delta, Leaf, PageTable, PtError};
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
        gpa: u64,
        len: u64,
        batch: &mut FlushBatch,
        visit: Option<&mut dyn FnMut(&Leaf)>,
    ) -> Result<(), PtError> {
        self.check_range(gpa, len, PageSize::Size4K)?;
        let mut d = Delta::default();
        let mut r = Retire { batch, d: &mut d, visit, freeze: false };
        let mut c = self.cursor(gpa, gpa + len);
        while !c.is_done() {
            let level = c.level();
            if level == 0 {
                // A run of 4K leaves in a table the range covers in part.
                let (node, n, base) = (c.node(), c.run_len(), c.base());
                let first = node.index_of(base);
                let mut removed = 0;
                for i in 0..n {
                    let slot = node.slot(first + i);
                    if F::is_present(slot.load_relaxed()) {
                        // Swap, not store: hardware may have set the dirty bit since the load.
                        let old = slot.swap(0);
                        self.retire(0, base + i as u64 * PAGE, old, &mut r);
                        removed += 1;
                    }
                }
                Self::count_exclusive(c.parent(), -removed);
                c.advance(n);
                continue;
            }
            let slot = c.slot();
            let old = slot.load_relaxed();
            if F::is_present(old) {
                let leaf = F::is_leaf(level, old);
                if !leaf && !c.whole() {
                    c.down(old);
                    continue;
                }
                let old = slot.swap(0);
                if leaf {
                    Self::count_exclusive(c.parent(), -1);
                }
                self.retire(level, c.base(), old, &mut r);
            }
            c.next();
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
                v(&Leaf { gpa, size: PageSize::from_level(level).unwrap(), pa, attrs });
            }
            r.batch.add(gpa, size, PageSize::from_level(level).unwrap());
            return;
        }
        let child = self.child_node(level, old);
        let min = if r.freeze || r.visit.is_some() {
            let min = self.detach_subtree(child, gpa, r);
            if !r.freeze {
                // Exclusive: the subtree is intact below its root; `free_detached` frees it whole.
                r.batch.push_detached(Detached { pa: child.pa(), level: level - 1, childless: false });
            }
            min
        } else {
            let (min, children) = self.count_subtree(child, old, gpa, r.d);
            r.batch.push_detached(Detached { pa: child.pa(), level: level - 1, childless: !children });
            min
        };
        r.batch.add(gpa, size, PageSize::from_level(min).unwrap_or(PageSize::Size1G));
    }

    /// Detach the subtree under `table` (covering from `gpa`) entry by entry: count what was
    /// there, show each leaf to the visitor and, when freezing, swap every entry to frozen and
    /// list every table in the batch. Returns the smallest leaf level seen.
    fn detach_subtree(&self, table: Node<'_>, gpa: u64, r: &mut Retire<'_, '_>) -> Level {
        let top = table.level();
        r.d.tables -= 1;
        if r.freeze {
            r.batch.push_detached(Detached { pa: table.pa(), level: top, childless: true });
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
                    v(&Leaf { gpa: c.base(), size: PageSize::from_level(level).unwrap(), pa, attrs });
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
            let level = c.level();
            if level == 0 {
                // A leaf table whose parent entry keeps no count.
                let (node, n) = (c.node(), c.run_len());
                d.leaves[0] -= node.count_run(node.index_of(c.gpa()), n, F::is_present) as i64;
                min = 0;
                c.advance(n);
                continue;
            }
            let raw = c.slot().load_relaxed();
            if F::is_present(raw) {
                if F::is_leaf(level, raw) {
                    d.leaves[level as usize] -= 1;
                    min = min.min(level);
                } else {
                    d.tables -= 1;
                    children |= level == top;
                    match Self::table_leaves(raw) {
                        Some(n) if level == 1 => {
                            d.leaves[0] -= n as i64;
                            min = 0;
                        }
                        _ => {
                            c.down(raw);
                            continue;
                        }
                    }
                }
            }
            c.next();
        }
        (min, children)
    }
}

const PAGE: u64 = crate::size::PAGE_SIZE;
