//! Regression tests for the divergences from KVM found by the fidelity review
//! (`research/kvm-fidelity-review.md`) and the adversarial test pass: each failed before its fix.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use slat_mmu::{
    BackingKind, CacheMaintenance, DirtyLogMode, FaultOutcome, Gfn, Gpa, HarvestMode, Hva, MemslotError, MemslotSpec,
    Mmu, MmuConfig, MmuError, MmuNotifier, Parts, Pfn,
};

use crate::common::*;
use slat_mmu::testing::{CacheOp, FakeHost, RecordingTlb};
use slat_pt::format::{Arm64S2L1, Ept4};
use slat_pt::{Access, Frame, FrameAllocator, MemType, PageSize, Perms, SimFrameAllocator};

/// Fault once; `Retry` is an answer here, not something to loop on.
fn fault(m: &TestMmu, gpa: u64, access: Access) -> FaultOutcome {
    m.handle_fault(Gpa(gpa), access).unwrap()
}

fn pa_of(m: &TestMmu, gpa: u64) -> Option<(u64, PageSize)> {
    m.with_tables(|pt| pt.translate(Gpa(gpa))).map(|t| (t.pa, t.size))
}

// ---- 1. memslots published during a host invalidation ----------------------------------------

#[test]
fn memslot_added_during_an_invalidation_waits_for_it() {
    let m = mmu(MmuConfig::default());
    m.host().map_range(HVA, 4 * MIB, HPA, PageSize::Size2M, true);
    // The host starts replacing the pages (migration) before the slot exists.
    m.invalidate_range_start(Hva(HVA), Hva(HVA + 4 * MIB));
    m.add_memslot(slot(0, GIB, 4 * MIB, HVA)).unwrap();
    assert_eq!(fault(&m, GIB, Access::Read), FaultOutcome::Retry, "a fault must not map the page being replaced");
    m.host().unmap_range(HVA, 4 * MIB);
    m.host().map_range(HVA, 4 * MIB, HPA + 64 * MIB, PageSize::Size2M, true);
    m.invalidate_range_end(Hva(HVA), Hva(HVA + 4 * MIB));
    touch(&m, GIB, Access::Read);
    assert_eq!(pa_of(&m, GIB), Some((HPA + 64 * MIB, PageSize::Size2M)));
    audit(&m);
}

#[test]
fn memslot_moved_during_an_invalidation_waits_for_it() {
    let m = mmu(MmuConfig::default());
    m.host().map_range(HVA, 4 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(slot(0, GIB, 4 * MIB, HVA)).unwrap();
    touch(&m, GIB, Access::Read);
    m.invalidate_range_start(Hva(HVA), Hva(HVA + 4 * MIB));
    m.move_memslot(0, Gfn((2 * GIB) >> 12)).unwrap();
    assert_eq!(fault(&m, 2 * GIB, Access::Read), FaultOutcome::Retry);
    m.host().unmap_range(HVA, 4 * MIB);
    m.host().map_range(HVA, 4 * MIB, HPA + 64 * MIB, PageSize::Size2M, true);
    m.invalidate_range_end(Hva(HVA), Hva(HVA + 4 * MIB));
    touch(&m, 2 * GIB, Access::Read);
    assert_eq!(pa_of(&m, 2 * GIB), Some((HPA + 64 * MIB, PageSize::Size2M)));
    audit(&m);
}

// ---- 2. a failed move changes nothing; a move keeps the dirty log ------------------------------

#[test]
fn failed_move_keeps_log_tracking_and_memory_types() {
    let m = mmu(MmuConfig::default());
    m.host().map_range(HVA, 8 * MIB, HPA, PageSize::Size2M, true);
    m.host().map_range(HVA + GIB, 4 * MIB, HPA + GIB, PageSize::Size2M, true);
    m.add_memslot(MemslotSpec { log_dirty: true, ..slot(0, GIB, 8 * MIB, HVA) }).unwrap();
    m.add_memslot(slot(1, 3 * GIB, 4 * MIB, HVA + GIB)).unwrap();
    touch(&m, GIB + 0x3000, Access::Write);
    let tracked = (GIB >> 12) + 600;
    m.write_track(Gfn(tracked)).unwrap();
    m.set_memory_type(Gfn((GIB + 4 * MIB) >> 12), 16, MemType::WriteCombining).unwrap();
    let err = m.move_memslot(0, Gfn((3 * GIB) >> 12)).unwrap_err();
    assert!(matches!(err, MmuError::Memslot(MemslotError::Overlap { other: 1, .. })), "{err}");
    audit(&m);
    let log = m.get_dirty_log(0).unwrap();
    assert_eq!(log[0], 1 << 3, "the dirty page survives the failed move");
    let s = m.memslots().into_iter().find(|s| s.id == 0).unwrap();
    assert_eq!((s.base_gfn, s.logging), (Gfn(GIB >> 12), true));
    // Write tracking and memory types are still in force.
    assert_eq!(m.handle_fault(Gpa((tracked << 12) & !0xfff), Access::Write).unwrap(), FaultOutcome::WriteTracked);
    touch(&m, GIB + 4 * MIB, Access::Read);
    assert_eq!(m.with_tables(|pt| pt.translate(Gpa(GIB + 4 * MIB))).unwrap().attrs.mem_type, MemType::WriteCombining);
}

#[test]
fn successful_move_keeps_the_dirty_log() {
    let m = mmu(MmuConfig::default());
    m.host().map_range(HVA, 8 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(MemslotSpec { log_dirty: true, ..slot(0, GIB, 8 * MIB, HVA) }).unwrap();
    touch(&m, GIB + 0x5000, Access::Write);
    m.move_memslot(0, Gfn((4 * GIB) >> 12)).unwrap();
    audit(&m);
    assert_eq!(m.get_dirty_log(0).unwrap()[0], 1 << 5, "page 5 of the slot is still reported");
}

// ---- 3. the host learns of every writable leaf ------------------------------------------------

#[test]
fn read_fault_that_maps_writable_marks_every_host_page_dirty() {
    let m = mmu(MmuConfig::default());
    m.host().map_range(HVA, 4 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(slot(0, GIB, 4 * MIB, HVA)).unwrap();
    assert_eq!(touch(&m, GIB + 0x1000, Access::Read), PageSize::Size2M);
    let t = m.with_tables(|pt| pt.translate(Gpa(GIB))).unwrap();
    assert!(t.attrs.perms.contains(Perms::WRITE));
    let pfn0 = HPA >> 12;
    assert!((pfn0..pfn0 + 512).all(|p| m.host().is_dirty(p)), "every page of the writable 2M leaf is dirty");
    // Logging on clears W and D; the host already knows.
    m.set_dirty_logging(0, true).unwrap();
    assert!(m.host().is_dirty(pfn0 + 7));
}

#[test]
fn in_place_recovery_marks_the_new_huge_leaf_dirty() {
    let m = mmu(MmuConfig::default());
    m.host().map_range(HVA, 4 * MIB, HPA, PageSize::Size2M, false);
    m.add_memslot(MemslotSpec { log_dirty: true, ..slot(0, GIB, 4 * MIB, HVA) }).unwrap();
    touch(&m, GIB, Access::Read);
    // The host makes the memory writable (the VMM's mprotect goes through an invalidation).
    m.invalidate_range_start(Hva(HVA), Hva(HVA + 4 * MIB));
    m.host().map_range(HVA, 4 * MIB, HPA, PageSize::Size2M, true);
    m.invalidate_range_end(Hva(HVA), Hva(HVA + 4 * MIB));
    for i in 0..512 {
        touch(&m, GIB + i * 4096, Access::Read);
    }
    assert_eq!(m.host().dirty_count(), 0, "read faults while logging map read-only");
    m.set_dirty_logging(0, false).unwrap();
    assert_eq!(leaves(&m), [0, 1, 0]);
    assert!(m.with_tables(|pt| pt.translate(Gpa(GIB))).unwrap().attrs.perms.contains(Perms::WRITE));
    assert_eq!(m.host().dirty_count(), 512);
}

// ---- 4. device memory --------------------------------------------------------------------------

#[test]
fn host_mmio_is_mapped_uncached() {
    let m = mmu(MmuConfig::default());
    m.host().map_kind(HVA, 2 * MIB, HPA, PageSize::Size4K, true, BackingKind::PfnMap);
    m.add_memslot(slot(0, GIB, 2 * MIB, HVA)).unwrap();
    touch(&m, GIB, Access::Read);
    assert_eq!(m.with_tables(|pt| pt.translate(Gpa(GIB))).unwrap().attrs.mem_type, MemType::Uncached);
    // A slot attribute cannot make device memory cacheable either.
    m.set_memory_type(Gfn(GIB >> 12), 512, MemType::WriteBack).unwrap();
    touch(&m, GIB, Access::Read);
    assert_eq!(m.with_tables(|pt| pt.translate(Gpa(GIB))).unwrap().attrs.mem_type, MemType::Uncached);
    audit(&m);
}

type Arm64Mmu = Mmu<Arm64S2L1, Parts<SimFrameAllocator, FakeHost, RecordingTlb>>;

fn arm64_mmu(tlb: RecordingTlb) -> Arm64Mmu {
    Mmu::new(MmuConfig::default(), SimFrameAllocator::new(0x100_0000_0000, GIB), FakeHost::new(), tlb).unwrap()
}

#[test]
fn arm64_uncached_memory_is_never_executable() {
    let m = arm64_mmu(RecordingTlb::default());
    m.host().map_range(HVA, 4 * MIB, HPA, PageSize::Size2M, true);
    m.host().map_kind(HVA + 4 * MIB, 2 * MIB, HPA + 4 * MIB, PageSize::Size4K, true, BackingKind::PfnMap);
    m.add_memslot(slot(0, GIB, 6 * MIB, HVA)).unwrap();
    m.set_memory_type(Gfn(GIB >> 12), 16, MemType::Uncached).unwrap();
    m.handle_fault(Gpa(GIB), Access::Read).unwrap();
    let t = m.with_tables(|pt| pt.translate(Gpa(GIB))).unwrap();
    assert_eq!(t.attrs.mem_type, MemType::Uncached);
    assert!(!t.attrs.perms.contains(Perms::EXEC), "Device memory is executable on arm64: {:?}", t.attrs);
    m.handle_fault(Gpa(GIB + 4 * MIB), Access::Read).unwrap();
    let t = m.with_tables(|pt| pt.translate(Gpa(GIB + 4 * MIB))).unwrap();
    assert!(!t.attrs.perms.contains(Perms::EXEC) && t.attrs.mem_type == MemType::Uncached);
    // Write-back RAM stays executable.
    m.handle_fault(Gpa(GIB + 2 * MIB), Access::Read).unwrap();
    assert!(m.with_tables(|pt| pt.translate(Gpa(GIB + 2 * MIB))).unwrap().attrs.perms.contains(Perms::EXEC));
    m.audit().unwrap();
}

// ---- 5. arm64 cache maintenance ------------------------------------------------------------------

#[test]
fn arm64_without_fwb_cleans_and_invalidates_the_whole_block() {
    let m = arm64_mmu(RecordingTlb::with_cache_maintenance(CacheMaintenance::ARM64_NO_FWB_NO_DIC));
    m.host().map_range(HVA, 4 * MIB, HPA, PageSize::Size2M, true);
    m.host().map_kind(HVA + 4 * MIB, 2 * MIB, HPA + 4 * MIB, PageSize::Size4K, true, BackingKind::PfnMap);
    m.add_memslot(slot(0, GIB, 6 * MIB, HVA)).unwrap();
    m.handle_fault(Gpa(GIB + 0x3000), Access::Exec).unwrap();
    assert_eq!(
        m.tlb().cache_ops(),
        vec![CacheOp::CleanDcache { pa: HPA, len: 2 * MIB }, CacheOp::InvalidateIcache { pa: HPA, len: 2 * MIB }]
    );
    m.tlb().clear();
    // Device memory: no data-cache clean, and never executable, so no icache either.
    m.handle_fault(Gpa(GIB + 4 * MIB), Access::Read).unwrap();
    assert_eq!(m.tlb().cache_ops(), vec![]);
}

#[test]
fn coherent_cpus_get_no_cache_maintenance() {
    let m = arm64_mmu(RecordingTlb::default());
    m.host().map_range(HVA, 4 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(slot(0, GIB, 4 * MIB, HVA)).unwrap();
    m.handle_fault(Gpa(GIB), Access::Exec).unwrap();
    assert!(m.tlb().cache_ops().is_empty());
}

// ---- 7. flush statistics with KVM's meaning ------------------------------------------------------

#[test]
fn flushes_never_exceed_flush_requests() {
    let m = mmu(MmuConfig::default());
    m.host().map_range(HVA, 64 * MIB, HPA, PageSize::Size4K, true);
    m.add_memslot(MemslotSpec { log_dirty: true, ..slot(0, GIB, 64 * MIB, HVA) }).unwrap();
    for i in 0..16 {
        touch(&m, GIB + i * 2 * MIB, Access::Write);
    }
    let before = m.stats();
    m.get_dirty_log(0).unwrap();
    let s = m.stats();
    assert_eq!(s.remote_tlb_flush_requests - before.remote_tlb_flush_requests, 1);
    assert_eq!(s.remote_tlb_flush - before.remote_tlb_flush, 1, "one harvest is one flush");
    assert!(s.remote_tlb_flush_ranges - before.remote_tlb_flush_ranges >= 2, "the ranges are counted apart");
    assert!(s.remote_tlb_flush <= s.remote_tlb_flush_requests);
}

// ---- 9. teardown returns every frame ---------------------------------------------------------------

#[test]
fn dropping_the_mmu_returns_parked_frames() {
    let frames = SimFrameAllocator::new(0x100_0000_0000, GIB);
    {
        let m: Mmu<Ept4, Parts<&SimFrameAllocator, FakeHost, RecordingTlb>> =
            Mmu::new(MmuConfig::default(), &frames, FakeHost::new(), RecordingTlb::default()).unwrap();
        m.host().map_range(HVA, 2 * MIB, HPA, PageSize::Size2M, true);
        m.add_memslot(slot(0, GIB, 2 * MIB, HVA)).unwrap();
        // A write-tracked gfn keeps the block 4K; once untracked, the next fault replaces the
        // 4K table by a 2M leaf and parks the table for deferred freeing.
        m.write_track(Gfn((GIB >> 12) + 9)).unwrap();
        m.handle_fault(Gpa(GIB), Access::Read).unwrap();
        m.write_untrack(Gfn((GIB >> 12) + 9)).unwrap();
        m.handle_fault(Gpa(GIB + 0x5000), Access::Read).unwrap();
        assert_eq!(m.stats().pages_2m, 1);
        assert!(frames.live_frames() > m.stats().table_pages as usize, "a table is parked");
    }
    assert_eq!(frames.live_frames(), 0, "teardown leaked page-table frames");
}

// ---- 10-12. clear_dirty_log ----------------------------------------------------------------------

/// A frame allocator that refuses every allocation while `fail` is set.
struct FailingFrames {
    inner: SimFrameAllocator,
    fail: AtomicBool,
    refused: AtomicU64,
}

impl FrameAllocator for FailingFrames {
    fn alloc_zeroed(&self, count: usize) -> Option<Frame> {
        if self.fail.load(Ordering::Relaxed) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.inner.alloc_zeroed(count)
    }
    unsafe fn free(&self, pa: u64, count: usize) {
        // SAFETY: forwarded contract.
        unsafe { self.inner.free(pa, count) }
    }
    fn frame_ptr(&self, pa: u64) -> NonNull<AtomicU64> {
        self.inner.frame_ptr(pa)
    }
    fn live_frames(&self) -> usize {
        self.inner.live_frames()
    }
}

fn initially_set() -> MmuConfig {
    MmuConfig::default()
        .with_dirty_log(DirtyLogMode::EagerSplit { chunk_tables: 64 })
        .with_harvest(HarvestMode::ManualClear { initially_set: true })
}

#[test]
fn out_of_frames_during_clear_still_reprotects() {
    let frames = FailingFrames {
        inner: SimFrameAllocator::new(0x100_0000_0000, GIB),
        fail: AtomicBool::new(false),
        refused: AtomicU64::new(0),
    };
    let m: Mmu<Ept4, Parts<&FailingFrames, FakeHost, RecordingTlb>> =
        Mmu::new(initially_set(), &frames, FakeHost::new(), RecordingTlb::default()).unwrap();
    m.host().map_range(HVA, 4 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(slot(0, GIB, 4 * MIB, HVA)).unwrap();
    m.handle_fault(Gpa(GIB), Access::Write).unwrap();
    m.set_dirty_logging(0, true).unwrap();
    frames.fail.store(true, Ordering::Relaxed);
    let cleared = m.clear_dirty_log(0, 0, &[u64::MAX]).unwrap();
    assert_eq!(cleared, 64);
    assert!(frames.refused.load(Ordering::Relaxed) > 0, "the eager split did run out of frames");
    let t = m.with_tables(|pt| pt.translate(Gpa(GIB))).unwrap();
    assert!(!t.attrs.perms.contains(Perms::WRITE), "a cleared page must not stay writable: writes would be lost");
    m.audit().unwrap();
}

#[test]
fn audit_accepts_writable_huge_leaves_before_the_first_clear() {
    let m = mmu(initially_set());
    m.host().map_range(HVA, 4 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(slot(0, GIB, 4 * MIB, HVA)).unwrap();
    touch(&m, GIB, Access::Write);
    m.set_dirty_logging(0, true).unwrap();
    audit(&m);
    // After a clear, the cleared pages are protected and the audit still holds.
    m.clear_dirty_log(0, 0, &[u64::MAX]).unwrap();
    audit(&m);
}

#[test]
fn clear_of_a_word_straddling_two_blocks_splits_both() {
    let m = mmu(initially_set());
    // Slot base 32 pages past a 2M boundary, hva congruent: a 64-page word can cross a block edge.
    let (gpa, hva) = (GIB + 32 * 4096, HVA + 32 * 4096);
    m.host().map_range(HVA, 8 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(slot(0, gpa, 6 * MIB, hva)).unwrap();
    assert_eq!(touch(&m, GIB + 2 * MIB, Access::Write), PageSize::Size2M);
    m.set_dirty_logging(0, true).unwrap();
    // Word 7 holds slot pages 448..511 = gfns 480..543 from 1 GiB: both sides of GIB + 2M.
    m.clear_dirty_log(0, 448, &[u64::MAX]).unwrap();
    assert_eq!(pa_of(&m, GIB + 2 * MIB).map(|p| p.1), Some(PageSize::Size4K), "the second block was not split");
    audit(&m);
}

// ---- 13. range checks ------------------------------------------------------------------------------

#[test]
fn clear_past_the_slot_end_is_an_error() {
    let m = mmu(MmuConfig::default().with_harvest(HarvestMode::ManualClear { initially_set: false }));
    m.host().map_range(HVA, 4 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(MemslotSpec { log_dirty: true, ..slot(0, GIB, 4 * MIB, HVA) }).unwrap();
    // 1024 pages: 8 words from page 960 reach 512 pages past the end.
    let err = m.clear_dirty_log(0, 960, &[u64::MAX; 8]).unwrap_err();
    assert!(matches!(err, MmuError::Memslot(MemslotError::ClearPastEnd { .. })), "{err}");
    // The last word exactly: fine.
    assert_eq!(m.clear_dirty_log(0, 960, &[u64::MAX]).unwrap(), 0);
}

#[test]
fn clear_past_the_end_of_an_odd_sized_slot() {
    let m = mmu(MmuConfig::default().with_harvest(HarvestMode::ManualClear { initially_set: true }));
    m.host().map_range(HVA, 4 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(MemslotSpec { log_dirty: true, npages: 100, ..slot(0, GIB, 4 * MIB, HVA) }).unwrap();
    // 100 pages: word 1 holds pages 64..99; bits for 100..127 are past the end.
    assert!(m.clear_dirty_log(0, 64, &[u64::MAX]).is_err());
    assert_eq!(m.clear_dirty_log(0, 64, &[(1 << 36) - 1]).unwrap(), 36);
}

#[test]
fn memory_type_range_that_overflows_is_an_error() {
    let m = mmu(MmuConfig::default());
    m.host().map_range(HVA, 4 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(slot(0, GIB, 4 * MIB, HVA)).unwrap();
    let err = m.set_memory_type(Gfn(GIB >> 12), u64::MAX, MemType::Uncached).unwrap_err();
    assert!(matches!(err, MmuError::Memslot(MemslotError::OutOfSlot { .. })), "{err}");
}

// ---- hardware poison (KVM: FOLL_HWPOISON -> kvm_send_hwpoison_signal) -----------------------------

#[test]
fn poisoned_host_page_is_reported_and_nothing_is_mapped() {
    let m = mmu(MmuConfig::default());
    m.host().map_range(HVA, 4 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(slot(0, GIB, 4 * MIB, HVA)).unwrap();
    m.host().poison(HVA + 0x7000);
    let err = m.handle_fault(Gpa(GIB + 0x7000), Access::Read).unwrap_err();
    assert!(
        matches!(err, slat_mmu::FaultError::Host(slat_mmu::HostError::HwPoison { size: PageSize::Size2M, .. })),
        "{err}"
    );
    assert_eq!(leaves(&m), [0, 0, 0], "nothing may be installed over a poisoned page");
    audit(&m);
}

// ---- 14. a hardware log (PML): harvests follow the dirty set ----------------------------------------

#[test]
fn pml_harvest_reports_the_logged_pages_without_scanning_the_slot() {
    let pml = MmuConfig::default().with_dirty_log(DirtyLogMode::HardwareDirty).with_hardware_log(true);
    let m = mmu(pml);
    m.host().map_range(HVA, 4 * MIB, HPA, PageSize::Size4K, true);
    m.add_memslot(MemslotSpec { log_dirty: true, ..slot(0, GIB, 4 * MIB, HVA) }).unwrap();
    for p in 0..16 {
        touch(&m, GIB + p * 4096, Access::Read);
    }
    // The CPU writes pages 3 and 9 (setting D in slat's leaves) and logs only page 3 so far.
    for p in [3u64, 9] {
        let w = m.with_tables(|pt| pt.hw_walk(Gpa(GIB + p * 4096), Access::Write).result);
        assert!(w.is_ok(), "hardware-dirty leaves are writable: {w:?}");
    }
    assert_eq!(m.record_hardware_dirty([Gpa(GIB + 3 * 4096), Gpa(5 * GIB)]), 1);
    assert_eq!(m.get_dirty_log(0).unwrap()[0], 1 << 3, "only logged pages: the slot is not scanned");
    // Page 3 was re-armed (D clear), so its next write is logged again; page 9 arrives late.
    assert!(!m.with_tables(|pt| pt.translate(Gpa(GIB + 3 * 4096))).unwrap().attrs.dirty);
    m.record_hardware_dirty([Gpa(GIB + 9 * 4096)]);
    assert_eq!(m.get_dirty_log(0).unwrap()[0], 1 << 9);
    audit(&m);
}

#[test]
fn pml_needs_the_hardware_dirty_mode() {
    let bad = MmuConfig::default().with_hardware_log(true);
    let r = Mmu::<Ept4, Parts<_, _, _>>::new(
        bad,
        SimFrameAllocator::new(0x100_0000_0000, GIB),
        FakeHost::new(),
        RecordingTlb::default(),
    );
    assert!(matches!(r, Err(MmuError::Config { .. })));
}

#[test]
fn decide_with_a_given_host_mapping() {
    let m = mmu(MmuConfig::default());
    m.add_memslot(slot(0, GIB, 8 * MIB, HVA)).unwrap();
    let huge = slat_mmu::HostPage::new(Pfn(HPA >> 12), PageSize::Size2M, true, BackingKind::Anonymous);
    let d = m.decide_with(Gfn((GIB >> 12) + 1), Some(&huge)).unwrap();
    assert_eq!(d.size, PageSize::Size2M);
    let d = m.decide_with(Gfn(GIB >> 12), None).unwrap();
    assert_eq!(d.size, PageSize::Size4K);
    assert!(m.decide_with(Gfn(0), None).is_none(), "no memslot");
}
