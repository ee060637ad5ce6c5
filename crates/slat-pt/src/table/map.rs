//! Installing leaves: [`PageTable::map`] (exclusive, a range) and [`PageTable::install`] (shared,
//! the fault path's one leaf).

use super::{Delta, Installed, Mapping, PageTable, PtError, Retire};
use crate::addr::Gpa;
use crate::attrs::{LeafAttrs, Perms};
use crate::flush::{FlushBatch, FlushRange, Tlb};
use crate::format::{Format, Pte};
use crate::frame::FrameAllocator;
use crate::node::Slot;
use crate::size::{Level, PageSize};

/// How [`PageTable::install_with`] merges a refault: a leaf with the same output address already
/// in place. The page-table layer only knows that a fault never narrows what is there (that is
/// an exclusive operation with a flush); which software bits a refault sets or clears is the
/// caller's policy.
pub trait RefaultRule {
    /// The attributes to write, given the leaf's current attributes `was` and the fault's
    /// `want`.
    fn merge(&self, was: &LeafAttrs, want: &LeafAttrs) -> LeafAttrs;
}

/// The rule of [`PageTable::install`]: keep the permissions and the accessed/dirty state the
/// leaf has (a refault only widens and never loses a dirty bit; a leaf that ends up without
/// write permission is not dirty), and take the software bits from the fault.
///
/// ```
/// use slat_pt::{LeafAttrs, Perms, RefaultRule, WidenOnly};
/// let was = LeafAttrs { dirty: true, ..LeafAttrs::ram(Perms::RW) };
/// let m = WidenOnly.merge(&was, &LeafAttrs::ram(Perms::READ));
/// assert_eq!((m.perms, m.dirty), (Perms::RW, true));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct WidenOnly;

impl RefaultRule for WidenOnly {
    #[inline]
    fn merge(&self, was: &LeafAttrs, want: &LeafAttrs) -> LeafAttrs {
        let mut a = *want;
        a.perms |= was.perms;
        a.accessed |= was.accessed;
        a.dirty |= was.dirty && a.perms.contains(Perms::WRITE);
        a
    }
}

impl<T: Fn(&LeafAttrs, &LeafAttrs) -> LeafAttrs> RefaultRule for T {
    #[inline]
    fn merge(&self, was: &LeafAttrs, want: &LeafAttrs) -> LeafAttrs {
        self(was, want)
    }
}

impl<F: Format, A: FrameAllocator> PageTable<F, A> {
    /// Map `len` bytes at `gpa` to `m.pa..` with leaves of `m.size`, replacing whatever was
    /// there. Huge leaves in the way are split (same translation) first; tables in the way of a
    /// huge leaf are detached. Obligations go into `batch`; `tlb` is called for immediate
    /// invalidations on break-before-make formats.
    ///
    /// # Errors
    /// [`PtError::LeafNotAllowed`], [`PtError::Misaligned`], [`PtError::OutputTooWide`] or
    /// [`PtError::OutOfRange`] for a bad request (nothing changed); [`PtError::OutOfFrames`]
    /// part-way (what was done is consistent and its obligations are in `batch`).
    pub fn map(
        &mut self,
        gpa: Gpa,
        len: u64,
        m: &Mapping,
        batch: &mut FlushBatch,
        tlb: &dyn Tlb,
    ) -> Result<(), PtError> {
        let gpa = gpa.0;
        self.check_mapping(m)?;
        self.check_range(gpa, len, m.size)?;
        if len == m.size.bytes() {
            // One leaf where every table exists and the entry is empty: a store and the counts.
            let target = m.size.level();
            let (node, level, above) = self.descend_point(gpa, target, true);
            if level == target {
                let slot = node.slot(node.index_of(gpa));
                if !F::is_present(slot.load_relaxed()) {
                    slot.store(F::leaf(level, m.pa, &m.attrs));
                    Self::count_exclusive_at(above.map(|(p, _)| p), 1);
                    self.count_leaves(gpa, level, 1);
                    return Ok(());
                }
            }
        }
        let mut d = Delta::default();
        let r = self.map_walk(
            gpa,
            gpa + len,
            m,
            &mut Retire { batch, d: &mut d, visit: None, freeze: false, accessed: false },
            tlb,
        );
        self.apply(gpa, &d);
        r
    }

    /// The walk of [`map`](Self::map): down to the leaf level (creating tables, splitting huge
    /// leaves), then each run of leaves in one table written in one go; a table this walk just
    /// linked is known to be zero and is written without reading.
    fn map_walk(
        &self,
        start: u64,
        end: u64,
        m: &Mapping,
        r: &mut Retire<'_, '_>,
        tlb: &dyn Tlb,
    ) -> Result<(), PtError> {
        let target = m.size.level();
        let offset = m.pa.wrapping_sub(start);
        // The attributes are the same for every leaf: encode them once.
        let tmpl = F::leaf_template(target, &m.attrs);
        let mut c = self.cursor(start, end);
        while !c.is_done() {
            let level = c.level();
            if level == target {
                let (node, n, base, step) = (c.node(), c.run_len(), c.base(), c.entry_bytes());
                let first = node.index_of(base);
                let mut pa = base.wrapping_add(offset);
                let added = if c.is_fresh() {
                    // Stores only, no loads, the output address stepped rather than multiplied.
                    node.store_run(first, n, |_| {
                        let leaf = F::with_addr(level, &tmpl, pa);
                        pa = pa.wrapping_add(step);
                        leaf
                    });
                    n
                } else {
                    let (mut added, mut gpa) = (0, base);
                    for i in first..first + n {
                        let slot = node.slot(i);
                        let (old, new) = (slot.load_relaxed(), F::with_addr(level, &tmpl, pa));
                        if F::is_present(old) {
                            added += !F::is_leaf(level, old) as usize;
                            Self::replace_live(slot, old, new, gpa, tlb);
                            self.retire(level, gpa, old, r);
                        } else {
                            slot.store(new);
                            added += 1;
                        }
                        (pa, gpa) = (pa.wrapping_add(step), gpa + step);
                    }
                    added
                };
                r.d.leaves[level as usize] += n as i64;
                Self::count_exclusive(&c, added as i64);
                c.advance(n);
                continue;
            }
            let slot = c.slot();
            let old = if c.is_fresh() { 0 } else { slot.load_relaxed() };
            if !F::is_present(old) {
                let (pa, child) = self.alloc_node(level - 1)?;
                slot.store(F::table(pa));
                r.d.tables += 1;
                c.down_new(child, true);
            } else if F::is_leaf(level, old) {
                let (child, entry) = self.build_split(level, old)?;
                Self::replace_live(slot, old, entry, c.base(), tlb);
                r.d.split(level);
                Self::count_exclusive(&c, -1);
                c.down_new(child, false);
            } else {
                c.down(old);
            }
        }
        Ok(())
    }

    /// Install one leaf from the fault path, concurrently with other shared operations, merging
    /// a refault with [`WidenOnly`]: [`install_with`](Self::install_with).
    ///
    /// # Errors
    /// As [`install_with`](Self::install_with).
    #[inline]
    pub fn install(&self, gpa: Gpa, m: &Mapping, batch: &mut FlushBatch, tlb: &dyn Tlb) -> Result<Installed, PtError> {
        self.install_with(gpa, m, &WidenOnly, batch, tlb)
    }

    /// Install one leaf from the fault path, concurrently with other shared operations.
    ///
    /// Missing tables are created with compare-and-swap; a huge leaf in the way is split into a
    /// full child table; a table where the leaf goes is replaced (its subtree frozen and detached
    /// into `batch`, with a flush of the whole block). A leaf with the same output already
    /// present gets the attributes `rule` merges (no change: left alone).
    ///
    /// # Errors
    /// [`PtError::Busy`] when a frozen entry is on the path (retry the fault);
    /// [`PtError::OutOfFrames`]; the errors of a bad request as for [`map`](Self::map).
    #[inline]
    pub fn install_with(
        &self,
        gpa: Gpa,
        m: &Mapping,
        rule: &impl RefaultRule,
        batch: &mut FlushBatch,
        tlb: &dyn Tlb,
    ) -> Result<Installed, PtError> {
        let gpa = gpa.0;
        self.check_mapping(m)?;
        let base = m.size.align_down(gpa);
        self.check_range(base, m.size.bytes(), m.size)?;
        // The common fault: every table on the way exists and the leaf's entry is empty. Only
        // loads on the way down, one compare-and-swap for the leaf; anything else (a table to
        // create, a leaf to split or replace, a refault, a lost race) is the general walk,
        // which starts again from the root (this one changed nothing).
        let target = m.size.level();
        let (node, level, above) = self.descend_point(base, target, false);
        if level == target {
            let slot = node.slot(node.index_of(base));
            let old = slot.load();
            if old != F::FROZEN && !F::is_present(old) && slot.cas(old, F::leaf(level, m.pa, &m.attrs)).is_ok() {
                Self::count_shared(above, 1);
                self.count_leaves(base, level, 1);
                return Ok(Installed { new_leaf: true, ..Installed::default() });
            }
        }
        self.install_walk(base, m, rule, batch, tlb)
    }

    /// [`install_with`](Self::install_with) past its common case: the cursor's descent to one
    /// address, creating and splitting on the way.
    #[inline(never)]
    fn install_walk(
        &self,
        base: u64,
        m: &Mapping,
        rule: &impl RefaultRule,
        batch: &mut FlushBatch,
        tlb: &dyn Tlb,
    ) -> Result<Installed, PtError> {
        let target = m.size.level();
        let mut out = Installed::default();
        let mut d = Delta::default();
        // The cursor's descent to one address: it never moves sideways, so it keeps no path,
        // only the table it is in and the entry it came down through (with the value it read
        // or linked there, for the leaf count).
        let (mut node, mut level) = (self.root_node(), F::ROOT_LEVEL);
        let mut above = None;
        let r = loop {
            // A failed compare-and-swap comes back here and reads the same entry again.
            let slot = node.slot(node.index_of(base));
            let old = slot.load();
            if old == F::FROZEN {
                break Err(PtError::Busy);
            }
            if level == target {
                let new = F::leaf(level, m.pa, &m.attrs);
                if !F::is_present(old) {
                    if slot.cas(old, new).is_err() {
                        continue;
                    }
                    d.leaves[level as usize] += 1;
                    out.new_leaf = true;
                    Self::count_shared(above, 1);
                } else if F::is_leaf(level, old) && F::addr(level, old) == m.pa {
                    if !self.refault(Place { slot, level, base, old, new }, m, rule, batch) {
                        continue;
                    }
                } else if self.install_over(Place { slot, level, base, old, new }, m.size, None, batch, tlb, &mut d) {
                    out.new_leaf = true;
                    out.replaced_table = !F::is_leaf(level, old);
                    if out.replaced_table {
                        Self::count_shared(above, 1);
                    }
                } else {
                    continue;
                }
                break Ok(());
            }
            if !F::is_present(old) {
                let (pa, child) = match self.alloc_node(level - 1) {
                    Ok(child) => child,
                    Err(err) => break Err(err),
                };
                let entry = F::table(pa);
                if slot.cas(old, entry).is_err() {
                    self.free_unlinked(pa);
                    continue;
                }
                d.tables += 1;
                out.tables_allocated += 1;
                out.new_table_levels |= 1 << level;
                above = Some((slot, entry));
                (node, level) = (child, level - 1);
            } else if F::is_leaf(level, old) {
                let (child, entry) = match self.split_live(slot, old, base, tlb) {
                    Ok(Some(split)) => split,
                    Ok(None) => continue,
                    Err(err) => break Err(err),
                };
                d.split(level);
                out.splits += 1;
                out.tables_allocated += 1;
                out.new_table_levels |= 1 << level;
                Self::count_shared(above, -1);
                above = Some((slot, entry));
                (node, level) = (child, level - 1);
            } else {
                above = Some((slot, old));
                (node, level) = (self.child_node(level, old), level - 1);
            }
        };
        self.apply(base, &d);
        r.map(|()| out)
    }
}

/// Where [`PageTable::install_with`] puts its leaf: the entry, its level and block, the value
/// just read there and the leaf to write.
pub(super) struct Place<'t> {
    pub(super) slot: Slot<'t>,
    pub(super) level: Level,
    pub(super) base: u64,
    pub(super) old: u64,
    pub(super) new: u64,
}

impl<F: Format, A: FrameAllocator> PageTable<F, A> {
    /// A refault (a leaf with the same output in place): merge with `rule`, never narrow
    /// (narrowing is exclusive and needs a flush). False: the entry changed, read it again.
    #[cold]
    #[inline(never)]
    fn refault(&self, p: Place<'_>, m: &Mapping, rule: &impl RefaultRule, batch: &mut FlushBatch) -> bool {
        let was = match F::decode(p.level, p.old) {
            Pte::Leaf { attrs, .. } => Some(attrs),
            _ => None,
        };
        let new = was.map_or(p.new, |was| F::leaf(p.level, m.pa, &rule.merge(&was, &m.attrs)));
        if p.old != new {
            if p.slot.cas(p.old, new).is_err() {
                return false;
            }
            if was.is_some_and(|was| m.attrs.mem_type != was.mem_type) {
                batch.add(Gpa(p.base), m.size.bytes(), m.size);
            }
        }
        true
    }

    /// A table (or a leaf with another output) is where the leaf goes: lock the entry by
    /// freezing it, retire the old content (frozen, into the batch), then publish the leaf.
    /// False: the entry changed, read it again.
    #[cold]
    #[inline(never)]
    ///
    /// With `collapsed` (a table collapsed in place), the leaf written is that mapping, accessed
    /// if it or any leaf of the old subtree was.
    pub(super) fn install_over(
        &self,
        p: Place<'_>,
        size: PageSize,
        collapsed: Option<&Mapping>,
        batch: &mut FlushBatch,
        tlb: &dyn Tlb,
        d: &mut Delta,
    ) -> bool {
        if p.slot.cas(p.old, F::FROZEN).is_err() {
            return false;
        }
        let mut local = FlushBatch::new();
        let mut r = Retire { batch: &mut local, d, visit: None, freeze: true, accessed: false };
        self.retire(p.level, p.base, p.old, &mut r);
        let accessed = r.accessed;
        let new = match collapsed {
            Some(m) => F::leaf(p.level, m.pa, &LeafAttrs { accessed: m.attrs.accessed || accessed, ..m.attrs }),
            None => p.new,
        };
        if F::BREAK_BEFORE_MAKE {
            if local.is_all() {
                tlb.flush_range(&FlushRange { gpa: Gpa(p.base), len: size.bytes(), size: PageSize::Size4K });
            }
            for r in local.ranges() {
                tlb.flush_range(r);
            }
            for det in local.take_detached() {
                batch.push_detached(det);
            }
        } else {
            batch.merge(local);
        }
        p.slot.store(new);
        d.leaves[p.level as usize] += 1;
        true
    }
}
