//! Installing leaves: [`PageTable::map`] (exclusive, a range) and [`PageTable::install`] (shared,
//! the fault path's one leaf).

use super::{Delta, Installed, Mapping, PageTable, PtError, Retire};
use crate::attrs::{LeafAttrs, Perms};
use crate::flush::{FlushBatch, FlushRange};
use crate::format::{Format, Pte};
use crate::frame::FrameAllocator;
use crate::size::{level_bytes, PageSize};

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
    /// huge leaf are detached. Obligations go into `batch`; `bbm` is called for immediate
    /// invalidations on break-before-make formats.
    ///
    /// # Errors
    /// [`PtError::LeafNotAllowed`], [`PtError::Misaligned`], [`PtError::OutputTooWide`] or
    /// [`PtError::OutOfRange`] for a bad request (nothing changed); [`PtError::OutOfFrames`]
    /// part-way (what was done is consistent and its obligations are in `batch`).
    pub fn map(
        &mut self,
        gpa: u64,
        len: u64,
        m: &Mapping,
        batch: &mut FlushBatch,
        bbm: &mut dyn FnMut(FlushRange),
    ) -> Result<(), PtError> {
        self.check_mapping(m)?;
        self.check_range(gpa, len, m.size)?;
        let mut d = Delta::default();
        let r = self.map_walk(gpa, gpa + len, m, &mut Retire { batch, d: &mut d, visit: None, freeze: false }, bbm);
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
        bbm: &mut dyn FnMut(FlushRange),
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
                let pa = |i: usize| base.wrapping_add(offset).wrapping_add(i as u64 * step);
                let added = if c.is_fresh() {
                    node.store_run(first, n, |i| F::with_addr(level, &tmpl, pa(i)));
                    n
                } else {
                    let mut added = 0;
                    for i in 0..n {
                        let slot = node.slot(first + i);
                        let (old, new) = (slot.load_relaxed(), F::with_addr(level, &tmpl, pa(i)));
                        if F::is_present(old) {
                            added += !F::is_leaf(level, old) as usize;
                            Self::replace_live(slot, old, new, base + i as u64 * step, bbm);
                            self.retire(level, base + i as u64 * step, old, r);
                        } else {
                            slot.store(new);
                            added += 1;
                        }
                    }
                    added
                };
                r.d.leaves[level as usize] += n as i64;
                Self::count_exclusive(c.parent(), added as i64);
                c.advance(n);
                continue;
            }
            let slot = c.slot();
            let old = if c.is_fresh() { 0 } else { slot.load_relaxed() };
            if !F::is_present(old) {
                let child = self.alloc_node(level - 1)?;
                slot.store(F::table(child.pa()));
                r.d.tables += 1;
                c.down_new(child, true);
            } else if F::is_leaf(level, old) {
                let (child, entry) = self.build_split(level, old)?;
                Self::replace_live(slot, old, entry, c.base(), bbm);
                r.d.split(level);
                Self::count_exclusive(c.parent(), -1);
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
    pub fn install(
        &self,
        gpa: u64,
        m: &Mapping,
        batch: &mut FlushBatch,
        bbm: &mut dyn FnMut(FlushRange),
    ) -> Result<Installed, PtError> {
        self.install_with(gpa, m, &WidenOnly, batch, bbm)
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
    pub fn install_with(
        &self,
        gpa: u64,
        m: &Mapping,
        rule: &impl RefaultRule,
        batch: &mut FlushBatch,
        bbm: &mut dyn FnMut(FlushRange),
    ) -> Result<Installed, PtError> {
        self.check_mapping(m)?;
        let base = m.size.align_down(gpa);
        self.check_range(base, m.size.bytes(), m.size)?;
        let target = m.size.level();
        let mut out = Installed::default();
        let mut d = Delta::default();
        let mut c = self.cursor(base, base + m.size.bytes());
        let r = loop {
            // A failed compare-and-swap comes back here and reads the same entry again.
            let (slot, level) = (c.slot(), c.level());
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
                    Self::count_shared(c.parent(), c.node().pa(), 1);
                } else if F::is_leaf(level, old) && F::addr(level, old) == m.pa {
                    // A refault: merge, never narrow (narrowing is exclusive and needs a flush).
                    let was = match F::decode(level, old) {
                        Pte::Leaf { attrs, .. } => Some(attrs),
                        _ => None,
                    };
                    let new = was.map_or(new, |was| F::leaf(level, m.pa, &rule.merge(&was, &m.attrs)));
                    if old != new {
                        if slot.cas(old, new).is_err() {
                            continue;
                        }
                        if was.is_some_and(|was| m.attrs.mem_type != was.mem_type) {
                            batch.add(base, m.size.bytes(), m.size);
                        }
                    }
                } else {
                    // A table (or a leaf with another output) is in the way: lock the entry by
                    // freezing it, retire the old content, then publish the leaf.
                    if slot.cas(old, F::FROZEN).is_err() {
                        continue;
                    }
                    out.replaced_table = !F::is_leaf(level, old);
                    let mut local = FlushBatch::new();
                    self.retire(
                        level,
                        base,
                        old,
                        &mut Retire { batch: &mut local, d: &mut d, visit: None, freeze: true },
                    );
                    if F::BREAK_BEFORE_MAKE {
                        if local.is_all() {
                            bbm(FlushRange { gpa: base, len: m.size.bytes(), size: PageSize::Size4K });
                        }
                        for r in local.ranges() {
                            bbm(*r);
                        }
                        for det in local.take_detached() {
                            batch.push_detached(det);
                        }
                    } else {
                        batch.merge(local);
                    }
                    slot.store(new);
                    d.leaves[level as usize] += 1;
                    out.new_leaf = true;
                    if out.replaced_table {
                        Self::count_shared(c.parent(), c.node().pa(), 1);
                    }
                }
                break Ok(());
            }
            if !F::is_present(old) {
                let child = match self.alloc_node(level - 1) {
                    Ok(child) => child,
                    Err(err) => break Err(err),
                };
                if slot.cas(old, F::table(child.pa())).is_err() {
                    self.free_unlinked(child.pa());
                    continue;
                }
                d.tables += 1;
                out.tables_allocated += 1;
                out.new_table_levels |= 1 << level;
                // Not fresh: other installers may fill it from now on.
                c.down_new(child, false);
            } else if F::is_leaf(level, old) {
                let (child, entry) = match self.build_split(level, old) {
                    Ok(split) => split,
                    Err(err) => break Err(err),
                };
                let lock = if F::BREAK_BEFORE_MAKE { F::FROZEN } else { entry };
                if slot.cas(old, lock).is_err() {
                    self.free_unlinked(child.pa());
                    continue;
                }
                if F::BREAK_BEFORE_MAKE {
                    let sz = level_bytes(level);
                    bbm(FlushRange { gpa: c.base(), len: sz, size: PageSize::from_level(level).unwrap() });
                    slot.store(entry);
                }
                d.split(level);
                out.splits += 1;
                out.tables_allocated += 1;
                out.new_table_levels |= 1 << level;
                Self::count_shared(c.parent(), c.node().pa(), -1);
                c.down_new(child, false);
            } else {
                c.down(old);
            }
        };
        self.apply(base, &d);
        r.map(|()| out)
    }
}
