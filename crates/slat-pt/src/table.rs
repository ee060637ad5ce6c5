//! The page-table tree and every operation on it.
//!
//! # Protocol (read this before changing anything here)
//!
//! Entries are `AtomicU64`s in frames from the [`FrameAllocator`]. Two kinds of operations:
//!
//! * **Shared** (`&self`): [`PageTable::install`] (the fault path), [`PageTable::translate`],
//!   [`PageTable::hw_walk`], [`PageTable::for_each_leaf`], [`PageTable::test_young`] and
//!   [`PageTable::clear_young`]. Any number run at once, with each other and with hardware
//!   walkers. Every change is a compare-and-swap from the value just read; losing a race means
//!   reloading the entry (or returning [`PtError::Busy`]), never overwriting someone else's change.
//! * **Exclusive** (`&mut self`): map, unmap, protect, harvest, split, collapse. The type system
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
//! writes the invalid (frozen) entry, calls the caller's `bbm` hook to invalidate the TLB *now*,
//! then writes the new entry; formats without that rule replace the entry in place and defer the
//! flush to the batch (x86 tolerates the old and new translation coexisting until then, because
//! both translate to the same page).
//!
//! Splitting a huge leaf always produces a *fully populated* child table with the same
//! translation, so no translation ever disappears because of a split.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use alloc::vec::Vec;

use crate::attrs::{LeafAttrs, Perms};
use crate::flush::{Detached, FlushBatch, FlushRange};
use crate::format::{Format, LeafTemplate, Pte};
use crate::frame::FrameAllocator;
use crate::size::{level_bytes, table_index, Level, PageSize, ENTRIES_PER_TABLE, PAGE_SIZE};

/// Errors of page-table operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
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
        start: u64,
        /// Range end (exclusive).
        end: u64,
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
        gpa: u64,
        /// Expected leaf size.
        size: PageSize,
    },
}

/// Why a table could not be collapsed into one leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CollapseError {
    /// The entry is not a table (already a leaf, or nothing mapped).
    #[error("no table to collapse at {gpa:#x}")]
    NotATable {
        /// Block address.
        gpa: u64,
    },
    /// A child is missing or is itself a table.
    #[error("child at {gpa:#x} is not a present leaf")]
    NotFull {
        /// First offending child.
        gpa: u64,
    },
    /// Children do not map one contiguous run.
    #[error("child at {gpa:#x} is not contiguous with its neighbours")]
    NotContiguous {
        /// First offending child.
        gpa: u64,
    },
    /// The run is contiguous but its start is not aligned to the new leaf size.
    #[error("output {pa:#x} is not aligned to {size}")]
    Misaligned {
        /// First child's output.
        pa: u64,
        /// Wanted leaf size.
        size: PageSize,
    },
    /// Children differ in permissions, memory type or software bits.
    #[error("child at {gpa:#x} has different attributes")]
    MixedAttrs {
        /// First offending child.
        gpa: u64,
    },
    /// The format cannot place a leaf of this size, or the size is 4K.
    #[error("{size} leaves are not allowed here")]
    LeafNotAllowed {
        /// The requested size.
        size: PageSize,
    },
}

/// A leaf as found in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    /// Guest-physical address of the leaf's first byte.
    pub gpa: u64,
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

/// Kind of guest access, for [`PageTable::hw_walk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Data read.
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Exec,
}

/// Why a hardware walk faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkFault {
    /// No present entry at this level (a frozen entry counts as not present).
    NotPresent {
        /// Level of the missing entry.
        level: Level,
    },
    /// A leaf of this size exists but does not permit the access.
    Permission {
        /// The leaf's size.
        size: PageSize,
    },
}

/// Result of a simulated hardware walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HwWalk {
    /// The translation, or the fault the hardware would raise.
    pub result: Result<Translation, WalkFault>,
    /// Entries read from memory during the walk.
    pub refs: u32,
}

/// Progress of a bounded [`PageTable::split_range`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SplitProgress {
    /// Where to resume, or `None` when the whole range is split.
    pub resume_at: Option<u64>,
    /// Leaves split.
    pub splits: u64,
    /// Page-table pages allocated.
    pub tables_allocated: u64,
}

/// Local change to the counters, applied once per operation.
#[derive(Default)]
struct Delta {
    leaves: [i64; 3],
    tables: i64,
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

impl<F: Format, A: FrameAllocator> PageTable<F, A> {
    /// Frames in the root table.
    pub const ROOT_FRAMES: usize = F::ROOT_ENTRIES / ENTRIES_PER_TABLE;

    /// An empty table: just the root.
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

    // ---- entry access -------------------------------------------------------------------

    #[inline]
    fn entries_at(level: Level) -> usize {
        if level == F::ROOT_LEVEL {
            F::ROOT_ENTRIES
        } else {
            ENTRIES_PER_TABLE
        }
    }

    /// Entries of the table at `pa`, which must be a table of this tree (or one an operation
    /// unlinked and has not freed): [`FrameAllocator::frame_ptr`] only answers for live frames.
    #[inline]
    fn table_ptr(&self, pa: u64) -> *const AtomicU64 {
        self.alloc.frame_ptr(pa).as_ptr()
    }

    /// Entries of the root table (cached: no `frame_ptr` call).
    #[inline]
    fn root_table(&self) -> *const AtomicU64 {
        self.root_ptr.0.as_ptr()
    }

    /// The walk shared by [`translate`](Self::translate) and
    /// [`translate_pa`](Self::translate_pa): the raw present leaf mapping `gpa` and its level.
    #[inline]
    fn walk_leaf(&self, gpa: u64) -> Option<(u64, Level)> {
        if gpa >= self.input_limit() {
            return None;
        }
        let mut t = self.root_table();
        let mut level = F::ROOT_LEVEL;
        loop {
            let raw = self.entry(t, table_index(gpa, level, Self::entries_at(level))).load(Ordering::Acquire);
            if raw == F::FROZEN || !F::is_present(raw) {
                return None;
            }
            if F::is_leaf(level, raw) {
                return Some((raw, level));
            }
            t = self.table_ptr(F::addr(level, raw));
            level -= 1;
        }
    }

    #[inline]
    fn entry(&self, table: *const AtomicU64, index: usize) -> &AtomicU64 {
        // SAFETY: `table` points at a live table of this tree (or one this operation unlinked
        // and has not freed) with more than `index` entries; frames are freed only through
        // `free_detached`, whose contract guarantees no operation still holds them.
        unsafe { &*table.add(index) }
    }

    fn alloc_table(&self) -> Result<u64, PtError> {
        Ok(self.alloc.alloc_zeroed(1).ok_or(PtError::OutOfFrames)?.pa)
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
            _ => Err(PtError::OutOfRange { start: gpa, end: gpa.wrapping_add(len), bits: F::INPUT_BITS }),
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

    /// A fully populated child table with the same translation as the huge leaf `raw` at
    /// `level`, not yet linked. Returns its physical address.
    fn build_split(&self, level: Level, raw: u64) -> Result<u64, PtError> {
        let Pte::Leaf { pa, attrs } = F::decode(level, raw) else { unreachable!("build_split on a non-leaf") };
        let child = self.alloc_table()?;
        let t = self.table_ptr(child);
        let step = level_bytes(level - 1);
        for i in 0..ENTRIES_PER_TABLE {
            let e = F::leaf(level - 1, pa + i as u64 * step, &attrs);
            self.entry(t, i).store(e, Ordering::Relaxed);
        }
        Ok(child)
    }

    /// Detach the subtree under the table at `pa` (level `level`, covering from `base`): count
    /// what was there and show each leaf to `visit`. Returns the smallest leaf level seen.
    ///
    /// `freeze` (shared operations): swap every entry to frozen, so a racing installer that still
    /// holds a pointer into the subtree fails its compare-and-swap; every table then goes into
    /// `batch` on its own (its frozen entries no longer lead to its children). Exclusive
    /// operations have no such racer: they only read, and [`Self::retire`] hands the subtree's
    /// root to `batch` whole. Either way hardware may still set A/D bits through cached
    /// translations until the flush: callers that care treat every writable leaf as dirty.
    #[allow(clippy::too_many_arguments)]
    fn detach_subtree<'v>(
        &self,
        pa: u64,
        level: Level,
        base: u64,
        freeze: bool,
        batch: &mut FlushBatch,
        d: &mut Delta,
        mut visit: Option<&mut (dyn FnMut(&Leaf) + 'v)>,
    ) -> Level {
        let t = self.table_ptr(pa);
        let mut min = level;
        let mut leaves = 0;
        for i in 0..ENTRIES_PER_TABLE {
            let e = self.entry(t, i);
            let old = if freeze { e.swap(F::FROZEN, Ordering::AcqRel) } else { e.load(Ordering::Relaxed) };
            if old == F::FROZEN || !F::is_present(old) {
                continue;
            }
            let gpa = base + i as u64 * level_bytes(level);
            if F::is_leaf(level, old) {
                leaves += 1;
                if let Some(v) = visit.as_deref_mut() {
                    if let Pte::Leaf { pa, attrs } = F::decode(level, old) {
                        v(&Leaf { gpa, size: PageSize::from_level(level).unwrap(), pa, attrs });
                    }
                }
            } else {
                let m =
                    self.detach_subtree(F::addr(level, old), level - 1, gpa, freeze, batch, d, visit.as_deref_mut());
                min = min.min(m);
            }
        }
        if leaves > 0 {
            d.leaves[level as usize] -= leaves;
            min = min.min(level);
        }
        d.tables -= 1;
        if freeze {
            // Frozen entries lead nowhere: this record frees this table alone.
            batch.push_detached(Detached { pa, level, childless: true });
        }
        min
    }

    /// [`Self::detach_subtree`] for exclusive operations with no leaf visitor: count what the
    /// subtree under the table at `pa` holds, and nothing else. A table is read once to count
    /// (one load and a few bit tests per entry, no decode, no address arithmetic) and once more
    /// only if it links to child tables. Returns the smallest leaf level seen and whether the
    /// table links to any child table.
    fn count_subtree(&self, pa: u64, level: Level, d: &mut Delta) -> (Level, bool) {
        let t = self.table_ptr(pa);
        d.tables -= 1;
        // SAFETY: `t` is a table of this tree that the caller just unlinked and nobody frees
        // before `free_detached`; detached tables are never roots, so it has 512 entries.
        let entries = unsafe { core::slice::from_raw_parts(t, ENTRIES_PER_TABLE) };
        if level == 0 {
            // The frozen value is never present, so it needs no test of its own.
            let present = entries.iter().map(|e| F::is_present(e.load(Ordering::Relaxed)) as i64).sum::<i64>();
            d.leaves[0] -= present;
            return (0, false);
        }
        let (mut present, mut tables) = (0i64, 0i64);
        for e in entries {
            let raw = e.load(Ordering::Relaxed);
            let p = F::is_present(raw);
            present += p as i64;
            tables += (p & !F::is_leaf(level, raw)) as i64;
        }
        d.leaves[level as usize] -= present - tables;
        let mut min = level;
        if tables > 0 {
            for e in entries {
                let raw = e.load(Ordering::Relaxed);
                if F::is_present(raw) && !F::is_leaf(level, raw) {
                    min = min.min(self.count_subtree(F::addr(level, raw), level - 1, d).0);
                }
            }
        }
        (min, tables > 0)
    }

    /// Retire the old content `old` of the entry at `level` covering `gpa` (already replaced):
    /// record the flush and detach any subtree (`freeze`: see [`Self::detach_subtree`]).
    #[allow(clippy::too_many_arguments)]
    fn retire<'v>(
        &self,
        level: Level,
        gpa: u64,
        old: u64,
        freeze: bool,
        batch: &mut FlushBatch,
        d: &mut Delta,
        visit: Option<&mut (dyn FnMut(&Leaf) + 'v)>,
    ) {
        if old == F::FROZEN || !F::is_present(old) {
            return;
        }
        let size = level_bytes(level);
        if F::is_leaf(level, old) {
            d.leaves[level as usize] -= 1;
            if let (Some(v), Pte::Leaf { pa, attrs }) = (visit, F::decode(level, old)) {
                v(&Leaf { gpa, size: PageSize::from_level(level).unwrap(), pa, attrs });
            }
            batch.add(gpa, size, PageSize::from_level(level).unwrap());
        } else {
            let child = F::addr(level, old);
            let (min, children) = match (freeze, visit) {
                (false, None) => self.count_subtree(child, level - 1, d),
                (freeze, visit) => (self.detach_subtree(child, level - 1, gpa, freeze, batch, d, visit), true),
            };
            if !freeze {
                // Exclusive: the subtree is intact below its root; `free_detached` frees it whole.
                batch.push_detached(Detached { pa: child, level: level - 1, childless: !children });
            }
            batch.add(gpa, size, PageSize::from_level(min).unwrap_or(PageSize::Size1G));
        }
    }

    /// Write `new` over the live entry `e` (old value `old`) at `level`, honouring
    /// break-before-make when the format needs it and the change is not in place.
    fn replace_live(e: &AtomicU64, old: u64, new: u64, level: Level, gpa: u64, bbm: &mut dyn FnMut(FlushRange)) {
        if F::BREAK_BEFORE_MAKE && F::is_present(old) {
            e.store(F::FROZEN, Ordering::Release);
            bbm(FlushRange { gpa, len: level_bytes(level), size: Self::min_size_hint(level, old) });
        }
        e.store(new, Ordering::Release);
    }

    fn min_size_hint(level: Level, old: u64) -> PageSize {
        if F::is_leaf(level, old) || level == 0 {
            PageSize::from_level(level).unwrap_or(PageSize::Size1G)
        } else {
            PageSize::Size4K
        }
    }

    // ---- exclusive operations -----------------------------------------------------------

    /// Map `len` bytes at `gpa` to `m.pa..` with leaves of `m.size`, replacing whatever was
    /// there. Huge leaves in the way are split (same translation) first; tables in the way of a
    /// huge leaf are detached. Obligations go into `batch`; `bbm` is called for immediate
    /// invalidations on break-before-make formats.
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
        let r =
            self.map_in(self.root, F::ROOT_LEVEL, false, gpa, gpa + len, m.pa.wrapping_sub(gpa), m, batch, bbm, &mut d);
        self.apply(gpa, &d);
        r
    }

    /// `fresh`: the table at `table` was allocated by this `map` and every entry is still zero
    /// (only the range `start..end` of it is written, once), so nothing needs to be read first.
    #[allow(clippy::too_many_arguments)]
    fn map_in(
        &self,
        table: u64,
        level: Level,
        fresh: bool,
        start: u64,
        end: u64,
        offset: u64,
        m: &Mapping,
        batch: &mut FlushBatch,
        bbm: &mut dyn FnMut(FlushRange),
        d: &mut Delta,
    ) -> Result<(), PtError> {
        let t = self.table_ptr(table);
        let target = m.size.level();
        let size = level_bytes(level);
        let entries = Self::entries_at(level);
        let mut a = start;
        if level == target {
            // The attributes are the same for every leaf: encode them once.
            let tmpl = F::leaf_template(level, &m.attrs);
            let first = table_index(a, level, entries);
            let n = (end - start).div_ceil(size) as usize;
            if fresh {
                Self::store_leaves(t, first, n, level, &tmpl, a.wrapping_add(offset), size);
            } else {
                for i in first..first + n {
                    let e = self.entry(t, i);
                    let old = e.load(Ordering::Relaxed);
                    let new = F::with_addr(level, &tmpl, a.wrapping_add(offset));
                    if old == 0 || !F::is_present(old) {
                        e.store(new, Ordering::Release);
                    } else {
                        Self::replace_live(e, old, new, level, a, bbm);
                        self.retire(level, a, old, false, batch, d, None);
                    }
                    a += size;
                }
            }
            d.leaves[target as usize] += n as i64;
            return Ok(());
        }
        while a < end {
            let stop = ((a & !(size - 1)) + size).min(end);
            let e = self.entry(t, table_index(a, level, entries));
            let old = if fresh { 0 } else { e.load(Ordering::Relaxed) };
            let (child, child_fresh) = if old == F::FROZEN || !F::is_present(old) {
                let c = self.alloc_table()?;
                e.store(F::table(c), Ordering::Release);
                d.tables += 1;
                (c, true)
            } else if F::is_leaf(level, old) {
                let c = self.build_split(level, old)?;
                Self::replace_live(e, old, F::table(c), level, a & !(size - 1), bbm);
                d.leaves[level as usize] -= 1;
                d.leaves[level as usize - 1] += ENTRIES_PER_TABLE as i64;
                d.tables += 1;
                (c, false)
            } else {
                (F::addr(level, old), false)
            };
            self.map_in(child, level - 1, child_fresh, a, stop, offset, m, batch, bbm, d)?;
            a = stop;
        }
        Ok(())
    }

    /// Write `n` leaves into the zeroed entries `first..first + n` of the table `t`, the first
    /// for output `pa`, each `step` bytes further: stores only, no loads.
    #[inline]
    fn store_leaves(
        t: *const AtomicU64,
        first: usize,
        n: usize,
        level: Level,
        tmpl: &LeafTemplate,
        pa: u64,
        step: u64,
    ) {
        assert!(first + n <= Self::entries_at(level));
        // SAFETY: `t` is a live table of this tree with `entries_at(level)` entries (the caller
        // just allocated it), and `first + n` does not exceed that (checked above).
        let entries = unsafe { core::slice::from_raw_parts(t.add(first), n) };
        let mut pa = pa;
        for e in entries {
            e.store(F::with_addr(level, tmpl, pa), Ordering::Release);
            pa = pa.wrapping_add(step);
        }
    }

    /// Remove every leaf overlapping `gpa..gpa+len` (a huge leaf that overlaps the range only in
    /// part is removed whole), detach tables the range covers entirely, and call `visit` (if any)
    /// for each removed leaf, for example to carry its dirty state to the host. Leaves inside
    /// detached tables are read without being cleared; hardware may still dirty a writable one
    /// until the flush, so treat writable leaves as dirty.
    pub fn unmap(
        &mut self,
        gpa: u64,
        len: u64,
        batch: &mut FlushBatch,
        mut visit: Option<&mut dyn FnMut(&Leaf)>,
    ) -> Result<(), PtError> {
        self.check_range(gpa, len, PageSize::Size4K)?;
        let mut d = Delta::default();
        self.unmap_in(self.root, F::ROOT_LEVEL, gpa, gpa + len, batch, &mut visit, &mut d);
        self.apply(gpa, &d);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn unmap_in<'v>(
        &self,
        table: u64,
        level: Level,
        start: u64,
        end: u64,
        batch: &mut FlushBatch,
        visit: &mut Option<&mut (dyn FnMut(&Leaf) + 'v)>,
        d: &mut Delta,
    ) {
        let t = self.table_ptr(table);
        let size = level_bytes(level);
        let entries = Self::entries_at(level);
        let mut a = start;
        while a < end {
            let base = a & !(size - 1);
            let stop = (base + size).min(end);
            let e = self.entry(t, table_index(a, level, entries));
            let old = e.load(Ordering::Relaxed);
            if old != F::FROZEN && F::is_present(old) {
                if F::is_leaf(level, old) || (base >= start && base + size <= end) {
                    // Swap, not store: hardware may have set the dirty bit since the load.
                    let old = e.swap(0, Ordering::AcqRel);
                    self.retire(level, base, old, false, batch, d, visit.as_deref_mut());
                } else {
                    self.unmap_in(F::addr(level, old), level - 1, a, stop, batch, visit, d);
                }
            }
            a = stop;
        }
    }

    /// Rewrite the attributes of every leaf overlapping the range (whole leaves): `f` returns the
    /// new attributes or `None` to leave the leaf alone. Narrowing changes (fewer permissions, a
    /// different memory type, cleared dirty state) are recorded for flushing. Returns the number
    /// of leaves changed.
    pub fn update_leaves(
        &mut self,
        gpa: u64,
        len: u64,
        batch: &mut FlushBatch,
        mut f: impl FnMut(&Leaf) -> Option<LeafAttrs>,
    ) -> Result<u64, PtError> {
        self.check_range(gpa, len, PageSize::Size4K)?;
        let mut changed = 0;
        self.visit(gpa, gpa + len, &mut |lgpa, level, e| {
            let old = e.load(Ordering::Relaxed);
            let Pte::Leaf { pa, attrs } = F::decode(level, old) else { return };
            let size = PageSize::from_level(level).unwrap();
            if let Some(new) = f(&Leaf { gpa: lgpa, size, pa, attrs }) {
                if new != attrs {
                    e.store(F::leaf(level, pa, &new), Ordering::Release);
                    changed += 1;
                    let narrowed = !new.perms.contains(attrs.perms)
                        || new.mem_type != attrs.mem_type
                        || (attrs.dirty && !new.dirty);
                    if narrowed {
                        batch.add(lgpa, size.bytes(), size);
                    }
                }
            }
        });
        Ok(changed)
    }

    /// Set the permissions of every leaf overlapping the range (whole leaves) to `perms`.
    pub fn protect(&mut self, gpa: u64, len: u64, perms: Perms, batch: &mut FlushBatch) -> Result<u64, PtError> {
        self.update_leaves(gpa, len, batch, |l| Some(l.attrs.with_perms(perms)))
    }

    /// Harvest hardware dirty state over `npages` 4 KiB pages from `gpa`: returns a bitmap with
    /// one bit per page (bit `i % 64` of word `i / 64`) set where a leaf covering the page is
    /// dirty. A dirty leaf lying wholly inside the range has its dirty state cleared (recorded
    /// for flushing); a dirty huge leaf sticking out of the range is reported but left dirty, so
    /// the pages outside are not lost.
    pub fn harvest_dirty(&mut self, gpa: u64, npages: u64, batch: &mut FlushBatch) -> Result<Vec<u64>, PtError> {
        let len = npages * PAGE_SIZE;
        self.check_range(gpa, len, PageSize::Size4K)?;
        let mut bitmap = alloc::vec![0u64; npages.div_ceil(64) as usize];
        let end = gpa + len;
        self.visit(gpa, end, &mut |lgpa, level, e| {
            let old = e.load(Ordering::Relaxed);
            if !F::is_dirty(old) {
                return;
            }
            let size = level_bytes(level);
            let from = lgpa.max(gpa);
            let to = (lgpa + size).min(end);
            for page in (from - gpa) / PAGE_SIZE..(to - gpa) / PAGE_SIZE {
                bitmap[(page / 64) as usize] |= 1 << (page % 64);
            }
            if lgpa >= gpa && lgpa + size <= end {
                e.store(F::clear_dirty(old), Ordering::Release);
                batch.add(lgpa, size, PageSize::from_level(level).unwrap());
            }
        });
        Ok(bitmap)
    }

    /// Split the `size` leaf mapping `gpa` into a fully populated table of the next smaller
    /// leaves with the same translation.
    pub fn split(&mut self, gpa: u64, size: PageSize, bbm: &mut dyn FnMut(FlushRange)) -> Result<(), PtError> {
        let base = size.align_down(gpa);
        self.check_range(base, size.bytes(), size)?;
        let level = size.level();
        if level == 0 {
            return Err(PtError::LeafNotAllowed { size });
        }
        let Some(e) = self.entry_at(base, level) else {
            return Err(PtError::NoLeaf { gpa, size });
        };
        let old = e.load(Ordering::Relaxed);
        if !F::is_present(old) || old == F::FROZEN || !F::is_leaf(level, old) {
            return Err(PtError::NoLeaf { gpa, size });
        }
        let child = self.build_split(level, old)?;
        Self::replace_live(e, old, F::table(child), level, base, bbm);
        let mut d = Delta::default();
        d.leaves[level as usize] -= 1;
        d.leaves[level as usize - 1] += ENTRIES_PER_TABLE as i64;
        d.tables += 1;
        self.apply(base, &d);
        Ok(())
    }

    /// Split every leaf larger than `target` overlapping the range (1G leaves go down through
    /// 2M to 4K when `target` is 4K), allocating at most `max_tables` page-table pages; resume
    /// from [`SplitProgress::resume_at`] to continue. Translations never change.
    pub fn split_range(
        &mut self,
        gpa: u64,
        len: u64,
        target: PageSize,
        max_tables: u64,
        bbm: &mut dyn FnMut(FlushRange),
    ) -> Result<SplitProgress, PtError> {
        // Exclusive access: no other thread freezes entries or races the compare-and-swaps, so
        // the shared walk does exactly the exclusive split.
        self.split_range_shared(gpa, len, target, max_tables, bbm)
    }

    /// [`split_range`](Self::split_range) for the shared lock: every split is a
    /// compare-and-swap from the huge leaf just read, so faults ([`install`](Self::install)) and
    /// other shared operations run beside it. A leaf that changed under it is read again; an
    /// entry another thread has frozen stops the pass with [`SplitProgress::resume_at`] at that
    /// block (call again to continue: the other thread finishes its change without waiting).
    pub fn split_range_shared(
        &self,
        gpa: u64,
        len: u64,
        target: PageSize,
        max_tables: u64,
        bbm: &mut dyn FnMut(FlushRange),
    ) -> Result<SplitProgress, PtError> {
        self.check_range(gpa, len, PageSize::Size4K)?;
        let mut p = SplitProgress::default();
        let mut d = Delta::default();
        let r = self.split_shared_in(
            self.root,
            F::ROOT_LEVEL,
            gpa,
            gpa + len,
            target.level(),
            max_tables,
            bbm,
            &mut p,
            &mut d,
        );
        self.apply(gpa, &d);
        r.map(|()| p)
    }

    #[allow(clippy::too_many_arguments)]
    fn split_shared_in(
        &self,
        table: u64,
        level: Level,
        start: u64,
        end: u64,
        target: Level,
        max: u64,
        bbm: &mut dyn FnMut(FlushRange),
        p: &mut SplitProgress,
        d: &mut Delta,
    ) -> Result<(), PtError> {
        if level <= target {
            return Ok(());
        }
        let t = self.table_ptr(table);
        let size = level_bytes(level);
        let entries = Self::entries_at(level);
        let mut a = start;
        while a < end {
            let base = a & !(size - 1);
            let stop = (base + size).min(end);
            let e = self.entry(t, table_index(a, level, entries));
            let mut cur = e.load(Ordering::Acquire);
            if cur == F::FROZEN {
                p.resume_at = Some(a);
                return Ok(());
            }
            if F::is_present(cur) {
                if F::is_leaf(level, cur) {
                    if p.tables_allocated >= max {
                        p.resume_at = Some(a);
                        return Ok(());
                    }
                    let child = self.build_split(level, cur)?;
                    let lock = if F::BREAK_BEFORE_MAKE { F::FROZEN } else { F::table(child) };
                    if e.compare_exchange(cur, lock, Ordering::AcqRel, Ordering::Acquire).is_err() {
                        // SAFETY: the frame was never linked; only this thread knows it.
                        unsafe { self.alloc.free(child, 1) };
                        continue;
                    }
                    if F::BREAK_BEFORE_MAKE {
                        bbm(FlushRange { gpa: base, len: size, size: PageSize::from_level(level).unwrap() });
                        e.store(F::table(child), Ordering::Release);
                    }
                    cur = F::table(child);
                    d.leaves[level as usize] -= 1;
                    d.leaves[level as usize - 1] += ENTRIES_PER_TABLE as i64;
                    d.tables += 1;
                    p.splits += 1;
                    p.tables_allocated += 1;
                }
                self.split_shared_in(F::addr(level, cur), level - 1, a, stop, target, max, bbm, p, d)?;
                if p.resume_at.is_some() {
                    return Ok(());
                }
            }
            a = stop;
        }
        Ok(())
    }

    /// Collapse the table under the `size` block containing `gpa` into one `size` leaf. Every
    /// child must be a present leaf, the children must map one contiguous run starting at a
    /// `size`-aligned output, and their permissions, memory type and software bits must match.
    /// The new leaf is accessed/dirty if any child was. The old table is detached into `batch`
    /// with a flush of the whole block.
    pub fn collapse(
        &mut self,
        gpa: u64,
        size: PageSize,
        batch: &mut FlushBatch,
        bbm: &mut dyn FnMut(FlushRange),
    ) -> Result<(), CollapseError> {
        let level = size.level();
        let base = size.align_down(gpa);
        if level == 0
            || !F::leaf_allowed(level)
            || base.checked_add(size.bytes()).is_none_or(|e| e > self.input_limit())
        {
            return Err(CollapseError::LeafNotAllowed { size });
        }
        let Some(e) = self.entry_at(base, level) else {
            return Err(CollapseError::NotATable { gpa: base });
        };
        let old = e.load(Ordering::Relaxed);
        if !F::is_present(old) || old == F::FROZEN || F::is_leaf(level, old) {
            return Err(CollapseError::NotATable { gpa: base });
        }
        let child = F::addr(level, old);
        let t = self.table_ptr(child);
        let step = level_bytes(level - 1);
        let mut first: Option<(u64, LeafAttrs)> = None;
        let (mut accessed, mut dirty) = (false, false);
        for i in 0..ENTRIES_PER_TABLE {
            let cgpa = base + i as u64 * step;
            let raw = self.entry(t, i).load(Ordering::Relaxed);
            let Pte::Leaf { pa, attrs } = F::decode(level - 1, raw) else {
                return Err(CollapseError::NotFull { gpa: cgpa });
            };
            match first {
                None => {
                    if !size.is_aligned(pa) {
                        return Err(CollapseError::Misaligned { pa, size });
                    }
                    first = Some((pa, attrs));
                }
                Some((pa0, a0)) => {
                    if pa != pa0 + i as u64 * step {
                        return Err(CollapseError::NotContiguous { gpa: cgpa });
                    }
                    if !attrs.uniform_with(&a0) {
                        return Err(CollapseError::MixedAttrs { gpa: cgpa });
                    }
                }
            }
            accessed |= attrs.accessed;
            dirty |= attrs.dirty;
        }
        let (pa0, a0) = first.expect("512 children checked");
        let attrs = LeafAttrs { accessed, dirty, ..a0 };
        let new = F::leaf(level, pa0, &attrs);
        Self::replace_live(e, old, new, level, base, bbm);
        let mut d = Delta::default();
        d.leaves[level as usize] += 1;
        self.retire(level, base, old, false, batch, &mut d, None);
        self.apply(base, &d);
        Ok(())
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
        let mut frames = SubtreeFrames { pt: self, roots: detached.into_iter(), stack: [(0, 0, 0); 5], depth: 0 };
        // SAFETY: the caller guarantees no one reaches these frames any more; each was allocated
        // as a single frame by this table (only roots span several frames, and they are never
        // detached), and `SubtreeFrames` yields each table once, after its last read of it.
        unsafe { self.alloc.free_frames(&mut frames) };
    }

    // ---- shared operations --------------------------------------------------------------

    /// The entry at `level` on the path to `gpa`, if the path down to that level exists.
    fn entry_at(&self, gpa: u64, level: Level) -> Option<&AtomicU64> {
        let mut t = self.table_ptr(self.root);
        let mut l = F::ROOT_LEVEL;
        loop {
            let e = self.entry(t, table_index(gpa, l, Self::entries_at(l)));
            if l == level {
                return Some(e);
            }
            let raw = e.load(Ordering::Acquire);
            if raw == F::FROZEN || !F::is_present(raw) || F::is_leaf(l, raw) {
                return None;
            }
            t = self.table_ptr(F::addr(l, raw));
            l -= 1;
        }
    }

    /// Install one leaf from the fault path, concurrently with other shared operations.
    ///
    /// Missing tables are created with compare-and-swap; a huge leaf in the way is split into a
    /// full child table; a table where the leaf goes is replaced (its subtree frozen and detached
    /// into `batch`, with a flush of the whole block). An identical leaf already present is left
    /// as is (attributes are updated if they differ). A frozen entry on the path returns
    /// [`PtError::Busy`]: retry the fault.
    pub fn install(
        &self,
        gpa: u64,
        m: &Mapping,
        batch: &mut FlushBatch,
        bbm: &mut dyn FnMut(FlushRange),
    ) -> Result<Installed, PtError> {
        self.check_mapping(m)?;
        let base = m.size.align_down(gpa);
        self.check_range(base, m.size.bytes(), m.size)?;
        let target = m.size.level();
        let mut out = Installed::default();
        let mut d = Delta::default();
        let mut t = self.table_ptr(self.root);
        let mut level = F::ROOT_LEVEL;
        let r = loop {
            let e = self.entry(t, table_index(base, level, Self::entries_at(level)));
            let old = e.load(Ordering::Acquire);
            if old == F::FROZEN {
                break Err(PtError::Busy);
            }
            if level == target {
                let new = F::leaf(level, m.pa, &m.attrs);
                if !F::is_present(old) {
                    if e.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire).is_err() {
                        continue;
                    }
                    d.leaves[level as usize] += 1;
                    out.new_leaf = true;
                } else if F::is_leaf(level, old) && F::addr(level, old) == m.pa {
                    // Same output: a fault only ever widens. Keep the permissions and the hardware
                    // accessed/dirty state the entry has, so a refault never loses a dirty bit or
                    // narrows access (narrowing is an exclusive operation and needs a flush).
                    let new = match F::decode(level, old) {
                        Pte::Leaf { attrs: was, .. } => {
                            let mut a = m.attrs;
                            a.perms |= was.perms;
                            a.accessed |= was.accessed;
                            a.dirty |= was.dirty && a.perms.contains(Perms::WRITE);
                            if a.perms.contains(Perms::WRITE) {
                                a.sw.remove(crate::attrs::SwBits::DIRTY_LOG_WP);
                            }
                            F::leaf(level, m.pa, &a)
                        }
                        _ => new,
                    };
                    if old != new {
                        if e.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire).is_err() {
                            continue;
                        }
                        let was = F::decode(level, old);
                        if let Pte::Leaf { attrs, .. } = was {
                            if m.attrs.mem_type != attrs.mem_type {
                                batch.add(base, m.size.bytes(), m.size);
                            }
                        }
                    }
                } else {
                    // A table (or a leaf with another output) is in the way: lock the entry by
                    // freezing it, retire the old content, then publish the leaf.
                    if e.compare_exchange(old, F::FROZEN, Ordering::AcqRel, Ordering::Acquire).is_err() {
                        continue;
                    }
                    out.replaced_table = !F::is_leaf(level, old);
                    let mut local = FlushBatch::new();
                    self.retire(level, base, old, true, &mut local, &mut d, None);
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
                    e.store(new, Ordering::Release);
                    d.leaves[level as usize] += 1;
                    out.new_leaf = true;
                }
                break Ok(());
            }
            let next = if !F::is_present(old) {
                let c = match self.alloc_table() {
                    Ok(c) => c,
                    Err(err) => break Err(err),
                };
                if e.compare_exchange(old, F::table(c), Ordering::AcqRel, Ordering::Acquire).is_err() {
                    // SAFETY: the frame was never linked; only this thread knows it.
                    unsafe { self.alloc.free(c, 1) };
                    continue;
                }
                d.tables += 1;
                out.tables_allocated += 1;
                out.new_table_levels |= 1 << level;
                c
            } else if F::is_leaf(level, old) {
                let c = match self.build_split(level, old) {
                    Ok(c) => c,
                    Err(err) => break Err(err),
                };
                let lock = if F::BREAK_BEFORE_MAKE { F::FROZEN } else { F::table(c) };
                if e.compare_exchange(old, lock, Ordering::AcqRel, Ordering::Acquire).is_err() {
                    // SAFETY: the frame was never linked; only this thread knows it.
                    unsafe { self.alloc.free(c, 1) };
                    continue;
                }
                if F::BREAK_BEFORE_MAKE {
                    let sz = level_bytes(level);
                    bbm(FlushRange { gpa: base & !(sz - 1), len: sz, size: PageSize::from_level(level).unwrap() });
                    e.store(F::table(c), Ordering::Release);
                }
                d.leaves[level as usize] -= 1;
                d.leaves[level as usize - 1] += ENTRIES_PER_TABLE as i64;
                d.tables += 1;
                out.splits += 1;
                out.tables_allocated += 1;
                out.new_table_levels |= 1 << level;
                c
            } else {
                F::addr(level, old)
            };
            t = self.table_ptr(next);
            level -= 1;
        };
        self.apply(base, &d);
        r.map(|()| out)
    }

    /// Translate one guest-physical address.
    ///
    /// Inlined, so a caller that reads only `pa` and `size` lets the compiler drop the attribute
    /// decode (measured: half the cost of a 2M translate); [`translate_pa`](Self::translate_pa)
    /// never decodes them. The walk itself stays out of line.
    #[inline(always)]
    pub fn translate(&self, gpa: u64) -> Option<Translation> {
        let (raw, level) = self.walk_leaf(gpa)?;
        let Pte::Leaf { pa, attrs } = F::decode(level, raw) else { return None };
        let size = PageSize::from_level(level)?;
        Some(Translation { pa: pa + (gpa & (size.bytes() - 1)), size, attrs })
    }

    /// Translate one guest-physical address to its output address and leaf size only: the same
    /// walk as [`translate`](Self::translate) (and the same answer for `pa` and `size`) without
    /// decoding the leaf's attributes.
    #[inline(always)]
    pub fn translate_pa(&self, gpa: u64) -> Option<(u64, PageSize)> {
        let (raw, level) = self.walk_leaf(gpa)?;
        // Decode only to keep `translate`'s answer for entries that do not decode as a leaf
        // (arm64 reserved descriptors); the attributes are unused, and the inlined decode
        // leaves only the checks that pick the variant.
        let Pte::Leaf { pa, .. } = F::decode(level, raw) else { return None };
        let size = PageSize::from_level(level)?;
        Some((pa + (gpa & (size.bytes() - 1)), size))
    }

    /// Walk as the hardware would for `access` at `gpa`: count the entries read, check
    /// permissions, and on success set the accessed (and for a write, dirty) state the way the
    /// format's hardware does.
    pub fn hw_walk(&self, gpa: u64, access: Access) -> HwWalk {
        let mut refs = 0;
        let mut t = self.root_table();
        let mut level = F::ROOT_LEVEL;
        loop {
            let e = self.entry(t, table_index(gpa, level, Self::entries_at(level)));
            let raw = e.load(Ordering::Acquire);
            refs += 1;
            if raw == F::FROZEN || !F::is_present(raw) || gpa >= self.input_limit() {
                return HwWalk { result: Err(WalkFault::NotPresent { level }), refs };
            }
            if !F::is_leaf(level, raw) {
                t = self.table_ptr(F::addr(level, raw));
                level -= 1;
                continue;
            }
            let size = PageSize::from_level(level).expect("leaf level");
            let Pte::Leaf { pa, attrs } = F::decode(level, raw) else { unreachable!() };
            let allowed = match access {
                Access::Read => attrs.perms.contains(Perms::READ),
                Access::Write => F::is_writable(raw),
                Access::Exec => attrs.perms.contains(Perms::EXEC),
            };
            if !allowed {
                return HwWalk { result: Err(WalkFault::Permission { size }), refs };
            }
            let write = access == Access::Write;
            let mut cur = raw;
            loop {
                let upd = F::hw_update(cur, write);
                if upd == cur {
                    break;
                }
                match e.compare_exchange(cur, upd, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => break,
                    Err(now) if F::is_present(now) && now != F::FROZEN && F::addr(level, now) == pa => cur = now,
                    Err(_) => return HwWalk { result: Err(WalkFault::NotPresent { level }), refs },
                }
            }
            let attrs = match F::decode(level, F::hw_update(cur, write)) {
                Pte::Leaf { attrs, .. } => attrs,
                _ => attrs,
            };
            return HwWalk { result: Ok(Translation { pa: pa + (gpa & (size.bytes() - 1)), size, attrs }), refs };
        }
    }

    /// Visit every present leaf entry overlapping `start..end`.
    fn visit(&self, start: u64, end: u64, f: &mut dyn FnMut(u64, Level, &AtomicU64)) {
        if start < end {
            self.visit_in(self.root, F::ROOT_LEVEL, start, end, f);
        }
    }

    fn visit_in(&self, table: u64, level: Level, start: u64, end: u64, f: &mut dyn FnMut(u64, Level, &AtomicU64)) {
        let t = self.table_ptr(table);
        let size = level_bytes(level);
        let entries = Self::entries_at(level);
        let mut a = start;
        while a < end {
            let base = a & !(size - 1);
            let stop = (base + size).min(end);
            let e = self.entry(t, table_index(a, level, entries));
            let raw = e.load(Ordering::Acquire);
            if raw != F::FROZEN && F::is_present(raw) {
                if F::is_leaf(level, raw) {
                    f(base, level, e);
                } else {
                    self.visit_in(F::addr(level, raw), level - 1, a, stop, f);
                }
            }
            a = stop;
        }
    }

    /// Call `f` for every leaf overlapping `gpa..gpa+len`, in address order.
    pub fn for_each_leaf(&self, gpa: u64, len: u64, mut f: impl FnMut(&Leaf)) {
        let end = gpa.saturating_add(len).min(self.input_limit());
        self.visit(gpa, end, &mut |lgpa, level, e| {
            if let Pte::Leaf { pa, attrs } = F::decode(level, e.load(Ordering::Acquire)) {
                f(&Leaf { gpa: lgpa, size: PageSize::from_level(level).unwrap(), pa, attrs });
            }
        });
    }

    /// Every leaf overlapping the range, collected.
    pub fn leaves(&self, gpa: u64, len: u64) -> Vec<Leaf> {
        let mut v = Vec::new();
        self.for_each_leaf(gpa, len, |l| v.push(*l));
        v
    }

    /// Whether any leaf overlapping the range has its accessed flag set.
    pub fn test_young(&self, gpa: u64, len: u64) -> bool {
        let mut young = false;
        let end = gpa.saturating_add(len).min(self.input_limit());
        self.visit(gpa, end, &mut |_, _, e| young |= F::is_accessed(e.load(Ordering::Acquire)));
        young
    }

    /// Clear the accessed flag of every leaf overlapping the range; returns whether any was set.
    /// No flush is recorded: a stale accessed state in the TLB only delays aging.
    pub fn clear_young(&self, gpa: u64, len: u64) -> bool {
        let mut young = false;
        let end = gpa.saturating_add(len).min(self.input_limit());
        self.visit(gpa, end, &mut |_, _, e| {
            let mut cur = e.load(Ordering::Acquire);
            while F::is_present(cur) && cur != F::FROZEN && F::is_accessed(cur) {
                match e.compare_exchange(cur, F::clear_accessed(cur), Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        young = true;
                        break;
                    }
                    Err(now) => cur = now,
                }
            }
        });
        young
    }

    /// Leaf and table-page counts, from counters kept by every operation.
    pub fn counts(&self) -> Counts {
        let sum = |f: &dyn Fn(&Stripe) -> i64| self.stripes.iter().map(f).sum::<i64>().max(0) as u64;
        Counts {
            leaves: [0, 1, 2].map(|i| sum(&|s| s.leaves[i].load(Ordering::Relaxed))),
            table_pages: sum(&|s| s.tables.load(Ordering::Relaxed)),
        }
    }

    /// Leaf and table-page counts by walking the whole tree (for audits: must equal
    /// [`counts`](Self::counts) whenever no operation is running).
    pub fn recount(&self) -> Counts {
        let mut c = Counts { table_pages: Self::ROOT_FRAMES as u64, ..Default::default() };
        self.recount_in(self.root, F::ROOT_LEVEL, &mut c);
        c
    }

    fn recount_in(&self, table: u64, level: Level, c: &mut Counts) {
        let t = self.table_ptr(table);
        for i in 0..Self::entries_at(level) {
            let raw = self.entry(t, i).load(Ordering::Acquire);
            if raw == F::FROZEN || !F::is_present(raw) {
                continue;
            }
            if F::is_leaf(level, raw) {
                c.leaves[level as usize] += 1;
            } else {
                c.table_pages += 1;
                self.recount_in(F::addr(level, raw), level - 1, c);
            }
        }
    }

    fn free_in(&mut self, table: u64, level: Level) {
        let t = self.table_ptr(table);
        for i in 0..Self::entries_at(level) {
            let raw = self.entry(t, i).load(Ordering::Relaxed);
            if raw != F::FROZEN && F::is_present(raw) && !F::is_leaf(level, raw) {
                let child = F::addr(level, raw);
                self.free_in(child, level - 1);
                // SAFETY: `&mut self` in drop: no walker holds the tree any more.
                unsafe { self.alloc.free(child, 1) };
            }
        }
    }
}

impl<F: Format, A: FrameAllocator> Drop for PageTable<F, A> {
    fn drop(&mut self) {
        self.free_in(self.root, F::ROOT_LEVEL);
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
                let t = self.pt.table_ptr(*pa);
                while (*next as usize) < ENTRIES_PER_TABLE {
                    let raw = self.pt.entry(t, *next as usize).load(Ordering::Relaxed);
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
