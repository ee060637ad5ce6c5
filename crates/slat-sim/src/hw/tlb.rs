//! The TLB model: set-associative arrays with LRU replacement, one set per vCPU.
//!
//! Each entry caches a combined gva -> hpa translation at the smaller of the guest page size and
//! the stage-2 leaf size (a 2 MiB guest page backed by 4 KiB stage-2 leaves is cached as 4 KiB
//! pieces; only when both are huge does one entry cover a huge page). Besides gva and hpa, an
//! entry remembers the gpa it came from and the stage-2 leaf (base and size) that translated
//! it, so that stage-2 invalidations by gpa range find it.
//!
//! A vCPU's TLB has first-level arrays split by size (4 KiB, 2 MiB, 1 GiB), a second-level TLB
//! (STLB) shared by 4 KiB and 2 MiB entries, and a 1 GiB STLB array. A lookup probes the
//! first-level arrays, then the STLB (filling the first level on an STLB hit); a walk fills both.

use slat_pt::{Access, PageSize};

use super::config::{HwConfig, TlbArrayConfig};

/// Permission and state bits of a cached translation.
pub(crate) mod flags {
    /// Reads allowed.
    pub const READ: u8 = 1 << 0;
    /// Writes allowed.
    pub const WRITE: u8 = 1 << 1;
    /// Instruction fetches allowed.
    pub const EXEC: u8 = 1 << 2;
    /// The stage-2 leaf was dirty when cached: writes need no walk to set the dirty state.
    pub const DIRTY: u8 = 1 << 3;
}

/// Flags an entry needs to serve `access` without a walk.
#[inline]
pub(crate) const fn needed_flags(access: Access) -> u8 {
    match access {
        Access::Read => flags::READ,
        Access::Write => flags::WRITE | flags::DIRTY,
        Access::Exec => flags::EXEC,
    }
}

/// Which level of the TLB hierarchy served a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlbLevel {
    /// A first-level (L1) array.
    L1,
    /// The second-level TLB (STLB).
    Stlb,
}

/// One cached gva -> hpa translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedTranslation {
    /// gva of the first byte (aligned to `size`).
    pub gva: u64,
    /// gpa of the first byte.
    pub gpa: u64,
    /// hpa of the first byte.
    pub hpa: u64,
    /// Size cached: min(guest page size, stage-2 leaf size).
    pub size: PageSize,
    /// gpa of the stage-2 leaf that translated it.
    pub stage2_gpa: u64,
    /// Size of that stage-2 leaf.
    pub stage2_size: PageSize,
    /// Whether reads are allowed.
    pub readable: bool,
    /// Whether writes are allowed.
    pub writable: bool,
    /// Whether instruction fetches are allowed.
    pub executable: bool,
    /// Whether the stage-2 leaf was dirty when cached (a write through a clean entry walks again
    /// so the hardware can set the dirty state).
    pub dirty: bool,
}

/// Internal entry: the translation plus its packed flags.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub hpa: u64,
    pub gpa: u64,
    pub stage2_gpa: u64,
    pub stage2_size: PageSize,
    pub flags: u8,
}

impl Entry {
    fn public(&self, tag: u64) -> CachedTranslation {
        let size = tag_size(tag);
        CachedTranslation {
            gva: tag & !(size.bytes() - 1),
            gpa: self.gpa,
            hpa: self.hpa,
            size,
            stage2_gpa: self.stage2_gpa,
            stage2_size: self.stage2_size,
            readable: self.flags & flags::READ != 0,
            writable: self.flags & flags::WRITE != 0,
            executable: self.flags & flags::EXEC != 0,
            dirty: self.flags & flags::DIRTY != 0,
        }
    }
}

const VALID: u64 = 1;

/// Tag of a `size` page at `gva`: the page base, the size code in bits 1-2 and a valid bit.
/// Zero is never a valid tag.
#[inline]
pub(crate) const fn tag_of(gva: u64, size: PageSize) -> u64 {
    let code = match size {
        PageSize::Size4K => 1,
        PageSize::Size2M => 2,
        PageSize::Size1G => 3,
    };
    (gva & !(size.bytes() - 1)) | (code << 1) | VALID
}

#[inline]
const fn tag_size(tag: u64) -> PageSize {
    match (tag >> 1) & 3 {
        1 => PageSize::Size4K,
        2 => PageSize::Size2M,
        _ => PageSize::Size1G,
    }
}

/// One set-associative array with true LRU replacement.
#[derive(Debug, Clone)]
pub(crate) struct TlbArray {
    set_mask: u64,
    ways: usize,
    /// Tags, `ways` per set; 0 = invalid.
    tags: Box<[u64]>,
    entries: Box<[Entry]>,
    /// Last-use time of each way, for LRU.
    stamps: Box<[u64]>,
}

impl TlbArray {
    pub(crate) fn new(cfg: TlbArrayConfig) -> Self {
        let sets = cfg.sets();
        let n = sets * cfg.ways;
        let empty = Entry { hpa: 0, gpa: 0, stage2_gpa: 0, stage2_size: PageSize::Size4K, flags: 0 };
        TlbArray {
            set_mask: (sets.max(1) - 1) as u64,
            ways: if sets == 0 { 0 } else { cfg.ways },
            tags: vec![0; n].into_boxed_slice(),
            entries: vec![empty; n].into_boxed_slice(),
            stamps: vec![0; n].into_boxed_slice(),
        }
    }

    #[inline]
    fn set_base(&self, gva: u64, size: PageSize) -> usize {
        ((gva >> size.shift()) & self.set_mask) as usize * self.ways
    }

    /// Index of the entry tagged `tag` (for a `size` page at `gva`), marking it used at `now`.
    #[inline]
    pub(crate) fn lookup(&mut self, gva: u64, size: PageSize, now: u64) -> Option<&Entry> {
        let tag = tag_of(gva, size);
        let base = self.set_base(gva, size);
        let set = self.tags.get(base..base + self.ways)?;
        let w = set.iter().position(|&t| t == tag)?;
        self.stamps[base + w] = now;
        Some(&self.entries[base + w])
    }

    /// Insert (or overwrite) the translation for a `size` page at `gva`, evicting the least
    /// recently used way of the set.
    pub(crate) fn insert(&mut self, gva: u64, size: PageSize, entry: Entry, now: u64) {
        if self.ways == 0 {
            return;
        }
        let tag = tag_of(gva, size);
        let base = self.set_base(gva, size);
        let set = &self.tags[base..base + self.ways];
        let w = match set.iter().position(|&t| t == tag) {
            Some(w) => w,
            None => match set.iter().position(|&t| t == 0) {
                Some(w) => w,
                None => {
                    let stamps = &self.stamps[base..base + self.ways];
                    // Ties cannot happen (stamps are unique per vCPU), but pick the first anyway.
                    (0..self.ways).min_by_key(|&w| stamps[w]).unwrap_or(0)
                }
            },
        };
        self.tags[base + w] = tag;
        self.entries[base + w] = entry;
        self.stamps[base + w] = now;
    }

    /// Invalidate every entry for which `hit` says so; returns how many.
    pub(crate) fn invalidate(&mut self, mut hit: impl FnMut(&Entry) -> bool) -> u64 {
        let mut n = 0;
        for (tag, e) in self.tags.iter_mut().zip(self.entries.iter()) {
            if *tag != 0 && hit(e) {
                *tag = 0;
                n += 1;
            }
        }
        n
    }

    /// Invalidate everything; returns how many entries were valid.
    pub(crate) fn clear(&mut self) -> u64 {
        self.invalidate(|_| true)
    }

    pub(crate) fn for_each(&self, mut f: impl FnMut(CachedTranslation)) {
        for (&tag, e) in self.tags.iter().zip(self.entries.iter()) {
            if tag != 0 {
                f(e.public(tag));
            }
        }
    }

    pub(crate) fn occupancy(&self) -> usize {
        self.tags.iter().filter(|&&t| t != 0).count()
    }
}

/// Outcome of a TLB lookup.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TlbHit {
    pub entry: Entry,
    pub size: PageSize,
    pub level: TlbLevel,
}

/// The TLB of one vCPU.
#[derive(Debug, Clone)]
pub(crate) struct VcpuTlb {
    l1: [TlbArray; 3],
    stlb: TlbArray,
    stlb_1g: TlbArray,
    now: u64,
}

impl VcpuTlb {
    pub(crate) fn new(cfg: &HwConfig) -> Self {
        VcpuTlb {
            l1: [TlbArray::new(cfg.l1_4k), TlbArray::new(cfg.l1_2m), TlbArray::new(cfg.l1_1g)],
            stlb: TlbArray::new(cfg.stlb),
            stlb_1g: TlbArray::new(cfg.stlb_1g),
            now: 0,
        }
    }

    /// The second-level array holding `size` translations.
    #[inline]
    fn stlb_for(&mut self, size: PageSize) -> &mut TlbArray {
        if size == PageSize::Size1G {
            &mut self.stlb_1g
        } else {
            &mut self.stlb
        }
    }

    /// Look `gva` up: first-level arrays, then the STLB (an STLB hit is copied into the first
    /// level).
    #[inline]
    pub(crate) fn lookup(&mut self, gva: u64) -> Option<TlbHit> {
        self.now += 1;
        let now = self.now;
        for size in PageSize::ALL {
            if let Some(e) = self.l1[size.level() as usize].lookup(gva, size, now) {
                return Some(TlbHit { entry: *e, size, level: TlbLevel::L1 });
            }
        }
        self.lookup_stlb(gva, now)
    }

    #[inline(never)]
    fn lookup_stlb(&mut self, gva: u64, now: u64) -> Option<TlbHit> {
        for size in PageSize::ALL {
            if let Some(&e) = self.stlb_for(size).lookup(gva, size, now) {
                self.l1[size.level() as usize].insert(gva, size, e, now);
                return Some(TlbHit { entry: e, size, level: TlbLevel::Stlb });
            }
        }
        None
    }

    /// Cache a walked translation of a `size` page at `gva` in the STLB and the first level.
    pub(crate) fn fill(&mut self, gva: u64, size: PageSize, entry: Entry) {
        self.now += 1;
        let now = self.now;
        self.stlb_for(size).insert(gva, size, entry, now);
        self.l1[size.level() as usize].insert(gva, size, entry, now);
    }

    fn arrays_mut(&mut self) -> [&mut TlbArray; 5] {
        let [a, b, c] = &mut self.l1;
        [a, b, c, &mut self.stlb, &mut self.stlb_1g]
    }

    fn arrays(&self) -> [&TlbArray; 5] {
        [&self.l1[0], &self.l1[1], &self.l1[2], &self.stlb, &self.stlb_1g]
    }

    /// Invalidate entries whose stage-2 leaf satisfies `hit`; returns how many.
    pub(crate) fn invalidate(&mut self, mut hit: impl FnMut(&Entry) -> bool) -> u64 {
        self.arrays_mut().into_iter().map(|a| a.invalidate(&mut hit)).sum()
    }

    /// Empty the TLB; returns how many entries were valid.
    pub(crate) fn clear(&mut self) -> u64 {
        self.arrays_mut().into_iter().map(TlbArray::clear).sum()
    }

    /// Visit every valid entry, first level first.
    pub(crate) fn for_each(&self, mut f: impl FnMut(CachedTranslation)) {
        for a in self.arrays() {
            a.for_each(&mut f);
        }
    }

    /// Valid entries over all arrays.
    pub(crate) fn occupancy(&self) -> usize {
        self.arrays().iter().map(|a| a.occupancy()).sum()
    }
}
