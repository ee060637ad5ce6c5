//! TLB obligations as values.
//!
//! Every operation that removes or narrows a translation the TLB may cache returns a
//! [`FlushBatch`]: the guest-physical ranges to invalidate, each with the leaf size that was
//! mapped there (so a range TLBI can pick its stride), and the page-table subtrees it detached.
//! The caller flushes, then frees the subtrees with
//! [`PageTable::free_detached`](crate::PageTable::free_detached) once no walker can hold them.
//! Nothing here flushes anything by itself: the caller hands the batch to its [`Tlb`] with
//! [`apply`]. The few operations that must invalidate *during* the operation (break-before-make
//! of a live entry, which must be flushed before the new entry is written) take the [`Tlb`]
//! directly.
//!
//! A batch is small and lives on the stack: its first [`INLINE`] ranges and its first [`INLINE`]
//! detached subtrees are kept inline, so an operation that records no more than that (an unmap
//! of one leaf, or of 1 GiB of 4K leaves, which detaches one subtree) touches no heap.

use core::mem::MaybeUninit;

use alloc::vec::Vec;

use crate::addr::Gpa;
use crate::size::PageSize;

/// Ranges kept before a batch degrades to "flush everything".
pub const MAX_RANGES: usize = 32;

/// Ranges, and separately detached subtrees, a batch holds before it allocates.
pub const INLINE: usize = 4;

/// A list whose first [`INLINE`] elements live inline and which moves to the heap, whole, past
/// that (so it is always one slice).
struct InlineVec<T> {
    /// `inline[..len]` are initialised while `heap` is empty; once `heap` is used it holds
    /// every element and `len` is 0.
    inline: [MaybeUninit<T>; INLINE],
    len: usize,
    heap: Vec<T>,
}

impl<T> InlineVec<T> {
    const fn new() -> Self {
        InlineVec { inline: [const { MaybeUninit::uninit() }; INLINE], len: 0, heap: Vec::new() }
    }

    fn push(&mut self, v: T) {
        if self.heap.is_empty() {
            if self.len < INLINE {
                self.inline[self.len].write(v);
                self.len += 1;
                return;
            }
            self.heap.reserve(16 * INLINE);
            let n = core::mem::take(&mut self.len);
            // SAFETY: `inline[..n]` are initialised; `len` is now 0, so each is read once.
            self.heap.extend(self.inline[..n].iter().map(|m| unsafe { m.assume_init_read() }));
        }
        self.heap.push(v);
    }

    fn as_slice(&self) -> &[T] {
        if self.heap.is_empty() {
            // SAFETY: `inline[..len]` are initialised, and `MaybeUninit<T>` has `T`'s layout.
            unsafe { &*(&self.inline[..self.len] as *const [MaybeUninit<T>] as *const [T]) }
        } else {
            &self.heap
        }
    }

    fn last_mut(&mut self) -> Option<&mut T> {
        if self.heap.is_empty() {
            let n = self.len.checked_sub(1)?;
            // SAFETY: `inline[..len]` are initialised.
            Some(unsafe { self.inline[n].assume_init_mut() })
        } else {
            self.heap.last_mut()
        }
    }

    fn clear(&mut self) {
        // Elements are plain data (`FlushRange`, `Detached`): forgetting them drops nothing.
        self.len = 0;
        self.heap.clear();
    }
}

/// One guest-physical range to invalidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushRange {
    /// Start (aligned to `size`).
    pub gpa: Gpa,
    /// Length in bytes (a multiple of `size`).
    pub len: u64,
    /// Smallest leaf size that was mapped in the range.
    pub size: PageSize,
}

/// A page-table subtree unlinked from the tree, to be freed after the flush that retires every
/// translation cached from it. [`PageTable::free_detached`](crate::PageTable::free_detached)
/// frees the table and every table still linked below it.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a detached subtree leaks unless freed with PageTable::free_detached after the flush"]
pub struct Detached {
    /// Physical address of the subtree's table.
    pub pa: u64,
    /// Level of that table (its entries are at this level).
    pub level: u8,
    /// The table links to no child tables (only leaves or nothing): freeing it reads nothing.
    pub childless: bool,
}

/// Pending TLB invalidations and the subtrees waiting on them.
///
/// ```
/// use slat_pt::{FlushBatch, Gpa, PageSize};
/// let mut b = FlushBatch::new();
/// b.add(Gpa(0x20_0000), 0x20_0000, PageSize::Size2M);
/// b.add(Gpa(0x40_0000), 0x20_0000, PageSize::Size2M); // coalesces with the previous range
/// assert_eq!(b.ranges().len(), 1);
/// assert!(!b.is_empty());
/// ```
#[must_use = "a flush batch must be applied to the TLB (and its detached subtrees freed)"]
pub struct FlushBatch {
    ranges: InlineVec<FlushRange>,
    all: bool,
    detached: DetachedList,
}

impl core::fmt::Debug for FlushBatch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FlushBatch")
            .field("ranges", &self.ranges())
            .field("all", &self.all)
            .field("detached", &self.detached())
            .finish()
    }
}

impl Default for FlushBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl FlushBatch {
    /// An empty batch.
    pub const fn new() -> Self {
        FlushBatch { ranges: InlineVec::new(), all: false, detached: DetachedList::new() }
    }

    /// Record `len` bytes at `gpa` that were mapped with leaves of `size` (or smaller tables'
    /// leaves of at least `size`). Adjacent or overlapping ranges of the same size coalesce; past
    /// [`MAX_RANGES`] the batch becomes "flush everything".
    pub fn add(&mut self, gpa: Gpa, len: u64, size: PageSize) {
        if self.all || len == 0 {
            return;
        }
        if let Some(last) = self.ranges.last_mut() {
            if last.size == size && gpa >= last.gpa && gpa <= last.gpa + last.len {
                let end = (gpa + len).max(last.gpa + last.len);
                last.len = end - last.gpa;
                return;
            }
        }
        if self.ranges.as_slice().len() == MAX_RANGES {
            self.set_all();
            return;
        }
        self.ranges.push(FlushRange { gpa, len, size });
    }

    /// Require a flush of every translation of this address space.
    pub fn set_all(&mut self) {
        self.all = true;
        self.ranges.clear();
    }

    /// Record a detached subtree to free after the flush.
    pub fn push_detached(&mut self, d: Detached) {
        self.detached.push(d);
    }

    /// Merge another batch into this one.
    pub fn merge(&mut self, other: FlushBatch) {
        if other.all {
            self.set_all();
        }
        for r in other.ranges.as_slice() {
            self.add(r.gpa, r.len, r.size);
        }
        for d in other.detached {
            self.detached.push(d);
        }
    }

    /// Whether the whole address space must be flushed.
    pub fn is_all(&self) -> bool {
        self.all
    }

    /// Ranges to flush (empty when [`is_all`](Self::is_all)).
    pub fn ranges(&self) -> &[FlushRange] {
        self.ranges.as_slice()
    }

    /// Whether nothing needs flushing (there may still be detached subtrees, which then need
    /// no flush: they held no translations).
    pub fn is_empty(&self) -> bool {
        !self.all && self.ranges.as_slice().is_empty()
    }

    /// Whether `gpa` is covered by this batch.
    pub fn covers(&self, gpa: Gpa) -> bool {
        self.all || self.ranges().iter().any(|r| gpa >= r.gpa && gpa < r.gpa + r.len)
    }

    /// Subtrees detached so far.
    pub fn detached(&self) -> &[Detached] {
        self.detached.as_slice()
    }

    /// Take the detached subtrees, leaving the flush ranges. Call after flushing.
    pub fn take_detached(&mut self) -> DetachedList {
        core::mem::take(&mut self.detached)
    }

    /// Mark the ranges as flushed and return the detached subtrees for freeing.
    pub fn into_detached(self) -> DetachedList {
        self.detached
    }
}

/// Detached subtrees: the first [`INLINE`] inline, all of them on the heap past that. Iterate
/// it (by value) to free them, e.g. with
/// [`PageTable::free_detached`](crate::PageTable::free_detached).
#[must_use = "detached subtrees leak unless freed with PageTable::free_detached after the flush"]
pub struct DetachedList(InlineVec<Detached>);

impl DetachedList {
    /// An empty list.
    pub const fn new() -> Self {
        DetachedList(InlineVec::new())
    }

    /// Add one.
    pub fn push(&mut self, d: Detached) {
        self.0.push(d);
    }

    /// The subtrees, in the order they were detached.
    pub fn as_slice(&self) -> &[Detached] {
        self.0.as_slice()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for DetachedList {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for DetachedList {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl core::ops::Deref for DetachedList {
    type Target = [Detached];
    fn deref(&self) -> &[Detached] {
        self.as_slice()
    }
}

/// Owning iterator over a [`DetachedList`].
#[must_use = "detached subtrees leak unless freed with PageTable::free_detached after the flush"]
pub struct DetachedIter {
    list: DetachedList,
    next: usize,
    heap: alloc::vec::IntoIter<Detached>,
}

impl Iterator for DetachedIter {
    type Item = Detached;
    fn next(&mut self) -> Option<Detached> {
        if self.next < self.list.0.len {
            let i = self.next;
            self.next += 1;
            // SAFETY: `inline[i]` is initialised (`i < len`) and read once (`next` moved past it).
            return Some(unsafe { self.list.0.inline[i].assume_init_read() });
        }
        self.heap.next()
    }
}

impl IntoIterator for DetachedList {
    type Item = Detached;
    type IntoIter = DetachedIter;
    fn into_iter(mut self) -> DetachedIter {
        let heap = core::mem::take(&mut self.0.heap).into_iter();
        DetachedIter { list: self, next: 0, heap }
    }
}

impl Extend<Detached> for DetachedList {
    fn extend<I: IntoIterator<Item = Detached>>(&mut self, iter: I) {
        for d in iter {
            self.push(d);
        }
    }
}

/// Cache maintenance a CPU needs before a stage-2 leaf is installed.
///
/// arm64 without FEAT_S2FWB must clean the data cache to the point of coherency for memory
/// the guest may access with its caches off, and without FEAT_DIC must invalidate the
/// instruction cache before the guest executes newly mapped memory (KVM's
/// `clean_dcache_guest_page` / `invalidate_icache_guest_page`, for the whole block of a huge
/// leaf). x86 and RISC-V need neither: [`CacheMaintenance::NOT_NEEDED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheMaintenance {
    /// Clean the data cache to PoC for every cacheable leaf installed (arm64 without FWB).
    pub clean_dcache: bool,
    /// Invalidate the instruction cache for every executable leaf installed (arm64 without DIC).
    pub invalidate_icache: bool,
}

impl CacheMaintenance {
    /// Coherent caches: x86, RISC-V, arm64 with FEAT_S2FWB and FEAT_DIC.
    pub const NOT_NEEDED: CacheMaintenance = CacheMaintenance { clean_dcache: false, invalidate_icache: false };
    /// arm64 without FEAT_S2FWB and without FEAT_DIC.
    pub const ARM64_NO_FWB_NO_DIC: CacheMaintenance = CacheMaintenance { clean_dcache: true, invalidate_icache: true };
}

/// Invalidates cached stage-2 translations on every CPU running the guest, and performs the
/// cache maintenance the CPU needs before a new leaf is installed.
///
/// The page table calls [`flush_range`](Self::flush_range) itself only for break-before-make
/// (a live entry replaced by one of another kind, which must be invalidated between the two
/// writes); everything else comes back as a [`FlushBatch`] for the caller to [`apply`].
///
/// ```
/// use core::cell::Cell;
/// use slat_pt::{apply, CacheMaintenance, FlushBatch, FlushRange, Gpa, PageSize, Tlb};
///
/// /// Counts invalidations, as a hypervisor's INVEPT / TLBI / HFENCE wrapper would issue them.
/// #[derive(Default)]
/// struct Counting(Cell<u32>);
///
/// impl Tlb for Counting {
///     fn flush_range(&self, _range: &FlushRange) {
///         self.0.set(self.0.get() + 1);
///     }
///     fn flush_all(&self) {
///         self.0.set(self.0.get() + 1);
///     }
///     fn cache_maintenance(&self) -> CacheMaintenance {
///         CacheMaintenance::NOT_NEEDED
///     }
///     fn clean_dcache(&self, _pa: u64, _len: u64) {}
///     fn invalidate_icache(&self, _pa: u64, _len: u64) {}
/// }
///
/// let tlb = Counting::default();
/// let mut batch = FlushBatch::new();
/// batch.add(Gpa(0x20_0000), 0x20_0000, PageSize::Size2M);
/// assert!(apply(&tlb, &batch));
/// assert_eq!(tlb.0.get(), 1);
/// ```
pub trait Tlb {
    /// Invalidate translations of `range.gpa .. range.gpa + range.len`, which were mapped with
    /// leaves of at least `range.size`.
    fn flush_range(&self, range: &FlushRange);
    /// Invalidate every stage-2 translation of this guest.
    fn flush_all(&self);
    /// What this CPU needs before leaves are installed; asked once per fault. Return
    /// [`CacheMaintenance::NOT_NEEDED`] on x86, RISC-V and arm64 with FEAT_S2FWB + FEAT_DIC.
    fn cache_maintenance(&self) -> CacheMaintenance;
    /// Clean the data cache to the point of coherency for host-physical `pa .. pa + len` (the
    /// whole block of the leaf about to be installed). Called only when
    /// [`cache_maintenance`](Self::cache_maintenance) asks for it, for cacheable memory.
    fn clean_dcache(&self, pa: u64, len: u64);
    /// Invalidate the instruction cache for host-physical `pa .. pa + len` before an executable
    /// leaf is installed. Called only when [`cache_maintenance`](Self::cache_maintenance) asks
    /// for it.
    fn invalidate_icache(&self, pa: u64, len: u64);
}

/// Apply a batch to a TLB: nothing when the batch is empty, one full flush when it says so,
/// otherwise one call per range. Returns whether anything was flushed. The batch's detached
/// subtrees are left for the caller to free now that no walker can reach them.
pub fn apply<T: Tlb + ?Sized>(tlb: &T, batch: &FlushBatch) -> bool {
    if batch.is_all() {
        tlb.flush_all();
        true
    } else {
        for r in batch.ranges() {
            tlb.flush_range(r);
        }
        !batch.ranges().is_empty()
    }
}

/// The TLB of a table no CPU walks: a table being built before it is installed, a host-side
/// model, a benchmark. Every flush is a no-op and no cache maintenance is needed. Never use it
/// for a table a guest runs on: break-before-make would leave stale translations.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTlb;

impl Tlb for NoTlb {
    fn flush_range(&self, _range: &FlushRange) {}
    fn flush_all(&self) {}
    fn cache_maintenance(&self) -> CacheMaintenance {
        CacheMaintenance::NOT_NEEDED
    }
    fn clean_dcache(&self, _pa: u64, _len: u64) {}
    fn invalidate_icache(&self, _pa: u64, _len: u64) {}
}

impl<T: Tlb + ?Sized> Tlb for &T {
    fn flush_range(&self, range: &FlushRange) {
        (**self).flush_range(range)
    }
    fn flush_all(&self) {
        (**self).flush_all()
    }
    fn cache_maintenance(&self) -> CacheMaintenance {
        (**self).cache_maintenance()
    }
    fn clean_dcache(&self, pa: u64, len: u64) {
        (**self).clean_dcache(pa, len)
    }
    fn invalidate_icache(&self, pa: u64, len: u64) {
        (**self).invalidate_icache(pa, len)
    }
}

impl<T: Tlb + ?Sized> Tlb for alloc::sync::Arc<T> {
    fn flush_range(&self, range: &FlushRange) {
        (**self).flush_range(range)
    }
    fn flush_all(&self) {
        (**self).flush_all()
    }
    fn cache_maintenance(&self) -> CacheMaintenance {
        (**self).cache_maintenance()
    }
    fn clean_dcache(&self, pa: u64, len: u64) {
        (**self).clean_dcache(pa, len)
    }
    fn invalidate_icache(&self, pa: u64, len: u64) {
        (**self).invalidate_icache(pa, len)
    }
}
