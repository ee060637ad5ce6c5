//! The page-table tree and every operation on it.
//!
//! # Protocol (read this before changing anything here)
//!
//! Entries are `AtomicU64`s in frames from the [`FrameAllocator`]. Two kinds of operations:
//!
//! * **Shared** (`&self`): [`PageTable::install`] (the fault path), [`PageTable::translate`],
//!   `PageTable::hw_walk` (feature `sim`), [`PageTable::for_each_leaf`], [`PageTable::test_young`],
//!   [`PageTable::clear_young`], [`PageTable::split_range_shared`] (eager split) and
//!   [`PageTable::collapse_range`] (in-place recovery). Any number run at once, with each other and with hardware
//!   walkers. Every change is a compare-and-swap from the value just read; losing a race means
//!   reloading the entry (or returning [`PtError::Busy`]), never overwriting someone else's change.
//! * **Exclusive** (`&mut self`): map, unmap, protect, harvest, split. The type system
//!   guarantees no shared operation runs at the same time (the MMU holds its lock for write), so
//!   these use plain atomic stores. Hardware walkers still run: every store publishes a complete
//!   entry with release ordering, and child tables are filled before they are linked.
//!
//! The **frozen** value ([`Format::FROZEN`]) marks an entry a thread is changing: not present to
//! hardware, and a shared operation that meets it backs off with [`PtError::Busy`]. An entry is
//! frozen (1) while a table is being replaced by a leaf: the installer swaps every entry of the
//! old subtree to frozen, so a racing installer that still holds a pointer into that subtree
//! fails its compare-and-swap instead of installing into a table that is no longer reachable;
//! and (2) for break-before-make formats, between "break" and "make".
//!
//! **TLB obligations** are values. Every operation that removes or narrows something the TLB may
//! cache records it in the caller's [`FlushBatch`], and every page-table page it unlinks goes
//! into the batch as a [`Detached`] frame, to be released with [`PageTable::free_detached`] after
//! the flush and after every software walker that could hold it has left. Where the format needs
//! break-before-make ([`Format::BREAK_BEFORE_MAKE`]), a size or output change of a live entry
//! writes the invalid (frozen) entry, calls the caller's [`Tlb`](crate::Tlb) to invalidate the entry *now*,
//! then writes the new entry; formats without that rule replace the entry in place and defer the
//! flush to the batch (x86 tolerates the old and new translation coexisting until then, because
//! both translate to the same page).
//!
//! Splitting a huge leaf always produces a *fully populated* child table with the same
//! translation, so no translation ever disappears because of a split.
//!
//! **Per-table leaf counts.** Where the format has room ([`Format::TABLE_LEAVES_SHIFT`]), a
//! table entry also records how many present leaves the table it points to holds. Exclusive
//! operations keep it with an atomic add on the parent entry; shared ones with a
//! compare-and-swap from the value just read, and only while the parent still points to the
//! same table (a table frozen or replaced meanwhile is counted, by reading, by whoever detached
//! it). So an unmap that covers a whole leaf table detaches it without reading its 512 entries,
//! and [`PageTable::counts`] stays exact; [`PageTable::recount`] checks every recorded count.
//!
//! **Structure.** [`Node`](crate::node) is the only place raw entries are read or written; the
//! [`Cursor`](crate::cursor) is the one walk, and every operation below is a loop over it:
//! `map.rs` (map, install), `unmap.rs` (unmap and detaching), `update.rs` (protect, attribute
//! updates, dirty harvest, aging), `split.rs` (split, split_range, collapse_range), `query.rs`
//! (translate, iterate, recount).

mod map;
mod query;
mod split;
mod unmap;
mod update;

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::addr::Gpa;
use crate::attrs::LeafAttrs;
use crate::cursor::Cursor;
use crate::flush::{Detached, FlushRange, Tlb};
use crate::format::{Format, Pte};
use crate::frame::FrameAllocator;
use crate::node::{Node, Slot};
use crate::size::{level_bytes, Level, PageSize, ENTRIES_PER_TABLE};

pub use map::{RefaultRule, WidenOnly};
pub(crate) use unmap::Retire;

/// Errors of page-table operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PtError {
    /// An address or length is not aligned to the leaf size.
    #[error("address or length {value:#x} is not aligned to {size}")]
    Misaligned {
        /// The offending value.
        value: u64,
        /// Required alignment.
        size: PageSize,
    },
    /// The guest-physical range does not fit the format's input address width.
    #[error("guest-physical range {start:#x}..{end:#x} exceeds the {bits}-bit input space")]
    OutOfRange {
        /// Range start.
        start: Gpa,
        /// Range end (exclusive).
        end: Gpa,
        /// Input address width of the format.
        bits: u32,
    },
    /// The output address does not fit the format's output width.
    #[error("output address {pa:#x} exceeds the {bits}-bit output space")]
    OutputTooWide {
        /// The output address.
        pa: u64,
        /// Output width of the format.
        bits: u32,
    },
    /// The format cannot place a leaf of this size.
    #[error("{size} leaves are not allowed by this format")]
    LeafNotAllowed {
        /// The requested size.
        size: PageSize,
    },
    /// The frame allocator is out of frames; the operation stopped part-way (everything done so
    /// far is consistent and its obligations are in the batch).
    #[error("out of page-table frames")]
    OutOfFrames,
    /// Another thread is changing an entry on the path; retry.
    #[error("entry busy: another thread is changing it")]
    Busy,
    /// No leaf of the given size maps this address.
    #[error("no {size} leaf maps {gpa:#x}")]
    NoLeaf {
        /// Address looked up.
        gpa: Gpa,
        /// Expected leaf size.
        size: PageSize,
    },
}

/// Progress of a bounded [`PageTable::collapse_range`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CollapseProgress {
    /// Where to resume, or `None` when the whole range has been walked.
    pub resume_at: Option<Gpa>,
    /// Tables replaced by huge leaves.
    pub collapsed: u64,
}

/// A leaf as found in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    /// Guest-physical address of the leaf's first byte.
    pub gpa: Gpa,
    /// Leaf size.
    pub size: PageSize,
    /// Output address of the leaf's first byte.
    pub pa: u64,
    /// Attributes.
    pub attrs: LeafAttrs,
}

/// What [`PageTable::translate`] finds for one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// Output address of the translated byte.
    pub pa: u64,
    /// Size of the leaf that translated it.
    pub size: PageSize,
    /// The leaf's attributes.
    pub attrs: LeafAttrs,
}

/// One mapping to install: output address, leaf size and attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    /// Output address of the first byte (aligned to `size`).
    pub pa: u64,
    /// Leaf size.
    pub size: PageSize,
    /// Leaf attributes.
    pub attrs: LeafAttrs,
}

/// Leaf and table-page counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Present leaves by size: `[4K, 2M, 1G]`.
    pub leaves: [u64; 3],
    /// Page-table pages in the tree, root frames included.
    pub table_pages: u64,
    /// Tables whose leaf count, kept in the entry pointing to them (see
    /// [`Format::TABLE_LEAVES_SHIFT`]), differs from the leaves they hold: found by
    /// [`PageTable::recount`], always 0 from [`PageTable::counts`].
    pub miscounted_tables: u64,
}

/// How [`PageTable::install`] changed the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Installed {
    /// A new leaf now translates the address (false: an identical leaf was already there, or
    /// only its attributes changed).
    pub new_leaf: bool,
    /// Huge leaves split into full child tables on the way down.
    pub splits: u32,
    /// A table was replaced by this leaf (its subtree is detached in the batch).
    pub replaced_table: bool,
    /// Page-table pages allocated.
    pub tables_allocated: u32,
    /// Levels whose entry on the path got a new table from this install (created, or a huge
    /// leaf split): bit `l` for the entry at level `l`. KVM's NX huge-page tracking marks
    /// exactly these tables.
    pub new_table_levels: u8,
}

/// Progress of a bounded [`PageTable::split_range`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SplitProgress {
    /// Where to resume, or `None` when the whole range is split.
    pub resume_at: Option<Gpa>,
    /// Leaves split.
    pub splits: u64,
    /// Page-table pages allocated.
    pub tables_allocated: u64,
}

/// Local change to the counters, applied once per operation.
#[derive(Default)]
pub(crate) struct Delta {
    pub(crate) leaves: [i64; 3],
    pub(crate) tables: i64,
}

impl Delta {
    /// A huge leaf at `level` became a table of 512 leaves one level down.
    fn split(&mut self, level: Level) {
        self.leaves[level as usize] -= 1;
        self.leaves[level as usize - 1] += ENTRIES_PER_TABLE as i64;
        self.tables += 1;
    }
}

/// Counter stripes: concurrent faults on different 2 MiB blocks update different cache lines.
const STRIPES: usize = 8;

/// One stripe of the leaf and table counters, alone on its cache line.
#[repr(align(64))]
#[derive(Default)]
struct Stripe {
    leaves: [AtomicI64; 3],
    tables: AtomicI64,
}

#[inline]
fn stripe_of(gpa: u64) -> usize {
    // A multiplicative hash of the 2 MiB block: vCPUs working through regions a power of two
    // apart (in lockstep, as benchmarks do) still land on different stripes.
    ((gpa >> 21).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 61) as usize % STRIPES
}

/// Where the root table's entries are, looked up once in [`PageTable::new`] (the root frame
/// never moves and is freed only in `Drop`), so walks skip one `frame_ptr` per call.
#[derive(Clone, Copy)]
struct RootPtr(NonNull<AtomicU64>);

// SAFETY: the pointer names `AtomicU64` entries of the table's root frame, which lives as long as
// the table; every access through it is atomic, so sending or sharing it is no different from
// sending or sharing the `&AtomicU64`s the table hands out.
unsafe impl Send for RootPtr {}
// SAFETY: as above.
unsafe impl Sync for RootPtr {}

/// A stage-2 page table of format `F` with frames from `A`.
pub struct PageTable<F: Format, A: FrameAllocator> {
    root: u64,
    root_ptr: RootPtr,
    alloc: A,
    stripes: [Stripe; STRIPES],
    _format: PhantomData<F>,
}

const ROOT_FRAMES_MAX: usize = 4;

/// Mask of the 10-bit leaf-count field of table entries (see [`Format::TABLE_LEAVES_SHIFT`]).
const LEAVES_FIELD: u64 = 0x3ff;

impl<F: Format, A: FrameAllocator> PageTable<F, A> {
    /// Frames in the root table.
    pub const ROOT_FRAMES: usize = F::ROOT_ENTRIES / ENTRIES_PER_TABLE;

    /// An empty table: just the root.
    ///
    /// # Errors
    /// [`PtError::OutOfFrames`] when the allocator has no frames for the root.
    pub fn new(alloc: A) -> Result<Self, PtError> {
        debug_assert!(Self::ROOT_FRAMES <= ROOT_FRAMES_MAX);
        let root = alloc.alloc_zeroed(Self::ROOT_FRAMES).ok_or(PtError::OutOfFrames)?;
        let stripes: [Stripe; STRIPES] = Default::default();
        stripes[0].tables.store(Self::ROOT_FRAMES as i64, Ordering::Relaxed);
        Ok(PageTable { root: root.pa, root_ptr: RootPtr(root.ptr), alloc, stripes, _format: PhantomData })
    }

    /// Physical address of the root table (what goes into EPTP / nCR3 / VTTBR / hgatp).
    pub fn root_pa(&self) -> u64 {
        self.root
    }

    /// The frame allocator.
    pub fn allocator(&self) -> &A {
        &self.alloc
    }

    /// Bytes of guest-physical input space.
    pub fn input_limit(&self) -> u64 {
        1u64 << F::INPUT_BITS
    }

    // ---- nodes --------------------------------------------------------------------------

    /// The root table.
    #[inline]
    pub(crate) fn root_node(&self) -> Node<'_> {
        // SAFETY: the root frames (`ROOT_ENTRIES` entries) live as long as `self`.
        unsafe { Node::new(self.root_ptr.0, F::ROOT_ENTRIES, F::ROOT_LEVEL) }
    }

    /// The table that `raw`, a table entry at `level` read from this tree, points to.
    #[inline]
    pub(crate) fn child_node(&self, level: Level, raw: u64) -> Node<'_> {
        self.table_node(F::addr(level, raw), level - 1)
    }

    /// The table at `pa` and `level`: a table of this tree (or one an operation unlinked and
    /// has not freed), never the root. Callers only pass addresses read from entries of the
    /// tree or of its detached subtrees.
    #[inline]
    fn table_node(&self, pa: u64, level: Level) -> Node<'_> {
        // SAFETY: `pa` names a table of this tree or one an operation unlinked and has not
        // freed (see above): frames leave only through `free_detached`, whose contract is that
        // no operation still holds them, or `Drop`. Only roots span several frames, and a root
        // is never a child: 512 entries.
        unsafe { Node::new(self.alloc.frame_ptr(pa), ENTRIES_PER_TABLE, level) }
    }

    /// Whether `raw`, a present table entry at `level`, points to `table`.
    #[inline]
    fn points_to(&self, level: Level, raw: u64, table: &Node<'_>) -> bool {
        F::is_present(raw) && !F::is_leaf(level, raw) && self.child_node(level, raw).same(table)
    }

    /// A zeroed table for `level`, not linked anywhere yet (its address, and a handle).
    #[inline]
    fn alloc_node(&self, level: Level) -> Result<(u64, Node<'_>), PtError> {
        let f = self.alloc.alloc_zeroed(1).ok_or(PtError::OutOfFrames)?;
        // SAFETY: a frame just allocated (512 entries), freed only by this table.
        Ok((f.pa, unsafe { Node::new(f.ptr, ENTRIES_PER_TABLE, level) }))
    }

    /// Give back a table that was never linked.
    #[inline]
    fn free_unlinked(&self, pa: u64) {
        // SAFETY: the frame was never linked; only this thread knows it.
        unsafe { self.alloc.free(pa, 1) };
    }

    /// A cursor over `start..end` of the tree.
    #[inline]
    pub(crate) fn cursor(&self, start: u64, end: u64) -> Cursor<'_, F, A> {
        Cursor::new(self, start, end)
    }

    // ---- per-table leaf counts ----------------------------------------------------------

    /// A table entry for `pa` recording `leaves` present leaves in that table.
    #[inline]
    fn table_entry(pa: u64, leaves: u64) -> u64 {
        match F::TABLE_LEAVES_SHIFT {
            Some(shift) => F::table(pa) | (leaves << shift),
            None => F::table(pa),
        }
    }

    /// The number of present leaves a table entry records for its table, where the format
    /// keeps one.
    #[inline]
    pub(crate) fn table_leaves(raw: u64) -> Option<u64> {
        F::TABLE_LEAVES_SHIFT.map(|shift| (raw >> shift) & LEAVES_FIELD)
    }

    /// Add `n` to the leaf count in the entry pointing to the cursor's table (its parent), a
    /// table entry that only this (exclusive) operation changes; hardware setting its accessed
    /// bit commutes with the add.
    #[inline]
    fn count_exclusive(c: &Cursor<'_, F, A>, n: i64) {
        if let (Some(shift), true) = (F::TABLE_LEAVES_SHIFT, n != 0) {
            if let Some(p) = c.parent() {
                p.fetch_add((n << shift) as u64);
            }
        }
    }

    /// [`count_exclusive`](Self::count_exclusive) for a table reached by a descent that kept
    /// only the entry it came down through.
    #[inline]
    fn count_exclusive_at(parent: Option<Slot<'_>>, n: i64) {
        if let (Some(shift), Some(p)) = (F::TABLE_LEAVES_SHIFT, parent) {
            p.fetch_add((n << shift) as u64);
        }
    }

    /// Descend from the root towards `gpa` through present tables, down to `target` at most:
    /// the table reached, its level and the entry that points to it (`None` at the root). The
    /// point operations' walk: no path kept, loads only.
    #[inline(always)]
    fn descend_point(&self, gpa: u64, target: Level, relaxed: bool) -> (Node<'_>, Level, Option<(Slot<'_>, u64)>) {
        let (mut node, mut level, mut above) = (self.root_node(), F::ROOT_LEVEL, None);
        while level > target {
            let slot = node.slot(node.index_of(gpa));
            let raw = if relaxed { slot.load_relaxed() } else { slot.load() };
            // The frozen value is not present: it stops here too.
            if !F::is_present(raw) || F::is_leaf(level, raw) {
                break;
            }
            above = Some((slot, raw));
            (node, level) = (self.child_node(level, raw), level - 1);
        }
        (node, level, above)
    }

    /// Add `n` to the leaf count in `parent` under the shared lock, where `seen` is the value
    /// the walk read there (or linked) on its way down: a compare-and-swap from that value, and
    /// on failure from the value now there, but only while `parent` still points to the same
    /// table (a table frozen or replaced meanwhile is being detached and counted, by reading,
    /// by whoever detaches it).
    #[inline]
    fn count_shared(parent: Option<(Slot<'_>, u64)>, n: i64) {
        let (Some(shift), Some((p, seen))) = (F::TABLE_LEAVES_SHIFT, parent) else { return };
        let mut raw = seen;
        while let Err(now) = p.cas(raw, raw.wrapping_add((n << shift) as u64)) {
            let level = p.level();
            if !F::is_present(now) || F::is_leaf(level, now) || F::addr(level, now) != F::addr(level, seen) {
                return;
            }
            raw = now;
        }
    }

    /// [`count_shared`](Self::count_shared) for the table the cursor is in, from the value its
    /// parent entry holds now (for walks that have climbed since they came down).
    #[inline]
    fn count_shared_here(&self, c: &Cursor<'_, F, A>, n: i64) {
        if let (Some(_), Some(p)) = (F::TABLE_LEAVES_SHIFT, c.parent()) {
            let (seen, level) = (p.load(), p.level());
            if self.points_to(level, seen, &c.node()) {
                Self::count_shared(Some((p, seen)), n);
            }
        }
    }

    // ---- shared helpers -----------------------------------------------------------------

    /// Add `n` leaves at `level` to the counters of the stripe for `gpa` (one leaf's change,
    /// without a [`Delta`]).
    #[inline]
    fn count_leaves(&self, gpa: u64, level: Level, n: i64) {
        self.stripes[stripe_of(gpa)].leaves[level as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Add a change to the counters of the stripe for `gpa`.
    fn apply(&self, gpa: u64, d: &Delta) {
        let s = &self.stripes[stripe_of(gpa)];
        for (c, v) in s.leaves.iter().zip(d.leaves) {
            if v != 0 {
                c.fetch_add(v, Ordering::Relaxed);
            }
        }
        if d.tables != 0 {
            s.tables.fetch_add(d.tables, Ordering::Relaxed);
        }
    }

    fn check_range(&self, gpa: u64, len: u64, size: PageSize) -> Result<(), PtError> {
        if !size.is_aligned(gpa) {
            return Err(PtError::Misaligned { value: gpa, size });
        }
        if !size.is_aligned(len) {
            return Err(PtError::Misaligned { value: len, size });
        }
        match gpa.checked_add(len) {
            Some(end) if end <= self.input_limit() => Ok(()),
            _ => Err(PtError::OutOfRange { start: Gpa(gpa), end: Gpa(gpa.wrapping_add(len)), bits: F::INPUT_BITS }),
        }
    }

    fn check_mapping(&self, m: &Mapping) -> Result<(), PtError> {
        if !F::leaf_allowed(m.size.level()) {
            return Err(PtError::LeafNotAllowed { size: m.size });
        }
        if !m.size.is_aligned(m.pa) {
            return Err(PtError::Misaligned { value: m.pa, size: m.size });
        }
        if F::OUTPUT_BITS < 64 && m.pa >> F::OUTPUT_BITS != 0 {
            return Err(PtError::OutputTooWide { pa: m.pa, bits: F::OUTPUT_BITS });
        }
        Ok(())
    }

    /// Walk `c` down to `level` on the path to its address; `None` (the cursor wherever it
    /// stopped) when a leaf, a frozen or an empty entry comes first.
    #[inline]
    fn descend_to<'t>(c: &mut Cursor<'t, F, A>, level: Level) -> Option<Slot<'t>> {
        while c.level() > level {
            let raw = c.slot().load();
            if !F::is_present(raw) || F::is_leaf(c.level(), raw) {
                return None;
            }
            c.down(raw);
        }
        Some(c.slot())
    }

    /// Call `f(gpa, level, slot, raw)` for every present leaf overlapping `start..end`, in
    /// address order (`raw`: the value the walk read). The entries of each table are read as one
    /// run; the cursor moves once per run and steps down at the first table entry.
    #[inline]
    fn for_each_leaf_slot(&self, start: u64, end: u64, mut f: impl FnMut(u64, Level, Slot<'_>, u64)) {
        let mut c = self.cursor(start, end);
        while !c.is_done() {
            let (node, n, level, step) = (c.node(), c.run_len(), c.level(), c.entry_bytes());
            let first = node.index_of(c.gpa());
            let mut gpa = c.base();
            let mut table = None;
            for i in 0..n {
                let slot = node.slot(first + i);
                let raw = slot.load();
                if F::is_present(raw) {
                    if !F::is_leaf(level, raw) {
                        table = Some((i, raw));
                        break;
                    }
                    f(gpa, level, slot, raw);
                }
                gpa += step;
            }
            match table {
                Some((i, raw)) => {
                    c.advance(i);
                    c.down(raw);
                }
                None => c.advance(n),
            }
        }
    }

    /// A fully populated child table with the same translation as the huge leaf `raw` at
    /// `level`, not yet linked, and the entry that links it (recording its 512 leaves).
    fn build_split(&self, level: Level, raw: u64) -> Result<(Node<'_>, u64), PtError> {
        // The entry's table address is `F::addr(level, entry)`.
        let Pte::Leaf { pa, attrs } = F::decode(level, raw) else { unreachable!("build_split on a non-leaf") };
        let (child, node) = self.alloc_node(level - 1)?;
        let step = level_bytes(level - 1);
        let tmpl = F::leaf_template(level - 1, &attrs);
        node.fill_unlinked(|i| F::with_addr(level - 1, &tmpl, pa + i as u64 * step));
        Ok((node, Self::table_entry(child, ENTRIES_PER_TABLE as u64)))
    }

    /// Split the live huge leaf `old` in `slot` (its block contains `gpa`) into a full child
    /// table with the same translation, under the shared lock: the child is built first, then
    /// linked with a compare-and-swap from `old` (through the frozen value, with the TLB
    /// flushed in between, where the format needs break-before-make). `Ok(None)`: the entry
    /// changed under us and nothing was linked; read it again.
    fn split_live(
        &self,
        slot: Slot<'_>,
        old: u64,
        gpa: u64,
        tlb: &dyn Tlb,
    ) -> Result<Option<(Node<'_>, u64)>, PtError> {
        let level = slot.level();
        let (child, entry) = self.build_split(level, old)?;
        let lock = if F::BREAK_BEFORE_MAKE { F::FROZEN } else { entry };
        if slot.cas(old, lock).is_err() {
            self.free_unlinked(F::addr(level, entry));
            return Ok(None);
        }
        if F::BREAK_BEFORE_MAKE {
            let size = PageSize::from_level(level).unwrap();
            tlb.flush_range(&FlushRange { gpa: Gpa(size.align_down(gpa)), len: size.bytes(), size });
            slot.store(entry);
        }
        Ok(Some((child, entry)))
    }

    /// Write `new` over the live entry at `slot` (old value `old`), honouring
    /// break-before-make when the format needs it.
    fn replace_live(slot: Slot<'_>, old: u64, new: u64, gpa: u64, tlb: &dyn Tlb) {
        if F::BREAK_BEFORE_MAKE && F::is_present(old) {
            let level = slot.level();
            slot.store(F::FROZEN);
            tlb.flush_range(&FlushRange {
                gpa: Gpa(gpa),
                len: level_bytes(level),
                size: Self::min_size_hint(level, old),
            });
        }
        slot.store(new);
    }

    fn min_size_hint(level: Level, old: u64) -> PageSize {
        if F::is_leaf(level, old) || level == 0 {
            PageSize::from_level(level).unwrap_or(PageSize::Size1G)
        } else {
            PageSize::Size4K
        }
    }

    /// Leaf and table-page counts, from counters kept by every operation.
    pub fn counts(&self) -> Counts {
        let sum = |f: &dyn Fn(&Stripe) -> i64| self.stripes.iter().map(f).sum::<i64>().max(0) as u64;
        Counts {
            leaves: [0, 1, 2].map(|i| sum(&|s| s.leaves[i].load(Ordering::Relaxed))),
            table_pages: sum(&|s| s.tables.load(Ordering::Relaxed)),
            miscounted_tables: 0,
        }
    }

    /// Release detached page-table pages: each [`Detached`] table and every table still linked
    /// below it (tables detached by a shared operation have frozen entries and are listed one
    /// by one). Leaf tables are never read; the frames go to the allocator in one
    /// [`FrameAllocator::free_frames`] call, with no heap allocation.
    ///
    /// # Safety
    /// The flush that retired every translation cached from these pages has completed, and no
    /// software walker (shared operation, simulated hardware walk) can still hold a pointer into
    /// them.
    pub unsafe fn free_detached(&self, detached: impl IntoIterator<Item = Detached>) {
        let mut roots = detached.into_iter();
        // Nothing detached (the per-page unmap): no call into the allocator.
        let Some(first) = roots.next() else { return };
        let mut frames =
            SubtreeFrames { pt: self, roots: core::iter::once(first).chain(roots), stack: [(0, 0, 0); 5], depth: 0 };
        // SAFETY: the caller guarantees no one reaches these frames any more; each was allocated
        // as a single frame by this table (only roots span several frames, and they are never
        // detached), and `SubtreeFrames` yields each table once, after its last read of it.
        unsafe { self.alloc.free_frames(&mut frames) };
    }
}

impl<F: Format, A: FrameAllocator> Drop for PageTable<F, A> {
    fn drop(&mut self) {
        let top = F::ROOT_LEVEL;
        let subtrees = self
            .root_node()
            .values()
            .filter(|&raw| F::is_present(raw) && !F::is_leaf(top, raw))
            .map(|raw| Detached { pa: F::addr(top, raw), level: top - 1, childless: false });
        // SAFETY: `&mut self` in drop: no walker holds the tree any more; every table below the
        // root goes once, with its whole subtree.
        unsafe { self.free_detached(subtrees) };
        // SAFETY: the root was allocated with ROOT_FRAMES frames in `new`; nothing refers to it.
        unsafe { self.alloc.free(self.root, Self::ROOT_FRAMES) };
    }
}

impl<F: Format, A: FrameAllocator> core::fmt::Debug for PageTable<F, A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PageTable")
            .field("format", &F::NAME)
            .field("root", &format_args!("{:#x}", self.root))
            .field("counts", &self.counts())
            .finish()
    }
}

/// The tables of detached subtrees, children before their parent, walked with a fixed stack (a
/// subtree is at most 5 levels deep) so freeing needs no heap.
struct SubtreeFrames<'a, F: Format, A: FrameAllocator, I: Iterator<Item = Detached>> {
    pt: &'a PageTable<F, A>,
    roots: I,
    /// `(table pa, level, next entry to look at)` from the subtree root down; level 0 also
    /// stands for a table known to have no children.
    stack: [(u64, Level, u16); 5],
    depth: usize,
}

impl<F: Format, A: FrameAllocator, I: Iterator<Item = Detached>> Iterator for SubtreeFrames<'_, F, A, I> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        'outer: loop {
            if self.depth == 0 {
                let d = self.roots.next()?;
                self.stack[0] = (d.pa, if d.childless { 0 } else { d.level }, 0);
                self.depth = 1;
            }
            let (pa, level, next) = &mut self.stack[self.depth - 1];
            if *level > 0 {
                let node = self.pt.table_node(*pa, *level);
                while (*next as usize) < ENTRIES_PER_TABLE {
                    let raw = node.slot(*next as usize).load_relaxed();
                    *next += 1;
                    if F::is_present(raw) && !F::is_leaf(*level, raw) {
                        let child = (F::addr(*level, raw), *level - 1, 0);
                        self.stack[self.depth] = child;
                        self.depth += 1;
                        continue 'outer;
                    }
                }
            }
            let done = *pa;
            self.depth -= 1;
            return Some(done);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::sync::Barrier;

    use super::*;
    use crate::attrs::{LeafAttrs, Perms};
    use crate::flush::{DetachedList, FlushBatch, NoTlb};
    use crate::format::{Arm64S2L0, Ept4, Npt, Sv48x4};
    use crate::SimFrameAllocator;

    const MIB: u64 = 1 << 20;

    fn m(pa: u64, size: PageSize) -> Mapping {
        Mapping { pa, size, attrs: LeafAttrs::ram(Perms::RW) }
    }

    /// Counters, recount and every table's recorded leaf count agree.
    fn check<F: Format>(pt: &PageTable<F, &SimFrameAllocator>, what: &str) {
        let r = pt.recount();
        assert_eq!(r.miscounted_tables, 0, "{} {what}: {r:?}", F::NAME);
        assert_eq!(r, pt.counts(), "{} {what}", F::NAME);
    }

    /// Every exclusive operation keeps the per-table leaf counts exact.
    fn exclusive_ops<F: Format>() {
        let frames = SimFrameAllocator::new(1 << 44, 256 * MIB);
        let mut pt = PageTable::<F, _>::new(&frames).unwrap();
        let mut b = FlushBatch::new();
        let tlb = &NoTlb;
        pt.map(Gpa(0), 6 * MIB, &m(1 << 40, PageSize::Size4K), &mut b, tlb).unwrap();
        check(&pt, "map 4K");
        pt.map(Gpa(8 * MIB), 4 * MIB, &m(1 << 41, PageSize::Size2M), &mut b, tlb).unwrap();
        pt.map(Gpa(1 << 30), 1 << 30, &m(1 << 42, PageSize::Size1G), &mut b, tlb).unwrap();
        check(&pt, "map 2M/1G");
        pt.split(Gpa(8 * MIB), PageSize::Size2M, tlb).unwrap();
        pt.split_range(Gpa(1 << 30), 4 * MIB, PageSize::Size4K, u64::MAX, tlb).unwrap();
        check(&pt, "split");
        pt.unmap(Gpa(4096), 8192, &mut b, None).unwrap();
        pt.unmap(Gpa(2 * MIB), 2 * MIB, &mut b, None).unwrap();
        pt.unmap(Gpa(8 * MIB + 4096), 4096, &mut b, None).unwrap();
        check(&pt, "unmap");
        // A 2M leaf over a partly filled 4K table, and 4K leaves over a 2M leaf.
        pt.map(Gpa(0), 2 * MIB, &m(1 << 43, PageSize::Size2M), &mut b, tlb).unwrap();
        pt.map(Gpa(10 * MIB), 8192, &m(1 << 43, PageSize::Size4K), &mut b, tlb).unwrap();
        check(&pt, "remap");
        let (mut want, mut made) = (|_: Gpa, size| Some(m(1 << 42, size)), |_: Gpa, _: &Mapping| {});
        let p = pt.collapse_range(Gpa(1 << 30), 2 * MIB, u64::MAX, &mut want, &mut made, &mut b, tlb).unwrap();
        assert_eq!((p.collapsed, p.resume_at), (1, None));
        check(&pt, "collapse");
        pt.unmap(Gpa(0), 2 << 30, &mut b, None).unwrap();
        check(&pt, "unmap all");
        assert_eq!(pt.counts().leaves, [0, 0, 0]);
        // SAFETY: no TLB or walker in this test.
        unsafe { pt.free_detached(b.into_detached()) };
    }

    #[test]
    fn exclusive_operations_keep_table_leaf_counts() {
        exclusive_ops::<Ept4>();
        exclusive_ops::<Npt>();
        exclusive_ops::<Arm64S2L0>();
        exclusive_ops::<Sv48x4>();
    }

    /// Faults from two threads into the same 2M blocks, one of them splitting huge leaves and
    /// replacing tables with huge leaves, under the shared lock: the recorded counts stay exact
    /// (a compare-and-swap on the parent entry per new leaf, skipped once the table is frozen).
    fn shared_ops<F: Format>() {
        let frames = SimFrameAllocator::new(1 << 44, 256 * MIB);
        let pt = PageTable::<F, _>::new(&frames).unwrap();
        let barrier = Barrier::new(3);
        let parked = spin::Mutex::new(DetachedList::new());
        std::thread::scope(|s| {
            for t in 0..2u64 {
                let (pt, barrier, parked) = (&pt, &barrier, &parked);
                s.spawn(move || {
                    barrier.wait();
                    let mut b = FlushBatch::new();
                    for round in 0..4u64 {
                        for i in 0..1024u64 {
                            // Interleaved pages of the same blocks.
                            let gpa = (i * 2 + t) * 4096;
                            let r = pt.install(Gpa(gpa), &m((1 << 40) + gpa, PageSize::Size4K), &mut b, &NoTlb);
                            assert!(matches!(r, Ok(_) | Err(PtError::Busy)), "{r:?}");
                        }
                        if t == 1 {
                            // Replace a block's table with a 2M leaf, then split it again.
                            let blk = (round % 4) * 2 * MIB;
                            let _ = pt.install(Gpa(blk), &m((1 << 40) + blk, PageSize::Size2M), &mut b, &NoTlb);
                            pt.split_range_shared(Gpa(blk), 2 * MIB, PageSize::Size4K, u64::MAX, &NoTlb).unwrap();
                        }
                    }
                    parked.lock().extend(b.into_detached());
                });
            }
            barrier.wait();
        });
        check(&pt, "shared");
        // SAFETY: every thread has left; no TLB in this test.
        unsafe { pt.free_detached(parked.into_inner()) };
    }

    #[test]
    fn shared_operations_keep_table_leaf_counts() {
        for _ in 0..8 {
            shared_ops::<Ept4>();
            shared_ops::<Arm64S2L0>();
        }
    }

    /// An unmap that covers a whole leaf table takes its leaves from the parent entry's count
    /// and reads none of them: a leaf cleared behind the count's back shows it (formats with no
    /// room for a count read the table instead).
    fn unmap_reads_no_leaf<F: Format>() {
        let frames = SimFrameAllocator::new(1 << 44, 64 * MIB);
        let mut pt = PageTable::<F, _>::new(&frames).unwrap();
        let mut b = FlushBatch::new();
        pt.map(Gpa(0), 4 * MIB, &m(1 << 40, PageSize::Size4K), &mut b, &NoTlb).unwrap();
        let mut c = pt.cursor(4096, 8192);
        let leaf = PageTable::<F, &SimFrameAllocator>::descend_to(&mut c, 0).unwrap();
        leaf.store(0);
        let miscounted = F::TABLE_LEAVES_SHIFT.is_some() as u64;
        assert_eq!(pt.recount().miscounted_tables, miscounted, "{}", F::NAME);
        pt.unmap(Gpa(0), 2 * MIB, &mut b, None).unwrap();
        let expect = if F::TABLE_LEAVES_SHIFT.is_some() { 512 } else { 513 };
        assert_eq!(pt.counts().leaves[0], expect, "{}", F::NAME);
        // SAFETY: no TLB or walker in this test.
        unsafe { pt.free_detached(b.into_detached()) };
    }

    #[test]
    fn whole_table_unmap_reads_the_count_not_the_leaves() {
        unmap_reads_no_leaf::<Ept4>();
        unmap_reads_no_leaf::<Npt>();
        unmap_reads_no_leaf::<Arm64S2L0>();
        unmap_reads_no_leaf::<Sv48x4>();
    }
}
