//! Memslot validation, NX huge pages, write tracking, memory attributes, caps, stats.

use crate::common::*;
use slat_mmu::{
    FaultError, Gfn, Gpa, Hva, MemslotError, MemslotSpec, MmuConfig, MmuError, MmuNotifier, NxPolicy, WhyNotHuge,
};
use slat_pt::{Access, MemType, PageSize, Perms};

#[test]
fn memslot_validation_names_the_problem() {
    let m = mmu(MmuConfig::default());
    m.add_memslot(slot(0, GIB, GIB, HVA)).unwrap();
    type Check = fn(&MmuError) -> bool;
    let cases: [(MemslotSpec, Check); 5] = [
        (slot(1, GIB + 4096, 4096, HVA + 2 * GIB), |e| {
            matches!(e, MmuError::Memslot(MemslotError::Overlap { other: 0, .. }))
        }),
        (slot(0, 4 * GIB, 4096, HVA + 2 * GIB), |e| matches!(e, MmuError::Memslot(MemslotError::Exists { id: 0 }))),
        (slot(2, 4 * GIB, 0, HVA), |e| matches!(e, MmuError::Memslot(MemslotError::Empty { id: 2 }))),
        (MemslotSpec { hva: Hva(HVA + 12), ..slot(3, 4 * GIB, 4096, 0) }, |e| {
            matches!(e, MmuError::Memslot(MemslotError::MisalignedHva { id: 3, .. }))
        }),
        (slot(4, 3 << 46, 1 << 47, HVA), |e| matches!(e, MmuError::Memslot(MemslotError::TooLarge { id: 4, .. }))),
    ];
    for (spec, want) in cases {
        let e = m.add_memslot(spec).unwrap_err();
        assert!(want(&e), "{spec:?}: {e}");
        assert!(e.to_string().contains("memslot"), "message names the slot: {e}");
    }
    assert_eq!(m.memslots().len(), 1);
}

#[test]
fn delete_and_move_zap_through_the_protocol() {
    let m = mmu(MmuConfig::default());
    m.host().map_range(HVA, 64 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(slot(0, GIB, 64 * MIB, HVA)).unwrap();
    touch(&m, GIB, Access::Write);
    m.move_memslot(0, Gfn((2 * GIB) >> 12)).unwrap();
    audit(&m);
    assert_eq!(leaves(&m), [0, 0, 0]);
    assert!(matches!(m.handle_fault(Gpa(GIB), Access::Read), Err(FaultError::NoMemslot { .. })));
    assert_eq!(touch(&m, 2 * GIB + 0x1000, Access::Read), PageSize::Size2M);
    m.delete_memslot(0).unwrap();
    audit(&m);
    assert_eq!(leaves(&m), [0, 0, 0]);
    assert!(m.delete_memslot(0).is_err());
    assert_eq!(m.stats().mmio, 1);
}

#[test]
fn readonly_slot_refuses_writes_and_maps_read_only() {
    let m = mmu(MmuConfig::default());
    m.host().map_range(HVA, 4 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(MemslotSpec { readonly: true, ..slot(0, GIB, 4 * MIB, HVA) }).unwrap();
    assert!(matches!(m.handle_fault(Gpa(GIB), Access::Write), Err(FaultError::ReadOnly { slot: 0, .. })));
    touch(&m, GIB, Access::Read);
    let t = m.with_tables(|pt| pt.translate(Gpa(GIB))).unwrap();
    assert!(!t.attrs.perms.contains(Perms::WRITE));
}

/// The NX huge-page sequence from KVM's nx_huge_pages_test: reads map 2M, an exec splits and is
/// counted, recovery zaps it, a re-read maps 2M again.
#[test]
fn nx_huge_pages_split_and_recover() {
    let m = mmu(MmuConfig::default().with_nx(Some(NxPolicy::new(1))));
    m.host().map_range(HVA, 8 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(slot(0, GIB, 8 * MIB, HVA)).unwrap();
    assert_eq!(touch(&m, GIB, Access::Read), PageSize::Size2M);
    assert_eq!(touch(&m, GIB + 2 * MIB, Access::Read), PageSize::Size2M);
    assert_eq!(leaves(&m)[1], 2);
    assert_eq!(touch(&m, GIB + 0x1000, Access::Exec), PageSize::Size4K);
    assert_eq!(leaves(&m), [512, 1, 0]);
    assert_eq!(m.stats().nx_lpage_splits, 1);
    // KVM's selftest: "Executing from the third huge page (previously unaccessed)" counts a
    // split too: the table the exec fault builds is tracked (`nx_huge_page_disallowed`).
    assert_eq!(touch(&m, GIB + 4 * MIB, Access::Exec), PageSize::Size4K);
    assert_eq!(m.stats().nx_lpage_splits, 2, "an exec fault on an unmapped block tracks the table it builds");
    // A read beside it keeps that table (KVM's `disallowed_hugepage_adjust`): no non-executable
    // huge leaf replaces the executable pages, so the next exec does not split again.
    assert_eq!(touch(&m, GIB + 4 * MIB + 0x5000, Access::Read), PageSize::Size4K);
    assert_eq!(touch(&m, GIB + 4 * MIB + 0x1000, Access::Exec), PageSize::Size4K);
    assert_eq!(m.stats().splits, 1, "exec/read alternation must not thrash");
    assert_eq!(m.stats().nx_lpage_splits, 2);
    // A read next to the split block must not re-create the huge leaf over the executable pages.
    assert_eq!(touch(&m, GIB + 0x9000, Access::Read), PageSize::Size4K);
    assert_eq!(m.explain(Gfn((GIB + 0x9000) >> 12)).decision.not_2m.primary(), Some(WhyNotHuge::NxHugePage));
    assert_eq!(m.recover_nx_huge_pages(), 2);
    audit(&m);
    assert_eq!(m.stats().nx_lpage_splits, 0);
    assert_eq!(touch(&m, GIB + 0x9000, Access::Read), PageSize::Size2M);
    assert_eq!(leaves(&m)[1], 2);
}

#[test]
fn write_tracking_disallows_huge_and_reports_writes() {
    let m = mmu(MmuConfig::default());
    m.host().map_range(HVA, 8 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(slot(0, GIB, 8 * MIB, HVA)).unwrap();
    assert_eq!(touch(&m, GIB, Access::Write), PageSize::Size2M);
    m.write_track(Gfn((GIB >> 12) + 5)).unwrap();
    audit(&m);
    assert_eq!(leaves(&m), [0, 0, 0], "the huge leaf over the tracked gfn is zapped");
    assert_eq!(touch(&m, GIB, Access::Write), PageSize::Size4K);
    assert_eq!(m.handle_fault(Gpa(GIB + 5 * 4096), Access::Write).unwrap(), slat_mmu::FaultOutcome::WriteTracked);
    audit(&m);
    assert_eq!(m.explain(Gfn(GIB >> 12)).decision.not_2m.primary(), Some(WhyNotHuge::WriteTracking));
    m.write_untrack(Gfn((GIB >> 12) + 5)).unwrap();
    assert_eq!(m.explain(Gfn(GIB >> 12)).decision.size, PageSize::Size2M);
}

#[test]
fn mixed_memory_types_keep_blocks_small() {
    let m = mmu(MmuConfig::default());
    m.host().map_range(HVA, 8 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(slot(0, GIB, 8 * MIB, HVA)).unwrap();
    assert_eq!(touch(&m, GIB + 2 * MIB, Access::Read), PageSize::Size2M);
    m.set_memory_type(Gfn((GIB + 2 * MIB + 0x10000) >> 12), 4, MemType::Uncached).unwrap();
    audit(&m);
    assert_eq!(touch(&m, GIB + 2 * MIB, Access::Read), PageSize::Size4K);
    assert_eq!(m.explain(Gfn((GIB + 2 * MIB) >> 12)).decision.not_2m.primary(), Some(WhyNotHuge::MixedAttributes));
    touch(&m, GIB + 2 * MIB + 0x10000, Access::Read);
    let t = m.with_tables(|pt| pt.translate(Gpa(GIB + 2 * MIB + 0x10000))).unwrap();
    assert_eq!(t.attrs.mem_type, MemType::Uncached);
    // Making the whole block uniform again (all uncached) allows a huge leaf again.
    m.set_memory_type(Gfn((GIB + 2 * MIB) >> 12), 512, MemType::Uncached).unwrap();
    assert_eq!(touch(&m, GIB + 2 * MIB, Access::Read), PageSize::Size2M);
    assert_eq!(touch(&m, GIB, Access::Read), PageSize::Size2M);
}

#[test]
fn caps_and_cpu_limits_are_reasons() {
    let m = mmu(MmuConfig::default().with_max_leaf(PageSize::Size2M));
    m.host().map_range(HVA, GIB, HPA, PageSize::Size1G, true);
    m.add_memslot(slot(0, GIB, GIB, HVA)).unwrap();
    assert_eq!(touch(&m, GIB, Access::Read), PageSize::Size2M);
    assert_eq!(m.stats().why(WhyNotHuge::FormatLimit), 1);
    let m = mmu(MmuConfig::default().with_cap(Some(PageSize::Size4K)));
    m.host().map_range(HVA, GIB, HPA, PageSize::Size1G, true);
    m.add_memslot(slot(0, GIB, GIB, HVA)).unwrap();
    assert_eq!(touch(&m, GIB, Access::Read), PageSize::Size4K);
    assert_eq!(m.why_not_huge().pages(WhyNotHuge::PolicyCap), 1);
}

#[test]
fn host_unmapped_address_is_a_host_error() {
    let m = mmu(MmuConfig::default());
    m.add_memslot(slot(0, GIB, 8 * MIB, HVA)).unwrap();
    assert!(matches!(m.handle_fault(Gpa(GIB), Access::Read), Err(FaultError::Host(_))));
}

#[test]
fn aging_through_the_notifier() {
    let m = mmu(MmuConfig::default());
    m.host().map_range(HVA, 8 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(slot(0, GIB, 8 * MIB, HVA)).unwrap();
    touch(&m, GIB, Access::Read);
    assert!(m.test_young(Hva(HVA), Hva(HVA + 4096)));
    assert!(m.clear_young(Hva(HVA), Hva(HVA + 4096)));
    assert!(!m.test_young(Hva(HVA), Hva(HVA + 2 * MIB)));
    m.with_tables(|pt| pt.hw_walk(Gpa(GIB + 8), Access::Read));
    assert!(m.test_young(Hva(HVA), Hva(HVA + 4096)), "a hardware access sets the accessed flag again");
}

/// Faults from several threads run concurrently with host invalidations; the result always
/// passes the audit.
#[test]
fn concurrent_faults_and_invalidations_stay_consistent() {
    let m = mmu(MmuConfig::default());
    m.host().map_range(HVA, 64 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(slot(0, GIB, 64 * MIB, HVA)).unwrap();
    std::thread::scope(|s| {
        for t in 0..3u64 {
            let m = &m;
            s.spawn(move || {
                let mut x = 0x9e37_79b9u64 + t;
                for _ in 0..3000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let gpa = GIB + ((x % (64 * MIB)) & !0xfff);
                    let access = if x % 3 == 0 { Access::Write } else { Access::Read };
                    let _ = m.handle_fault(Gpa(gpa), access).unwrap();
                }
            });
        }
        let m = &m;
        s.spawn(move || {
            for i in 0..200u64 {
                // Invalidate (without changing the host) a 2M block at a time.
                let hva = HVA + (i % 32) * 2 * MIB;
                m.invalidate_range_start(Hva(hva), Hva(hva + 4096));
                m.invalidate_range_end(Hva(hva), Hva(hva + 4096));
            }
        });
    });
    audit(&m);
    assert!(m.stats().faults >= 9000);
}
