//! Memslots: guest-physical ranges backed by host virtual ranges, with their large-page
//! bookkeeping, dirty bitmap, write tracking and memory attributes.
//!
//! Large-page bookkeeping follows KVM's `lpage_info`: per huge size, a level is disallowed for the
//! whole slot when gfn and hva are not congruent modulo the size; blocks that stick out of the
//! slot at its head or tail are never huge; and each block carries a dynamic disallow count
//! (write tracking) plus a mixed-attribute mark.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use slat_pt::{MemType, PageSize, PAGE_SIZE};

/// Mark bit in a block's disallow word: the block has mixed memory attributes.
const MIXED: u32 = 1 << 31;

/// What the embedder asks for when adding a memslot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemslotSpec {
    /// Slot id (unique).
    pub id: u32,
    /// First guest frame number.
    pub base_gfn: u64,
    /// Number of 4 KiB pages.
    pub npages: u64,
    /// Host virtual address backing `base_gfn` (page aligned).
    pub hva: u64,
    /// Guest writes are refused.
    pub readonly: bool,
    /// Dirty logging on from the start.
    pub log_dirty: bool,
}

/// Invalid memslot requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemslotError {
    /// Zero pages.
    #[error("memslot {id}: size is zero pages")]
    Empty {
        /// Slot id.
        id: u32,
    },
    /// The host address is not page aligned.
    #[error("memslot {id}: hva {hva:#x} is not 4 KiB aligned")]
    MisalignedHva {
        /// Slot id.
        id: u32,
        /// The address.
        hva: u64,
    },
    /// The gfn range does not fit the guest-physical space of the format.
    #[error("memslot {id}: gfn range {base_gfn:#x}+{npages:#x} exceeds the {bits}-bit guest-physical space")]
    TooLarge {
        /// Slot id.
        id: u32,
        /// First gfn.
        base_gfn: u64,
        /// Pages.
        npages: u64,
        /// Guest-physical address width.
        bits: u32,
    },
    /// The host range wraps around the address space.
    #[error("memslot {id}: host range {hva:#x}+{npages:#x} pages wraps around")]
    HvaOverflow {
        /// Slot id.
        id: u32,
        /// Host address.
        hva: u64,
        /// Pages.
        npages: u64,
    },
    /// The gfn range overlaps another slot.
    #[error("memslot {id}: gfns {base_gfn:#x}..{end_gfn:#x} overlap memslot {other}")]
    Overlap {
        /// Slot id.
        id: u32,
        /// First gfn.
        base_gfn: u64,
        /// End gfn (exclusive).
        end_gfn: u64,
        /// The other slot.
        other: u32,
    },
    /// A slot with this id exists.
    #[error("memslot {id} already exists")]
    Exists {
        /// Slot id.
        id: u32,
    },
    /// No slot with this id.
    #[error("memslot {id} does not exist")]
    NotFound {
        /// Slot id.
        id: u32,
    },
    /// A gfn range outside the slot.
    #[error("memslot {id}: gfn range {gfn:#x}+{npages:#x} is outside the slot")]
    OutOfSlot {
        /// Slot id.
        id: u32,
        /// First gfn.
        gfn: u64,
        /// Pages.
        npages: u64,
    },
    /// A dirty-log clear that is not 64-page aligned.
    #[error("memslot {id}: dirty-log clear at page {first_page} of {npages} pages is not 64-page aligned")]
    MisalignedClear {
        /// Slot id.
        id: u32,
        /// First page (relative to the slot).
        first_page: u64,
        /// Pages.
        npages: u64,
    },
    /// A dirty-log clear whose mask reaches past the slot's last page.
    #[error("memslot {id}: dirty-log clear of {npages} pages at page {first_page} reaches past the slot's {slot_pages} pages")]
    ClearPastEnd {
        /// Slot id.
        id: u32,
        /// First page (relative to the slot).
        first_page: u64,
        /// Pages in the mask.
        npages: u64,
        /// Pages in the slot.
        slot_pages: u64,
    },
}

/// Per-size large-page information.
#[derive(Debug)]
struct LpageInfo {
    size: PageSize,
    /// gfn and hva are not congruent modulo the size: the size is disallowed for the whole slot.
    misaligned: bool,
    /// Per block (indexed from the block containing `base_gfn`): write-track count, and `MIXED`.
    disallow: Vec<AtomicU32>,
}

/// A memslot and its bookkeeping.
#[derive(Debug)]
pub struct Memslot {
    /// Slot id.
    pub id: u32,
    /// First guest frame number.
    pub base_gfn: u64,
    /// Pages.
    pub npages: u64,
    /// Host virtual address of `base_gfn`.
    pub hva: u64,
    /// Guest writes refused.
    pub readonly: bool,
    logging: AtomicBool,
    lpage: [LpageInfo; 2],
    /// Dirty bitmap, allocated when logging is first enabled.
    dirty: spin::Once<Vec<AtomicU64>>,
    tracked: spin::Mutex<BTreeMap<u64, u32>>,
    attrs: spin::Mutex<BTreeMap<u64, (u64, MemType)>>,
    /// Whether any memory type other than write-back was ever set (fast path for faults).
    has_attrs: AtomicBool,
}

impl Memslot {
    pub(crate) fn new(spec: &MemslotSpec) -> Self {
        let lpage = [PageSize::Size2M, PageSize::Size1G].map(|size| {
            let pages = size.pages();
            let first = spec.base_gfn / pages;
            let last = (spec.base_gfn + spec.npages - 1) / pages;
            LpageInfo {
                size,
                misaligned: (spec.base_gfn ^ (spec.hva / PAGE_SIZE)) & (pages - 1) != 0,
                disallow: (first..=last).map(|_| AtomicU32::new(0)).collect(),
            }
        });
        Memslot {
            id: spec.id,
            base_gfn: spec.base_gfn,
            npages: spec.npages,
            hva: spec.hva,
            readonly: spec.readonly,
            logging: AtomicBool::new(spec.log_dirty),
            lpage,
            dirty: spin::Once::new(),
            tracked: spin::Mutex::new(BTreeMap::new()),
            attrs: spin::Mutex::new(BTreeMap::new()),
            has_attrs: AtomicBool::new(false),
        }
    }

    /// The slot at `new_base_gfn` after a successful move: same host range, flags and dirty
    /// bitmap (offsets are relative to the slot, so they stay valid); large-page bookkeeping is
    /// rebuilt for the new gfns, write tracking and memory types start empty.
    pub(crate) fn moved_to(&self, new_base_gfn: u64) -> Memslot {
        let spec = MemslotSpec {
            id: self.id,
            base_gfn: new_base_gfn,
            npages: self.npages,
            hva: self.hva,
            readonly: self.readonly,
            log_dirty: self.is_logging(),
        };
        let moved = Memslot::new(&spec);
        if let Some(old) = self.dirty.get() {
            let words = moved.bitmap();
            for (n, o) in words.iter().zip(old) {
                n.store(o.load(Ordering::Acquire), Ordering::Release);
            }
        }
        moved
    }

    /// One past the last gfn.
    pub fn end_gfn(&self) -> u64 {
        self.base_gfn + self.npages
    }

    /// Whether `gfn` is in the slot.
    pub fn contains(&self, gfn: u64) -> bool {
        gfn >= self.base_gfn && gfn < self.end_gfn()
    }

    /// Host virtual address of `gfn` (which must be in the slot).
    pub fn hva_of(&self, gfn: u64) -> u64 {
        self.hva + (gfn - self.base_gfn) * PAGE_SIZE
    }

    /// Host range of the slot.
    pub fn hva_range(&self) -> (u64, u64) {
        (self.hva, self.hva + self.npages * PAGE_SIZE)
    }

    /// Whether dirty logging is on.
    pub fn is_logging(&self) -> bool {
        self.logging.load(Ordering::Acquire)
    }

    pub(crate) fn set_logging(&self, on: bool) {
        self.logging.store(on, Ordering::Release);
    }

    fn info(&self, size: PageSize) -> Option<&LpageInfo> {
        self.lpage.iter().find(|l| l.size == size)
    }

    fn block_index(&self, gfn: u64, size: PageSize) -> usize {
        (gfn / size.pages() - self.base_gfn / size.pages()) as usize
    }

    /// Whether the `size` block around `gfn` lies wholly inside the slot.
    pub fn block_inside(&self, gfn: u64, size: PageSize) -> bool {
        let start = gfn & !(size.pages() - 1);
        start >= self.base_gfn && start + size.pages() <= self.end_gfn()
    }

    /// Whether gfn and hva are congruent modulo `size` for this slot.
    pub fn congruent(&self, size: PageSize) -> bool {
        self.info(size).is_none_or(|l| !l.misaligned)
    }

    /// Write-track count of the `size` block around `gfn` (0 if none).
    pub fn disallow_count(&self, gfn: u64, size: PageSize) -> u32 {
        self.info(size)
            .and_then(|l| l.disallow.get(self.block_index(gfn, size)))
            .map_or(0, |w| w.load(Ordering::Acquire) & !MIXED)
    }

    /// Whether the `size` block around `gfn` has mixed memory attributes.
    pub fn mixed(&self, gfn: u64, size: PageSize) -> bool {
        self.info(size)
            .and_then(|l| l.disallow.get(self.block_index(gfn, size)))
            .is_some_and(|w| w.load(Ordering::Acquire) & MIXED != 0)
    }

    // ---- write tracking -------------------------------------------------------------------

    /// Whether `gfn` is write-tracked.
    pub fn is_write_tracked(&self, gfn: u64) -> bool {
        self.tracked.lock().contains_key(&gfn)
    }

    pub(crate) fn track(&self, gfn: u64, on: bool) -> bool {
        let mut t = self.tracked.lock();
        let changed = if on {
            *t.entry(gfn).or_insert(0) += 1;
            true
        } else if let Some(c) = t.get_mut(&gfn) {
            *c -= 1;
            if *c == 0 {
                t.remove(&gfn);
            }
            true
        } else {
            false
        };
        if changed {
            for l in &self.lpage {
                if let Some(w) = l.disallow.get(self.block_index(gfn, l.size)) {
                    if on {
                        w.fetch_add(1, Ordering::AcqRel);
                    } else {
                        w.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            }
        }
        changed
    }

    /// Write-tracked gfns.
    pub fn tracked_gfns(&self) -> Vec<u64> {
        self.tracked.lock().keys().copied().collect()
    }

    // ---- memory attributes ----------------------------------------------------------------

    /// Memory type of `gfn` (write-back unless set otherwise).
    pub fn mem_type(&self, gfn: u64) -> MemType {
        if !self.has_attrs.load(Ordering::Acquire) {
            return MemType::WriteBack;
        }
        let a = self.attrs.lock();
        match a.range(..=gfn).next_back() {
            Some((_, &(end, mt))) if gfn < end => mt,
            _ => MemType::WriteBack,
        }
    }

    /// Set the memory type of `npages` from `gfn`; recomputes the mixed marks of every huge
    /// block the range touches.
    pub(crate) fn set_mem_type(&self, gfn: u64, npages: u64, mt: MemType) {
        let end = gfn + npages;
        self.has_attrs.store(true, Ordering::Release);
        {
            let mut a = self.attrs.lock();
            // Cut existing ranges at gfn and end, drop what lies inside, insert the new range.
            let overlapping: Vec<(u64, (u64, MemType))> =
                a.range(..end).filter(|(_, (e, _))| *e > gfn).map(|(s, v)| (*s, *v)).collect();
            for (s, (e, m)) in overlapping {
                a.remove(&s);
                if s < gfn {
                    a.insert(s, (gfn, m));
                }
                if e > end {
                    a.insert(end, (e, m));
                }
            }
            if mt != MemType::WriteBack {
                a.insert(gfn, (end, mt));
            }
        }
        for l in &self.lpage {
            let pages = l.size.pages();
            let first = gfn / pages;
            let last = (end - 1) / pages;
            for b in first..=last {
                let start = (b * pages).max(self.base_gfn);
                let stop = ((b + 1) * pages).min(self.end_gfn());
                let mixed = !self.uniform(start, stop);
                if let Some(w) = l.disallow.get(self.block_index(b * pages, l.size)) {
                    if mixed {
                        w.fetch_or(MIXED, Ordering::AcqRel);
                    } else {
                        w.fetch_and(!MIXED, Ordering::AcqRel);
                    }
                }
            }
        }
    }

    fn uniform(&self, start: u64, stop: u64) -> bool {
        let first = self.mem_type(start);
        let a = self.attrs.lock();
        // Any range boundary strictly inside (start, stop) means a change of type.
        let boundary_inside = a.range(..stop).any(|(s, (e, _))| (*s > start && *s < stop) || (*e > start && *e < stop));
        drop(a);
        !boundary_inside || {
            // Boundaries may separate equal types; check page by page only in that rare case.
            (start..stop).all(|g| self.mem_type(g) == first)
        }
    }

    // ---- dirty bitmap ---------------------------------------------------------------------

    /// Mark `gfn` dirty in the log.
    #[inline]
    pub(crate) fn mark_dirty(&self, gfn: u64) {
        let i = gfn - self.base_gfn;
        self.bitmap()[(i / 64) as usize].fetch_or(1 << (i % 64), Ordering::AcqRel);
    }

    fn bitmap(&self) -> &[AtomicU64] {
        self.dirty.call_once(|| (0..self.npages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect())
    }

    /// Whether `gfn` is marked dirty.
    pub fn is_marked_dirty(&self, gfn: u64) -> bool {
        let i = gfn - self.base_gfn;
        self.dirty.get().is_some_and(|d| d[(i / 64) as usize].load(Ordering::Acquire) & (1 << (i % 64)) != 0)
    }

    pub(crate) fn fill_dirty(&self, value: bool) {
        for (w, word) in self.bitmap().iter().enumerate() {
            let valid = (self.npages - w as u64 * 64).min(64);
            let v = if !value {
                0
            } else if valid == 64 {
                u64::MAX
            } else {
                (1u64 << valid) - 1
            };
            word.store(v, Ordering::Release);
        }
    }

    /// Read word `word` of the log, clearing it when `clear` (0 past the end).
    pub(crate) fn read_dirty_word(&self, word: usize, clear: bool) -> u64 {
        self.bitmap()
            .get(word)
            .map_or(0, |w| if clear { w.swap(0, Ordering::AcqRel) } else { w.load(Ordering::Acquire) })
    }

    /// Clear the bits of `mask` in word `word`; returns the bits that were set and are now clear.
    pub(crate) fn clear_dirty_word(&self, word: usize, mask: u64) -> u64 {
        self.bitmap().get(word).map_or(0, |w| w.fetch_and(!mask, Ordering::AcqRel) & mask)
    }

    /// Bookkeeping bytes held for this slot (bitmaps and per-block words).
    pub fn bookkeeping_bytes(&self) -> u64 {
        let words = self.dirty.get().map_or(0, |d| d.len() as u64 * 8);
        let lp: u64 = self.lpage.iter().map(|l| l.disallow.len() as u64 * 4).sum();
        words + lp + core::mem::size_of::<Self>() as u64
    }
}

/// Public description of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemslotInfo {
    /// Slot id.
    pub id: u32,
    /// First gfn.
    pub base_gfn: u64,
    /// Pages.
    pub npages: u64,
    /// Host address.
    pub hva: u64,
    /// Read-only.
    pub readonly: bool,
    /// Dirty logging on.
    pub logging: bool,
}

impl From<&Memslot> for MemslotInfo {
    fn from(s: &Memslot) -> Self {
        MemslotInfo {
            id: s.id,
            base_gfn: s.base_gfn,
            npages: s.npages,
            hva: s.hva,
            readonly: s.readonly,
            logging: s.is_logging(),
        }
    }
}

/// The set of memslots, sorted by gfn.
#[derive(Debug, Default)]
pub(crate) struct Memslots {
    slots: Vec<alloc::sync::Arc<Memslot>>,
}

impl Memslots {
    pub(crate) fn validate(&self, spec: &MemslotSpec, input_bits: u32) -> Result<(), MemslotError> {
        let id = spec.id;
        if spec.npages == 0 {
            return Err(MemslotError::Empty { id });
        }
        if spec.hva % PAGE_SIZE != 0 {
            return Err(MemslotError::MisalignedHva { id, hva: spec.hva });
        }
        let limit = 1u64 << (input_bits - 12);
        if spec.base_gfn.checked_add(spec.npages).is_none_or(|e| e > limit) {
            return Err(MemslotError::TooLarge { id, base_gfn: spec.base_gfn, npages: spec.npages, bits: input_bits });
        }
        if spec.npages.checked_mul(PAGE_SIZE).and_then(|b| spec.hva.checked_add(b)).is_none() {
            return Err(MemslotError::HvaOverflow { id, hva: spec.hva, npages: spec.npages });
        }
        if self.slots.iter().any(|s| s.id == id) {
            return Err(MemslotError::Exists { id });
        }
        let end_gfn = spec.base_gfn + spec.npages;
        if let Some(o) = self.slots.iter().find(|s| s.base_gfn < end_gfn && spec.base_gfn < s.end_gfn()) {
            return Err(MemslotError::Overlap { id, base_gfn: spec.base_gfn, end_gfn, other: o.id });
        }
        Ok(())
    }

    /// Validate moving slot `spec.id` to `spec.base_gfn` (the slot itself is not an overlap).
    pub(crate) fn validate_move(&self, spec: &MemslotSpec, input_bits: u32) -> Result<(), MemslotError> {
        let others = Memslots { slots: self.slots.iter().filter(|s| s.id != spec.id).cloned().collect() };
        others.validate(spec, input_bits)
    }

    pub(crate) fn insert(&mut self, slot: alloc::sync::Arc<Memslot>) {
        let pos = self.slots.partition_point(|s| s.base_gfn < slot.base_gfn);
        self.slots.insert(pos, slot);
    }

    pub(crate) fn remove(&mut self, id: u32) -> Option<alloc::sync::Arc<Memslot>> {
        let pos = self.slots.iter().position(|s| s.id == id)?;
        Some(self.slots.remove(pos))
    }

    pub(crate) fn find_gfn(&self, gfn: u64) -> Option<&alloc::sync::Arc<Memslot>> {
        let i = self.slots.partition_point(|s| s.base_gfn <= gfn);
        let s = self.slots.get(i.checked_sub(1)?)?;
        s.contains(gfn).then_some(s)
    }

    pub(crate) fn get(&self, id: u32) -> Option<&alloc::sync::Arc<Memslot>> {
        self.slots.iter().find(|s| s.id == id)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &alloc::sync::Arc<Memslot>> {
        self.slots.iter()
    }

    /// Slots intersecting the host range, with the gfn range each maps of it.
    pub(crate) fn hva_to_gfns(&self, start: u64, end: u64) -> Vec<(alloc::sync::Arc<Memslot>, u64, u64)> {
        self.slots
            .iter()
            .filter_map(|s| {
                let (hs, he) = s.hva_range();
                let (a, b) = (start.max(hs), end.min(he));
                (a < b).then(|| {
                    let g0 = s.base_gfn + (a - hs) / PAGE_SIZE;
                    let g1 = s.base_gfn + (b - hs).div_ceil(PAGE_SIZE);
                    (s.clone(), g0, g1)
                })
            })
            .collect()
    }
}
