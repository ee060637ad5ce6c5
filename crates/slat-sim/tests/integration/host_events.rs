//! Host events: the ranges they invalidate, and what `lookup` shows afterwards.

use crate::host_common::*;
use slat_mmu::{BackingKind, HostError, HostMemory, Hva};
use slat_pt::PageSize::{Size2M, Size4K};
use slat_sim::host::{
    Advice, Backing, FolioKind, HostConfig, HostEvent, HostOpError, HvaRange, MmapRequest, Prot, ShmemHuge, SimHost,
    ThpAdvice, ThpMode,
};

fn anon_thp(h: &SimHost, len: u64) -> u64 {
    h.mmap(&MmapRequest::new(len, Backing::Anonymous { thp: ThpMode::Always })).unwrap()
}

fn shmem_thp(h: &SimHost, len: u64) -> u64 {
    h.mmap(&MmapRequest::new(len, Backing::Shmem { huge: ShmemHuge::Always, file_offset: 0, file_size: None })).unwrap()
}

fn munmap(hva: u64, len: u64) -> HostEvent {
    HostEvent::Munmap { hva, len }
}

fn madvise(hva: u64, len: u64, advice: Advice) -> HostEvent {
    HostEvent::Madvise { hva, len, advice }
}

#[test]
fn partial_munmap_inside_an_anonymous_pmd_leaves_ptes_to_the_same_pfns() {
    let h = host(G1);
    let n = Recorder::probing(&h);
    let hva = anon_thp(&h, 4 * M2);
    let head = h.fault_in(Hva(hva), true).unwrap();
    assert_eq!(head.size, Size2M);
    let free = h.stats().free_pages;

    let r = h.apply(&munmap(hva + 10 * K4, 2 * K4), &n).unwrap();
    assert_eq!(n.invalidations(), vec![(hva, hva + M2)], "the whole PMD is invalidated");
    assert_eq!(r.invalidated, vec![HvaRange { start: hva, end: hva + M2 }]);
    assert_eq!((r.huge_split, r.huge_zapped, r.pages), (1, 0, 2));
    for i in (0..512).filter(|i| !(10..12).contains(i)) {
        let p = h.lookup(Hva(hva + i * K4)).unwrap();
        assert_eq!((p.pfn, p.size), (head.pfn + i, Size4K), "page {i}");
    }
    assert_eq!(h.lookup(Hva(hva + 10 * K4)), None);
    assert_eq!(h.fault_in(Hva(hva + 11 * K4), false), Err(HostError::NotMapped { hva: Hva(hva + 11 * K4) }));
    assert_eq!(h.stats().free_pages, free + 2, "the unmapped pages are freed");
    let f = h.folio(head.pfn.0).unwrap();
    assert_eq!((f.order, f.pte_mapped, f.pmd_mapped), (0, 1, 0), "the THP was split");
    assert_eq!(h.vmas().len(), 2);
    assert_eq!(h.stats().pmd_splits, 1);
    h.audit().unwrap();

    // Unmapping a range with nothing mapped still invalidates exactly that range.
    n.clear();
    h.apply(&munmap(hva + 3 * M2, M2), &n).unwrap();
    assert_eq!(n.invalidations(), vec![(hva + 3 * M2, hva + 4 * M2)]);
}

#[test]
fn partial_munmap_of_a_file_thp_zaps_it_and_refaults_ptes() {
    let h = host(G1);
    let n = Recorder::probing(&h);
    let hva = shmem_thp(&h, 4 * M2);
    let head = h.fault_in(Hva(hva), true).unwrap();
    assert_eq!(head.size, Size2M);
    let r = h.apply(&munmap(hva + M2 - K4, 2 * K4), &n).unwrap();
    // The PMD at hva is zapped whole; nothing was mapped in the second block.
    assert_eq!(n.invalidations(), vec![(hva, hva + M2 + K4)]);
    assert_eq!((r.huge_split, r.huge_zapped), (0, 1));
    assert_eq!(h.lookup(Hva(hva)), None, "file THPs are not split in place");
    // The folio stays in the file; refaults map its pages with PTEs (the block is cut by the
    // hole in the VMA).
    let p = h.fault_in(Hva(hva + 5 * K4), false).unwrap();
    assert_eq!((p.pfn, p.size), (head.pfn + 5, Size4K));
    let f = h.folio(p.pfn.0).unwrap();
    assert_eq!((f.order, f.pte_mapped, f.pmd_mapped), (9, 1, 0));
    h.audit().unwrap();
}

#[test]
fn hugetlb_munmap_needs_whole_pages_and_frees_pool_pages_with_the_file() {
    let h = host_with(HostConfig { memory: G1, hugetlb_2m_pages: 4, ..HostConfig::default() });
    let n = Recorder::new();
    let hva = h.mmap(&MmapRequest::new(4 * M2, Backing::Hugetlbfs { page_size: Size2M, file_offset: 0 })).unwrap();
    for i in 0..4 {
        h.fault_in(Hva(hva + i * M2), true).unwrap();
    }
    assert_eq!(h.stats().hugetlb_2m.free, 0);
    assert_eq!(
        h.apply(&munmap(hva + K4, K4), &n),
        Err(HostOpError::Misaligned { what: "hva", value: hva + K4, align: M2 })
    );
    assert!(n.invalidations().is_empty(), "a refused event changes nothing");
    h.apply(&munmap(hva, M2), &n).unwrap();
    assert_eq!(n.invalidations(), vec![(hva, hva + M2)]);
    assert_eq!(h.stats().hugetlb_2m.free, 0, "the file still holds the page");
    h.apply(&munmap(hva + M2, 3 * M2), &n).unwrap();
    assert_eq!(h.stats().hugetlb_2m.free, 4, "the last unmap drops the file");
    h.audit().unwrap();
}

#[test]
fn mprotect_splits_then_collapse_restores_the_pmd() {
    let h = host(G1);
    let n = Recorder::probing(&h);
    let hva = anon_thp(&h, 2 * M2);
    let before = h.fault_in(Hva(hva), true).unwrap();
    let r = h.apply(&HostEvent::Mprotect { hva: hva + 4 * K4, len: K4, prot: Prot::ReadOnly }, &n).unwrap();
    assert_eq!(n.invalidations(), vec![(hva, hva + M2)]);
    assert_eq!(r.huge_split, 1);
    let ro = h.lookup(Hva(hva + 4 * K4)).unwrap();
    assert_eq!((ro.pfn, ro.size, ro.writable), (before.pfn + 4, Size4K, false));
    assert!(h.lookup(Hva(hva + 5 * K4)).unwrap().writable);
    assert_eq!(h.fault_in(Hva(hva + 4 * K4), true), Err(HostError::ReadOnly { hva: Hva(hva + 4 * K4) }));
    assert_eq!(h.vmas().len(), 3);

    n.clear();
    h.apply(&HostEvent::Mprotect { hva: hva + 4 * K4, len: K4, prot: Prot::ReadWrite }, &n).unwrap();
    assert_eq!(n.invalidations(), vec![(hva + 4 * K4, hva + 5 * K4)]);
    assert_eq!(h.vmas().len(), 1, "compatible VMAs merge again");
    assert!(h.lookup(Hva(hva + 4 * K4)).unwrap().writable);

    n.clear();
    let r = h.apply(&madvise(hva, 2 * M2, Advice::Collapse), &n).unwrap();
    assert_eq!(n.invalidations(), vec![(hva, hva + M2)], "only the PTE-mapped block");
    assert_eq!((r.huge_collapsed, r.failed), (1, 1), "the empty second block is not collapsed");
    let after = h.lookup(Hva(hva + 4 * K4)).unwrap();
    assert_eq!(after.size, Size2M);
    assert_ne!(after.pfn, before.pfn + 4, "collapse copies into a new folio");
    assert_eq!(h.stats().collapses, 1);
    h.audit().unwrap();

    // PROT_NONE unmaps; the pages survive and come back on the next fault after PROT_READ.
    n.clear();
    h.apply(&HostEvent::Mprotect { hva, len: M2, prot: Prot::None }, &n).unwrap();
    assert_eq!(h.lookup(Hva(hva)), None);
    h.apply(&HostEvent::Mprotect { hva, len: M2, prot: Prot::ReadWrite }, &n).unwrap();
    let back = h.fault_in(Hva(hva + 4 * K4), false).unwrap();
    assert_eq!((back.pfn, back.size), (after.pfn, Size2M));
    h.audit().unwrap();
}

#[test]
fn dontneed_of_a_whole_block_frees_the_thp_and_refaults_huge() {
    let h = host(G1);
    let n = Recorder::new();
    let hva = anon_thp(&h, 2 * M2);
    h.fault_in(Hva(hva), true).unwrap();
    let free = h.stats().free_pages;
    let r = h.apply(&madvise(hva, M2, Advice::DontNeed), &n).unwrap();
    assert_eq!((r.huge_split, r.huge_zapped, r.pages), (0, 0, 512));
    assert_eq!(h.stats().free_pages, free + 512);
    assert_eq!(h.fault_in(Hva(hva + K4), false).unwrap().size, Size2M);
    assert_eq!(h.vmas().len(), 1);
    h.audit().unwrap();
}

#[test]
fn khugepaged_collapses_eligible_blocks_with_new_pfns() {
    let h = host_with(HostConfig { memory: G1, khugepaged_max_ptes_none: 256, ..HostConfig::default() });
    let n = Recorder::probing(&h);
    let b = Backing::Anonymous { thp: ThpMode::Madvise };
    let hva = h.mmap(&MmapRequest::new(4 * M2, b)).unwrap();
    // Without MADV_HUGEPAGE: 4 KiB faults. Block 0 fully populated, block 1 only 10 pages.
    for i in 0..512 {
        h.fault_in(Hva(hva + i * K4), true).unwrap();
    }
    for i in 0..10 {
        h.fault_in(Hva(hva + M2 + i * K4), true).unwrap();
    }
    let old = h.lookup(Hva(hva)).unwrap();
    assert_eq!(old.size, Size4K);
    assert!(h.page_state(old.pfn.0).dirty);
    let r = h.apply(&HostEvent::Khugepaged { blocks: 8, range: None }, &n).unwrap();
    assert_eq!(r.huge_collapsed, 0, "THP madvise mode without MADV_HUGEPAGE: khugepaged skips the VMA");

    h.apply(&madvise(hva, 4 * M2, Advice::HugePage), &n).unwrap();
    assert!(n.invalidations().is_empty(), "advice changes no mapping");
    let free = h.stats().free_pages;
    let r = h.apply(&HostEvent::Khugepaged { blocks: 8, range: None }, &n).unwrap();
    assert_eq!(r.huge_collapsed, 1, "block 1 has 502 empty PTEs > max_ptes_none 256");
    assert_eq!(n.invalidations(), vec![(hva, hva + M2)]);
    let new = h.lookup(Hva(hva)).unwrap();
    assert_eq!(new.size, Size2M);
    assert_ne!(new.pfn, old.pfn);
    assert!(h.page_state(new.pfn.0).dirty, "page state is copied");
    assert_eq!(h.stats().free_pages, free, "512 new pages allocated, 512 old ones freed");
    assert_eq!(h.folio(new.pfn.0).unwrap().pmd_mapped, 1);

    // MADV_COLLAPSE ignores max_ptes_none; the new folio's empty pages are zero-filled.
    n.clear();
    let r = h.apply(&madvise(hva + M2, M2, Advice::Collapse), &n).unwrap();
    assert_eq!(r.huge_collapsed, 1);
    assert_eq!(h.lookup(Hva(hva + M2 + 100 * K4)).unwrap().size, Size2M);
    assert_eq!(h.stats().free_pages, free - 502);
    h.audit().unwrap();
}

#[test]
fn shmem_collapse_is_in_place_when_the_folio_is_whole() {
    let h = host(G1);
    let n = Recorder::new();
    let hva = shmem_thp(&h, 2 * M2);
    let head = h.fault_in(Hva(hva), true).unwrap();
    // Cut the block, refault PTEs of the same folio, then restore the VMA.
    h.apply(&HostEvent::Mprotect { hva: hva + K4, len: K4, prot: Prot::ReadOnly }, &n).unwrap();
    assert_eq!(h.fault_in(Hva(hva), false).unwrap().size, Size4K);
    h.apply(&HostEvent::Mprotect { hva: hva + K4, len: K4, prot: Prot::ReadWrite }, &n).unwrap();
    let r = h.apply(&HostEvent::Khugepaged { blocks: 1, range: None }, &n).unwrap();
    assert_eq!(r.huge_collapsed, 1);
    let p = h.lookup(Hva(hva + 3 * K4)).unwrap();
    assert_eq!((p.pfn, p.size), (head.pfn + 3, Size2M), "same folio, no copy");
    h.audit().unwrap();
}

#[test]
fn migration_moves_pages_and_remaps_them() {
    let h = host_with(HostConfig { memory: G1, hugetlb_2m_pages: 2, ..HostConfig::default() });
    let n = Recorder::probing(&h);
    let hva = anon_thp(&h, 2 * M2);
    let before = h.fault_in(Hva(hva), true).unwrap();
    h.mark_accessed(before.pfn, 1);
    let r = h.apply(&HostEvent::Migrate { hva, len: 2 * M2 }, &n).unwrap();
    assert_eq!((r.folios_migrated, r.pages), (1, 512));
    assert_eq!(n.invalidations(), vec![(hva, hva + M2)]);
    let after = h.lookup(Hva(hva)).unwrap();
    assert_eq!(after.size, Size2M);
    assert_ne!(after.pfn, before.pfn);
    assert!(h.page_state(after.pfn.0).dirty && h.page_state(after.pfn.0).accessed, "same contents and state");
    assert_eq!(h.folio(before.pfn.0), None, "the old folio is freed");

    let t = h.mmap(&MmapRequest::new(2 * M2, Backing::Hugetlbfs { page_size: Size2M, file_offset: 0 })).unwrap();
    let hp = h.fault_in(Hva(t), true).unwrap();
    h.apply(&HostEvent::Migrate { hva: t, len: M2 }, &n).unwrap();
    let moved = h.lookup(Hva(t)).unwrap();
    assert_eq!(moved.size, Size2M);
    assert_ne!(moved.pfn, hp.pfn, "hugetlb pages migrate within the pool");
    assert_eq!(h.stats().hugetlb_2m.free, 1);
    let r = h.apply(&HostEvent::Migrate { hva: t, len: M2 }, &n).unwrap();
    assert_eq!((r.folios_migrated, r.failed), (1, 0));
    h.fault_in(Hva(t + M2), true).unwrap();
    let r = h.apply(&HostEvent::Migrate { hva: t, len: M2 }, &n).unwrap();
    assert_eq!((r.folios_migrated, r.failed), (0, 1), "the pool is empty");
    h.audit().unwrap();
}

#[test]
fn ksm_merge_splits_the_thp_and_writes_break_cow() {
    let h = host(G1);
    let n = Recorder::probing(&h);
    let hva = anon_thp(&h, 2 * M2);
    let thp = h.fault_in(Hva(hva), true).unwrap();
    let r = h.apply(&HostEvent::KsmMerge { hva, len: 4 * K4, ratio: 1.0 }, &n).unwrap();
    assert_eq!(n.invalidations(), vec![(hva, hva + M2)]);
    assert_eq!((r.huge_split, r.pages), (1, 4));
    let ksm = h.lookup(Hva(hva)).unwrap();
    assert_eq!((ksm.pfn, ksm.size, ksm.writable), (thp.pfn, Size4K, false));
    for i in 1..4 {
        let p = h.lookup(Hva(hva + i * K4)).unwrap();
        assert_eq!((p.pfn, p.writable), (ksm.pfn, false), "merged into the KSM page");
    }
    let rest = h.lookup(Hva(hva + 4 * K4)).unwrap();
    assert_eq!((rest.pfn, rest.size, rest.writable), (thp.pfn + 4, Size4K, true));
    let f = h.folio(ksm.pfn.0).unwrap();
    assert_eq!((f.kind, f.order, f.pte_mapped), (FolioKind::Ksm, 0, 4));
    assert_eq!(h.folio((thp.pfn + 1).0), None, "duplicates are freed");

    // Writing breaks copy-on-write.
    let w = h.fault_in(Hva(hva + K4), true).unwrap();
    assert!(w.writable);
    assert_ne!(w.pfn, ksm.pfn);
    assert_eq!(h.folio(ksm.pfn.0).unwrap().pte_mapped, 3);
    assert_eq!(h.stats().ksm_cow_breaks, 1);
    // khugepaged leaves a block with KSM pages alone.
    let r = h.apply(&madvise(hva, M2, Advice::Collapse), &n).unwrap();
    assert_eq!((r.huge_collapsed, r.failed), (0, 1));
    // Unmapping every user frees the KSM page.
    h.apply(&madvise(hva, 4 * K4, Advice::DontNeed), &n).unwrap();
    assert_eq!(h.folio(ksm.pfn.0), None);
    h.audit().unwrap();

    let s = shmem_thp(&h, M2);
    assert!(matches!(
        h.apply(&HostEvent::KsmMerge { hva: s, len: M2, ratio: 1.0 }, &n),
        Err(HostOpError::Unsupported { kind: BackingKind::Shmem, .. })
    ));
}

#[test]
fn balloon_inflation_splits_thps_and_deflated_pages_refault_small() {
    let h = host(G1);
    let n = Recorder::probing(&h);
    let hva = anon_thp(&h, 2 * M2);
    let thp = h.fault_in(Hva(hva), true).unwrap();
    let free = h.stats().free_pages;
    let r = h.apply(&HostEvent::BalloonInflate { hva: hva + 8 * K4, len: K4 }, &n).unwrap();
    assert_eq!(n.invalidations(), vec![(hva, hva + M2)]);
    assert_eq!((r.huge_split, r.pages), (1, 1));
    assert_eq!(h.lookup(Hva(hva + 8 * K4)), None);
    assert_eq!(h.lookup(Hva(hva + 9 * K4)).unwrap().pfn, thp.pfn + 9);
    assert_eq!(h.stats().free_pages, free + 1);
    assert_eq!(h.stats().ballooned_pages, 1);
    let r = h.apply(&HostEvent::BalloonDeflate { hva: hva + 8 * K4, len: 2 * K4 }, &n).unwrap();
    assert_eq!(r.pages, 1);
    assert_eq!(h.stats().ballooned_pages, 0);
    let p = h.fault_in(Hva(hva + 8 * K4), true).unwrap();
    assert_eq!(p.size, Size4K, "the neighbours are PTE-mapped, so no THP");
    h.audit().unwrap();

    let h = host_with(HostConfig { memory: G1, dax_size: M2, ..HostConfig::default() });
    let d = h.mmap(&MmapRequest::new(M2, Backing::Dax { max_leaf: Size2M, file_offset: 0 })).unwrap();
    assert!(matches!(
        h.apply(&HostEvent::BalloonInflate { hva: d, len: K4 }, &n),
        Err(HostOpError::Unsupported { kind: BackingKind::Dax, .. })
    ));
}

#[test]
fn balloon_on_shmem_punches_holes() {
    let h = host(G1);
    let n = Recorder::new();
    let hva = shmem_thp(&h, 2 * M2);
    let thp = h.fault_in(Hva(hva), true).unwrap();
    let free = h.stats().free_pages;
    let r = h.apply(&HostEvent::BalloonInflate { hva: hva + K4, len: K4 }, &n).unwrap();
    assert_eq!(n.invalidations(), vec![(hva, hva + M2)]);
    assert_eq!(r.huge_zapped, 1);
    assert_eq!(h.stats().free_pages, free + 1, "the punched page is freed");
    assert_eq!(h.stats().folio_splits, 1);
    assert_eq!(h.folio((thp.pfn + 1).0), None, "the punched page is gone from the file");
    let f = h.folio(thp.pfn.0).unwrap();
    assert_eq!((f.order, f.kind, f.pte_mapped), (0, FolioKind::Shmem, 0), "the THP was split");
    let p = h.fault_in(Hva(hva), false).unwrap();
    assert_eq!((p.pfn, p.size), (thp.pfn, Size4K));
    let q = h.fault_in(Hva(hva + K4), false).unwrap();
    assert_eq!(h.folio(q.pfn.0).unwrap().order, 0, "a new 4 KiB page fills the hole");
    h.audit().unwrap();
}

#[test]
fn balloon_on_hugetlb_discards_a_page_once_all_of_it_is_ballooned() {
    let h = host_with(HostConfig { memory: G1, hugetlb_2m_pages: 2, ..HostConfig::default() });
    let n = Recorder::probing(&h);
    let hva = h.mmap(&MmapRequest::new(2 * M2, Backing::Hugetlbfs { page_size: Size2M, file_offset: 0 })).unwrap();
    h.fault_in(Hva(hva), true).unwrap();
    let r = h.apply(&HostEvent::BalloonInflate { hva, len: M2 - K4 }, &n).unwrap();
    assert_eq!(r.pages, 511);
    assert!(n.invalidations().is_empty(), "a partly ballooned hugetlb page stays");
    assert_eq!(h.lookup(Hva(hva)).unwrap().size, Size2M);
    let r = h.apply(&HostEvent::BalloonInflate { hva: hva + M2 - K4, len: K4 }, &n).unwrap();
    assert_eq!(r.pages, 1);
    assert_eq!(n.invalidations(), vec![(hva, hva + M2)]);
    assert_eq!(h.lookup(Hva(hva)), None);
    assert_eq!(h.stats().hugetlb_2m.free, 2, "the page went back to the pool");
    h.audit().unwrap();
}

#[test]
fn another_process_pte_mapping_a_shmem_thp_does_not_touch_the_vmm_pmd() {
    let h = host(G1);
    let n = Recorder::probing(&h);
    let hva = shmem_thp(&h, 2 * M2);
    let thp = h.fault_in(Hva(hva), true).unwrap();
    let r = h.apply(&HostEvent::ForeignMap { hva: hva + 16 * K4, len: 8 * K4 }, &n).unwrap();
    assert_eq!(r.pages, 8);
    assert!(n.calls.borrow().is_empty(), "no notifier call at all");
    assert!(r.invalidated.is_empty());
    let p = h.lookup(Hva(hva + 20 * K4)).unwrap();
    assert_eq!((p.pfn, p.size), (thp.pfn + 20, Size2M), "the VMM's PMD mapping is unchanged");
    let f = h.folio(thp.pfn.0).unwrap();
    assert_eq!((f.pmd_mapped, f.pte_mapped, f.foreign_pte_mapped), (1, 8, 8));
    assert_eq!(h.stats().foreign_pte_maps, 8);
    h.audit().unwrap();

    // The other process can map pages the VMM never touched; it allocates them in the file.
    let r = h.apply(&HostEvent::ForeignMap { hva: hva + M2, len: K4 }, &n).unwrap();
    assert_eq!(r.pages, 1);
    assert_eq!(h.lookup(Hva(hva + M2)), None);
    assert_eq!(h.fault_in(Hva(hva + M2), false).unwrap().size, Size2M, "the VMM still PMD-maps it");

    // Migration carries the other process's mappings along.
    h.apply(&HostEvent::Migrate { hva, len: M2 }, &n).unwrap();
    let moved = h.lookup(Hva(hva)).unwrap();
    let f = h.folio(moved.pfn.0).unwrap();
    assert_eq!((f.pmd_mapped, f.pte_mapped, f.foreign_pte_mapped), (1, 8, 8));

    let r = h.apply(&HostEvent::ForeignUnmap { hva: hva + 16 * K4, len: 8 * K4 }, &n).unwrap();
    assert_eq!(r.pages, 8);
    assert_eq!(h.folio(moved.pfn.0).unwrap().pte_mapped, 0);
    h.audit().unwrap();

    let a = anon_thp(&h, M2);
    assert!(matches!(
        h.apply(&HostEvent::ForeignMap { hva: a, len: K4 }, &n),
        Err(HostOpError::Unsupported { kind: BackingKind::Anonymous, .. })
    ));
}

#[test]
fn aging_consults_host_flags_and_the_mmu() {
    let h = host(G1);
    let n = Recorder::new();
    let hva = anon_thp(&h, 2 * M2);
    h.fault_in(Hva(hva), false).unwrap();
    let r = h.apply(&HostEvent::Age { hva, len: 2 * M2, clear: true }, &n).unwrap();
    assert_eq!((r.pages, r.young_pages), (512, 512), "the host fault made it young");
    assert!(n.calls.borrow().contains(&Call::ClearYoung(hva, hva + M2)));
    let r = h.apply(&HostEvent::Age { hva, len: 2 * M2, clear: true }, &n).unwrap();
    assert_eq!(r.young_pages, 0);
    n.young.set(true);
    let r = h.apply(&HostEvent::Age { hva, len: M2, clear: false }, &n).unwrap();
    assert_eq!(r.young_pages, 512, "stage 2 saw an access");
    assert!(n.calls.borrow().contains(&Call::TestYoung(hva, hva + M2)));
    let p = h.lookup(Hva(hva)).unwrap();
    h.mark_accessed(p.pfn + 3, 1);
    n.young.set(false);
    let r = h.apply(&HostEvent::Age { hva, len: M2, clear: true }, &n).unwrap();
    assert_eq!(r.young_pages, 512);
}

#[test]
fn bad_ranges_are_errors() {
    let h = host(G1);
    let n = Recorder::new();
    let hva = anon_thp(&h, M2);
    assert_eq!(h.apply(&munmap(hva + M2, K4), &n), Err(HostOpError::NotMapped { hva: hva + M2 }));
    assert_eq!(h.apply(&munmap(hva, 2 * M2), &n), Err(HostOpError::NotMapped { hva: hva + M2 }));
    assert_eq!(
        h.apply(&munmap(hva + 1, K4), &n),
        Err(HostOpError::Misaligned { what: "hva", value: hva + 1, align: K4 })
    );
    assert_eq!(h.apply(&munmap(hva, 7), &n), Err(HostOpError::Misaligned { what: "len", value: 7, align: K4 }));
    assert_eq!(h.apply(&munmap(hva, 0), &n), Err(HostOpError::EmptyRange { hva }));
    assert!(h.apply(&munmap(!0xfff, 2 * K4), &n).is_err());
    assert!(h.apply(&HostEvent::Age { hva: 0, len: K4, clear: true }, &n).is_err());
    assert!(h.apply(&HostEvent::HugetlbResize { page_size: Size4K, pages: 1 }, &n).is_err());
    let m = h.mmap(&MmapRequest::new(M2, Backing::PfnMap { pa: 0xf0_0000_0000, max_leaf: Size2M })).unwrap();
    assert!(matches!(h.apply(&madvise(m, K4, Advice::DontNeed), &n), Err(HostOpError::Unsupported { .. })));
    assert!(n.invalidations().is_empty());
    let e = h.apply(&munmap(hva + M2, K4), &n).unwrap_err();
    assert_eq!(e.to_string(), format!("no VMA covers host address {:#x}", hva + M2));
    h.audit().unwrap();
}

#[test]
fn no_huge_page_advice_stops_thp_but_keeps_existing_mappings() {
    let h = host(G1);
    let n = Recorder::new();
    let hva = anon_thp(&h, 4 * M2);
    h.fault_in(Hva(hva), true).unwrap();
    h.apply(&madvise(hva, 4 * M2, Advice::NoHugePage), &n).unwrap();
    assert_eq!(h.lookup(Hva(hva)).unwrap().size, Size2M);
    assert_eq!(h.fault_in(Hva(hva + M2), true).unwrap().size, Size4K);
    let r = h.apply(&madvise(hva, 4 * M2, Advice::Collapse), &n).unwrap();
    assert_eq!(r.huge_collapsed, 0);
    assert_eq!(h.vmas()[0].advice, ThpAdvice::NoHugePage);
}

#[test]
fn events_deserialize_from_toml() {
    #[derive(serde::Deserialize)]
    struct Doc {
        event: Vec<HostEvent>,
    }
    let text = r#"
        [[event]]
        event = "munmap"
        hva = 0x7000_0000_0000
        len = 4096
        [[event]]
        event = "madvise"
        hva = 0x7000_0000_0000
        len = 2097152
        advice = "collapse"
        [[event]]
        event = "khugepaged"
        [[event]]
        event = "hugetlb_resize"
        page_size = "1G"
        pages = 2
    "#;
    let doc: Doc = toml::from_str(text).unwrap();
    assert_eq!(doc.event[0], HostEvent::Munmap { hva: 0x7000_0000_0000, len: 4096 });
    assert_eq!(doc.event[2], HostEvent::Khugepaged { blocks: 8, range: None });
    assert_eq!(doc.event[3].name(), "hugetlb_resize");
}

#[test]
fn ksm_merges_a_ratio_of_pages_into_one_host_wide_page() {
    let h = host(G1);
    let n = Recorder::probing(&h);
    let hva = h.mmap(&MmapRequest::new(4 * M2, Backing::Anonymous { thp: ThpMode::Never })).unwrap();
    for i in 0..1024 {
        h.fault_in(Hva(hva + i * K4), true).unwrap();
    }
    let r = h.apply(&HostEvent::KsmMerge { hva, len: 4 * M2, ratio: 0.25 }, &n).unwrap();
    assert_eq!(r.pages, 256);
    assert!(r.invalidated.len() == 1 && r.invalidated[0].start >= hva);
    let ksm: Vec<u64> = (0..1024).filter(|i| !h.lookup(Hva(hva + i * K4)).unwrap().writable).collect();
    assert_eq!(ksm.len(), 256);
    let pfn = h.lookup(Hva(hva + ksm[0] * K4)).unwrap().pfn;
    assert!(ksm.iter().all(|&i| h.lookup(Hva(hva + i * K4)).unwrap().pfn == pfn));
    assert_eq!(h.folio(pfn.0).unwrap().pte_mapped, 256);

    // Later merges, even of single pages, join the same KSM page.
    let lone = (0..1024).find(|i| !ksm.contains(i)).unwrap();
    let r = h.apply(&HostEvent::KsmMerge { hva: hva + lone * K4, len: K4, ratio: 1.0 }, &n).unwrap();
    assert_eq!(r.pages, 1);
    assert_eq!(h.lookup(Hva(hva + lone * K4)).unwrap().pfn, pfn);
    assert_eq!(h.stats().ksm_merged, 257);
    h.audit().unwrap();
    assert!(matches!(
        h.apply(&HostEvent::KsmMerge { hva, len: K4, ratio: 2.0 }, &n),
        Err(HostOpError::Fraction { .. })
    ));

    // Same seed, same choice.
    let again = host(G1);
    let hva2 = again.mmap(&MmapRequest::new(4 * M2, Backing::Anonymous { thp: ThpMode::Never })).unwrap();
    for i in 0..1024 {
        again.fault_in(Hva(hva2 + i * K4), true).unwrap();
    }
    again.apply(&HostEvent::KsmMerge { hva: hva2, len: 4 * M2, ratio: 0.25 }, &Recorder::new()).unwrap();
    let ksm2: Vec<u64> = (0..1024).filter(|i| !again.lookup(Hva(hva2 + i * K4)).unwrap().writable).collect();
    assert_eq!(ksm, ksm2);
}

#[test]
fn khugepaged_over_a_range_scans_only_that_range() {
    let h = host(G1);
    let n = Recorder::new();
    let b = Backing::Anonymous { thp: ThpMode::Always };
    let hva = h.mmap(&MmapRequest::new(8 * M2, b)).unwrap();
    // Populate every block with PTEs: split each fresh THP by unmapping one page.
    for i in 0..8 {
        h.fault_in(Hva(hva + i * M2), true).unwrap();
        h.apply(&madvise(hva + i * M2 + 100 * K4, K4, Advice::DontNeed), &n).unwrap();
    }
    assert_eq!(h.stats().host_leaves[1], 0);
    let range = HvaRange { start: hva + 2 * M2, end: hva + 5 * M2 };
    let r = h.apply(&HostEvent::Khugepaged { blocks: u64::MAX, range: Some(range) }, &n).unwrap();
    assert_eq!(r.huge_collapsed, 3);
    let sizes: Vec<_> = (0..8).map(|i| h.lookup(Hva(hva + i * M2)).unwrap().size).collect();
    assert_eq!(sizes, [Size4K, Size4K, Size2M, Size2M, Size2M, Size4K, Size4K, Size4K]);
    // Unranged passes resume from the cursor and wrap.
    let r = h.apply(&HostEvent::Khugepaged { blocks: 2, range: None }, &n).unwrap();
    assert_eq!(r.huge_collapsed, 2);
    let r = h.apply(&HostEvent::Khugepaged { blocks: 8, range: None }, &n).unwrap();
    assert_eq!(r.huge_collapsed, 3);
    assert_eq!(h.stats().host_leaves, [0, 8, 0]);
    h.audit().unwrap();
}
