//! [`slat_mmu::HostMemory`] over real memory.
//!
//! * [`LocalMemory`]: this process's own [`Backing`]s. `fault_in` faults the page in with
//!   `MADV_POPULATE_READ/WRITE` (as `get_user_pages` would), and every answer comes from the
//!   kernel's page tables through `PAGEMAP_SCAN`: where the kernel placed a THP or a hugetlb
//!   page, the MMU sees a huge host leaf, and nowhere else.
//! * [`ProcessSnapshot`]: any process, read-only, from a [`HostMap`] taken once. It never faults
//!   anything in; an absent page stays absent.
//!
//! PFNs come from `/proc/PID/pagemap` and need `CAP_SYS_ADMIN`; without it the kernel reports 0
//! and these types answer with the hva's own page number instead (a stand-in that keeps a huge
//! block's pages congruent, so the MMU's rules see the same sizes; the tables then translate to
//! that stand-in, not to real frames).
//!
//! ```no_run
//! use slat_linux::backing::{Backing, Placement, ThpAdvice};
//! use slat_linux::memory::LocalMemory;
//! use slat_mmu::{testing::RecordingTlb, Gfn, Gpa, Hva, MemslotSpec, Mmu, MmuConfig, Parts};
//! use slat_pt::{format::Ept4, Access, SimFrameAllocator};
//!
//! let ram = Backing::anonymous(64 << 20, ThpAdvice::Hugepage, Placement::aligned(2 << 20))?;
//! let host = LocalMemory::new(vec![&ram])?;
//! let mmu = Mmu::<Ept4, Parts<_, _, _>>::new(MmuConfig::default(), SimFrameAllocator::new(1 << 40, 64 << 20), host, RecordingTlb::default()).unwrap();
//! mmu.add_memslot(MemslotSpec { id: 0, base_gfn: Gfn(0x40000), npages: ram.len() >> 12, hva: Hva(ram.hva()), readonly: false, log_dirty: false }).unwrap();
//! mmu.handle_fault(Gpa(0x4000_0000), Access::Write).unwrap(); // a 2M leaf where the kernel placed a THP
//! # Ok::<(), slat_linux::Error>(())
//! ```

use rustix::mm::Advice;
use slat_mmu::{BackingKind, HostError, HostMemory, HostPage, Hva, Pfn};
use slat_pt::PageSize;

use crate::backing::Backing;
use crate::error::Result;
use crate::hostmap::HostMap;
use crate::pagemap::Pagemap;
use crate::scan::{self, Categories};

/// One place that builds a [`HostPage`]: RAM is write-back; a PFN map is taken as device
/// memory (uncached), as `HostPage::new` does.
fn host_page(pfn: u64, size: PageSize, writable: bool, kind: BackingKind) -> HostPage {
    HostPage::new(Pfn(pfn), size, writable, kind)
}

fn pfn_or_standin(pagemap: Option<&Pagemap>, hva: u64) -> u64 {
    pagemap.and_then(|p| p.entry(hva).ok()).and_then(|e| e.pfn()).filter(|&p| p != 0).unwrap_or(hva >> 12)
}

/// This process's backings as the MMU's host.
#[derive(Debug)]
pub struct LocalMemory<'a> {
    backings: Vec<&'a Backing>,
    pagemap: Pagemap,
    pfns: bool,
}

impl<'a> LocalMemory<'a> {
    /// A host made of `backings` (addresses outside them are not mapped, as far as the MMU is
    /// concerned). Fails with [`crate::Error::Unsupported`] without `PAGEMAP_SCAN`.
    pub fn new(backings: Vec<&'a Backing>) -> Result<Self> {
        let pagemap = Pagemap::open(0)?;
        if !scan::supported() {
            return Err(crate::Error::Unsupported {
                what: "PAGEMAP_SCAN (Linux 6.7+), needed to read host leaf sizes".into(),
            });
        }
        let pfns = rustix::process::geteuid().is_root();
        Ok(LocalMemory { backings, pagemap, pfns })
    }

    fn backing(&self, hva: u64) -> Option<&'a Backing> {
        self.backings.iter().copied().find(|b| b.contains(hva))
    }

    fn page(&self, b: &Backing, hva: u64) -> Option<HostPage> {
        let page = hva & !4095;
        let regions = scan::scan(self.pagemap.file(), page, page + 4096).ok()?;
        let r = regions.first().filter(|r| r.categories.contains(Categories::PRESENT))?;
        let size = if r.categories.contains(Categories::HUGE) {
            b.hugetlb().map_or(PageSize::Size2M, |h| h.page_size())
        } else {
            PageSize::Size4K
        };
        let zero = r.categories.contains(Categories::PFNZERO);
        let pfn = pfn_or_standin(self.pfns.then_some(&self.pagemap), hva);
        Some(host_page(pfn, size, !zero, b.kind()))
    }
}

impl HostMemory for LocalMemory<'_> {
    fn fault_in(&self, hva: Hva, write: bool) -> Result<HostPage, HostError> {
        let hva = hva.0;
        let b = self.backing(hva).ok_or(HostError::NotMapped { hva: Hva(hva) })?;
        let unit = b.hugetlb().map_or(4096, |h| h.bytes());
        let off = (hva - b.hva()) & !(unit - 1);
        let advice = if write { Advice::LinuxPopulateWrite } else { Advice::LinuxPopulateRead };
        b.madvise(off, unit, advice).map_err(|e| match e {
            crate::Error::Io { ref source, .. } if source.raw_os_error() == Some(12) => {
                HostError::OutOfMemory { hva: Hva(hva), kind: b.kind() }
            }
            _ => HostError::Again { hva: Hva(hva) },
        })?;
        self.page(b, hva).ok_or(HostError::Again { hva: Hva(hva) })
    }

    fn lookup(&self, hva: Hva) -> Option<HostPage> {
        let hva = hva.0;
        let b = self.backing(hva)?;
        self.page(b, hva)
    }

    /// The kernel tracks the dirtiness of this process's pages itself (the guest's writes are
    /// this process's memory writes); nothing to record.
    fn mark_dirty(&self, _pfn: Pfn, _pages: u64) {}

    /// As [`mark_dirty`](Self::mark_dirty): the kernel ages these pages itself.
    fn mark_accessed(&self, _pfn: Pfn, _pages: u64) {}
}

/// A read-only view of another process's memory, taken once.
#[derive(Debug)]
pub struct ProcessSnapshot {
    map: HostMap,
    pagemap: Option<Pagemap>,
}

impl ProcessSnapshot {
    /// A snapshot over `map`; `pagemap` (opened by root) supplies real PFNs on lookup.
    pub fn new(map: HostMap, pagemap: Option<Pagemap>) -> Self {
        ProcessSnapshot { map, pagemap }
    }

    /// The extents.
    pub fn map(&self) -> &HostMap {
        &self.map
    }
}

impl HostMemory for ProcessSnapshot {
    /// A snapshot cannot fault another process's memory in: it answers with the page as it was
    /// when the snapshot was taken, and [`HostError::NotMapped`] when it was absent.
    fn fault_in(&self, hva: Hva, write: bool) -> Result<HostPage, HostError> {
        let hva = hva.0;
        let p = self.lookup(Hva(hva)).ok_or(HostError::NotMapped { hva: Hva(hva) })?;
        if write && !p.writable {
            return Err(HostError::ReadOnly { hva: Hva(hva) });
        }
        Ok(p)
    }

    fn lookup(&self, hva: Hva) -> Option<HostPage> {
        let hva = hva.0;
        let e = self.map.lookup(Hva(hva))?;
        let pfn = pfn_or_standin(self.pagemap.as_ref(), hva);
        let kind = if e.kind == BackingKind::PfnMap { BackingKind::PfnMap } else { e.kind };
        Some(host_page(pfn, e.size, e.writable && !e.zero, kind))
    }

    /// Read-only view: the observed process's kernel tracks its pages; nothing to record.
    fn mark_dirty(&self, _pfn: Pfn, _pages: u64) {}

    /// Read-only view: nothing to record.
    fn mark_accessed(&self, _pfn: Pfn, _pages: u64) {}
}
