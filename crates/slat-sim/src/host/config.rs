//! Host configuration: RAM size and placement, fragmentation, hugetlb pools, khugepaged tuning and
//! the physical / virtual address-space layout of the simulated host.

use serde::{Deserialize, Serialize};

/// 4 KiB.
pub(crate) const PAGE: u64 = 4096;
/// 2 MiB.
pub(crate) const SIZE_2M: u64 = 2 << 20;
/// 1 GiB.
pub(crate) const SIZE_1G: u64 = 1 << 30;
/// Host virtual addresses are 48-bit (the x86-64 4-level host page tables).
pub(crate) const HVA_LIMIT: u64 = 1 << 48;
/// Physical addresses are at most 52-bit.
pub(crate) const PA_LIMIT: u64 = 1 << 52;

/// How the simulated host is built. Every field has a default, so a TOML table may name only
/// what it changes.
///
/// Physical layout: RAM at `ram_base..ram_base + memory` (managed by the buddy allocator); one
/// DAX device at `device_base..device_base + dax_size`, which DAX mappings carve from by file
/// offset; the frames of the VMM's own host page tables at
/// `page_table_base..page_table_base + page_table_capacity` (outside RAM, so they never
/// disturb the buddy allocator). A guest's stage-2 tables should use yet another base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostConfig {
    /// Bytes of host RAM managed by the buddy allocator (a multiple of 4 KiB). Default 16 GiB.
    pub memory: u64,
    /// Physical address of the first byte of RAM (1 GiB aligned). Default 4 GiB.
    pub ram_base: u64,
    /// Fraction in `0..=1` of the 2 MiB blocks still free after the hugetlb pools are reserved
    /// in which one randomly placed 4 KiB page is pinned (unmovable) at startup: a 2 MiB
    /// allocation can never be served from such a block, even after compaction. Default 0.
    pub fragmentation: f64,
    /// Fraction in `0..=1` of the 1 GiB blocks still wholly free after `fragmentation` was
    /// applied in which one more 4 KiB page is pinned, so 1 GiB allocations fail there (each such
    /// pin also blocks the 2 MiB block it lands in). Default 0.
    pub fragmentation_1g: f64,
    /// 2 MiB hugetlb pages reserved at startup (boot-time `hugepages=`), before fragmentation.
    /// If RAM runs out the pool is smaller, as Linux does silently; see the stats.
    pub hugetlb_2m_pages: u64,
    /// 1 GiB hugetlb pages reserved at startup, before the 2 MiB pool and fragmentation.
    pub hugetlb_1g_pages: u64,
    /// khugepaged `max_ptes_none`: a 2 MiB block is collapsed only when at most this many of its
    /// 512 PTEs are empty. `MADV_COLLAPSE` ignores it. Default 511 (Linux's default).
    pub khugepaged_max_ptes_none: u32,
    /// Seed of the host's ChaCha random generator (fragmentation placement).
    pub seed: u64,
    /// First host virtual address `mmap` hands out (1 GiB aligned, below 2^48).
    pub mmap_base: u64,
    /// Bytes of DAX device memory (a multiple of 2 MiB; 0: no DAX device). Default 0.
    pub dax_size: u64,
    /// Physical base of the DAX device (1 GiB aligned, at or above the end of RAM).
    pub device_base: u64,
    /// Physical base of the host page-table frames (2 MiB aligned, at or above the end of the
    /// DAX device).
    pub page_table_base: u64,
    /// Bytes reserved for host page-table frames (frames are backed lazily).
    pub page_table_capacity: u64,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            memory: 16 << 30,
            ram_base: 4 << 30,
            fragmentation: 0.0,
            fragmentation_1g: 0.0,
            hugetlb_2m_pages: 0,
            hugetlb_1g_pages: 0,
            khugepaged_max_ptes_none: 511,
            seed: 0,
            mmap_base: 0x7000_0000_0000,
            dax_size: 0,
            device_base: 0x1000_0000_0000,
            page_table_base: 0x2000_0000_0000,
            page_table_capacity: 16 << 30,
        }
    }
}

/// A [`HostConfig`] that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HostConfigError {
    /// A fraction outside `0..=1` (or not a number).
    #[error("{field} = {value} is outside 0..=1")]
    Fraction {
        /// The field.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// A size or address not aligned as required.
    #[error("{field} = {value:#x} is not a multiple of {align:#x}")]
    Misaligned {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// Required alignment.
        align: u64,
    },
    /// A size that must not be zero.
    #[error("{field} must not be zero")]
    Zero {
        /// The field.
        field: &'static str,
    },
    /// The physical or virtual layout is out of order, overlapping or out of range.
    #[error("{field} = {value:#x} must be at least {min:#x} and below {limit:#x}")]
    Layout {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// Lowest allowed value.
        min: u64,
        /// Limit (exclusive).
        limit: u64,
    },
    /// The root of the host page tables could not be allocated.
    #[error("cannot allocate the host page-table root: {0}")]
    PageTable(slat_pt::PtError),
}

impl HostConfig {
    /// Check every field; the host is built only from a valid configuration.
    pub fn validate(&self) -> Result<(), HostConfigError> {
        for (field, value) in [("fragmentation", self.fragmentation), ("fragmentation_1g", self.fragmentation_1g)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(HostConfigError::Fraction { field, value });
            }
        }
        let aligned = |field, value: u64, align: u64| {
            if value % align == 0 {
                Ok(())
            } else {
                Err(HostConfigError::Misaligned { field, value, align })
            }
        };
        aligned("memory", self.memory, PAGE)?;
        aligned("ram_base", self.ram_base, SIZE_1G)?;
        aligned("mmap_base", self.mmap_base, SIZE_1G)?;
        aligned("device_base", self.device_base, SIZE_1G)?;
        aligned("page_table_base", self.page_table_base, SIZE_2M)?;
        aligned("page_table_capacity", self.page_table_capacity, PAGE)?;
        aligned("dax_size", self.dax_size, SIZE_2M)?;
        if self.memory == 0 {
            return Err(HostConfigError::Zero { field: "memory" });
        }
        if self.page_table_capacity == 0 {
            return Err(HostConfigError::Zero { field: "page_table_capacity" });
        }
        let layout = |field, value: u64, min: u64, limit: u64| {
            if value >= min && value < limit {
                Ok(())
            } else {
                Err(HostConfigError::Layout { field, value, min, limit })
            }
        };
        let ram_end = self.ram_base.saturating_add(self.memory);
        layout("memory", ram_end, self.memory, PA_LIMIT)?;
        layout("device_base", self.device_base, ram_end, PA_LIMIT)?;
        let dax_end = self.device_base.saturating_add(self.dax_size);
        layout("page_table_base", self.page_table_base, dax_end, PA_LIMIT)?;
        let pt_end = self.page_table_base.saturating_add(self.page_table_capacity);
        layout("page_table_capacity", pt_end, self.page_table_base, PA_LIMIT + 1)?;
        layout("mmap_base", self.mmap_base, SIZE_1G, HVA_LIMIT)?;
        Ok(())
    }
}

/// Serde for [`slat_pt::PageSize`] as `"4K"`, `"2M"` or `"1G"`.
pub(crate) mod page_size_serde {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};
    use slat_pt::PageSize;

    pub(crate) fn serialize<S: Serializer>(size: &PageSize, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(size.name())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PageSize, D::Error> {
        let s = String::deserialize(d)?;
        match s.to_ascii_uppercase().as_str() {
            "4K" => Ok(PageSize::Size4K),
            "2M" => Ok(PageSize::Size2M),
            "1G" => Ok(PageSize::Size1G),
            _ => Err(D::Error::custom(format!("unknown page size {s:?}; expected \"4K\", \"2M\" or \"1G\""))),
        }
    }
}
