//! Reading the tree: [`PageTable::translate`], [`PageTable::translate_pa`],
//! [`PageTable::for_each_leaf`], [`PageTable::leaves`] and the audit's
//! [`PageTable::recount`].

use alloc::vec::Vec;

use super::{Counts, Leaf, PageTable, Translation};
use crate::addr::Gpa;
use crate::format::{Format, Pte};
use crate::frame::FrameAllocator;
use crate::size::{Level, PageSize, ENTRIES_PER_TABLE};

impl<F: Format, A: FrameAllocator> PageTable<F, A> {
    /// The raw present leaf mapping `gpa` and its level: the cursor's descent, stopping at the
    /// first entry that is not a table.
    #[inline]
    fn walk_leaf(&self, gpa: u64) -> Option<(u64, Level)> {
        if gpa >= self.input_limit() {
            return None;
        }
        let (mut node, mut level) = (self.root_node(), F::ROOT_LEVEL);
        loop {
            let raw = node.slot(node.index_of(gpa)).load();
            if !F::is_present(raw) {
                return None;
            }
            if F::is_leaf(level, raw) {
                return Some((raw, level));
            }
            node = self.child_node(level, raw);
            level -= 1;
        }
    }

    /// Translate one guest-physical address.
    ///
    /// Inlined, so a caller that reads only `pa` and `size` lets the compiler drop the attribute
    /// decode; [`translate_pa`](Self::translate_pa) never decodes them.
    #[inline(always)]
    pub fn translate(&self, gpa: Gpa) -> Option<Translation> {
        let gpa = gpa.0;
        let (raw, level) = self.walk_leaf(gpa)?;
        let Pte::Leaf { pa, attrs } = F::decode(level, raw) else { return None };
        let size = PageSize::from_level(level)?;
        Some(Translation { pa: pa + (gpa & (size.bytes() - 1)), size, attrs })
    }

    /// Translate one guest-physical address to its output address and leaf size only: the same
    /// walk as [`translate`](Self::translate) (and the same answer for `pa` and `size`) without
    /// decoding the leaf's attributes.
    #[inline(always)]
    pub fn translate_pa(&self, gpa: Gpa) -> Option<(u64, PageSize)> {
        let gpa = gpa.0;
        let (raw, level) = self.walk_leaf(gpa)?;
        // Decode only to keep `translate`'s answer for entries that do not decode as a leaf
        // (arm64 reserved descriptors); the attributes are unused.
        let Pte::Leaf { pa, .. } = F::decode(level, raw) else { return None };
        let size = PageSize::from_level(level)?;
        Some((pa + (gpa & (size.bytes() - 1)), size))
    }

    /// Call `f` for every leaf overlapping `gpa..gpa+len`, in address order.
    pub fn for_each_leaf(&self, gpa: Gpa, len: u64, mut f: impl FnMut(&Leaf)) {
        let gpa = gpa.0;
        let end = gpa.saturating_add(len).min(self.input_limit());
        self.for_each_leaf_slot(gpa, end, |lgpa, level, _, raw| {
            if let Pte::Leaf { pa, attrs } = F::decode(level, raw) {
                f(&Leaf { gpa: Gpa(lgpa), size: PageSize::from_level(level).unwrap(), pa, attrs });
            }
        });
    }

    /// Every leaf overlapping the range, collected.
    pub fn leaves(&self, gpa: Gpa, len: u64) -> Vec<Leaf> {
        let mut v = Vec::new();
        self.for_each_leaf(gpa, len, |l| v.push(*l));
        v
    }

    /// Leaf and table-page counts by walking the whole tree (for audits: must equal
    /// [`counts`](Self::counts) whenever no operation is running), and the tables whose
    /// recorded leaf count ([`Format::TABLE_LEAVES_SHIFT`]) is wrong.
    pub fn recount(&self) -> Counts {
        let mut n = Counts { table_pages: Self::ROOT_FRAMES as u64, ..Default::default() };
        let mut c = self.cursor(0, self.input_limit());
        while !c.is_done() {
            let (raw, level) = (c.slot().load(), c.level());
            if F::is_present(raw) {
                if F::is_leaf(level, raw) {
                    n.leaves[level as usize] += 1;
                } else {
                    n.table_pages += 1;
                    if let Some(recorded) = Self::table_leaves(raw) {
                        let held = self
                            .child_node(level, raw)
                            .count_run(0, ENTRIES_PER_TABLE, |v| F::is_present(v) && F::is_leaf(level - 1, v));
                        n.miscounted_tables += (held as u64 != recorded) as u64;
                    }
                    c.down(raw);
                    continue;
                }
            }
            c.next();
        }
        n
    }
}
