//! One page-table page, and one entry slot in it: the only place raw entries are read or written.
//!
//! A [`Node`] is a handle on the entries of one table (512 of them, or
//! [`Format::ROOT_ENTRIES`](crate::Format::ROOT_ENTRIES) for the root), made by one `unsafe`
//! constructor whose contract is that the entries stay allocated for the handle's lifetime. Every
//! access after that is safe and bounds-checked: the index is checked against the node's mask,
//! and an index computed from an address (`addr >> shift & mask`) passes the check without a
//! branch because the compiler folds `(x & mask) <= mask`.
//!
//! Orderings: loads are `Acquire` (a table entry read by a walker must see the child table
//! filled before it was linked), stores and compare-and-swaps publish with `Release`
//! (`AcqRel` for read-modify-write), so a child table filled with relaxed stores and then linked
//! with [`Slot::store`] or [`Slot::cas`] is complete to every walker that follows the link.
//! [`Slot::load_relaxed`] is for exclusive operations reading entries they (or a hardware walker
//! setting accessed/dirty bits, which the exclusive operations re-read with a swap where it
//! matters) alone change.

use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::size::{level_shift, Level, PAGE_SHIFT};

/// The entries of one page-table page at one level.
#[derive(Clone, Copy)]
pub(crate) struct Node<'t> {
    entries: NonNull<AtomicU64>,
    /// Number of entries minus one (entries are a power of two).
    mask: u32,
    /// `level_shift(level)`: kept rather than the level, since every index needs it.
    shift: u32,
    _table: PhantomData<&'t AtomicU64>,
}

impl<'t> Node<'t> {
    /// A handle on `entries` (a power of two, at most 2^16) entries at `ptr`, the table at
    /// `level`. Two words, so walks keep it in registers.
    ///
    /// # Safety
    /// `ptr` points at `entries` `AtomicU64`s that stay allocated (not freed, not reused) for
    /// `'t`. Page tables guarantee it for their own tables, and for tables an operation has
    /// unlinked, until [`PageTable::free_detached`](crate::PageTable::free_detached), whose
    /// contract is that nothing holds them any more.
    #[inline]
    pub(crate) unsafe fn new(ptr: NonNull<AtomicU64>, entries: usize, level: Level) -> Self {
        debug_assert!(entries.is_power_of_two() && entries <= 1 << 16);
        Node { entries: ptr, mask: entries as u32 - 1, shift: level_shift(level), _table: PhantomData }
    }

    /// Whether `other` is a handle on the same table.
    #[inline]
    pub(crate) fn same(&self, other: &Node<'_>) -> bool {
        self.entries == other.entries
    }

    /// The table's level (its entries map `level_bytes(level)` each).
    #[inline]
    pub(crate) fn level(&self) -> Level {
        ((self.shift - PAGE_SHIFT) / 9) as Level
    }

    /// Number of entries.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.mask as usize + 1
    }

    /// Index of the entry translating `gpa`.
    #[inline]
    pub(crate) fn index_of(&self, gpa: u64) -> usize {
        (gpa >> self.shift) as usize & self.mask as usize
    }

    /// The slot of entry `index`.
    ///
    /// # Panics
    /// If `index` is out of bounds (a bug in the caller; never for [`index_of`](Self::index_of)).
    #[inline]
    pub(crate) fn slot(&self, index: usize) -> Slot<'t> {
        Slot { entry: self.entry(index), level: self.level() }
    }

    /// The entry `index`, bounds-checked.
    #[inline]
    fn entry(&self, index: usize) -> &'t AtomicU64 {
        assert!(index <= self.mask as usize, "entry {index} of a {}-entry table", self.len());
        // SAFETY: `index` is in bounds (checked above) and the entries live for `'t` (the
        // constructor's contract).
        unsafe { &*self.entries.as_ptr().add(index) }
    }

    /// Entries `first..first + n`, for runs that an operation reads or writes in one go.
    ///
    /// # Panics
    /// If the run is out of bounds.
    #[inline]
    fn run(&self, first: usize, n: usize) -> &'t [AtomicU64] {
        assert!(first <= self.len() && n <= self.len() - first, "run {first}+{n} out of bounds");
        // SAFETY: in bounds (checked above); the entries live for `'t`.
        unsafe { core::slice::from_raw_parts(self.entries.as_ptr().add(first), n) }
    }

    /// Write `n` entries from `first`, the `i`-th being `value(i)`, with release stores and no
    /// loads: for entries known to be zero (a table this operation just allocated) or owned.
    #[inline]
    pub(crate) fn store_run(&self, first: usize, n: usize, mut value: impl FnMut(usize) -> u64) {
        for (i, e) in self.run(first, n).iter().enumerate() {
            e.store(value(i), Ordering::Release);
        }
    }

    /// Fill a table not yet linked anywhere (relaxed stores: linking it publishes them).
    #[inline]
    pub(crate) fn fill_unlinked(&self, mut value: impl FnMut(usize) -> u64) {
        for (i, e) in self.run(0, self.len()).iter().enumerate() {
            e.store(value(i), Ordering::Relaxed);
        }
    }

    /// How many of the entries `first..first + n` satisfy `pred` (relaxed loads: for exclusive
    /// operations and for tables unlinked by one).
    #[inline]
    pub(crate) fn count_run(&self, first: usize, n: usize, pred: impl Fn(u64) -> bool) -> usize {
        self.run(first, n).iter().map(|e| pred(e.load(Ordering::Relaxed)) as usize).sum()
    }

    /// Every entry value (relaxed loads), in order.
    #[inline]
    pub(crate) fn values(&self) -> impl Iterator<Item = u64> + 't {
        self.values_run(0, self.len())
    }

    /// The values of entries `first..first + n` (relaxed loads), in order.
    #[inline]
    pub(crate) fn values_run(&self, first: usize, n: usize) -> impl Iterator<Item = u64> + 't {
        self.run(first, n).iter().map(|e| e.load(Ordering::Relaxed))
    }
}

/// One entry of one table: where a cursor stands.
#[derive(Clone, Copy)]
pub(crate) struct Slot<'t> {
    entry: &'t AtomicU64,
    level: Level,
}

impl<'t> Slot<'t> {
    /// The entry's level.
    #[inline]
    pub(crate) fn level(&self) -> Level {
        self.level
    }

    /// Read the entry (acquire: a table it points to is seen filled).
    #[inline]
    pub(crate) fn load(&self) -> u64 {
        self.entry.load(Ordering::Acquire)
    }

    /// Read the entry with no ordering (exclusive operations, which alone change entries).
    #[inline]
    pub(crate) fn load_relaxed(&self) -> u64 {
        self.entry.load(Ordering::Relaxed)
    }

    /// Publish `new` (release).
    #[inline]
    pub(crate) fn store(&self, new: u64) {
        self.entry.store(new, Ordering::Release)
    }

    /// Write `new` and return what was there (hardware may have set accessed/dirty bits since
    /// the last load).
    #[inline]
    pub(crate) fn swap(&self, new: u64) -> u64 {
        self.entry.swap(new, Ordering::AcqRel)
    }

    /// Compare-and-swap from `old`, the value just read; on failure, the value now there.
    #[inline]
    pub(crate) fn cas(&self, old: u64, new: u64) -> Result<u64, u64> {
        self.entry.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
    }

    /// Add `delta` (two's complement) to the entry with one atomic read-modify-write: for a
    /// software field of an entry only this operation changes besides hardware setting
    /// accessed bits (which commute with the add).
    #[inline]
    pub(crate) fn fetch_add(&self, delta: u64) {
        self.entry.fetch_add(delta, Ordering::AcqRel);
    }
}
