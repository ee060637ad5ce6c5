//! `/proc/PID/pagemap` (one u64 per 4 KiB page) and `/proc/kpageflags` (one u64 per PFN).
//!
//! pagemap gives presence and, for `CAP_SYS_ADMIN`, the PFN (0 otherwise); kpageflags gives the
//! folio a page belongs to. Neither tells how the page is *mapped*: a THP whose PMD was split
//! (a 4K `mprotect`) still has `KPF_THP` on 512 contiguous PFNs. Use [`crate::scan`] for the
//! mapping size; this module is for PFNs and folio facts.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::error::{Error, Result};

/// One pagemap entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PagemapEntry(pub u64);

impl PagemapEntry {
    /// Bit 63: present.
    pub const fn present(self) -> bool {
        self.0 >> 63 & 1 == 1
    }
    /// Bit 62: swapped.
    pub const fn swapped(self) -> bool {
        self.0 >> 62 & 1 == 1
    }
    /// Bit 61: file page or shared anonymous.
    pub const fn file_or_shared(self) -> bool {
        self.0 >> 61 & 1 == 1
    }
    /// Bit 56: mapped exclusively.
    pub const fn exclusive(self) -> bool {
        self.0 >> 56 & 1 == 1
    }
    /// Bits 0-54: the PFN when present (0 without `CAP_SYS_ADMIN`).
    pub const fn pfn(self) -> Option<u64> {
        if self.present() {
            Some(self.0 & ((1 << 55) - 1))
        } else {
            None
        }
    }
}

/// An open `/proc/PID/pagemap`.
#[derive(Debug)]
pub struct Pagemap {
    file: File,
}

impl Pagemap {
    /// Open the pagemap of `pid` (0 = this process).
    pub fn open(pid: i32) -> Result<Self> {
        let path = if pid == 0 { "/proc/self/pagemap".to_string() } else { format!("/proc/{pid}/pagemap") };
        let file = File::open(&path).map_err(|e| Error::proc_file(pid, "open the page map", &path, e))?;
        Ok(Pagemap { file })
    }

    /// The open file (for [`crate::scan::scan`]).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Entries for `pages` 4 KiB pages from `hva` (page aligned).
    pub fn read(&self, hva: u64, pages: usize) -> Result<Vec<PagemapEntry>> {
        let mut bytes = vec![0u8; pages * 8];
        self.file
            .read_exact_at(&mut bytes, hva / 4096 * 8)
            .map_err(|e| Error::io(format!("read pagemap at {hva:#x}"), e))?;
        Ok(bytes.chunks_exact(8).map(|c| PagemapEntry(u64::from_ne_bytes(c.try_into().unwrap()))).collect())
    }

    /// The entry of one page.
    pub fn entry(&self, hva: u64) -> Result<PagemapEntry> {
        Ok(self.read(hva & !4095, 1)?[0])
    }
}

/// `/proc/kpageflags` bits used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageFlags(pub u64);

impl PageFlags {
    /// `KPF_COMPOUND_HEAD` (15).
    pub const fn compound_head(self) -> bool {
        self.0 >> 15 & 1 == 1
    }
    /// `KPF_COMPOUND_TAIL` (16).
    pub const fn compound_tail(self) -> bool {
        self.0 >> 16 & 1 == 1
    }
    /// `KPF_HUGE` (17): part of a hugetlb page.
    pub const fn hugetlb(self) -> bool {
        self.0 >> 17 & 1 == 1
    }
    /// `KPF_THP` (22): part of a large folio of any size, mapped at any granularity.
    pub const fn thp(self) -> bool {
        self.0 >> 22 & 1 == 1
    }
    /// `KPF_ZERO_PAGE` (24): the zero page or the huge zero page.
    pub const fn zero_page(self) -> bool {
        self.0 >> 24 & 1 == 1
    }
}

/// An open `/proc/kpageflags` (root).
#[derive(Debug)]
pub struct KpageFlags {
    file: File,
}

impl KpageFlags {
    /// Open `/proc/kpageflags`.
    pub fn open() -> Result<Self> {
        let file = File::open("/proc/kpageflags").map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => Error::Permission {
                what: "read page flags".into(),
                path: "/proc/kpageflags".into(),
                hint: "needs CAP_SYS_ADMIN (root)".into(),
            },
            _ => Error::io("open /proc/kpageflags", e),
        })?;
        Ok(KpageFlags { file })
    }

    /// Flags of `count` consecutive PFNs from `pfn`.
    pub fn read(&self, pfn: u64, count: usize) -> Result<Vec<PageFlags>> {
        let mut bytes = vec![0u8; count * 8];
        self.file
            .read_exact_at(&mut bytes, pfn * 8)
            .map_err(|e| Error::io(format!("read kpageflags at pfn {pfn:#x}"), e))?;
        Ok(bytes.chunks_exact(8).map(|c| PageFlags(u64::from_ne_bytes(c.try_into().unwrap()))).collect())
    }
}

/// What pagemap + kpageflags say about one 2 MiB-aligned block of addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FolioBlock {
    /// Pages present (of 512).
    pub present: u32,
    /// Present pages in a large folio (`KPF_THP`).
    pub thp: u32,
    /// Present pages of hugetlb (`KPF_HUGE`).
    pub hugetlb: u32,
    /// Present zero pages.
    pub zero: u32,
    /// All 512 present, PFN-contiguous and the first PFN 2M-aligned: the block *could* be one
    /// PMD (it may still be PTE-mapped).
    pub contiguous_aligned: bool,
}

/// Summarise the 2 MiB block at `hva` (2M-aligned) from pagemap and kpageflags (root for PFNs).
pub fn folio_block(pagemap: &Pagemap, kpf: &KpageFlags, hva: u64) -> Result<FolioBlock> {
    let entries = pagemap.read(hva & !0x1f_ffff, 512)?;
    let mut b = FolioBlock::default();
    let mut contiguous = true;
    let first = entries[0].pfn();
    for (i, e) in entries.iter().enumerate() {
        let Some(pfn) = e.pfn() else {
            contiguous = false;
            continue;
        };
        b.present += 1;
        if first.map(|f| f + i as u64) != Some(pfn) {
            contiguous = false;
        }
        if pfn != 0 {
            let f = kpf.read(pfn, 1)?[0];
            b.thp += f.thp() as u32;
            b.hugetlb += f.hugetlb() as u32;
            b.zero += f.zero_page() as u32;
        }
    }
    b.contiguous_aligned = contiguous && first.is_some_and(|f| f != 0 && f % 512 == 0);
    Ok(b)
}

/// Whether the 2 MiB block at `hva` (2M-aligned) holds one PMD-order large folio, all 512
/// pages present, PFN-contiguous and 2M-aligned: a THP. Cheap (one pagemap read, one
/// kpageflags read). Combined with "not PMD-mapped" from [`crate::scan`], it tells a
/// PTE-mapped THP (split mapping: a 4K mprotect/madvise, a partial munmap) from 4K folios.
pub fn is_thp_block(pagemap: &Pagemap, kpf: &KpageFlags, hva: u64) -> Result<bool> {
    let entries = pagemap.read(hva & !0x1f_ffff, 512)?;
    let Some(first) = entries[0].pfn().filter(|&p| p != 0 && p % 512 == 0) else { return Ok(false) };
    if entries.iter().enumerate().any(|(i, e)| e.pfn() != Some(first + i as u64)) {
        return Ok(false);
    }
    let f = kpf.read(first, 1)?[0];
    Ok(f.thp() && f.compound_head() && !f.zero_page())
}
