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

use lock_api::RawRwLock;
use slat_pt::{Gfn, Hva, MemType, PageSize, PAGE_SIZE};

use crate::lock::Mutex;

mod attrs;
mod bitmap;
mod lpage;
mod set;
mod track;

use lpage::LpageInfo;
pub(crate) use set::Memslots;

/// What the embedder asks for when adding a memslot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemslotSpec {
    /// Slot id (unique).
    pub id: u32,
    /// First guest frame number.
    pub base_gfn: Gfn,
    /// Number of 4 KiB pages.
    pub npages: u64,
    /// Host virtual address backing `base_gfn` (page aligned).
    pub hva: Hva,
    /// Guest writes are refused.
    pub readonly: bool,
    /// Dirty logging on from the start.
    pub log_dirty: bool,
}

/// Invalid memslot requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
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
        hva: Hva,
    },
    /// The gfn range does not fit the guest-physical space of the format.
    #[error("memslot {id}: gfn range {base_gfn:#x}+{npages:#x} exceeds the {bits}-bit guest-physical space")]
    TooLarge {
        /// Slot id.
        id: u32,
        /// First gfn.
        base_gfn: Gfn,
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
        hva: Hva,
        /// Pages.
        npages: u64,
    },
    /// The gfn range overlaps another slot.
    #[error("memslot {id}: gfns {base_gfn:#x}..{end_gfn:#x} overlap memslot {other}")]
    Overlap {
        /// Slot id.
        id: u32,
        /// First gfn.
        base_gfn: Gfn,
        /// End gfn (exclusive).
        end_gfn: Gfn,
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
        gfn: Gfn,
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

/// A memslot and its bookkeeping.
pub struct Memslot<R: RawRwLock> {
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
    tracked: Mutex<R, BTreeMap<u64, u32>>,
    attrs: Mutex<R, BTreeMap<u64, (u64, MemType)>>,
    /// Whether any memory type other than write-back was ever set (fast path for faults).
    has_attrs: AtomicBool,
}

impl<R: RawRwLock> Memslot<R> {
    pub(crate) fn new(spec: &MemslotSpec) -> Self {
        let (base_gfn, hva) = (spec.base_gfn.0, spec.hva.0);
        let lpage = [PageSize::Size2M, PageSize::Size1G].map(|size| {
            let pages = size.pages();
            let first = base_gfn / pages;
            let last = (base_gfn + spec.npages - 1) / pages;
            LpageInfo {
                size,
                misaligned: (base_gfn ^ (hva / PAGE_SIZE)) & (pages - 1) != 0,
                disallow: (first..=last).map(|_| AtomicU32::new(0)).collect(),
            }
        });
        Memslot {
            id: spec.id,
            base_gfn,
            npages: spec.npages,
            hva,
            readonly: spec.readonly,
            logging: AtomicBool::new(spec.log_dirty),
            lpage,
            dirty: spin::Once::new(),
            tracked: Mutex::new(BTreeMap::new()),
            attrs: Mutex::new(BTreeMap::new()),
            has_attrs: AtomicBool::new(false),
        }
    }

    /// The slot at `new_base_gfn` after a successful move: same host range, flags and dirty
    /// bitmap (offsets are relative to the slot, so they stay valid); large-page bookkeeping is
    /// rebuilt for the new gfns, write tracking and memory types start empty.
    pub(crate) fn moved_to(&self, new_base_gfn: u64) -> Memslot<R> {
        let spec = MemslotSpec {
            id: self.id,
            base_gfn: Gfn(new_base_gfn),
            npages: self.npages,
            hva: Hva(self.hva),
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

    /// Bookkeeping bytes held for this slot (bitmaps and per-block words).
    pub fn bookkeeping_bytes(&self) -> u64 {
        let words = self.dirty.get().map_or(0, |d| d.len() as u64 * 8);
        let lp: u64 = self.lpage.iter().map(|l| l.disallow.len() as u64 * 4).sum();
        words + lp + core::mem::size_of::<Self>() as u64
    }
}

/// Public description of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemslotInfo {
    /// Slot id.
    pub id: u32,
    /// First gfn.
    pub base_gfn: Gfn,
    /// Pages.
    pub npages: u64,
    /// Host address.
    pub hva: Hva,
    /// Read-only.
    pub readonly: bool,
    /// Dirty logging on.
    pub logging: bool,
}

impl<R: RawRwLock> From<&Memslot<R>> for MemslotInfo {
    fn from(s: &Memslot<R>) -> Self {
        MemslotInfo {
            id: s.id,
            base_gfn: Gfn(s.base_gfn),
            npages: s.npages,
            hva: Hva(s.hva),
            readonly: s.readonly,
            logging: s.is_logging(),
        }
    }
}
