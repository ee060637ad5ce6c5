//! The host's state and the helpers that keep its parts consistent: allocating and freeing
//! folios, the reverse map from a folio to the VMM addresses mapping it, range checks, breaking
//! huge mappings at the edges of a range, splitting folios and discarding anonymous pages.
//!
//! Invariants (checked by [`HostState::audit`]): every leaf of the VMM page tables lies in a
//! VMA and maps the page its object (or device) holds at that index; folio map counts equal a
//! recount of the leaves plus other processes' PTEs; every RAM page is free in the buddy
//! allocator, in exactly one folio, or in a hugetlb pool.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use slat_mmu::BackingKind;
use slat_pt::{LeafAttrs, MemType, PageSize, Perms, PtError, SimFrameAllocator};

use super::buddy::{BuddyAllocator, PMD_ORDER, PUD_ORDER};
use super::config::{HostConfig, HostConfigError, PAGE, SIZE_1G};
use super::error::HostOpError;
use super::events::{EventReport, HvaRange};
use super::folio::{Folio, FolioKind, Folios, Owner};
use super::hugetlb::{hugetlb_order, HugetlbPools};
use super::object::{MemObject, ObjectId};
use super::pgtable::{VmmLeaf, VmmPageTable};
use super::phys::{choose_pins, PageFlags};
use super::stats::HostStats;
use super::vma::{Backing, Vma, VmaTree};

/// Everything the simulated host knows, behind the [`SimHost`](super::SimHost) mutex.
pub(crate) struct HostState {
    pub config: HostConfig,
    pub rng: ChaCha8Rng,
    pub buddy: BuddyAllocator,
    pub flags: PageFlags,
    pub pools: HugetlbPools,
    pub folios: Folios,
    pub objects: BTreeMap<ObjectId, MemObject>,
    pub next_object: ObjectId,
    pub vmas: VmaTree,
    pub pt: VmmPageTable,
    /// Event counters (the memory fields are filled in by [`HostState::snapshot`]).
    pub stats: HostStats,
    pub next_hva: u64,
    pub khugepaged_cursor: u64,
    /// Addresses of the 4 KiB pages in the balloon.
    pub ballooned: BTreeSet<u64>,
    pub pinned: u64,
    /// The KSM page pages merge into (one content: the simulator has no page contents).
    pub ksm_page: Option<u64>,
}

/// Hugetlb page size of a folio order.
pub(crate) fn order_size(order: u8) -> PageSize {
    if order >= PUD_ORDER {
        PageSize::Size1G
    } else if order >= PMD_ORDER {
        PageSize::Size2M
    } else {
        PageSize::Size4K
    }
}

/// Host leaf attributes for a VMA.
pub(crate) fn leaf_attrs(vma: &Vma) -> LeafAttrs {
    let perms = if vma.prot.writable() { Perms::RW } else { Perms::READ };
    let mem_type = if vma.kind() == BackingKind::PfnMap { MemType::Uncached } else { MemType::WriteBack };
    LeafAttrs { mem_type, ..LeafAttrs::ram(perms) }
}

impl HostState {
    pub fn new(config: HostConfig) -> Result<Self, HostConfigError> {
        config.validate()?;
        let mut buddy = BuddyAllocator::new(config.ram_base / PAGE, config.memory / PAGE);
        let mut pools = HugetlbPools::default();
        pools.resize(PageSize::Size1G, config.hugetlb_1g_pages, &mut buddy);
        pools.resize(PageSize::Size2M, config.hugetlb_2m_pages, &mut buddy);
        let frames = Arc::new(SimFrameAllocator::new(config.page_table_base, config.page_table_capacity));
        let pt = VmmPageTable::new(frames).map_err(HostConfigError::PageTable)?;
        let mut flags = PageFlags::default();
        flags.add_region(config.ram_base / PAGE, config.memory / PAGE);
        if config.dax_size > 0 {
            flags.add_region(config.device_base / PAGE, config.dax_size / PAGE);
        }
        let mut st = HostState {
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            buddy,
            flags,
            pools,
            folios: Folios::default(),
            objects: BTreeMap::new(),
            next_object: 1,
            vmas: VmaTree::default(),
            pt,
            stats: HostStats::default(),
            next_hva: config.mmap_base,
            khugepaged_cursor: 0,
            ballooned: BTreeSet::new(),
            pinned: 0,
            ksm_page: None,
            config,
        };
        st.pin(PMD_ORDER, st.config.fragmentation);
        st.pin(PUD_ORDER, st.config.fragmentation_1g);
        Ok(st)
    }

    /// Pin one page in `fraction` of the wholly free blocks of `order`. Returns pages pinned.
    pub fn pin(&mut self, order: u8, fraction: f64) -> u64 {
        let mut pinned = 0;
        for pfn in choose_pins(&self.buddy, order, fraction, &mut self.rng) {
            if self.buddy.alloc_at(pfn, 0).is_ok() {
                self.folios.insert(pfn, Folio::new(0, FolioKind::Pinned, Owner::Kernel));
                pinned += 1;
            }
        }
        self.pinned += pinned;
        pinned
    }

    /// The counters with the present memory, pool and page-table state filled in.
    pub fn snapshot(&self) -> HostStats {
        let counts = self.pt.counts();
        HostStats {
            total_pages: self.buddy.total_pages(),
            free_pages: self.buddy.free_pages(),
            free_blocks: self.buddy.free_blocks(),
            allocatable_2m: self.buddy.allocatable(PMD_ORDER),
            allocatable_1g: self.buddy.allocatable(PUD_ORDER),
            pinned_pages: self.pinned,
            ballooned_pages: self.ballooned.len() as u64,
            foreign_pte_maps: self.folios.foreign_total(),
            hugetlb_2m: self.pools.stats(PageSize::Size2M),
            hugetlb_1g: self.pools.stats(PageSize::Size1G),
            host_leaves: counts.leaves,
            host_table_pages: counts.table_pages,
            ..self.stats.clone()
        }
    }

    // ---- folios -------------------------------------------------------------------------

    /// Allocate a folio of `order` from the buddy allocator for page `index` of `object`
    /// (aligned to the order) and enter it in the object.
    pub fn alloc_object_folio(&mut self, object: ObjectId, index: u64, order: u8, kind: FolioKind) -> Option<u64> {
        let pfn = self.buddy.alloc(order)?;
        self.add_object_folio(object, index, pfn, order, kind);
        Some(pfn)
    }

    /// Enter an allocated block as a folio of `object` at `index`.
    pub fn add_object_folio(&mut self, object: ObjectId, index: u64, pfn: u64, order: u8, kind: FolioKind) {
        self.flags.reset(pfn, 1 << order);
        self.folios.insert(pfn, Folio::new(order, kind, Owner::Object { object, index }));
        if let Some(o) = self.objects.get_mut(&object) {
            o.pages.insert(index, (pfn, order));
        }
    }

    /// Forget the folio at `head` and give its memory back (to its hugetlb pool or the buddy
    /// allocator). Its object stops holding it; other processes' mappings of it go too.
    pub fn free_folio(&mut self, head: u64) {
        let Some(f) = self.folios.remove(head) else { return };
        if self.ksm_page == Some(head) {
            self.ksm_page = None;
        }
        if let Owner::Object { object, index } = f.owner {
            if let Some(o) = self.objects.get_mut(&object) {
                if o.pages.get(index) == Some((head, f.order)) {
                    o.pages.remove(index);
                }
            }
        }
        self.flags.reset(head, f.pages());
        if f.kind == FolioKind::Hugetlb {
            self.pools.give_back(order_size(f.order), head);
        } else {
            // The block was allocated whole from the buddy allocator and is freed once.
            let _ = self.buddy.free(head, f.order);
        }
    }

    /// Split the large folio at `head` into 4 KiB folios of the same object. It must not be
    /// mapped by a PMD or PUD. Returns false (and changes nothing) when it cannot be split.
    pub fn split_folio(&mut self, head: u64) -> bool {
        let Some(f) = self.folios.get(head) else { return false };
        if f.order == 0 {
            return true;
        }
        let splittable = matches!(f.kind, FolioKind::Anonymous | FolioKind::Shmem | FolioKind::PageCache);
        let Owner::Object { object, index } = f.owner else { return false };
        if !splittable || f.pmd_mapped > 0 || f.pud_mapped > 0 {
            return false;
        }
        let (order, kind) = (f.order, f.kind);
        let mapped: Vec<u32> = (0..1u64 << order)
            .map(|i| {
                let vmm = self
                    .hva_of(object, index + i)
                    .and_then(|hva| self.pt.translate(hva))
                    .is_some_and(|t| t.size == PageSize::Size4K && t.pa / PAGE == head + i);
                u32::from(vmm) + self.folios.foreign(head + i)
            })
            .collect();
        // Inserting at `head` replaces the large folio; other processes' per-page mappings stay.
        for (i, &n) in mapped.iter().enumerate() {
            let i = i as u64;
            let mut small = Folio::new(0, kind, Owner::Object { object, index: index + i });
            small.pte_mapped = n;
            self.folios.insert(head + i, small);
        }
        if let Some(o) = self.objects.get_mut(&object) {
            o.pages.remove(index);
            for i in 0..1u64 << order {
                o.pages.insert(index + i, (head + i, 0));
            }
        }
        self.stats.folio_splits += 1;
        true
    }

    /// Free the anonymous pages of `object` at indices `start..end` (already unmapped). Large
    /// folios crossing the edges are split first.
    pub fn discard_anon(&mut self, object: ObjectId, start: u64, end: u64) {
        let Some(o) = self.objects.get(&object) else { return };
        for (hi, pfn, order) in o.overlapping(start, end) {
            let hend = hi + (1 << order);
            if hi >= start && hend <= end {
                self.free_folio(pfn);
            } else if self.split_folio(pfn) {
                for idx in hi.max(start)..hend.min(end) {
                    self.free_folio(pfn + (idx - hi));
                }
            }
        }
    }

    /// One VMA fewer refers to `object`; the last one drops it and frees its folios.
    pub fn drop_object_ref(&mut self, object: ObjectId) {
        let Some(o) = self.objects.get_mut(&object) else { return };
        o.vmas = o.vmas.saturating_sub(1);
        if o.vmas > 0 {
            return;
        }
        let heads: Vec<u64> = o.pages.iter().into_iter().map(|(_, pfn, _)| pfn).collect();
        self.objects.remove(&object);
        for h in heads {
            self.free_folio(h);
        }
    }

    /// Bookkeeping after `leaves` were removed from the page tables: KSM pages forget the
    /// address and are freed when nothing maps them any more.
    pub fn after_unmap(&mut self, leaves: &[VmmLeaf]) {
        for l in leaves {
            let Some((head, f)) = self.folios.find(l.pa / PAGE) else { continue };
            if f.owner == Owner::Ksm {
                let hvas = self.folios.ksm_hvas_mut(head);
                hvas.remove(&l.hva);
                if hvas.is_empty() && f.pte_mapped == 0 {
                    self.free_folio(head);
                }
            }
        }
    }

    // ---- reverse map ----------------------------------------------------------------------

    /// The VMM address of page `index` of `object`, if a VMA maps it.
    pub fn hva_of(&self, object: ObjectId, index: u64) -> Option<u64> {
        self.vmas.iter().filter(|v| v.object == Some(object)).find_map(|v| v.hva_of(index))
    }

    /// The VMM leaves mapping any page of the folio at `head`.
    pub fn folio_leaves(&self, head: u64) -> Vec<VmmLeaf> {
        let Some(f) = self.folios.get(head) else { return Vec::new() };
        let (lo, hi) = (head, head + f.pages());
        let ours = |l: &VmmLeaf| l.pa / PAGE >= lo && l.pa / PAGE < hi;
        match f.owner {
            Owner::Object { object, index } => {
                let (i0, i1) = (index, index + f.pages());
                let mut out = Vec::new();
                for v in self.vmas.iter().filter(|v| v.object == Some(object)) {
                    let vi0 = v.pgoff;
                    let vi1 = v.pgoff + (v.end - v.start) / PAGE;
                    let (s, e) = (i0.max(vi0), i1.min(vi1));
                    if s < e {
                        let (hs, he) = (v.start + (s - vi0) * PAGE, v.start + (e - vi0) * PAGE);
                        out.extend(self.pt.leaves(hs, he).into_iter().filter(|l| ours(l)));
                    }
                }
                out
            }
            Owner::Ksm => self
                .folios
                .ksm_hvas(head)
                .into_iter()
                .flatten()
                .flat_map(|&h| self.pt.leaves(h, h + PAGE))
                .filter(|l| ours(l))
                .collect(),
            Owner::Kernel => Vec::new(),
        }
    }

    // ---- ranges ---------------------------------------------------------------------------

    /// Check that `hva..hva + len` is a non-empty page-aligned range; returns its end.
    pub fn check_range(&self, hva: u64, len: u64) -> Result<u64, HostOpError> {
        if hva % PAGE != 0 {
            return Err(HostOpError::Misaligned { what: "hva", value: hva, align: PAGE });
        }
        if len % PAGE != 0 {
            return Err(HostOpError::Misaligned { what: "len", value: len, align: PAGE });
        }
        if len == 0 {
            return Err(HostOpError::EmptyRange { hva });
        }
        hva.checked_add(len).ok_or(HostOpError::NoSpace { start: hva, end: u64::MAX, space: "host virtual" })
    }

    /// [`check_range`](Self::check_range), and every page of the range is in a VMA.
    pub fn check_covered(&self, hva: u64, len: u64) -> Result<u64, HostOpError> {
        let end = self.check_range(hva, len)?;
        match self.vmas.first_gap(hva, end) {
            Some(gap) => Err(HostOpError::NotMapped { hva: gap }),
            None => Ok(end),
        }
    }

    /// Hugetlb pages cannot be split: where `start..end` cuts into a hugetlbfs VMA, the cut
    /// must be aligned to its page size.
    pub fn check_hugetlb_edges(&self, start: u64, end: u64) -> Result<(), HostOpError> {
        for v in self.vmas.overlapping(start, end) {
            if let Backing::Hugetlbfs { page_size, .. } = v.backing {
                for edge in [start.max(v.start), end.min(v.end)] {
                    if !page_size.is_aligned(edge) {
                        return Err(HostOpError::Misaligned { what: "hva", value: edge, align: page_size.bytes() });
                    }
                }
            }
        }
        Ok(())
    }

    /// Refuse `operation` if any VMA of the range has one of the `kinds`.
    pub fn refuse_kinds(
        &self,
        start: u64,
        end: u64,
        operation: &'static str,
        kinds: &[BackingKind],
    ) -> Result<(), HostOpError> {
        match self.vmas.overlapping(start, end).into_iter().find(|v| kinds.contains(&v.kind())) {
            Some(v) => Err(HostOpError::Unsupported { operation, kind: v.kind(), hva: v.start.max(start) }),
            None => Ok(()),
        }
    }

    /// `start..end` widened to cover every leaf overlapping it (a change inside a huge mapping
    /// invalidates the whole mapping, as Linux does when it splits one).
    pub fn expand(&self, start: u64, end: u64) -> HvaRange {
        let leaves = self.pt.leaves(start, end);
        let lo = leaves.first().map_or(start, |l| l.hva.min(start));
        let hi = leaves.last().map_or(end, |l| (l.hva + l.size.bytes()).max(end));
        HvaRange { start: lo, end: hi }
    }

    /// The hull of the huge leaves that cross `start` or `end` (what splitting VMAs at those
    /// addresses must split or zap first), if any.
    pub fn crossing_leaves(&self, start: u64, end: u64) -> Option<HvaRange> {
        let mut hull: Option<HvaRange> = None;
        for edge in [start, end] {
            let Some(t) = self.pt.translate(edge) else { continue };
            if t.size.is_aligned(edge) {
                continue;
            }
            let block = t.size.align_down(edge);
            let r = HvaRange { start: block, end: block + t.size.bytes() };
            hull = Some(hull.map_or(r, |h| HvaRange { start: h.start.min(r.start), end: h.end.max(r.end) }));
        }
        hull
    }

    // ---- changing mappings ----------------------------------------------------------------

    /// Make sure no huge leaf crosses `start` or `end`: an anonymous PMD is split into PTEs of
    /// the same folio; any other huge leaf (file THP, DAX, PFN map) is zapped whole, to be
    /// refaulted, as Linux's `split_huge_pmd` does for file mappings.
    pub fn break_huge_edges(&mut self, start: u64, end: u64, report: &mut EventReport) -> Result<(), PtError> {
        for edge in [start, end] {
            let Some(t) = self.pt.translate(edge) else { continue };
            if t.size == PageSize::Size4K || t.size.is_aligned(edge) {
                continue;
            }
            let block = t.size.align_down(edge);
            let anon = self.vmas.find(edge).is_some_and(|v| v.kind() == BackingKind::Anonymous);
            if anon && t.size == PageSize::Size2M {
                self.pt.split_pmd(block, &mut self.folios)?;
                self.stats.pmd_splits += 1;
                report.huge_split += 1;
            } else {
                let leaves = self.pt.unmap(block, block + t.size.bytes(), &mut self.folios)?;
                self.after_unmap(&leaves);
                self.stats.huge_zaps += 1;
                report.huge_zapped += 1;
            }
        }
        Ok(())
    }

    /// Remove every leaf inside `start..end` (edges already broken). Returns pages unmapped.
    pub fn zap(&mut self, start: u64, end: u64) -> Result<u64, PtError> {
        let leaves = self.pt.unmap(start, end, &mut self.folios)?;
        self.after_unmap(&leaves);
        Ok(leaves.iter().map(|l| l.size.pages()).sum())
    }

    /// Discard anonymous memory of the VMAs in `start..end` (already unmapped).
    pub fn discard_anon_range(&mut self, start: u64, end: u64) {
        for v in self.vmas.overlapping(start, end) {
            if let (BackingKind::Anonymous, Some(object)) = (v.kind(), v.object) {
                let (s, e) = (start.max(v.start), end.min(v.end));
                self.discard_anon(object, v.index_of(s), v.index_of(s) + (e - s) / PAGE);
            }
        }
    }

    /// Split VMAs so that VMAs start at `start` and at `end`.
    pub fn split_vmas(&mut self, start: u64, end: u64) {
        for at in [start, end] {
            if let Some(Some(object)) = self.vmas.split_at(at) {
                if let Some(o) = self.objects.get_mut(&object) {
                    o.vmas += 1;
                }
            }
        }
    }

    /// Merge compatible VMAs around `start..end`.
    pub fn merge_vmas(&mut self, start: u64, end: u64) {
        for object in self.vmas.merge_around(start, end).into_iter().flatten() {
            if let Some(o) = self.objects.get_mut(&object) {
                o.vmas = o.vmas.saturating_sub(1);
            }
        }
    }

    /// Remove file pages `start..end` of `vma`'s object (fallocate `PUNCH_HOLE`): unmap them
    /// (a huge mapping partly inside is zapped whole), drop other processes' mappings, split a
    /// large folio crossing an edge and free the pages inside.
    pub fn punch_hole(&mut self, vma: &Vma, start: u64, end: u64, report: &mut EventReport) -> Result<(), PtError> {
        let Some(object) = vma.object else { return Ok(()) };
        self.break_huge_edges(start, end, report)?;
        self.zap(start, end)?;
        let (i0, i1) = (vma.index_of(start), vma.index_of(start) + (end - start) / PAGE);
        let Some(o) = self.objects.get(&object) else { return Ok(()) };
        for (hi, pfn, order) in o.overlapping(i0, i1) {
            let hend = hi + (1 << order);
            if hi >= i0 && hend <= i1 {
                self.free_folio(pfn);
            } else if self.split_folio(pfn) {
                for idx in hi.max(i0)..hend.min(i1) {
                    self.free_folio(pfn + (idx - hi));
                }
            }
        }
        Ok(())
    }

    /// Size of the hugetlb pages of a hugetlbfs VMA.
    pub fn hugetlb_size(vma: &Vma) -> Option<PageSize> {
        match vma.backing {
            Backing::Hugetlbfs { page_size, .. } => hugetlb_order(page_size).map(|_| page_size),
            _ => None,
        }
    }

    /// Round `v` up to a multiple of 1 GiB.
    pub fn round_up_1g(v: u64) -> Option<u64> {
        v.checked_add(SIZE_1G - 1).map(|x| x & !(SIZE_1G - 1))
    }
}
