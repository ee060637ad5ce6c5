//! Regression tests straight from the seed threads (shared/seeds/*.txt), named after them.

use crate::common::*;
use slat_mmu::testing::Flush;
use slat_mmu::{
    BackingKind, DirtyLogMode, FaultOutcome, Gfn, Gpa, HarvestMode, Hva, MmuConfig, MmuNotifier, RecoveryPolicy,
    WhyNotHuge,
};
use slat_pt::{Access, PageSize};

// ---- 001_5ddc0d8ef2666ba4: arm64 THP/hugetlbfs stage-2 mapping sizes ---------------------------

/// Zapping a huge leaf yields a flush covering the whole block (the missing-flush bugs).
#[test]
fn seed_001_zap_of_huge_leaf_flushes_whole_block() {
    for size in [PageSize::Size2M, PageSize::Size1G] {
        let m = mmu(MmuConfig::default());
        m.host().map_range(HVA, 2 * GIB, HPA, size, true);
        m.add_memslot(slot(0, GIB, 2 * GIB, HVA)).unwrap();
        assert_eq!(touch(&m, GIB + 0x5000, Access::Read), size);
        m.tlb().clear();
        // The host unmaps one 4 KiB page in the middle of the block.
        let hva = HVA + size.bytes() / 2;
        m.invalidate_range_start(Hva(hva), Hva(hva + 4096));
        m.host().unmap_range(hva, 4096);
        m.invalidate_range_end(Hva(hva), Hva(hva + 4096));
        audit(&m);
        assert!(
            m.tlb().covered(GIB, size.bytes()),
            "{size}: flushes {:?} must cover the whole block",
            m.tlb().flushes()
        );
        assert_eq!(leaves(&m), [0, 0, 0]);
    }
}

/// A slot whose hva is off by 4 KiB modulo 2 MiB gets only 4 KiB leaves, reason "misaligned".
#[test]
fn seed_001_misaligned_slot_gets_4k_with_reason_misaligned() {
    let m = mmu(MmuConfig::default());
    // Host THPs at HVA; the slot starts 4 KiB into them, while the gpa is 2 MiB aligned.
    m.host().map_range(HVA, 64 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(slot(0, GIB, 32 * MIB, HVA + 4096)).unwrap();
    for off in (0..32 * MIB).step_by((2 * MIB) as usize) {
        assert_eq!(touch(&m, GIB + off + 0x3000, Access::Write), PageSize::Size4K);
    }
    assert_eq!(leaves(&m), [16, 0, 0]);
    let e = m.explain(Gfn((GIB >> 12) + 3));
    assert_eq!(e.decision.not_2m.primary(), Some(WhyNotHuge::Misaligned), "{e}");
    assert_eq!(m.stats().why(WhyNotHuge::Misaligned), 16);
    assert_eq!(m.why_not_huge().pages(WhyNotHuge::Misaligned), 16);
}

/// A slot starting at an unaligned but congruent address: huge inside, 4 KiB only at the
/// partial ends (better than the patch's "VMA start not aligned: force 4K").
#[test]
fn seed_001_unaligned_congruent_slot_is_huge_inside() {
    let m = mmu(MmuConfig::default());
    m.host().map_range(HVA, 16 * MIB, HPA, PageSize::Size2M, true);
    // gpa and hva both start 1 MiB into a 2 MiB block: congruent. 12 MiB long.
    m.add_memslot(slot(0, GIB + MIB, 12 * MIB, HVA + MIB)).unwrap();
    assert_eq!(touch(&m, GIB + MIB, Access::Read), PageSize::Size4K); // head: partial block
    assert_eq!(m.explain(Gfn((GIB + MIB) >> 12)).decision.not_2m.primary(), Some(WhyNotHuge::CrossesSlot));
    for blk in 1..6 {
        assert_eq!(touch(&m, GIB + blk * 2 * MIB + 0x1000, Access::Read), PageSize::Size2M);
    }
    assert_eq!(touch(&m, GIB + 12 * MIB + 0x1000, Access::Read), PageSize::Size4K); // tail
    assert_eq!(leaves(&m), [2, 5, 0]);
}

// ---- 000_f454326a9a5775de / 003_42e9b3768750ff42: DAX huge pages -------------------------------

/// DAX-backed memory (no refcounted pages; PMD and PUD host mappings) gets 2M and 1G leaves,
/// and guest writes mark the host page dirty.
#[test]
fn seed_000_003_dax_gets_huge_leaves_and_dirty_reaches_host() {
    let m = mmu(MmuConfig::default());
    m.host().map_kind(HVA, GIB, HPA, PageSize::Size1G, true, BackingKind::Dax);
    m.host().map_kind(HVA + GIB, 64 * MIB, HPA + GIB, PageSize::Size2M, true, BackingKind::Dax);
    m.add_memslot(slot(0, 4 * GIB, GIB + 64 * MIB, HVA)).unwrap();
    assert_eq!(touch(&m, 4 * GIB + 0x1234_5000, Access::Write), PageSize::Size1G);
    assert_eq!(touch(&m, 5 * GIB + 0x30_0000, Access::Write), PageSize::Size2M);
    assert_eq!(leaves(&m), [0, 1, 1]);
    assert!(m.host().is_dirty((HPA + 0x1234_5000) >> 12), "write through 1G DAX leaf marks the host page dirty");
    assert!(m.host().is_dirty((HPA + GIB + 0x30_0000) >> 12));
    // Zapping the writable 1G leaf marks the whole block dirty for DAX writeback.
    m.invalidate_range_start(Hva(HVA), Hva(HVA + GIB));
    m.invalidate_range_end(Hva(HVA), Hva(HVA + GIB));
    assert!(m.host().is_dirty((HPA + GIB - 4096) >> 12));
    audit(&m);
    // Not 1G there: the host leaf is 2M (and the 1G block would also cross the slot's end).
    let e = m.explain(Gfn((5 * GIB) >> 12));
    assert!(
        e.decision.not_1g.contains(WhyNotHuge::HostLeaf2M) && e.decision.not_1g.contains(WhyNotHuge::CrossesSlot),
        "{e}"
    );
}

// ---- 002_317cee37d2792ce3: page-cache / shmem THP -----------------------------------------------

/// Shmem THP mapped by a PMD in the VMM gets 2M leaves (whatever other processes do with the
/// folio); a THP the VMM's own tables map with PTEs gets 4K, reason "host maps small". The
/// decision comes from the host mapping: the MMU never sees page metadata.
#[test]
fn seed_002_shmem_thp_follows_the_vmm_mapping() {
    let m = mmu(MmuConfig::default());
    // Region A: PMD-mapped shmem THPs.
    m.host().map_kind(HVA, 8 * MIB, HPA, PageSize::Size2M, true, BackingKind::Shmem);
    // Region B: the same kind of folio (2 MiB, aligned, contiguous pfns) but the VMM maps it with PTEs.
    m.host().map_kind(HVA + 8 * MIB, 8 * MIB, HPA + 8 * MIB, PageSize::Size4K, true, BackingKind::Shmem);
    m.add_memslot(slot(0, GIB, 16 * MIB, HVA)).unwrap();
    assert_eq!(touch(&m, GIB + 0x1000, Access::Read), PageSize::Size2M);
    assert_eq!(touch(&m, GIB + 8 * MIB + 0x1000, Access::Read), PageSize::Size4K);
    let e = m.explain(Gfn((GIB + 8 * MIB + 0x1000) >> 12));
    assert_eq!(e.decision.not_2m.primary(), Some(WhyNotHuge::HostMapsSmall), "{e}");
    // Another process PTE-mapping part of region A's folio changes nothing in the VMM's host
    // tables: no invalidation reaches the MMU, and the 2M leaf stays.
    assert_eq!(touch(&m, GIB + 0x20_0000, Access::Read), PageSize::Size2M);
    assert_eq!(leaves(&m), [1, 2, 0]);
}

// ---- 004_d19eba3a390fbcf1: lazy collapse after dirty logging --------------------------------------

fn logged_vm(mode: DirtyLogMode, recovery: RecoveryPolicy) -> TestMmu {
    let config = MmuConfig::default().with_dirty_log(mode).with_recovery(recovery);
    let m = mmu(config);
    m.host().map_range(HVA, GIB, HPA, PageSize::Size1G, true);
    m.host().map_range(HVA + GIB, 64 * MIB, HPA + GIB, PageSize::Size2M, true);
    m.add_memslot(slot(0, GIB, GIB + 64 * MIB, HVA)).unwrap();
    touch(&m, GIB, Access::Write);
    for b in 0..32 {
        touch(&m, 2 * GIB + b * 2 * MIB, Access::Write);
    }
    assert_eq!(leaves(&m), [0, 32, 1]);
    m
}

/// Dirty logging on makes the slot's leaves 4K (per mode); off, the zap policy restores the
/// 2M/1G counts after the guest touches memory again.
#[test]
fn seed_004_logging_then_zap_recovery_restores_counts_after_refault() {
    for mode in [
        DirtyLogMode::WriteProtect,
        DirtyLogMode::SplitOnFault,
        DirtyLogMode::EagerSplit { chunk_tables: 7 },
        DirtyLogMode::HardwareDirty,
    ] {
        let m = logged_vm(mode, RecoveryPolicy::Zap);
        m.set_dirty_logging(0, true).unwrap();
        audit(&m);
        if let DirtyLogMode::EagerSplit { .. } = mode {
            // Eager: everything is 4K right away, fully populated.
            assert_eq!(leaves(&m), [512 * 512 + 32 * 512, 0, 0], "{mode:?}");
        }
        // The guest writes one page in every 2M block.
        for b in 0..(GIB + 64 * MIB) / (2 * MIB) {
            // A full audit walks ~280k leaves here: audit every 32nd step and at the end.
            let out = m.handle_fault(Gpa(GIB + b * 2 * MIB + 0x3000), Access::Write).unwrap();
            assert!(matches!(out, FaultOutcome::Mapped { size: PageSize::Size4K, .. }), "{mode:?}: {out:?}");
            if b % 32 == 0 {
                audit(&m);
            }
        }
        audit(&m);
        let l = leaves(&m);
        assert_eq!(l[1] + l[2], 0, "{mode:?}: no huge leaf survives writes under logging: {l:?}");
        let log = m.get_dirty_log(0).unwrap();
        assert_eq!(log.iter().map(|w| w.count_ones()).sum::<u32>(), 544, "{mode:?}");
        m.set_dirty_logging(0, false).unwrap();
        audit(&m);
        assert_eq!(leaves(&m), [0, 0, 0], "{mode:?}: zap recovery removed the small leaves");
        touch(&m, GIB, Access::Read);
        for b in 0..32 {
            touch(&m, 2 * GIB + b * 2 * MIB, Access::Read);
        }
        assert_eq!(leaves(&m), [0, 32, 1], "{mode:?}: counts restored after refault");
    }
}

/// The in-place policy restores the huge leaves at once, with one flush per memslot.
#[test]
fn seed_004_in_place_recovery_is_immediate_with_one_flush() {
    let m = logged_vm(DirtyLogMode::EagerSplit { chunk_tables: 64 }, RecoveryPolicy::InPlace);
    m.set_dirty_logging(0, true).unwrap();
    for b in 0..100 {
        touch(&m, GIB + b * 7 * MIB + 0x5000, Access::Write);
    }
    m.tlb().clear();
    m.set_dirty_logging(0, false).unwrap();
    audit(&m);
    assert_eq!(leaves(&m), [0, 32, 1]);
    let flushes = m.tlb().flushes();
    assert!(
        flushes.len() == 1 || (flushes.len() <= 2 && flushes.iter().all(|f| matches!(f, Flush::Range(_)))),
        "{flushes:?}"
    );
    assert!(m.tlb().covered(GIB, GIB + 64 * MIB));
}

/// A recovery that drops its lock part-way while a fault installs a 4K leaf still ends with no
/// 4K leaf where a huge one is legal.
#[test]
fn seed_004_recovery_racing_a_fault_leaves_no_small_leaf() {
    let config = MmuConfig::default()
        .with_dirty_log(DirtyLogMode::SplitOnFault)
        .with_recovery(RecoveryPolicy::InPlace)
        .with_recovery_batch(4);
    let m = std::sync::Arc::new(mmu(config));
    m.host().map_range(HVA, 64 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(slot(0, GIB, 64 * MIB, HVA)).unwrap();
    m.set_dirty_logging(0, true).unwrap();
    for b in 0..32 {
        touch(&m, GIB + b * 2 * MIB, Access::Write);
    }
    // A fault begins while logging is on (decides 4K), and while it is asking the host, logging
    // stops and recovery runs part-way (dropping its lock between steps).
    let weak = std::sync::Arc::downgrade(&m);
    m.host().set_fault_hook(Some(Box::new(move |_| {
        if let Some(m) = weak.upgrade() {
            // Stop logging without recovery, then recover a few blocks.
            let _ = m.set_dirty_logging(0, false);
        }
    })));
    let out = m.handle_fault(Gpa(GIB + 40 * MIB + 0x7000), Access::Write).unwrap();
    m.host().set_fault_hook(None);
    assert_eq!(out, FaultOutcome::Retry, "the fault decided 4K under logging and must retry");
    touch(&m, GIB + 40 * MIB + 0x7000, Access::Write);
    // Step the rest of the recovery by hand, with a fault between steps.
    let mut cursor = Some(GIB >> 12);
    while let Some(at) = cursor {
        let (next, _) = m.recover_step(0, at, 2).unwrap();
        touch(&m, GIB + 62 * MIB + 0x1000, Access::Write);
        cursor = next;
    }
    audit(&m);
    let small: Vec<_> = m
        .with_tables(|pt| pt.leaves(Gpa(GIB), 64 * MIB))
        .into_iter()
        .filter(|l| l.size == PageSize::Size4K)
        .filter(|l| m.explain(l.gpa.gfn()).decision.size > PageSize::Size4K)
        .collect();
    assert!(small.is_empty(), "4K leaves where huge is legal: {small:?}");
    assert_eq!(leaves(&m), [0, 32, 0]);
}

/// No dirty page is lost while logging: every write is reported by the next harvest, across
/// splits, harvests, re-protection and clear-by-mask.
#[test]
fn seed_004_no_dirty_page_lost() {
    for (mode, harvest) in [
        (DirtyLogMode::SplitOnFault, HarvestMode::GetAndClear),
        (DirtyLogMode::WriteProtect, HarvestMode::GetAndClear),
        (DirtyLogMode::EagerSplit { chunk_tables: 3 }, HarvestMode::ManualClear { initially_set: true }),
        (DirtyLogMode::HardwareDirty, HarvestMode::GetAndClear),
        (DirtyLogMode::SplitOnFault, HarvestMode::ManualClear { initially_set: false }),
    ] {
        let m = mmu(MmuConfig::default().with_dirty_log(mode).with_harvest(harvest));
        m.host().map_range(HVA, 32 * MIB, HPA, PageSize::Size2M, true);
        m.add_memslot(slot(0, GIB, 32 * MIB, HVA)).unwrap();
        for b in 0..16 {
            touch(&m, GIB + b * 2 * MIB, Access::Write);
        }
        m.set_dirty_logging(0, true).unwrap();
        let npages = (32 * MIB) >> 12;
        let mut x = 0x1234_5678u64;
        let manual = matches!(harvest, HarvestMode::ManualClear { .. });
        if manual {
            // Start of a migration round: collect and clear everything.
            let log = m.get_dirty_log(0).unwrap();
            m.clear_dirty_log(0, 0, &log).unwrap();
        }
        for round in 0..6 {
            let mut written = std::collections::BTreeSet::new();
            for _ in 0..300 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let page = x % npages;
                let gpa = GIB + page * 4096;
                // The guest writes: a fault only if the hardware walk would fault.
                let ok = m.with_tables(|pt| pt.hw_walk(Gpa(gpa), Access::Write).result.is_ok());
                if !ok {
                    touch(&m, gpa, Access::Write);
                    assert!(m.with_tables(|pt| pt.hw_walk(Gpa(gpa), Access::Write).result.is_ok()));
                }
                written.insert(page);
            }
            let log = m.get_dirty_log(0).unwrap();
            for p in &written {
                assert!(
                    log[(*p / 64) as usize] & (1 << (p % 64)) != 0,
                    "{mode:?} {harvest:?} round {round}: page {p} lost"
                );
            }
            if manual {
                m.clear_dirty_log(0, 0, &log).unwrap();
            }
            audit(&m);
        }
    }
}

// ---- host collapse/split racing a fault -------------------------------------------------------------

/// A host split racing a fault: the fault retries and never installs a translation the host
/// already dropped.
#[test]
fn host_split_racing_a_fault_retries() {
    let m = std::sync::Arc::new(mmu(MmuConfig::default()));
    m.host().map_range(HVA, 8 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(slot(0, GIB, 8 * MIB, HVA)).unwrap();
    let weak = std::sync::Arc::downgrade(&m);
    let fired = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f2 = fired.clone();
    // The hook runs after the fault has read its sequence but before it takes the lock: the host
    // splits the THP (keeping pfns) and then migrates one page (new pfn) in between.
    m.host().set_fault_hook(Some(Box::new(move |hva| {
        if f2.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let m = weak.upgrade().unwrap();
        let block = hva & !(2 * MIB - 1);
        m.invalidate_range_start(Hva(block), Hva(block + 2 * MIB));
        m.host().split(block);
        m.host().unmap_range(block + 0x5000, 4096);
        m.host().map_range(block + 0x5000, 4096, HPA + 100 * MIB, PageSize::Size4K, true);
        m.invalidate_range_end(Hva(block), Hva(block + 2 * MIB));
    })));
    let out = m.handle_fault(Gpa(GIB + 0x5000), Access::Read).unwrap();
    assert!(fired.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(out, FaultOutcome::Retry);
    assert_eq!(leaves(&m), [0, 0, 0], "nothing installed from the stale host answer");
    m.host().set_fault_hook(None);
    assert_eq!(touch(&m, GIB + 0x5000, Access::Read), PageSize::Size4K);
    assert_eq!(m.with_tables(|pt| pt.translate(Gpa(GIB + 0x5000))).unwrap().pa, HPA + 100 * MIB);
    assert!(m.stats().retries >= 1);
}
