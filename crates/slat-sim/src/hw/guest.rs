//! The guest's own page tables (stage 1), modelled abstractly.
//!
//! The guest maps virtual addresses (gva) to guest-physical addresses (gpa) through a radix tree
//! of 4 or 5 levels, with leaves of 4 KiB (level 0), 2 MiB (level 1) or 1 GiB (level 2). The
//! mapping is given as a list of [`GuestRegion`]s, each with its own guest page size. Entry
//! contents are not stored: they follow from the regions. What matters to the hardware model is
//! *where* each guest table page lives, because every guest table read is itself a
//! guest-physical access that needs a stage-2 translation. Table pages are placed one after the
//! other from a configurable gpa (the root first, then each level top-down, in gva order), so the
//! guest tables occupy `table_gpa_range()` and nothing else.
//!
//! Levels use the same numbering as `slat-pt`: level 0 holds 4 KiB leaves, the root of a
//! 4-level tree is level 3.

use core::ops::Range;

use slat_pt::size::{level_shift, table_index, ENTRIES_PER_TABLE};
use slat_pt::{PageSize, PAGE_SIZE};

use super::HwError;

/// Bytes in one guest page-table entry.
pub const GUEST_PTE_BYTES: u64 = 8;

/// Depth of the guest's paging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GuestPaging {
    /// 4-level paging: 48-bit gva, root at level 3.
    #[default]
    FourLevel,
    /// 5-level paging (LA57): 57-bit gva, root at level 4.
    FiveLevel,
}

impl GuestPaging {
    /// Number of levels walked for a 4 KiB leaf.
    pub const fn levels(self) -> u8 {
        match self {
            GuestPaging::FourLevel => 4,
            GuestPaging::FiveLevel => 5,
        }
    }

    /// Width of the gva space (only the lower, non-negative half is modelled).
    pub const fn gva_bits(self) -> u32 {
        level_shift(self.levels())
    }
}

/// A run of guest-virtual memory mapped with one guest page size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GuestRegion {
    /// First gva (aligned to `page_size`).
    pub gva: u64,
    /// Length in bytes (a non-zero multiple of `page_size`).
    pub len: u64,
    /// Guest page size: the level of the guest's leaves.
    pub page_size: PageSize,
    /// gpa that `gva` maps to (aligned to `page_size`); the region maps linearly.
    pub gpa: u64,
}

impl GuestRegion {
    /// `len` bytes at `gva` mapped to `gpa` with guest pages of `page_size`.
    pub const fn new(gva: u64, len: u64, page_size: PageSize, gpa: u64) -> Self {
        GuestRegion { gva, len, page_size, gpa }
    }

    /// gva range covered.
    pub const fn gva_range(&self) -> Range<u64> {
        self.gva..self.gva + self.len
    }

    /// Whether the region maps `gva`.
    #[inline]
    pub const fn contains(&self, gva: u64) -> bool {
        gva >= self.gva && gva - self.gva < self.len
    }
}

/// A guest translation of one gva.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestTranslation {
    /// The translated gpa of the byte.
    pub gpa: u64,
    /// Guest page size of the leaf that maps it.
    pub size: PageSize,
}

/// A run of consecutive table pages at one level: tables for gva prefixes `first..=last`, the
/// first at table page number `page`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TableRun {
    first: u64,
    last: u64,
    page: u64,
}

/// The guest's page tables: regions, and where each table page lives in guest-physical memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestTables {
    paging: GuestPaging,
    table_gpa: u64,
    /// Regions sorted by gva.
    regions: Vec<GuestRegion>,
    /// Per level (index = level), table runs sorted by prefix.
    runs: Vec<Vec<TableRun>>,
    table_pages: u64,
}

impl GuestTables {
    /// Guest tables of depth `paging` mapping `regions`, with table pages placed from
    /// `table_gpa` (4 KiB aligned).
    ///
    /// Errors: a region that is empty, misaligned, overlaps another, or lies outside the gva
    /// space; a misaligned table base; a table area that would overflow the address space.
    ///
    /// ```
    /// use slat_pt::PageSize;
    /// use slat_sim::hw::{GuestPaging, GuestRegion, GuestTables};
    /// // 4 MiB of 4 KiB pages at gva 0x40_0000 -> gpa 0, tables from gpa 1 GiB.
    /// let g = GuestTables::new(
    ///     GuestPaging::FourLevel,
    ///     0x4000_0000,
    ///     [GuestRegion::new(0x40_0000, 4 << 20, PageSize::Size4K, 0)],
    /// )
    /// .unwrap();
    /// // root + 1 PDPT + 1 PD + 2 PTs
    /// assert_eq!(g.table_pages(), 5);
    /// assert_eq!(g.translate(0x40_1234).unwrap().gpa, 0x1234);
    /// ```
    pub fn new(
        paging: GuestPaging,
        table_gpa: u64,
        regions: impl IntoIterator<Item = GuestRegion>,
    ) -> Result<Self, HwError> {
        if !PageSize::Size4K.is_aligned(table_gpa) {
            return Err(HwError::TableAreaMisaligned { gpa: table_gpa });
        }
        let levels = paging.levels();
        let gva_limit = 1u64 << paging.gva_bits();
        let mut regions: Vec<GuestRegion> = regions.into_iter().collect();
        for r in &regions {
            let s = r.page_size;
            if r.len == 0 || !s.is_aligned(r.gva) || !s.is_aligned(r.len) || !s.is_aligned(r.gpa) {
                return Err(HwError::RegionMisaligned { gva: r.gva, len: r.len, gpa: r.gpa, page_size: s });
            }
            let fits_gva = r.gva.checked_add(r.len).is_some_and(|end| end <= gva_limit);
            if !fits_gva || r.gpa.checked_add(r.len).is_none() {
                return Err(HwError::RegionOutOfRange { gva: r.gva, len: r.len, gva_bits: paging.gva_bits() });
            }
        }
        regions.sort_by_key(|r| r.gva);
        for w in regions.windows(2) {
            if w[0].gva + w[0].len > w[1].gva {
                return Err(HwError::RegionOverlap { first: w[0].gva, second: w[1].gva });
            }
        }
        // Tables at level L exist for every gva prefix (gva >> shift(L + 1)) that a region with
        // leaves at or below L touches. The root always exists.
        let mut runs: Vec<Vec<TableRun>> = vec![Vec::new(); levels as usize];
        runs[levels as usize - 1].push(TableRun { first: 0, last: 0, page: 0 });
        for r in &regions {
            for level in r.page_size.level()..levels - 1 {
                let shift = level_shift(level + 1);
                let first = r.gva >> shift;
                let last = (r.gva + r.len - 1) >> shift;
                runs[level as usize].push(TableRun { first, last, page: 0 });
            }
        }
        let mut page = 0u64;
        for level in (0..levels as usize).rev() {
            let v = &mut runs[level];
            v.sort_by_key(|t| t.first);
            let mut merged: Vec<TableRun> = Vec::with_capacity(v.len());
            for t in v.drain(..) {
                match merged.last_mut() {
                    Some(m) if t.first <= m.last + 1 => m.last = m.last.max(t.last),
                    _ => merged.push(t),
                }
            }
            for t in &mut merged {
                t.page = page;
                page += t.last - t.first + 1;
            }
            *v = merged;
        }
        if page.checked_mul(PAGE_SIZE).and_then(|b| b.checked_add(table_gpa)).is_none() {
            return Err(HwError::TableAreaMisaligned { gpa: table_gpa });
        }
        Ok(GuestTables { paging, table_gpa, regions, runs, table_pages: page })
    }

    /// Depth of the guest's paging.
    pub fn paging(&self) -> GuestPaging {
        self.paging
    }

    /// Number of guest levels (4 or 5).
    pub fn levels(&self) -> u8 {
        self.paging.levels()
    }

    /// Regions, sorted by gva.
    pub fn regions(&self) -> &[GuestRegion] {
        &self.regions
    }

    /// Number of guest page-table pages.
    pub fn table_pages(&self) -> u64 {
        self.table_pages
    }

    /// gpa range holding every guest page-table page (stage 2 must map it for walks to succeed).
    pub fn table_gpa_range(&self) -> Range<u64> {
        self.table_gpa..self.table_gpa + self.table_pages * PAGE_SIZE
    }

    /// gpa of the root table (what the guest's CR3 / TTBR holds).
    pub fn root_gpa(&self) -> u64 {
        self.table_gpa
    }

    /// The region that maps `gva`, if any.
    #[inline]
    pub fn region_of(&self, gva: u64) -> Option<&GuestRegion> {
        let i = self.regions.partition_point(|r| r.gva <= gva);
        let r = self.regions.get(i.checked_sub(1)?)?;
        r.contains(gva).then_some(r)
    }

    /// Translate `gva` through the guest tables alone.
    pub fn translate(&self, gva: u64) -> Option<GuestTranslation> {
        self.region_of(gva).map(|r| GuestTranslation { gpa: r.gpa + (gva - r.gva), size: r.page_size })
    }

    /// gpa of the table page at `level` on the path to `gva`, if that table exists.
    #[inline]
    pub fn table_gpa(&self, level: u8, gva: u64) -> Option<u64> {
        let runs = self.runs.get(level as usize)?;
        let prefix = gva.checked_shr(level_shift(level + 1)).unwrap_or(0);
        let i = runs.partition_point(|t| t.first <= prefix);
        let t = runs.get(i.checked_sub(1)?)?;
        (prefix <= t.last).then(|| self.table_gpa + (t.page + (prefix - t.first)) * PAGE_SIZE)
    }

    /// gpa of the entry at `level` that translates `gva`, if its table exists.
    #[inline]
    pub fn entry_gpa(&self, level: u8, gva: u64) -> Option<u64> {
        self.table_gpa(level, gva).map(|t| t + table_index(gva, level, ENTRIES_PER_TABLE) as u64 * GUEST_PTE_BYTES)
    }
}
