//! Per-vCPU dirty rings beside the bitmap: per-vCPU records, soft limit, full ring, harvest
//! re-protection, and no dirty page lost across ring harvests.

use slat_mmu::{DirtyLogMode, DirtyRingConfig, FaultError, FaultOutcome, Gpa, HarvestMode, MmuConfig, MmuError};
use std::collections::BTreeSet;

use crate::common::*;
use slat_pt::{Access, PageSize};

const NPAGES: u64 = (32 * MIB) >> 12;

fn ring(entries: u32, soft_limit: u32) -> MmuConfig {
    MmuConfig::default().with_dirty_ring(Some(DirtyRingConfig::new(entries, soft_limit, 4)))
}

/// A 32 MiB slot at 1 GiB over 2 MiB THPs, touched huge and writable, then logged.
fn logged(config: MmuConfig) -> TestMmu {
    let m = mmu(config);
    m.host().map_range(HVA, 32 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(slot(0, GIB, 32 * MIB, HVA)).unwrap();
    for b in 0..16 {
        touch(&m, GIB + b * 2 * MIB, Access::Write);
    }
    m.set_dirty_logging(0, true).unwrap();
    audit(&m);
    m
}

fn writable(m: &TestMmu, page: u64) -> bool {
    m.with_tables(|pt| pt.hw_walk(Gpa(GIB + page * 4096), Access::Write).result.is_ok())
}

/// A guest write of `page` by `vcpu`: faults only if the hardware walk would.
#[track_caller]
fn write(m: &TestMmu, vcpu: u32, page: u64) -> Option<FaultOutcome> {
    if writable(m, page) {
        return None;
    }
    let out = m.handle_fault_on(vcpu, Gpa(GIB + page * 4096), Access::Write).unwrap();
    audit(m);
    Some(out)
}

#[test]
fn writes_from_two_vcpus_land_in_their_own_rings() {
    let m = logged(ring(64, 48));
    for p in 0..10 {
        assert!(matches!(write(&m, 0, p), Some(FaultOutcome::Mapped { .. })));
    }
    for p in 100..105 {
        assert!(matches!(write(&m, 1, p), Some(FaultOutcome::Mapped { .. })));
    }
    assert_eq!((m.dirty_ring_len(0), m.dirty_ring_len(1), m.dirty_ring_len(2)), (10, 5, 0));
    // Another vCPU writing an already writable page does not fault and records nothing.
    assert_eq!(write(&m, 1, 3), None);
    assert_eq!(m.harvest_dirty_ring(0), (0..10).map(|p| (0, p)).collect::<Vec<_>>());
    audit(&m);
    assert_eq!(m.harvest_dirty_ring(1), (100..105).map(|p| (0, p)).collect::<Vec<_>>());
    audit(&m);
    assert!(m.harvest_dirty_ring(2).is_empty());
    assert!(m.harvest_dirty_ring(99).is_empty(), "unknown vCPU: nothing");
    // The ring harvests cleared the pages' bits in the bitmap.
    assert!(m.get_dirty_log(0).unwrap().iter().all(|w| *w == 0));
    assert_eq!(m.stats().dirty_pages_harvested, 15);
    audit(&m);
}

#[test]
fn harvest_reprotects_exactly_the_collected_pages_with_one_flush() {
    let m = logged(ring(64, 48));
    write(&m, 0, 7).unwrap();
    write(&m, 0, 8).unwrap();
    write(&m, 1, 9).unwrap();
    assert!(writable(&m, 7) && writable(&m, 8) && writable(&m, 9));
    let before = m.stats().remote_tlb_flush_requests;
    m.tlb().clear();
    assert_eq!(m.harvest_dirty_ring(0), vec![(0, 7), (0, 8)]);
    audit(&m);
    assert_eq!(m.stats().remote_tlb_flush_requests, before + 1, "one flush for the harvest");
    assert!(m.tlb().covered(GIB + 7 * 4096, 2 * 4096));
    assert!(!writable(&m, 7) && !writable(&m, 8), "collected pages are protected again");
    assert!(writable(&m, 9), "vCPU 1's page is not collected, so still writable");
    let log = m.get_dirty_log(0).unwrap();
    assert_eq!(log[0], 1 << 9, "only the uncollected page's bit is left");
    // The next write faults again and is recorded again.
    assert!(matches!(write(&m, 0, 7), Some(FaultOutcome::Mapped { .. })));
    assert_eq!(m.dirty_ring_len(0), 1);
    // An empty harvest flushes nothing.
    let before = m.stats().remote_tlb_flush_requests;
    assert!(m.harvest_dirty_ring(3).is_empty());
    assert_eq!(m.stats().remote_tlb_flush_requests, before);
    audit(&m);
}

#[test]
fn soft_limit_requests_an_exit_and_a_full_ring_refuses_writes() {
    let m = logged(ring(8, 6));
    for p in 0..5 {
        assert!(matches!(write(&m, 0, p), Some(FaultOutcome::Mapped { .. })));
        assert!(!m.dirty_ring_soft_full(0));
    }
    // The record that reaches the soft limit: the fault completes, the vCPU owes an exit.
    assert!(matches!(write(&m, 0, 5), Some(FaultOutcome::Mapped { .. })));
    assert!(writable(&m, 5));
    assert!(m.dirty_ring_soft_full(0) && !m.dirty_ring_soft_full(1));
    assert_eq!(m.stats().dirty_ring_full, 1);
    assert!(m.stats().named().contains(&("dirty_ring_full", 1)));
    // A hypervisor that ignores it uses the reserve...
    for p in 6..8 {
        assert!(matches!(write(&m, 0, p), Some(FaultOutcome::Mapped { .. })));
    }
    assert_eq!(m.stats().dirty_ring_full, 1, "counted once per crossing");
    // ...and then writes are refused: nothing is made writable, nothing is overwritten.
    let retries = m.stats().retries;
    assert_eq!(write(&m, 0, 8), Some(FaultOutcome::Retry));
    assert!(!writable(&m, 8));
    assert_eq!(m.stats().retries, retries + 1);
    assert_eq!(m.dirty_ring_len(0), 8);
    // Other vCPUs are unaffected.
    assert!(matches!(write(&m, 1, 8), Some(FaultOutcome::Mapped { .. })));
    assert_eq!(m.harvest_dirty_ring(0), (0..8).map(|p| (0, p)).collect::<Vec<_>>());
    assert!(!m.dirty_ring_soft_full(0));
    assert!(matches!(write(&m, 0, 9), Some(FaultOutcome::Mapped { .. })));
    // Reaching the soft limit again counts again.
    for p in 10..15 {
        write(&m, 0, p).unwrap();
    }
    assert_eq!(m.stats().dirty_ring_full, 2);
    audit(&m);
}

/// Every page the guest writes is reported by a later harvest of some vCPU's ring, across
/// splits, re-protection, bitmap harvests and clears, with vCPUs exiting at the soft limit.
#[test]
fn no_dirty_page_lost_across_ring_harvests() {
    for (mode, harvest) in [
        (DirtyLogMode::SplitOnFault, HarvestMode::GetAndClear),
        (DirtyLogMode::WriteProtect, HarvestMode::GetAndClear),
        (DirtyLogMode::EagerSplit { chunk_tables: 3 }, HarvestMode::GetAndClear),
        (DirtyLogMode::SplitOnFault, HarvestMode::ManualClear { initially_set: false }),
    ] {
        let m = logged(ring(128, 96).with_dirty_log(mode).with_harvest(harvest));
        let mut x = 0x1234_5678u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // Pages written and not yet reported by a ring harvest that came after the write.
        let mut pending = BTreeSet::new();
        let harvest_ring = |m: &TestMmu, vcpu: u32, pending: &mut BTreeSet<u64>| {
            for (s, p) in m.harvest_dirty_ring(vcpu) {
                assert_eq!(s, 0);
                pending.remove(&p);
            }
            audit(m);
        };
        let mut exits = 0;
        for round in 0..6 {
            for i in 0..400 {
                let vcpu = (next() % 3) as u32;
                // Before entering the guest: KVM_EXIT_DIRTY_RING_FULL.
                if m.dirty_ring_soft_full(vcpu) {
                    harvest_ring(&m, vcpu, &mut pending);
                    exits += 1;
                }
                let page = next() % NPAGES;
                match write(&m, vcpu, page) {
                    None | Some(FaultOutcome::Mapped { .. }) => {}
                    other => panic!("{mode:?}: write of page {page} by vCPU {vcpu}: {other:?}"),
                }
                assert!(writable(&m, page));
                pending.insert(page);
                if i % 150 == 149 {
                    // The bitmap harvest runs beside the rings and must not hide pages from them.
                    let log = m.get_dirty_log(0).unwrap();
                    if let HarvestMode::ManualClear { .. } = harvest {
                        m.clear_dirty_log(0, 0, &log).unwrap();
                    }
                    audit(&m);
                }
            }
            for vcpu in 0..3 {
                harvest_ring(&m, vcpu, &mut pending);
            }
            assert!(pending.is_empty(), "{mode:?} {harvest:?} round {round}: pages lost {pending:?}");
        }
        assert!(exits > 0, "{mode:?}: the soft limit was reached");
        assert_eq!(m.stats().dirty_ring_full, exits, "{mode:?}");
    }
}

#[test]
fn records_of_a_slot_no_longer_logged_are_returned_but_protect_nothing() {
    let m = logged(ring(64, 48).with_recovery(slat_mmu::RecoveryPolicy::Zap));
    write(&m, 0, 1).unwrap();
    write(&m, 0, 2).unwrap();
    m.set_dirty_logging(0, false).unwrap();
    audit(&m);
    touch(&m, GIB, Access::Write);
    let leaves_before = leaves(&m);
    assert_eq!(m.harvest_dirty_ring(0), vec![(0, 1), (0, 2)]);
    assert_eq!(leaves(&m), leaves_before);
    assert!(writable(&m, 1), "not logged: nothing is write-protected");
    audit(&m);
    m.delete_memslot(0).unwrap();
    assert!(m.harvest_dirty_ring(0).is_empty());
}

#[test]
fn rings_count_as_bookkeeping_and_are_created_lazily() {
    let m = logged(ring(64, 48));
    let before = m.bookkeeping_bytes();
    write(&m, 2, 5).unwrap();
    let after = m.bookkeeping_bytes();
    assert!(after >= before + 64 * 12, "a ring of 64 records: {before} -> {after}");
    write(&m, 2, 6).unwrap();
    assert_eq!(m.bookkeeping_bytes(), after, "the buffer is allocated once");
}

#[test]
fn ring_configuration_is_validated() {
    let bad = [
        ring(100, 50),
        ring(0, 0),
        ring(64, 0),
        ring(64, 65),
        MmuConfig::default().with_dirty_ring(Some(DirtyRingConfig::new(4096, 4096 - 64, 0))),
        ring(64, 48).with_dirty_log(DirtyLogMode::HardwareDirty),
        ring(64, 48).with_harvest(HarvestMode::ManualClear { initially_set: true }),
    ];
    for config in bad {
        let r = slat_mmu::Mmu::<slat_pt::format::Ept4, slat_mmu::Parts<_, _, _>>::new(
            config,
            slat_pt::SimFrameAllocator::new(0x100_0000_0000, GIB),
            slat_mmu::testing::FakeHost::new(),
            slat_mmu::testing::RecordingTlb::default(),
        );
        assert!(matches!(r, Err(MmuError::Config { .. })), "{config:?} accepted");
    }
    let m = logged(ring(64, 64));
    assert_eq!(m.handle_fault_on(4, Gpa(GIB), Access::Write), Err(FaultError::NoVcpu { vcpu: 4, max_vcpus: 4 }));
    // Without a ring the vCPU id is ignored and nothing is recorded.
    let m = logged(MmuConfig::default());
    assert!(matches!(m.handle_fault_on(1000, Gpa(GIB), Access::Write), Ok(FaultOutcome::Mapped { .. })));
    assert_eq!(m.dirty_ring_len(1000), 0);
    assert!(!m.dirty_ring_soft_full(0));
    assert!(m.harvest_dirty_ring(0).is_empty());
    assert!(m.get_dirty_log(0).unwrap()[0] & 1 != 0, "the bitmap still logs");
}
