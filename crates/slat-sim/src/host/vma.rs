//! Virtual memory areas of the VMM process: the `mmap` request types (backing kind and policy,
//! protection, THP advice, placement) and the ordered set of VMAs with split and merge.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use slat_mmu::BackingKind;
use slat_pt::PageSize;

use super::config::{page_size_serde, PAGE};
use super::object::ObjectId;

/// Anonymous THP policy, as `/sys/kernel/mm/transparent_hugepage/enabled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThpMode {
    /// No THP (faults allocate 4 KiB pages; khugepaged leaves the VMA alone).
    Never,
    /// THP only in VMAs with `MADV_HUGEPAGE` ([`ThpAdvice::HugePage`]).
    #[default]
    Madvise,
    /// THP wherever the 2 MiB block fits the VMA.
    Always,
}

/// shmem / tmpfs `huge=` policy (the mount option, or `shmem_enabled` for memfd).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShmemHuge {
    /// No huge folios (Linux's default).
    #[default]
    Never,
    /// Huge folios for every 512-page-aligned file block inside the file.
    Always,
    /// Huge folios only where the whole 2 MiB file block lies within the file size.
    WithinSize,
    /// Huge folios only in VMAs with `MADV_HUGEPAGE`.
    Advise,
}

/// The THP advice of a VMA (`madvise(MADV_HUGEPAGE / MADV_NOHUGEPAGE)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThpAdvice {
    /// No advice.
    #[default]
    None,
    /// `MADV_HUGEPAGE` (VmFlags `hg`).
    HugePage,
    /// `MADV_NOHUGEPAGE` (VmFlags `nh`): no THP faults, no khugepaged, no `MADV_COLLAPSE`.
    NoHugePage,
}

/// Protection of a VMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prot {
    /// `PROT_READ | PROT_WRITE`.
    #[default]
    ReadWrite,
    /// `PROT_READ`.
    ReadOnly,
    /// `PROT_NONE`: nothing is mapped; accesses fail.
    None,
}

impl Prot {
    /// Whether reads are allowed.
    pub const fn readable(self) -> bool {
        !matches!(self, Prot::None)
    }

    /// Whether writes are allowed.
    pub const fn writable(self) -> bool {
        matches!(self, Prot::ReadWrite)
    }
}

/// Where `mmap` places a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// At the next free 1 GiB-aligned address plus `offset` (page aligned, below 1 GiB), so that
    /// `hva % 2 MiB == offset % 2 MiB` and `hva % 1 GiB == offset`.
    Aligned {
        /// Offset from the 1 GiB boundary.
        offset: u64,
    },
    /// Exactly at `hva` (`MAP_FIXED_NOREPLACE`: it must not overlap an existing VMA).
    Fixed {
        /// The address.
        hva: u64,
    },
}

impl Default for Placement {
    fn default() -> Self {
        Placement::Aligned { offset: 0 }
    }
}

/// What backs a mapping, with the backing's huge-page policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Backing {
    /// Private anonymous memory.
    Anonymous {
        /// The THP policy.
        #[serde(default)]
        thp: ThpMode,
    },
    /// A fresh shmem file (memfd / tmpfs) mapped shared.
    Shmem {
        /// The `huge=` policy.
        #[serde(default)]
        huge: ShmemHuge,
        /// Byte offset of the mapping in the file (page aligned).
        #[serde(default)]
        file_offset: u64,
        /// File size in bytes (default: `file_offset + len`). Faults past it fail.
        #[serde(default)]
        file_size: Option<u64>,
    },
    /// A fresh hugetlbfs file; pages come from the host's pool of `page_size` pages.
    Hugetlbfs {
        /// 2M or 1G.
        #[serde(with = "page_size_serde")]
        page_size: PageSize,
        /// Byte offset of the mapping in the file (a multiple of `page_size`).
        #[serde(default)]
        file_offset: u64,
    },
    /// A fresh regular file in the page cache, mapped shared, whose folios may be large.
    PageCache {
        /// Largest folio order the file system allocates (0 = 4 KiB only, 9 = PMD size; larger
        /// values act as 9, Linux's `MAX_PAGECACHE_ORDER` on x86-64).
        #[serde(default)]
        max_folio_order: u8,
        /// Byte offset of the mapping in the file (page aligned).
        #[serde(default)]
        file_offset: u64,
        /// File size in bytes (default: `file_offset + len`). Faults past it fail.
        #[serde(default)]
        file_size: Option<u64>,
    },
    /// Part of the host's DAX device ([`HostConfig::dax_size`](super::HostConfig::dax_size)):
    /// device memory outside the buddy allocator, no refcounted pages, mapped with the largest
    /// leaf up to `max_leaf` that the alignment of hva and device offset allows (falling back
    /// silently, as fsdax does).
    Dax {
        /// Largest host leaf (the device's alignment: `"2M"` or `"1G"`).
        #[serde(with = "page_size_serde")]
        max_leaf: PageSize,
        /// Byte offset of the mapping in the device (page aligned); the mapping must end inside
        /// the device.
        #[serde(default)]
        file_offset: u64,
    },
    /// `VM_PFNMAP` memory such as a device BAR: host physical `pa..pa + len`, uncached, mapped
    /// with leaves up to `max_leaf` where hva and pa are congruent.
    PfnMap {
        /// Physical address of the first byte (page aligned).
        pa: u64,
        /// Largest host leaf.
        #[serde(with = "page_size_serde")]
        max_leaf: PageSize,
    },
}

impl Backing {
    /// The backing kind the MMU sees.
    pub const fn kind(&self) -> BackingKind {
        match self {
            Backing::Anonymous { .. } => BackingKind::Anonymous,
            Backing::Shmem { .. } => BackingKind::Shmem,
            Backing::Hugetlbfs { .. } => BackingKind::Hugetlbfs,
            Backing::PageCache { .. } => BackingKind::PageCache,
            Backing::Dax { .. } => BackingKind::Dax,
            Backing::PfnMap { .. } => BackingKind::PfnMap,
        }
    }

    /// Byte offset of the mapping in its file or device (0 for anonymous memory; `pa` for
    /// PFN maps).
    pub const fn file_offset(&self) -> u64 {
        match *self {
            Backing::Anonymous { .. } => 0,
            Backing::Shmem { file_offset, .. }
            | Backing::Hugetlbfs { file_offset, .. }
            | Backing::PageCache { file_offset, .. }
            | Backing::Dax { file_offset, .. } => file_offset,
            Backing::PfnMap { pa, .. } => pa,
        }
    }
}

/// A request to map memory into the VMM process.
///
/// ```
/// use slat_sim::host::{Backing, MmapRequest, ThpAdvice, ThpMode};
/// let req = MmapRequest::new(1 << 30, Backing::Anonymous { thp: ThpMode::Madvise })
///     .with_advice(ThpAdvice::HugePage)
///     .at_offset(4096); // hva = 4 KiB past a 1 GiB boundary: misaligned for 2M and 1G
/// assert_eq!(req.len, 1 << 30);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmapRequest {
    /// Length in bytes (page aligned; a multiple of the page size for hugetlbfs).
    pub len: u64,
    /// What backs it.
    pub backing: Backing,
    /// Protection.
    #[serde(default)]
    pub prot: Prot,
    /// THP advice applied right after mapping (as QEMU does with `MADV_HUGEPAGE`).
    #[serde(default)]
    pub advice: ThpAdvice,
    /// Where to place it.
    #[serde(default)]
    pub placement: Placement,
}

impl MmapRequest {
    /// A read-write mapping of `len` bytes, no advice, 1 GiB aligned.
    pub fn new(len: u64, backing: Backing) -> Self {
        MmapRequest { len, backing, prot: Prot::ReadWrite, advice: ThpAdvice::None, placement: Placement::default() }
    }

    /// With protection `prot`.
    pub fn with_prot(self, prot: Prot) -> Self {
        MmapRequest { prot, ..self }
    }

    /// With THP advice `advice`.
    pub fn with_advice(self, advice: ThpAdvice) -> Self {
        MmapRequest { advice, ..self }
    }

    /// Placed `offset` bytes past a 1 GiB boundary.
    pub fn at_offset(self, offset: u64) -> Self {
        MmapRequest { placement: Placement::Aligned { offset }, ..self }
    }

    /// Placed exactly at `hva`.
    pub fn fixed(self, hva: u64) -> Self {
        MmapRequest { placement: Placement::Fixed { hva }, ..self }
    }
}

/// A VMA as reported by [`SimHost::vmas`](super::SimHost::vmas).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VmaInfo {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Backing (of the original mapping).
    pub backing: Backing,
    /// Current protection.
    pub prot: Prot,
    /// Current THP advice.
    pub advice: ThpAdvice,
}

/// One VMA. `pgoff` is the page index (in the object, device or physical space) of `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Vma {
    pub start: u64,
    pub end: u64,
    /// Page index of `start`: in the object for folio-backed memory (anonymous memory uses
    /// `hva >> 12`, as Linux does), in the device for DAX, the pfn for PFN maps.
    pub pgoff: u64,
    /// The memory object (anonymous memory or file) for folio-backed kinds.
    pub object: Option<ObjectId>,
    /// For DAX: pfn of the device's first page. Unused otherwise.
    pub device_pfn: u64,
    pub backing: Backing,
    pub prot: Prot,
    pub advice: ThpAdvice,
}

impl Vma {
    /// Page index of `hva` (inside the VMA).
    pub fn index_of(&self, hva: u64) -> u64 {
        self.pgoff + (hva - self.start) / PAGE
    }

    /// Address of page `index`, if the VMA maps it.
    pub fn hva_of(&self, index: u64) -> Option<u64> {
        let pages = (self.end - self.start) / PAGE;
        (index >= self.pgoff && index - self.pgoff < pages).then(|| self.start + (index - self.pgoff) * PAGE)
    }

    /// Whether the `size` block at `block` lies wholly inside the VMA.
    pub fn contains_block(&self, block: u64, size: u64) -> bool {
        block >= self.start && block.saturating_add(size) <= self.end
    }

    pub fn kind(&self) -> BackingKind {
        self.backing.kind()
    }

    pub fn info(&self) -> VmaInfo {
        VmaInfo { start: self.start, end: self.end, backing: self.backing, prot: self.prot, advice: self.advice }
    }

    fn can_merge(&self, next: &Vma) -> bool {
        self.end == next.start
            && self.object == next.object
            && self.backing == next.backing
            && self.prot == next.prot
            && self.advice == next.advice
            && self.device_pfn == next.device_pfn
            && next.pgoff == self.pgoff + (self.end - self.start) / PAGE
    }
}

/// The VMAs of the process, by start address.
#[derive(Debug, Default)]
pub(crate) struct VmaTree {
    map: BTreeMap<u64, Vma>,
}

impl VmaTree {
    /// The VMA containing `hva`.
    pub fn find(&self, hva: u64) -> Option<&Vma> {
        self.map.range(..=hva).next_back().map(|(_, v)| v).filter(|v| hva < v.end)
    }

    /// First address of `start..end` that no VMA covers.
    pub fn first_gap(&self, start: u64, end: u64) -> Option<u64> {
        let mut at = start;
        while at < end {
            match self.find(at) {
                Some(v) => at = v.end,
                None => return Some(at),
            }
        }
        None
    }

    /// Whether any VMA overlaps `start..end`.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.find(start).is_some() || self.map.range(start..end).next().is_some()
    }

    /// Copies of the VMAs overlapping `start..end`, in address order.
    pub fn overlapping(&self, start: u64, end: u64) -> Vec<Vma> {
        let first = self.find(start).map(|v| v.start).unwrap_or(start);
        self.map.range(first..end).map(|(_, v)| v.clone()).collect()
    }

    /// Every VMA, in address order.
    pub fn iter(&self) -> impl Iterator<Item = &Vma> {
        self.map.values()
    }

    pub fn insert(&mut self, vma: Vma) {
        self.map.insert(vma.start, vma);
    }

    pub fn remove(&mut self, start: u64) -> Option<Vma> {
        self.map.remove(&start)
    }

    pub fn get_mut(&mut self, start: u64) -> Option<&mut Vma> {
        self.map.get_mut(&start)
    }

    /// Split the VMA containing `addr` so that a VMA starts at `addr`. Returns the object of the
    /// split VMA (now referenced by one more VMA), if a split happened.
    pub fn split_at(&mut self, addr: u64) -> Option<Option<ObjectId>> {
        let start = self.find(addr).filter(|v| v.start != addr)?.start;
        let head = self.map.get_mut(&start)?;
        let mut tail = head.clone();
        head.end = addr;
        tail.pgoff = head.pgoff + (addr - head.start) / PAGE;
        tail.start = addr;
        let object = tail.object;
        self.map.insert(addr, tail);
        Some(object)
    }

    /// Merge compatible neighbours among the VMAs overlapping `start..end` and the ones just
    /// around it. Returns the objects that lost a VMA reference, once per merge.
    pub fn merge_around(&mut self, start: u64, end: u64) -> Vec<Option<ObjectId>> {
        let mut dropped = Vec::new();
        let lo = self.map.range(..start).next_back().map(|(&s, _)| s).unwrap_or(start);
        let mut cur = lo;
        loop {
            let Some(v) = self.map.get(&cur) else {
                match self.map.range(cur..).next() {
                    Some((&s, _)) if s <= end => {
                        cur = s;
                        continue;
                    }
                    _ => break,
                }
            };
            let next_start = v.end;
            let mergeable = self.map.get(&next_start).is_some_and(|n| v.can_merge(n));
            if mergeable {
                let Some(next) = self.map.remove(&next_start) else { break };
                if let Some(v) = self.map.get_mut(&cur) {
                    v.end = next.end;
                }
                dropped.push(next.object);
                continue;
            }
            if next_start > end {
                break;
            }
            match self.map.range(next_start..).next() {
                Some((&s, _)) if s <= end => cur = s,
                _ => break,
            }
        }
        dropped
    }
}
