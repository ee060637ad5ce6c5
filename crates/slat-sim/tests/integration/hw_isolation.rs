//! Isolation checking: a TLB entry that survives a flush it should not have is caught.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::hw_common::*;
use slat_pt::format::Ept4;
use slat_pt::{Access, FlushBatch, Gpa, PageSize, Perms, WalkFault};
use slat_sim::hw::{AccessOutcome, GuestPaging, GuestRegion, Hardware, HwConfig, ViolationKind};

const GVA: u64 = 0x2000_0000;

fn setup(config: HwConfig, s2_size: PageSize) -> (Hardware, Stage2<Ept4>) {
    let g = guest(GuestPaging::FourLevel, &[GuestRegion::new(GVA, 4 << 20, PageSize::Size4K, 0)]);
    let mut pt = stage2::<Ept4>();
    map_tables(&mut pt, &g, PageSize::Size4K);
    let _ = map(&mut pt, 0, 4 << 20, DATA_HPA, s2_size, Perms::RW);
    (Hardware::new(config, 2, g).unwrap(), pt)
}

/// Unmap `len` bytes at `gpa` from stage 2 and hand back the flush obligations.
fn unmap(pt: &mut Stage2<Ept4>, gpa: u64, len: u64) -> FlushBatch {
    let mut batch = FlushBatch::new();
    pt.unmap(Gpa(gpa), len, &mut batch, None).unwrap();
    assert!(!batch.is_empty());
    batch
}

#[test]
fn a_skipped_flush_is_caught_as_a_stale_entry() {
    let (mut hw, mut pt) = setup(HwConfig::checked(), PageSize::Size2M);
    // Both vCPUs cache gva GVA + 0x5000 (gpa 0x5000, inside the first 2M stage-2 leaf).
    for vcpu in 0..2 {
        assert!(matches!(hw.access(vcpu, GVA + 0x5000, Access::Read, &pt).unwrap(), AccessOutcome::Walked(_)));
    }
    // The MMU unmaps the leaf but "forgets" to flush: the batch is dropped unapplied.
    let batch = unmap(&mut pt, 0, 2 << 20);
    assert!(batch.covers(Gpa(0x5000)));
    drop(batch);
    // The stale entry still translates (as real hardware would)...
    let out = hw.access(0, GVA + 0x5008, Access::Read, &pt).unwrap();
    assert_eq!(out.hpa(), Some(DATA_HPA + 0x5008));
    // ...and checked mode reports it with the details.
    let s = hw.stats();
    assert_eq!(s.isolation_violations, 1);
    let v = &hw.violations()[0];
    assert_eq!((v.vcpu, v.gva, v.gpa, v.cached_hpa, v.current_hpa), (0, GVA + 0x5008, 0x5008, DATA_HPA + 0x5008, None));
    assert_eq!((v.access, &v.kind), (Access::Read, &ViolationKind::Unmapped));
}

#[test]
fn an_applied_flush_leaves_nothing_stale() {
    let (mut hw, mut pt) = setup(HwConfig::checked(), PageSize::Size2M);
    let tlb = hw.tlb_handle();
    for vcpu in 0..2 {
        hw.access(vcpu, GVA + 0x5000, Access::Read, &pt).unwrap();
        hw.access(vcpu, GVA + (2 << 20), Access::Read, &pt).unwrap();
    }
    let batch = unmap(&mut pt, 0, 2 << 20);
    assert!(slat_mmu::tlb::apply(&tlb, &batch));
    let _ = batch.into_detached();
    for vcpu in 0..2 {
        let out = hw.access(vcpu, GVA + 0x5008, Access::Read, &pt).unwrap();
        let AccessOutcome::Stage2Fault(f) = out else { panic!("expected a stage-2 fault, got {out:?}") };
        assert_eq!(
            (f.gpa, f.access, f.fault, f.on_guest_table),
            (0x5008, Access::Read, WalkFault::NotPresent { level: 1 }, false)
        );
        // The other leaf's translation was not flushed.
        assert!(matches!(hw.access(vcpu, GVA + (2 << 20), Access::Read, &pt).unwrap(), AccessOutcome::Hit { .. }));
    }
    let s = hw.stats();
    assert_eq!((s.isolation_violations, s.range_flushes, s.entries_invalidated), (0, 1, 4));
    assert!(hw.violations().is_empty());
}

#[test]
fn unchecked_mode_does_not_look() {
    let (mut hw, mut pt) = setup(HwConfig::default(), PageSize::Size4K);
    hw.access(0, GVA, Access::Read, &pt).unwrap();
    drop(unmap(&mut pt, 0, 4096));
    assert!(matches!(hw.access(0, GVA, Access::Read, &pt).unwrap(), AccessOutcome::Hit { .. }));
    assert_eq!(hw.stats().isolation_violations, 0);
}

#[test]
fn a_remap_without_flush_is_a_wrong_hpa() {
    let (mut hw, mut pt) = setup(HwConfig::checked(), PageSize::Size4K);
    hw.access(1, GVA + 0x3000, Access::Read, &pt).unwrap();
    // Migrate the page to another host frame without flushing.
    drop(map(&mut pt, 0x3000, 4096, 0x30_0000_0000, PageSize::Size4K, Perms::RW));
    hw.access(1, GVA + 0x3010, Access::Read, &pt).unwrap();
    let v = &hw.violations()[0];
    assert_eq!(v.kind, ViolationKind::WrongHpa);
    assert_eq!((v.vcpu, v.cached_hpa, v.current_hpa), (1, DATA_HPA + 0x3010, Some(0x30_0000_0010)));
    // With the flush, the new frame is used.
    let batch = map(&mut pt, 0x3000, 4096, 0x31_0000_0000, PageSize::Size4K, Perms::RW);
    slat_mmu::tlb::apply(&hw.tlb_handle(), &batch);
    assert_eq!(hw.access(1, GVA + 0x3010, Access::Read, &pt).unwrap().hpa(), Some(0x31_0000_0010));
    assert_eq!(hw.stats().isolation_violations, 1);
}

#[test]
fn a_write_protect_without_flush_is_a_stale_permission() {
    let (mut hw, mut pt) = setup(HwConfig::checked(), PageSize::Size4K);
    hw.access(0, GVA, Access::Write, &pt).unwrap();
    let mut batch = FlushBatch::new();
    pt.protect(Gpa(0), 4096, Perms::READ, &mut batch).unwrap();
    assert!(batch.covers(Gpa(0)));
    drop(batch);
    assert!(matches!(hw.access(0, GVA, Access::Write, &pt).unwrap(), AccessOutcome::Hit { .. }));
    assert_eq!(hw.violations()[0].kind, ViolationKind::StalePermission);
    // Reads through the entry are still fine.
    hw.access(0, GVA, Access::Read, &pt).unwrap();
    assert_eq!(hw.stats().isolation_violations, 1);

    // Applied: the write faults with the data access kind.
    let mut batch = FlushBatch::new();
    pt.protect(Gpa(0x1000), 4096, Perms::READ, &mut batch).unwrap();
    hw.access(0, GVA + 0x1000, Access::Read, &pt).unwrap();
    slat_mmu::tlb::apply(&hw.tlb_handle(), &batch);
    let out = hw.access(0, GVA + 0x1000, Access::Write, &pt).unwrap();
    let AccessOutcome::Stage2Fault(f) = out else { panic!("{out:?}") };
    assert_eq!((f.gpa, f.access, f.fault), (0x1000, Access::Write, WalkFault::Permission { size: PageSize::Size4K }));
    assert_eq!(hw.stats().isolation_violations, 1);
}

#[test]
fn a_dirty_harvest_without_flush_is_a_dirty_hazard() {
    let (mut hw, mut pt) = setup(HwConfig::checked(), PageSize::Size4K);
    hw.access(0, GVA, Access::Write, &pt).unwrap();
    let mut batch = FlushBatch::new();
    assert_eq!(pt.harvest_dirty(Gpa(0), 1, &mut batch).unwrap(), vec![1]); // bitmap: page 0 dirty
    drop(batch);
    hw.access(0, GVA, Access::Write, &pt).unwrap();
    let s = hw.stats();
    assert_eq!((s.dirty_violations, s.isolation_violations), (1, 0));
    assert_eq!(hw.violations()[0].kind, ViolationKind::StaleDirty);

    // With the flush, the next write walks and sets the dirty state again.
    let mut batch = FlushBatch::new();
    hw.access(0, GVA + 0x1000, Access::Write, &pt).unwrap();
    assert_eq!(pt.harvest_dirty(Gpa(0x1000), 1, &mut batch).unwrap(), vec![1]);
    slat_mmu::tlb::apply(&hw.tlb_handle(), &batch);
    assert!(matches!(hw.access(0, GVA + 0x1000, Access::Write, &pt).unwrap(), AccessOutcome::Walked(_)));
    let mut batch = FlushBatch::new();
    assert_eq!(pt.harvest_dirty(Gpa(0x1000), 1, &mut batch).unwrap(), vec![1]);
    assert_eq!(hw.stats().dirty_violations, 1);
}

#[test]
fn the_external_checker_sees_every_walk() {
    let (mut hw, pt) = setup(HwConfig::checked(), PageSize::Size4K);
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    hw.set_walk_checker(Some(Box::new(move |w| {
        counter.fetch_add(1, Ordering::Relaxed);
        assert_eq!(w.hpa, DATA_HPA + w.gpa);
        if w.gpa == 0x7000 {
            Err(format!("host does not map gpa {:#x}", w.gpa))
        } else {
            Ok(())
        }
    })));
    for page in 0..10u64 {
        hw.access(0, GVA + page * 4096, Access::Read, &pt).unwrap();
        hw.access(0, GVA + page * 4096, Access::Read, &pt).unwrap(); // hit: not a walk
    }
    assert_eq!(seen.load(Ordering::Relaxed), 10);
    assert_eq!(hw.stats().isolation_violations, 1);
    let v = &hw.violations()[0];
    assert_eq!(v.gpa, 0x7000);
    assert!(matches!(&v.kind, ViolationKind::External(m) if m.contains("0x7000")));
    hw.set_walk_checker(None);
    hw.access(1, GVA, Access::Read, &pt).unwrap();
    assert_eq!(seen.load(Ordering::Relaxed), 10);
}

#[test]
fn violation_details_are_capped_but_all_are_counted() {
    let config = HwConfig { max_violation_details: 3, ..HwConfig::checked() };
    let (mut hw, mut pt) = setup(config, PageSize::Size4K);
    for page in 0..10u64 {
        hw.access(0, GVA + page * 4096, Access::Read, &pt).unwrap();
    }
    drop(unmap(&mut pt, 0, 10 * 4096));
    for page in 0..10u64 {
        hw.access(0, GVA + page * 4096, Access::Read, &pt).unwrap();
    }
    assert_eq!(hw.stats().isolation_violations, 10);
    assert_eq!(hw.violations().len(), 3);
}

#[test]
fn hardware_and_handle_are_send() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Hardware>();
    send::<slat_sim::hw::SimTlb>();
    sync::<slat_sim::hw::SimTlb>();
}
