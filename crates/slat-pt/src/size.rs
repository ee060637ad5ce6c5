//! Page sizes and table levels.
//!
//! Levels count from the bottom: level 0 holds 4 KiB leaves, level 1 covers 2 MiB per entry,
//! level 2 covers 1 GiB per entry, level 3 covers 512 GiB and level 4 covers 256 TiB. This
//! numbering is the same for every 4 KiB-granule format, whatever the hardware calls its levels
//! (Intel's PML4 is level 3 here, Arm's "level 0" is level 3 here).

/// Bits of address translated by the offset within a 4 KiB page.
pub const PAGE_SHIFT: u32 = 12;
/// Bytes in a 4 KiB page.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Entries in one 4 KiB page-table page.
pub const ENTRIES_PER_TABLE: usize = 512;

/// A level in the table tree, 0 being the level of 4 KiB leaves.
pub type Level = u8;

/// Size of a leaf translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PageSize {
    /// 4 KiB page (level 0).
    Size4K,
    /// 2 MiB block (level 1).
    Size2M,
    /// 1 GiB block (level 2).
    Size1G,
}

impl PageSize {
    /// All sizes, smallest first.
    pub const ALL: [PageSize; 3] = [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G];

    /// Bytes covered by a leaf of this size.
    ///
    /// ```
    /// use slat_pt::PageSize;
    /// assert_eq!(PageSize::Size2M.bytes(), 2 << 20);
    /// ```
    #[inline]
    pub const fn bytes(self) -> u64 {
        1 << self.shift()
    }

    /// log2 of [`bytes`](Self::bytes).
    #[inline]
    pub const fn shift(self) -> u32 {
        PAGE_SHIFT + 9 * self.level() as u32
    }

    /// Number of 4 KiB pages covered.
    #[inline]
    pub const fn pages(self) -> u64 {
        1 << (9 * self.level() as u32)
    }

    /// Level whose entries are leaves of this size.
    #[inline]
    pub const fn level(self) -> Level {
        match self {
            PageSize::Size4K => 0,
            PageSize::Size2M => 1,
            PageSize::Size1G => 2,
        }
    }

    /// The leaf size at `level`, if a leaf can exist there in any format.
    #[inline]
    pub const fn from_level(level: Level) -> Option<PageSize> {
        match level {
            0 => Some(PageSize::Size4K),
            1 => Some(PageSize::Size2M),
            2 => Some(PageSize::Size1G),
            _ => None,
        }
    }

    /// The next smaller size, if any.
    #[inline]
    pub const fn smaller(self) -> Option<PageSize> {
        match self {
            PageSize::Size4K => None,
            PageSize::Size2M => Some(PageSize::Size4K),
            PageSize::Size1G => Some(PageSize::Size2M),
        }
    }

    /// The next larger size, if any.
    #[inline]
    pub const fn larger(self) -> Option<PageSize> {
        match self {
            PageSize::Size4K => Some(PageSize::Size2M),
            PageSize::Size2M => Some(PageSize::Size1G),
            PageSize::Size1G => None,
        }
    }

    /// Whether `addr` is aligned to this size.
    #[inline]
    pub const fn is_aligned(self, addr: u64) -> bool {
        addr & (self.bytes() - 1) == 0
    }

    /// `addr` rounded down to this size.
    #[inline]
    pub const fn align_down(self, addr: u64) -> u64 {
        addr & !(self.bytes() - 1)
    }

    /// Short human name: `4K`, `2M`, `1G`.
    pub const fn name(self) -> &'static str {
        match self {
            PageSize::Size4K => "4K",
            PageSize::Size2M => "2M",
            PageSize::Size1G => "1G",
        }
    }
}

impl core::fmt::Display for PageSize {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Bytes covered by one entry at `level`.
#[inline]
pub const fn level_bytes(level: Level) -> u64 {
    1 << level_shift(level)
}

/// log2 of [`level_bytes`].
#[inline]
pub const fn level_shift(level: Level) -> u32 {
    PAGE_SHIFT + 9 * level as u32
}

/// Index of `addr` in a table at `level` with `entries` entries.
#[inline]
pub const fn table_index(addr: u64, level: Level, entries: usize) -> usize {
    ((addr >> level_shift(level)) as usize) & (entries - 1)
}
