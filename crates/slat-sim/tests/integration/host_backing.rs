//! Every backing kind maps at the expected host leaf size, for aligned and misaligned VMAs;
//! lookups never allocate; bad accesses and bad mmap requests are errors, not panics.

use crate::host_common::*;
use slat_mmu::{BackingKind, HostError, HostMemory, Hva, Pfn};
use slat_pt::PageSize::{self, Size1G, Size2M, Size4K};
use slat_sim::host::{
    Backing, FolioKind, HostConfig, HostOpError, MmapRequest, Prot, ShmemHuge, SimHost, ThpAdvice, ThpMode,
};

fn anon(thp: ThpMode) -> Backing {
    Backing::Anonymous { thp }
}

fn shmem(huge: ShmemHuge) -> Backing {
    Backing::Shmem { huge, file_offset: 0, file_size: None }
}

/// Fault `hva` (write) and return the host leaf size.
fn size_at(h: &SimHost, hva: u64) -> PageSize {
    h.fault_in(Hva(hva), true).unwrap().size
}

#[test]
fn anonymous_thp_modes() {
    let h = host(G1);
    let cases = [
        (ThpMode::Never, ThpAdvice::HugePage, Size4K),
        (ThpMode::Madvise, ThpAdvice::None, Size4K),
        (ThpMode::Madvise, ThpAdvice::HugePage, Size2M),
        (ThpMode::Always, ThpAdvice::None, Size2M),
        (ThpMode::Always, ThpAdvice::NoHugePage, Size4K),
    ];
    for (thp, advice, want) in cases {
        let hva = h.mmap(&MmapRequest::new(4 * M2, anon(thp)).with_advice(advice)).unwrap();
        assert_eq!(size_at(&h, hva + 3 * K4), want, "{thp:?} {advice:?}");
        let end_of_block = h.lookup(Hva(hva + M2 - K4));
        if want == Size2M {
            let p = end_of_block.unwrap();
            let f = h.folio(p.pfn.0).unwrap();
            assert_eq!((f.order, f.kind, f.pmd_mapped, f.pte_mapped), (9, FolioKind::Anonymous, 1, 0));
            assert_eq!(p.pfn, Pfn(f.head_pfn + 511), "the pfn of the 4 KiB page, not the head");
        } else {
            assert_eq!(end_of_block, None, "only the faulting page is mapped");
        }
    }
    assert_eq!(h.stats().thp_alloc, 2);
    h.audit().unwrap();
}

#[test]
fn anonymous_misaligned_vma_gets_thp_only_for_inner_blocks() {
    let h = host(G1);
    // hva = 4 KiB past a 1 GiB boundary, 6 MiB long: blocks 2M..4M and 4M..6M are inside.
    let hva = h.mmap(&MmapRequest::new(3 * M2, anon(ThpMode::Always)).at_offset(K4)).unwrap();
    assert_eq!(hva % M2, K4);
    let base = hva - K4;
    assert_eq!(size_at(&h, hva), Size4K, "head block sticks out of the VMA");
    assert_eq!(size_at(&h, base + M2 + 5 * K4), Size2M);
    assert_eq!(size_at(&h, hva + 3 * M2 - K4), Size4K, "tail block sticks out");
    let s = h.stats();
    assert_eq!((s.thp_alloc, s.thp_fallback, s.host_leaves), (1, 0, [2, 1, 0]));
}

#[test]
fn lookup_never_allocates() {
    let h = host(G1);
    let hva = h.mmap(&MmapRequest::new(4 * M2, anon(ThpMode::Always))).unwrap();
    let free = h.stats().free_pages;
    assert_eq!(h.lookup(Hva(hva)), None);
    assert_eq!(h.stats().free_pages, free);
    h.fault_in(Hva(hva), false).unwrap();
    assert_eq!(h.stats().free_pages, free - 512);
    assert_eq!(h.lookup(Hva(hva + M2)), None);
}

#[test]
fn shmem_huge_policies() {
    let h = host(G1);
    let cases = [
        (ShmemHuge::Never, ThpAdvice::HugePage, Size4K),
        (ShmemHuge::Always, ThpAdvice::None, Size2M),
        (ShmemHuge::WithinSize, ThpAdvice::None, Size2M),
        (ShmemHuge::Advise, ThpAdvice::None, Size4K),
        (ShmemHuge::Advise, ThpAdvice::HugePage, Size2M),
    ];
    for (huge, advice, want) in cases {
        let hva = h.mmap(&MmapRequest::new(4 * M2, shmem(huge)).with_advice(advice)).unwrap();
        let p = h.fault_in(Hva(hva + 7 * K4), false).unwrap();
        assert_eq!((p.size, p.kind), (want, BackingKind::Shmem), "{huge:?} {advice:?}");
        let f = h.folio(p.pfn.0).unwrap();
        assert_eq!(f.kind, FolioKind::Shmem);
        assert_eq!(f.order, if want == Size2M { 9 } else { 0 });
    }
    h.audit().unwrap();
}

#[test]
fn shmem_within_size_only_where_the_block_is_inside_the_file() {
    let h = host(G1);
    // A 3 MiB file mapped in a 4 MiB VMA; pages past 3 MiB are past EOF.
    let b = |huge| Backing::Shmem { huge, file_offset: 0, file_size: Some(3 * M2 / 2) };
    let within = h.mmap(&MmapRequest::new(4 * M2 / 2, b(ShmemHuge::WithinSize))).unwrap();
    assert_eq!(size_at(&h, within), Size2M);
    let p = h.fault_in(Hva(within + M2), true).unwrap();
    assert_eq!(p.size, Size4K);
    assert_eq!(h.folio(p.pfn.0).unwrap().order, 0, "within_size: no huge folio past i_size");
    assert_eq!(
        h.fault_in(Hva(within + 3 * M2 / 2), false),
        Err(HostError::NotMapped { hva: Hva(within + 3 * M2 / 2) })
    );

    let always = h.mmap(&MmapRequest::new(4 * M2 / 2, b(ShmemHuge::Always))).unwrap();
    let p = h.fault_in(Hva(always + M2), true).unwrap();
    assert_eq!(p.size, Size4K, "the block crosses EOF, so it is not PMD-mapped");
    assert_eq!(h.folio(p.pfn.0).unwrap().order, 9, "always: a huge folio even across EOF");
    h.audit().unwrap();
}

#[test]
fn shmem_misaligned_mapping_has_huge_folios_mapped_by_ptes() {
    let h = host(G1);
    // hva is 4 KiB past a 2 MiB boundary while file offset 0 is 2 MiB aligned: incongruent.
    let hva = h.mmap(&MmapRequest::new(8 * M2, shmem(ShmemHuge::Always)).at_offset(K4)).unwrap();
    for i in 0..8 {
        let p = h.fault_in(Hva(hva + i * M2 + 40 * K4), true).unwrap();
        assert_eq!(p.size, Size4K);
        let f = h.folio(p.pfn.0).unwrap();
        assert_eq!((f.order, f.pmd_mapped, f.pte_mapped), (9, 0, 1));
    }
    // A congruent mapping (hva and file offset both 4 KiB past 2 MiB) PMD-maps the inner blocks.
    let b = Backing::Shmem { huge: ShmemHuge::Always, file_offset: K4, file_size: None };
    let hva = h.mmap(&MmapRequest::new(8 * M2, b).at_offset(K4)).unwrap();
    assert_eq!(size_at(&h, hva), Size4K);
    assert_eq!(size_at(&h, hva - K4 + M2), Size2M);
    h.audit().unwrap();
}

#[test]
fn hugetlbfs_pools_and_exhaustion() {
    let h = host_with(HostConfig { memory: 4 * G1, hugetlb_2m_pages: 3, hugetlb_1g_pages: 1, ..HostConfig::default() });
    let b2 = Backing::Hugetlbfs { page_size: Size2M, file_offset: 0 };
    let hva = h.mmap(&MmapRequest::new(4 * M2, b2)).unwrap();
    for i in 0..3 {
        let p = h.fault_in(Hva(hva + i * M2 + 9 * K4), i == 0).unwrap();
        assert_eq!((p.size, p.kind), (Size2M, BackingKind::Hugetlbfs));
        assert_eq!(h.folio(p.pfn.0).unwrap().kind, FolioKind::Hugetlb);
    }
    assert_eq!(h.stats().hugetlb_2m.free, 0);
    assert_eq!(
        h.fault_in(Hva(hva + 3 * M2), true),
        Err(HostError::OutOfMemory { hva: Hva(hva + 3 * M2), kind: BackingKind::Hugetlbfs })
    );
    // Refaulting a present page still works.
    assert_eq!(size_at(&h, hva + 5 * K4), Size2M);

    let b1 = Backing::Hugetlbfs { page_size: Size1G, file_offset: 0 };
    let hva = h.mmap(&MmapRequest::new(2 * G1, b1)).unwrap();
    let p = h.fault_in(Hva(hva + G1 - K4), false).unwrap();
    assert_eq!(p.size, Size1G);
    let f = h.folio(p.pfn.0).unwrap();
    assert_eq!((f.order, f.pud_mapped), (18, 1));
    assert!(matches!(h.fault_in(Hva(hva + G1), false), Err(HostError::OutOfMemory { .. })));
    h.audit().unwrap();

    // hugetlbfs mappings must be aligned to the page size.
    assert_eq!(
        h.mmap(&MmapRequest::new(M2, b2).at_offset(K4)),
        Err(HostOpError::Misaligned { what: "offset", value: K4, align: M2 })
    );
    assert!(matches!(h.mmap(&MmapRequest::new(M2 + K4, b2)), Err(HostOpError::Misaligned { what: "len", .. })));
    let b4 = Backing::Hugetlbfs { page_size: Size4K, file_offset: 0 };
    assert!(matches!(h.mmap(&MmapRequest::new(M2, b4)), Err(HostOpError::PageSize { .. })));
}

#[test]
fn page_cache_large_folios() {
    let h = host(G1);
    let pc = |max_folio_order| Backing::PageCache { max_folio_order, file_offset: 0, file_size: None };
    let hva = h.mmap(&MmapRequest::new(4 * M2, pc(9))).unwrap();
    let p = h.fault_in(Hva(hva + 3 * K4), false).unwrap();
    assert_eq!((p.size, p.kind), (Size2M, BackingKind::PageCache));
    assert_eq!(h.folio(p.pfn.0).unwrap().kind, FolioKind::PageCache);

    let hva = h.mmap(&MmapRequest::new(4 * M2, pc(4))).unwrap();
    let p = h.fault_in(Hva(hva + 17 * K4), false).unwrap();
    assert_eq!(p.size, Size4K);
    let f = h.folio(p.pfn.0).unwrap();
    assert_eq!((f.order, f.pte_mapped), (4, 1), "a 64 KiB folio, PTE-mapped");
    // The neighbour in the same folio faults to the same folio.
    let q = h.fault_in(Hva(hva + 18 * K4), false).unwrap();
    assert_eq!(q.pfn, p.pfn + 1);

    // Misaligned: order-9 folios, mapped with PTEs.
    let hva = h.mmap(&MmapRequest::new(4 * M2, pc(9)).at_offset(8 * K4)).unwrap();
    let p = h.fault_in(Hva(hva + M2), false).unwrap();
    assert_eq!(p.size, Size4K);
    assert_eq!(h.folio(p.pfn.0).unwrap().order, 9);

    // Orders above 9 act as 9.
    let hva = h.mmap(&MmapRequest::new(4 * M2, pc(18))).unwrap();
    let p = h.fault_in(Hva(hva), false).unwrap();
    assert_eq!((p.size, h.folio(p.pfn.0).unwrap().order), (Size2M, 9));
    h.audit().unwrap();
}

#[test]
fn dax_maps_pmd_and_pud_where_aligned_and_records_dirty() {
    let h = host_with(HostConfig { memory: G1, dax_size: 4 * G1, ..HostConfig::default() });
    let dax = |max_leaf, file_offset| Backing::Dax { max_leaf, file_offset };
    let hva = h.mmap(&MmapRequest::new(2 * G1, dax(Size1G, 0))).unwrap();
    let free = h.stats().free_pages;
    let p = h.fault_in(Hva(hva + G1 + 77 * K4), false).unwrap();
    assert_eq!((p.size, p.kind), (Size1G, BackingKind::Dax));
    assert_eq!(h.stats().free_pages, free, "device memory is outside the buddy allocator");
    assert_eq!(h.folio(p.pfn.0), None, "no refcounted pages");
    let device_pfn = HostConfig::default().device_base / K4;
    assert_eq!(p.pfn, Pfn(device_pfn + (G1 + 77 * K4) / K4), "pfn follows the device offset");
    assert!(!h.page_state(p.pfn.0).dirty);
    h.mark_dirty(p.pfn, 1);
    assert!(h.page_state(p.pfn.0).dirty);
    assert!(!h.page_state((p.pfn + 1).0).dirty);

    // Slots carved from the same device at other offsets.
    let hva = h.mmap(&MmapRequest::new(G1, dax(Size2M, 2 * G1))).unwrap();
    assert_eq!(size_at(&h, hva), Size2M, "the device alignment caps the leaf");
    let hva = h.mmap(&MmapRequest::new(G1, dax(Size1G, 2 * G1)).at_offset(M2)).unwrap();
    assert_eq!(size_at(&h, hva), Size2M, "hva only 2 MiB aligned");
    let hva = h.mmap(&MmapRequest::new(G1, dax(Size1G, 2 * G1)).at_offset(K4)).unwrap();
    assert_eq!(size_at(&h, hva + M2), Size4K, "hva and device offset incongruent");
    let hva = h.mmap(&MmapRequest::new(4 * M2, dax(Size1G, 3 * G1 + K4)).at_offset(K4)).unwrap();
    assert_eq!(size_at(&h, hva - K4 + M2), Size2M, "congruent with the device offset");
    h.audit().unwrap();

    // Mappings must end inside the device.
    assert_eq!(
        h.mmap(&MmapRequest::new(2 * M2, dax(Size2M, 4 * G1 - M2))),
        Err(HostOpError::NoSpace { start: 4 * G1 - M2, end: 4 * G1 + M2, space: "DAX device" })
    );
    let none = host(G1);
    assert!(matches!(none.mmap(&MmapRequest::new(M2, dax(Size2M, 0))), Err(HostOpError::NoSpace { .. })));
}

#[test]
fn pfnmap_maps_huge_only_when_aligned() {
    let h = host(G1);
    let mmio = |pa, max_leaf| Backing::PfnMap { pa, max_leaf };
    let pa = 0xf0_0000_0000;
    let hva = h.mmap(&MmapRequest::new(2 * G1, mmio(pa, Size1G))).unwrap();
    let p = h.fault_in(Hva(hva + 5 * K4), true).unwrap();
    assert_eq!((p.size, p.kind, p.pfn.0), (Size1G, BackingKind::PfnMap, pa / K4 + 5));
    let hva = h.mmap(&MmapRequest::new(4 * M2, mmio(pa + M2, Size1G))).unwrap();
    assert_eq!(size_at(&h, hva), Size2M);
    let hva = h.mmap(&MmapRequest::new(4 * M2, mmio(pa + K4, Size1G))).unwrap();
    assert_eq!(size_at(&h, hva), Size4K);
    let hva = h.mmap(&MmapRequest::new(4 * M2, mmio(pa, Size4K))).unwrap();
    assert_eq!(size_at(&h, hva), Size4K, "max_leaf caps the size");
    assert_eq!(h.folio(pa / K4), None);
    h.audit().unwrap();
}

#[test]
fn bad_accesses_are_errors() {
    let h = host(G1);
    let ro = h.mmap(&MmapRequest::new(M2, anon(ThpMode::Always)).with_prot(Prot::ReadOnly)).unwrap();
    assert_eq!(h.fault_in(Hva(ro), true), Err(HostError::ReadOnly { hva: Hva(ro) }));
    let p = h.fault_in(Hva(ro), false).unwrap();
    assert!(!p.writable);
    let none = h.mmap(&MmapRequest::new(M2, anon(ThpMode::Always)).with_prot(Prot::None)).unwrap();
    assert_eq!(h.fault_in(Hva(none), false), Err(HostError::NotMapped { hva: Hva(none) }));
    assert_eq!(h.fault_in(Hva(0x1000), false), Err(HostError::NotMapped { hva: Hva(0x1000) }));
    assert_eq!(h.lookup(Hva(0x1000)), None);
}

#[test]
fn bad_mmap_requests_are_errors() {
    let h = host(G1);
    let a = anon(ThpMode::Always);
    assert!(matches!(h.mmap(&MmapRequest::new(0, a)), Err(HostOpError::EmptyRange { .. })));
    assert!(matches!(h.mmap(&MmapRequest::new(K4 + 1, a)), Err(HostOpError::Misaligned { what: "len", .. })));
    assert!(matches!(h.mmap(&MmapRequest::new(K4, a).at_offset(3)), Err(HostOpError::Misaligned { .. })));
    assert!(matches!(h.mmap(&MmapRequest::new(K4, a).at_offset(G1)), Err(HostOpError::Misaligned { .. })));
    let hva = h.mmap(&MmapRequest::new(M2, a)).unwrap();
    assert_eq!(h.mmap(&MmapRequest::new(K4, a).fixed(hva + K4)), Err(HostOpError::Overlap { hva: hva + K4 }));
    assert!(matches!(h.mmap(&MmapRequest::new(M2, a).fixed(1 << 48)), Err(HostOpError::NoSpace { .. })));
    let fixed = h.mmap(&MmapRequest::new(M2, a).fixed(0x10_0000_0000)).unwrap();
    assert_eq!(fixed, 0x10_0000_0000);
    // Mappings never overlap, and each starts at the requested offset from 1 GiB.
    let next = h.mmap(&MmapRequest::new(M2, a).at_offset(3 * K4)).unwrap();
    assert_eq!(next % G1, 3 * K4);
    assert_eq!(h.vmas().len(), 3);
}

#[test]
fn config_errors() {
    use slat_sim::host::HostConfigError;
    let bad = |c: HostConfig| SimHost::new(c).err().unwrap();
    let d = HostConfig::default();
    assert!(matches!(bad(HostConfig { fragmentation: 1.5, ..d.clone() }), HostConfigError::Fraction { .. }));
    assert!(matches!(bad(HostConfig { fragmentation_1g: f64::NAN, ..d.clone() }), HostConfigError::Fraction { .. }));
    assert!(matches!(bad(HostConfig { memory: 12345, ..d.clone() }), HostConfigError::Misaligned { .. }));
    assert!(matches!(bad(HostConfig { memory: 0, ..d.clone() }), HostConfigError::Zero { .. }));
    assert!(matches!(bad(HostConfig { ram_base: M2, ..d.clone() }), HostConfigError::Misaligned { .. }));
    assert!(matches!(bad(HostConfig { device_base: 4 * G1, ..d.clone() }), HostConfigError::Layout { .. }));
    // A configuration round-trips through TOML.
    let text = "memory = 2147483648\nfragmentation = 0.25\nhugetlb_2m_pages = 16\n";
    let c: HostConfig = toml::from_str(text).unwrap();
    assert_eq!((c.memory, c.fragmentation, c.hugetlb_2m_pages, c.seed), (2 * G1, 0.25, 16, 0));
    assert!(SimHost::new(c).is_ok());
}

#[test]
fn the_host_is_send_and_sync_and_usable_as_dyn_host_memory() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<SimHost>();
    let h = host(G1);
    let hva = h.mmap(&MmapRequest::new(M2, anon(ThpMode::Always))).unwrap();
    let dynamic: &dyn HostMemory = &h;
    assert_eq!(dynamic.fault_in(Hva(hva), true).unwrap().size, Size2M);
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(h.lookup(Hva(hva)).unwrap().size, Size2M));
    });
}
