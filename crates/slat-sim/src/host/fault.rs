//! The host fault path (`get_user_pages`): find the VMA, find or allocate the folio the backing
//! policy asks for, and map it with the largest leaf the VMA, alignment and existing mappings
//! allow.
//!
//! Allocation by kind:
//! * anonymous: a 2 MiB folio when THP applies to the VMA (`always`, or `madvise` with
//!   `MADV_HUGEPAGE`), the aligned 2 MiB block lies inside the VMA and nothing is mapped in it
//!   yet; 4 KiB otherwise, and when the 2 MiB allocation fails (a THP fallback);
//! * shmem: a 2 MiB folio at the 512-page-aligned file index when `huge=` allows it and that file
//!   block is empty, whatever the VMA's alignment (so a misaligned mapping gets huge folios that
//!   it can only PTE-map);
//! * page cache: the largest folio up to `max_folio_order` whose aligned file block is empty and
//!   inside the file, falling back order by order;
//! * hugetlbfs: a page from the pool, or [`HostError::OutOfMemory`] when it is empty;
//! * DAX and PFN maps: no allocation; the pfn follows from the device / physical offset.
//!
//! Mapping: a PMD (PUD) leaf only when the folio covers the whole aligned block, the block lies
//! inside the VMA and the file, hva and file index are congruent, nothing else is mapped in it, and the
//! VMA is not `MADV_NOHUGEPAGE` (hugetlbfs excepted); a PTE for the faulting page otherwise.
//!
//! Write faults on a KSM page break copy-on-write here; `fault_in` has no notifier, so the old
//! page's stage-2 leaf is replaced by the MMU's own install of the new one.

use slat_mmu::{BackingKind, HostError, HostPage, Hva, Pfn};
use slat_pt::{PageSize, Perms, PtError, Translation};

use super::buddy::PMD_ORDER;
use super::config::PAGE;
use super::folio::{FolioKind, Owner};
use super::hugetlb::hugetlb_order;
use super::object::IndexedFolio;
use super::state::{leaf_attrs, HostState};
use super::vma::{Backing, ShmemHuge, ThpAdvice, ThpMode, Vma};

impl HostState {
    /// `HostMemory::fault_in`.
    pub fn fault_in(&mut self, hva: u64, write: bool) -> Result<HostPage, HostError> {
        let page = hva & !(PAGE - 1);
        let vma = self.vmas.find(hva).cloned().ok_or(HostError::NotMapped { hva: Hva(hva) })?;
        if !vma.prot.readable() {
            return Err(HostError::NotMapped { hva: Hva(hva) });
        }
        if write && !vma.prot.writable() {
            return Err(HostError::ReadOnly { hva: Hva(hva) });
        }
        let oom = |_: PtError| HostError::OutOfMemory { hva: Hva(hva), kind: vma.kind() };
        match self.pt.translate(page) {
            Some(t) if write && !t.attrs.perms.contains(Perms::WRITE) => self.write_upgrade(&vma, page, t)?,
            Some(_) => {}
            None => match vma.kind() {
                BackingKind::Dax | BackingKind::PfnMap => self.fault_direct(&vma, page).map_err(oom)?,
                _ => {
                    let folio = self.find_or_alloc_folio(&vma, page)?;
                    self.map_folio_page(&vma, page, folio).map_err(oom)?;
                }
            },
        }
        let t = self.pt.translate(hva).ok_or(HostError::Again { hva: Hva(hva) })?;
        let pfn = t.pa / PAGE;
        if write {
            self.flags.mark_dirty(pfn, 1);
        } else {
            self.flags.mark_accessed(pfn, 1);
        }
        Ok(HostPage::new(Pfn(pfn), t.size, t.attrs.perms.contains(Perms::WRITE), vma.kind()))
    }

    /// `HostMemory::lookup`.
    pub fn lookup(&self, hva: Hva) -> Option<HostPage> {
        let hva = hva.0;
        let vma = self.vmas.find(hva)?;
        let t = self.pt.translate(hva)?;
        Some(HostPage::new(Pfn(t.pa / PAGE), t.size, t.attrs.perms.contains(Perms::WRITE), vma.kind()))
    }

    /// A write to a read-only leaf of a writable VMA: break copy-on-write of a KSM page, or
    /// restore write permission.
    fn write_upgrade(&mut self, vma: &Vma, page: u64, t: Translation) -> Result<(), HostError> {
        let oom = HostError::OutOfMemory { hva: Hva(page), kind: vma.kind() };
        let old = t.pa / PAGE;
        let ksm = self.folios.find(old).is_some_and(|(_, f)| f.kind == FolioKind::Ksm);
        if !ksm {
            let block = t.size.align_down(page);
            self.pt.protect(block, block + t.size.bytes(), |_| Some(Perms::RW)).map_err(|_| oom)?;
            return Ok(());
        }
        let object = vma.object.ok_or(oom)?;
        let index = vma.index_of(page);
        let new = self.alloc_object_folio(object, index, 0, FolioKind::Anonymous).ok_or(oom)?;
        self.flags.copy(old, new, 1);
        let leaves = self.pt.unmap(page, page + PAGE, &mut self.folios).map_err(|_| oom)?;
        self.after_unmap(&leaves);
        self.pt.map(page, PageSize::Size4K, new, leaf_attrs(vma), &mut self.folios).map_err(|_| oom)?;
        self.stats.ksm_cow_breaks += 1;
        Ok(())
    }

    /// DAX and PFN maps: the largest leaf the VMA and the congruence of hva and pfn allow.
    fn fault_direct(&mut self, vma: &Vma, page: u64) -> Result<(), PtError> {
        let index = vma.index_of(page);
        let (pfn, max_leaf) = match vma.backing {
            Backing::Dax { max_leaf, .. } => (vma.device_pfn + index, max_leaf),
            Backing::PfnMap { max_leaf, .. } => (index, max_leaf),
            _ => return Ok(()),
        };
        for size in [PageSize::Size1G, PageSize::Size2M] {
            if size > max_leaf {
                continue;
            }
            let block = size.align_down(page);
            if !vma.contains_block(block, size.bytes()) {
                continue;
            }
            let block_pfn = pfn - (page - block) / PAGE;
            if block_pfn % size.pages() == 0 && self.pt.mapped_pages(block, size) == 0 {
                return self.pt.map(block, size, block_pfn, leaf_attrs(vma), &mut self.folios);
            }
        }
        self.pt.map(page, PageSize::Size4K, pfn, leaf_attrs(vma), &mut self.folios)
    }

    /// The folio holding the page at `page` in the VMA's object, allocated if absent.
    pub fn find_or_alloc_folio(&mut self, vma: &Vma, page: u64) -> Result<IndexedFolio, HostError> {
        let hva = page;
        let object = vma.object.ok_or(HostError::NotMapped { hva: Hva(hva) })?;
        let index = vma.index_of(page);
        let obj = self.objects.get(&object).ok_or(HostError::NotMapped { hva: Hva(hva) })?;
        if index >= obj.file_pages {
            // Past the end of the file: SIGBUS.
            return Err(HostError::NotMapped { hva: Hva(hva) });
        }
        if let Some(f) = obj.folio_at(index) {
            return Ok(f);
        }
        let file_pages = obj.file_pages;
        let hole = |st: &HostState, start: u64, pages: u64| {
            st.objects.get(&object).is_some_and(|o| o.is_hole(start, start + pages))
        };
        let oom = HostError::OutOfMemory { hva: Hva(hva), kind: vma.kind() };
        let thp_block = index & !511;
        let (kind, orders): (FolioKind, Vec<u8>) = match vma.backing {
            Backing::Anonymous { thp } => {
                let allowed = vma.advice != ThpAdvice::NoHugePage
                    && (thp == ThpMode::Always || (thp == ThpMode::Madvise && vma.advice == ThpAdvice::HugePage));
                let block = PageSize::Size2M.align_down(page);
                let fits = vma.contains_block(block, PageSize::Size2M.bytes())
                    && self.pt.mapped_pages(block, PageSize::Size2M) == 0
                    && hole(self, thp_block, 512);
                (FolioKind::Anonymous, if allowed && fits { vec![PMD_ORDER, 0] } else { vec![0] })
            }
            Backing::Shmem { huge, .. } => {
                let within = thp_block + 512 <= file_pages;
                let allowed = vma.advice != ThpAdvice::NoHugePage
                    && match huge {
                        ShmemHuge::Never => false,
                        ShmemHuge::Always => true,
                        ShmemHuge::WithinSize => within,
                        ShmemHuge::Advise => vma.advice == ThpAdvice::HugePage,
                    };
                let fits = hole(self, thp_block, 512);
                (FolioKind::Shmem, if allowed && fits { vec![PMD_ORDER, 0] } else { vec![0] })
            }
            Backing::PageCache { max_folio_order, .. } => {
                let orders = (1..=max_folio_order.min(PMD_ORDER))
                    .rev()
                    .filter(|&o| {
                        let start = index & !((1u64 << o) - 1);
                        start + (1 << o) <= file_pages && hole(self, start, 1 << o)
                    })
                    .chain([0])
                    .collect();
                (FolioKind::PageCache, orders)
            }
            Backing::Hugetlbfs { page_size, .. } => {
                let order = hugetlb_order(page_size).ok_or(oom)?;
                let pfn = self.pools.take(page_size).ok_or(oom)?;
                let head = index & !((1u64 << order) - 1);
                self.add_object_folio(object, head, pfn, order, FolioKind::Hugetlb);
                return Ok((head, pfn, order));
            }
            Backing::Dax { .. } | Backing::PfnMap { .. } => return Err(HostError::NotMapped { hva: Hva(hva) }),
        };
        for order in orders {
            let head = index & !((1u64 << order) - 1);
            if let Some(pfn) = self.alloc_object_folio(object, head, order, kind) {
                if order == PMD_ORDER {
                    self.stats.thp_alloc += 1;
                }
                return Ok((head, pfn, order));
            }
            if order == PMD_ORDER {
                self.stats.thp_fallback += 1;
            }
        }
        Err(oom)
    }

    /// Map the page at `page` of `folio`: with a PUD or PMD leaf when the whole aligned block
    /// can be, a PTE otherwise.
    pub fn map_folio_page(&mut self, vma: &Vma, page: u64, folio: IndexedFolio) -> Result<(), PtError> {
        let (hi, head, order) = folio;
        let index = vma.index_of(page);
        let huge_ok = vma.advice != ThpAdvice::NoHugePage || vma.kind() == BackingKind::Hugetlbfs;
        let file_pages = vma.object.and_then(|o| self.objects.get(&o)).map_or(0, |o| o.file_pages);
        for size in [PageSize::Size1G, PageSize::Size2M] {
            let n = size.pages();
            let block = size.align_down(page);
            if !huge_ok || (1u64 << order) < n || !vma.contains_block(block, size.bytes()) {
                continue;
            }
            // Inside the VMA, so the block's first index is at least the VMA's pgoff.
            let block_index = index - (page - block) / PAGE;
            if block_index % n == 0
                && block_index >= hi
                && block_index + n <= hi + (1 << order)
                && block_index + n <= file_pages
                && self.pt.mapped_pages(block, size) == 0
            {
                return self.pt.map(block, size, head + (block_index - hi), leaf_attrs(vma), &mut self.folios);
            }
        }
        self.pt.map(page, PageSize::Size4K, head + (index - hi), leaf_attrs(vma), &mut self.folios)
    }

    /// Whether `owner` is a KSM page (used by protection changes, which keep KSM pages read-only).
    pub fn is_ksm_pfn(&self, pfn: u64) -> bool {
        self.folios.find(pfn).is_some_and(|(_, f)| f.owner == Owner::Ksm)
    }
}
