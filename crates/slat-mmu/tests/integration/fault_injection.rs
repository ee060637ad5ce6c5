//! Fault injection: the page-table frame allocator fails at the Nth allocation, for every N
//! inside each operation that allocates (a fault building tables, a split on a write fault,
//! eager split when logging starts, in-place recovery, a clear with eager split in the
//! initially-set mode); and the host fails a translation (vanished page, out of memory, busy).
//!
//! After every injected failure: the operation failed cleanly or succeeded (eager split is best
//! effort and may succeed with fewer splits), `audit()` passes (I1, I2, I6: allocator frames ==
//! table pages + parked pages), an exclusive section leaves no parked page behind, no dirty page
//! is lost (a write, then a harvest still reports it, and pages written before still are), a
//! retry with the allocator healthy succeeds, and after the MMU drops every frame is back.

use slat_mmu::{
    DirtyLogMode, FaultError, FaultOutcome, Gfn, Gpa, HarvestMode, HostError, HostMemory, HostPage, Hva, MemslotSpec,
    Mmu, MmuConfig, MmuNotifier, Parts, Pfn, RecoveryPolicy,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use slat_mmu::testing::{FakeHost, RecordingTlb};
use slat_pt::format::Ept4;
use slat_pt::{Access, Frame, FrameAllocator, PageSize, PtError, SimFrameAllocator};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const HVA: u64 = 0x7f00_0000_0000;
const HPA: u64 = 0x20_0000_0000;
/// A small slot nobody faults on: invalidating its host range runs an exclusive section that
/// frees what faults parked, so the allocator must then hold exactly the table pages.
const PROBE_HVA: u64 = 0x7e00_0000_0000;
const PROBE_GPA: u64 = 0x100 * GIB;

/// A frame allocator that fails every allocation from the `fail_at`-th (0-based) on while armed
/// (`one_shot`: only that one).
struct FailingAlloc {
    inner: SimFrameAllocator,
    count: AtomicUsize,
    fail_at: AtomicUsize,
    one_shot: bool,
    injected: AtomicUsize,
}

impl FailingAlloc {
    fn new(one_shot: bool) -> Arc<Self> {
        Arc::new(FailingAlloc {
            inner: SimFrameAllocator::new(0x100_0000_0000, 8 * GIB),
            count: AtomicUsize::new(0),
            fail_at: AtomicUsize::new(usize::MAX),
            one_shot,
            injected: AtomicUsize::new(0),
        })
    }
    /// Fail the `n`-th allocation from now on (0 = the next one).
    fn arm(&self, n: usize) {
        self.count.store(0, Ordering::SeqCst);
        self.fail_at.store(n, Ordering::SeqCst);
    }
    /// Stop failing; returns how many allocations were attempted while armed.
    fn disarm(&self) -> usize {
        self.fail_at.store(usize::MAX, Ordering::SeqCst);
        self.count.load(Ordering::SeqCst)
    }
}

impl FrameAllocator for FailingAlloc {
    fn alloc_zeroed(&self, count: usize) -> Option<Frame> {
        let n = self.count.fetch_add(1, Ordering::SeqCst);
        let at = self.fail_at.load(Ordering::SeqCst);
        if n == at || (!self.one_shot && n > at) {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return None;
        }
        self.inner.alloc_zeroed(count)
    }
    unsafe fn free(&self, pa: u64, count: usize) {
        // SAFETY: forwarded contract: the MMU frees only what it allocated here.
        unsafe { self.inner.free(pa, count) }
    }
    fn frame_ptr(&self, pa: u64) -> std::ptr::NonNull<std::sync::atomic::AtomicU64> {
        self.inner.frame_ptr(pa)
    }
    fn live_frames(&self) -> usize {
        self.inner.live_frames()
    }
}

type FiMmu = Mmu<Ept4, Parts<Arc<FailingAlloc>, FakeHost, RecordingTlb>>;

fn spec(id: u32, gpa: u64, len: u64, hva: u64) -> MemslotSpec {
    MemslotSpec { id, base_gfn: Gfn(gpa >> 12), npages: len >> 12, hva: Hva(hva), readonly: false, log_dirty: false }
}

fn new_mmu(config: MmuConfig, alloc: &Arc<FailingAlloc>) -> FiMmu {
    let m = FiMmu::new(config, alloc.clone(), FakeHost::new(), RecordingTlb::default()).unwrap();
    m.host().map_range(PROBE_HVA, 4 * 4096, HPA + 64 * GIB, PageSize::Size4K, true);
    m.add_memslot(spec(99, PROBE_GPA, 4 * 4096, PROBE_HVA)).unwrap();
    m
}

#[track_caller]
fn check_consistent(m: &FiMmu, alloc: &FailingAlloc, what: &str) {
    if let Err(e) = m.audit() {
        panic!("{what}: audit failed: {:#?}", e.violations);
    }
    // An exclusive section (an invalidation of the probe slot) frees every parked page: then the
    // allocator holds exactly the table pages.
    m.invalidate_range_start(Hva(PROBE_HVA), Hva(PROBE_HVA + 4096));
    m.invalidate_range_end(Hva(PROBE_HVA), Hva(PROBE_HVA + 4096));
    assert_eq!(alloc.live_frames() as u64, m.stats().table_pages, "{what}: frames leaked");
}

/// Fault until mapped; panics on anything else.
#[track_caller]
fn fault_ok(m: &FiMmu, gpa: u64, access: Access) -> PageSize {
    for _ in 0..8 {
        match m.handle_fault(Gpa(gpa), access) {
            Ok(FaultOutcome::Mapped { size, .. }) => return size,
            Ok(FaultOutcome::Retry) => continue,
            other => panic!("fault at {gpa:#x}: {other:?}"),
        }
    }
    panic!("fault at {gpa:#x} kept retrying")
}

/// A fault that may fail only with the table out of frames; returns whether it mapped.
#[track_caller]
fn fault_or_oom(m: &FiMmu, gpa: u64, access: Access, what: &str) -> bool {
    match m.handle_fault(Gpa(gpa), access) {
        Ok(FaultOutcome::Mapped { .. }) => true,
        Ok(FaultOutcome::Retry) => false,
        Err(FaultError::Table(PtError::OutOfFrames)) => false,
        other => panic!("{what}: fault at {gpa:#x}: unexpected {other:?}"),
    }
}

fn bit(log: &[u64], page: u64) -> bool {
    log[(page / 64) as usize] & (1 << (page % 64)) != 0
}

/// Figures for the report.
#[derive(Default, Debug)]
struct Tally {
    runs: usize,
    injected: usize,
}

/// Run `scenario(n)` for n = 0, 1, ... until an armed run attempts fewer than n + 1 allocations
/// (the operation completed without reaching the failure), both persistent and one-shot.
fn for_every_n(name: &str, mut scenario: impl FnMut(&Arc<FailingAlloc>, usize) -> usize) -> Tally {
    let mut t = Tally::default();
    for one_shot in [false, true] {
        let mut n = 0;
        loop {
            let alloc = FailingAlloc::new(one_shot);
            let attempted = scenario(&alloc, n);
            t.runs += 1;
            t.injected += alloc.injected.load(Ordering::SeqCst);
            assert_eq!(alloc.live_frames(), 0, "{name} (n={n}, one_shot={one_shot}): frames leaked after drop");
            if attempted <= n {
                break;
            }
            n += 1;
            assert!(n < 10_000, "{name}: runaway");
        }
    }
    eprintln!("fault injection {name}: {} runs, {} allocation failures injected", t.runs, t.injected);
    t
}

#[test]
fn fault_building_tables() {
    let t = for_every_n("fault", |alloc, n| {
        let m = new_mmu(MmuConfig::default(), alloc);
        m.host().map_range(HVA, 4 * MIB, HPA, PageSize::Size4K, true);
        m.add_memslot(spec(0, 3 * GIB, 4 * MIB, HVA)).unwrap();
        let gpa = 3 * GIB + 0x5000;
        alloc.arm(n);
        let mapped = fault_or_oom(&m, gpa, Access::Write, "fault");
        let attempted = alloc.disarm();
        check_consistent(&m, alloc, "fault");
        assert_eq!(mapped, m.with_tables(|pt| pt.translate_pa(Gpa(gpa))).is_some(), "a failed fault installed nothing");
        assert_eq!(fault_ok(&m, gpa, Access::Write), PageSize::Size4K);
        assert_eq!(m.with_tables(|pt| pt.translate_pa(Gpa(gpa))).unwrap().0, HPA + 0x5000);
        check_consistent(&m, alloc, "fault retry");
        attempted
    });
    assert!(t.injected > 0);
}

#[test]
fn split_on_write_fault_while_logging() {
    let t = for_every_n("split-on-fault", |alloc, n| {
        let m = new_mmu(MmuConfig::default().with_dirty_log(DirtyLogMode::SplitOnFault), alloc);
        m.host().map_range(HVA, 4 * MIB, HPA, PageSize::Size2M, true);
        m.add_memslot(spec(0, GIB, 4 * MIB, HVA)).unwrap();
        assert_eq!(fault_ok(&m, GIB, Access::Read), PageSize::Size2M);
        m.set_dirty_logging(0, true).unwrap();
        // Page 3 is written (and logged) before the failing operation.
        alloc.arm(usize::MAX);
        fault_ok(&m, GIB + 2 * MIB + 3 * 4096, Access::Write);
        alloc.arm(n);
        let gpa = GIB + 7 * 4096;
        let mapped = fault_or_oom(&m, gpa, Access::Write, "split-on-fault");
        let attempted = alloc.disarm();
        check_consistent(&m, alloc, "split-on-fault");
        if !mapped {
            // The 2M leaf is still there, read-only: the write faults again and splits now.
            assert_eq!(fault_ok(&m, gpa, Access::Write), PageSize::Size4K);
        }
        check_consistent(&m, alloc, "split-on-fault retry");
        let log = m.get_dirty_log(0).unwrap();
        assert!(bit(&log, 7), "the write is logged");
        assert!(bit(&log, 512 + 3), "a page written before the failure is still logged");
        attempted
    });
    assert!(t.injected > 0);
}

/// Eager split of 2M and 1G leaves when logging starts (best effort): whatever stays huge is
/// write-protected, every later write is logged.
#[test]
fn eager_split_on_logging_start() {
    let t = for_every_n("eager-split", |alloc, n| {
        let cfg = MmuConfig::default().with_dirty_log(DirtyLogMode::EagerSplit { chunk_tables: 2 });
        let m = new_mmu(cfg, alloc);
        m.host().map_range(HVA, 6 * MIB, HPA, PageSize::Size2M, true);
        m.add_memslot(spec(0, GIB, 6 * MIB, HVA)).unwrap();
        for b in 0..3 {
            assert_eq!(fault_ok(&m, GIB + b * 2 * MIB, Access::Write), PageSize::Size2M);
        }
        alloc.arm(n);
        m.set_dirty_logging(0, true).expect("eager split is best effort: logging starts anyway");
        let attempted = alloc.disarm();
        check_consistent(&m, alloc, "eager-split");
        let pages = [0u64, 511, 512, 1000, 1535];
        for p in pages {
            fault_ok(&m, GIB + p * 4096, Access::Write);
        }
        check_consistent(&m, alloc, "eager-split writes");
        let log = m.get_dirty_log(0).unwrap();
        for p in pages {
            assert!(bit(&log, p), "page {p} written after logging started is logged");
        }
        attempted
    });
    assert!(t.injected > 0);
}

/// In-place recovery after logging (both policies): it rebuilds huge leaves from small ones and
/// should need no new frames; every allocation it makes is still failed, one at a time.
#[test]
fn recovery_both_policies() {
    for policy in [RecoveryPolicy::InPlace, RecoveryPolicy::Zap] {
        for_every_n(&format!("recovery-{policy:?}"), |alloc, n| {
            let cfg = MmuConfig::default().with_recovery(policy);
            let m = new_mmu(cfg, alloc);
            m.host().map_range(HVA, 4 * MIB, HPA, PageSize::Size2M, true);
            m.add_memslot(spec(0, GIB, 4 * MIB, HVA)).unwrap();
            m.set_dirty_logging(0, true).unwrap();
            for p in (0..1024).step_by(5) {
                fault_ok(&m, GIB + p * 4096, Access::Write);
            }
            alloc.arm(n);
            let r = m.set_dirty_logging(0, false);
            let attempted = alloc.disarm();
            assert!(r.is_ok() || r == Err(slat_mmu::MmuError::Table(PtError::OutOfFrames)), "{r:?}");
            check_consistent(&m, alloc, "recovery");
            m.recover_huge_pages(0).unwrap();
            assert_eq!(fault_ok(&m, GIB + 4096, Access::Read), PageSize::Size2M);
            check_consistent(&m, alloc, "recovery retry");
            attempted
        });
    }
}

/// `clear_dirty_log` in the initially-set mode with eager split: the clear splits the 2M blocks
/// holding cleared pages (best effort) and always re-protects them.
#[test]
fn clear_with_initially_set_and_eager_split() {
    let t = for_every_n("clear-initially-set", |alloc, n| {
        let cfg = MmuConfig::default()
            .with_dirty_log(DirtyLogMode::EagerSplit { chunk_tables: 1 })
            .with_harvest(HarvestMode::ManualClear { initially_set: true });
        let m = new_mmu(cfg, alloc);
        m.host().map_range(HVA, 4 * MIB, HPA, PageSize::Size2M, true);
        m.add_memslot(spec(0, GIB, 4 * MIB, HVA)).unwrap();
        for b in 0..2 {
            assert_eq!(fault_ok(&m, GIB + b * 2 * MIB, Access::Write), PageSize::Size2M);
        }
        m.set_dirty_logging(0, true).unwrap();
        let log = m.get_dirty_log(0).unwrap();
        assert!(log.iter().all(|&w| w == u64::MAX), "initially set");
        // Clear pages 0..64 and 512..576 (one word in each block); keep the rest.
        let mut mask = vec![0u64; log.len()];
        mask[0] = u64::MAX;
        mask[8] = u64::MAX;
        alloc.arm(n);
        let cleared = m.clear_dirty_log(0, 0, &mask);
        let attempted = alloc.disarm();
        assert_eq!(cleared, Ok(128), "the clear itself never fails for lack of frames");
        check_consistent(&m, alloc, "clear");
        // Writes to cleared pages fault (split if the block is still huge) and are logged.
        for p in [5u64, 520] {
            fault_ok(&m, GIB + p * 4096, Access::Write);
        }
        check_consistent(&m, alloc, "clear writes");
        let log = m.get_dirty_log(0).unwrap();
        for p in [5u64, 520, 100, 600, 1023] {
            assert!(bit(&log, p), "page {p} is in the log");
        }
        assert!(!bit(&log, 6) && !bit(&log, 513), "cleared, unwritten pages are not");
        attempted
    });
    assert!(t.injected > 0);
}

/// Faults across a 1G slot while the allocator runs dry at every point: a vCPU's view stays
/// consistent and a retry maps everything.
#[test]
fn many_faults_with_dry_allocator() {
    for_every_n("fault-series", |alloc, n| {
        let m = new_mmu(MmuConfig::default(), alloc);
        m.host().map_range(HVA, 8 * MIB, HPA, PageSize::Size4K, true);
        m.add_memslot(spec(0, 5 * GIB, 8 * MIB, HVA)).unwrap();
        let gpas: Vec<u64> = (0..6).map(|i| 5 * GIB + i * 1536 * 1024 + 0x3000).collect();
        alloc.arm(n);
        for &g in &gpas {
            fault_or_oom(&m, g, Access::Read, "fault-series");
        }
        let attempted = alloc.disarm();
        check_consistent(&m, alloc, "fault-series");
        for &g in &gpas {
            fault_ok(&m, g, Access::Read);
            assert_eq!(m.with_tables(|pt| pt.translate_pa(Gpa(g))).unwrap().0, HPA + (g - 5 * GIB));
        }
        check_consistent(&m, alloc, "fault-series retry");
        attempted
    });
}

// ---- host failures ------------------------------------------------------------------------

/// A host whose `fault_in` fails with a chosen error.
struct FailingHost {
    inner: FakeHost,
    fail: spin::Mutex<Option<HostError>>,
}

impl HostMemory for FailingHost {
    fn fault_in(&self, hva: Hva, write: bool) -> Result<HostPage, HostError> {
        let hva = hva.0;
        if let Some(e) = *self.fail.lock() {
            return Err(e);
        }
        self.inner.fault_in(Hva(hva), write)
    }
    fn lookup(&self, hva: Hva) -> Option<HostPage> {
        let hva = hva.0;
        self.inner.lookup(Hva(hva))
    }
    fn mark_dirty(&self, pfn: Pfn, pages: u64) {
        let pfn = pfn.0;
        self.inner.mark_dirty(Pfn(pfn), pages)
    }
    fn mark_accessed(&self, pfn: Pfn, pages: u64) {
        let pfn = pfn.0;
        self.inner.mark_accessed(Pfn(pfn), pages)
    }
}

/// The host cannot provide the page: the fault reports it (or asks for a retry), nothing is
/// installed, the audit passes, and once the host recovers the fault maps.
#[test]
fn host_failures_install_nothing() {
    let errors = [
        HostError::NotMapped { hva: Hva(HVA) },
        HostError::OutOfMemory { hva: Hva(HVA), kind: slat_mmu::BackingKind::Hugetlbfs },
        HostError::Again { hva: Hva(HVA) },
        HostError::HwPoison { hva: Hva(HVA), size: PageSize::Size2M },
    ];
    for e in errors {
        for access in [Access::Read, Access::Write, Access::Exec] {
            let host = FailingHost { inner: FakeHost::new(), fail: spin::Mutex::new(None) };
            host.inner.map_range(HVA, 4 * MIB, HPA, PageSize::Size2M, true);
            let m = Mmu::<Ept4, Parts<_, _, _>>::new(
                MmuConfig::default(),
                SimFrameAllocator::new(0x100_0000_0000, GIB),
                host,
                RecordingTlb::default(),
            )
            .unwrap();
            m.add_memslot(spec(0, GIB, 4 * MIB, HVA)).unwrap();
            m.set_dirty_logging(0, true).unwrap();
            *m.host().fail.lock() = Some(e);
            let r = m.handle_fault(Gpa(GIB + 0x1000), access);
            match e {
                HostError::Again { .. } => assert_eq!(r, Ok(FaultOutcome::Retry)),
                _ => assert_eq!(r, Err(FaultError::Host(e))),
            }
            assert_eq!(m.with_tables(|pt| pt.translate_pa(Gpa(GIB + 0x1000))), None);
            let s = m.stats();
            assert_eq!([s.pages_4k, s.pages_2m, s.pages_1g], [0, 0, 0], "{e:?}: nothing installed");
            m.audit().unwrap();
            let log = m.get_dirty_log(0).unwrap();
            // A write the host refused never reached memory; reporting it would be harmless,
            // but nothing else may be reported.
            assert!(log.iter().enumerate().all(|(i, &w)| w == 0 || (i == 0 && w == 2)), "{e:?}: {log:?}");
            *m.host().fail.lock() = None;
            m.handle_fault(Gpa(GIB + 0x1000), access).unwrap();
            m.audit().unwrap();
        }
    }
}

/// A page the host unmapped for real (a vanished page): the fault reports NotMapped and
/// nothing is installed, even next to mapped huge pages in the same block.
#[test]
fn vanished_page_next_to_mapped_ones() {
    let m = Mmu::<Ept4, Parts<_, _, _>>::new(
        MmuConfig::default(),
        SimFrameAllocator::new(0x100_0000_0000, GIB),
        FakeHost::new(),
        RecordingTlb::default(),
    )
    .unwrap();
    m.host().map_range(HVA, 2 * MIB, HPA, PageSize::Size4K, true);
    m.add_memslot(spec(0, GIB, 2 * MIB, HVA)).unwrap();
    fault_ok_any(&m, GIB);
    m.invalidate_range_start(Hva(HVA + 0x5000), Hva(HVA + 0x6000));
    m.host().unmap_range(HVA + 0x5000, 0x1000);
    m.invalidate_range_end(Hva(HVA + 0x5000), Hva(HVA + 0x6000));
    assert_eq!(
        m.handle_fault(Gpa(GIB + 0x5000), Access::Read),
        Err(FaultError::Host(HostError::NotMapped { hva: Hva(HVA + 0x5000) }))
    );
    assert_eq!(m.with_tables(|pt| pt.translate_pa(Gpa(GIB + 0x5000))), None);
    m.audit().unwrap();
}

fn fault_ok_any<H: HostMemory>(m: &Mmu<Ept4, Parts<SimFrameAllocator, H, RecordingTlb>>, gpa: u64) {
    assert!(matches!(m.handle_fault(Gpa(gpa), Access::Read), Ok(FaultOutcome::Mapped { .. })));
}
