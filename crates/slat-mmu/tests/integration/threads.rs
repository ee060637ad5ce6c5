//! Real threads: vCPU threads fault and write through the hardware walk while a host thread
//! remaps and splits host memory through the notifier and a VMM thread harvests the dirty log,
//! changes a memslot (add / move / delete) and toggles logging (eager split, recovery) on
//! another. `slat_mmu::StdMmu` (parking_lot lock). Bounded and seeded: `SLAT_THREADS_RUNS`
//! (default 6) runs of `SLAT_THREADS_ITERS` (default 4000) accesses per vCPU; seeds from
//! `SLAT_THREADS_SEED`.
//!
//! Checked while running: after each host invalidation ends, no leaf translates into the host
//! pages it replaced (I3). At the end: `audit()` (I1, I2, I6), and I5: every write that
//! completed on a vCPU appears in a harvest that ran after the write's vCPU last saw the harvest
//! count (the harvest running at that moment, or a later one, including a final one).

use slat_mmu::{
    DirtyLogMode, FaultOutcome, Gfn, Gpa, HostMemory, Hva, MemslotSpec, MmuConfig, MmuNotifier, RecoveryPolicy, StdMmu,
};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Mutex;

use slat_mmu::testing::{FakeHost, RecordingTlb};
use slat_pt::format::Ept4;
use slat_pt::{Access, PageSize, SimFrameAllocator, PAGE_SIZE};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const HVA: u64 = 0x7f00_0000_0000;
const CHUNKS: u64 = 8;
/// Slot 0 (logged, checked for I5): gpa 1 GiB, 16 MiB over host chunks 0..8.
const G0: u64 = GIB >> 12;
/// Slot 1 (added, moved, deleted by the VMM): 4 MiB over host chunks 8..10.
const HVA1: u64 = HVA + 16 * MIB;
/// Slot 2 (logging toggled: eager split and recovery under faults): 4 MiB over chunks 10..12.
const HVA2: u64 = HVA + 20 * MIB;
const G2: u64 = (3 * GIB) >> 12;

type TMmu = StdMmu<Ept4, SimFrameAllocator, FakeHost, RecordingTlb>;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Default)]
struct Figures {
    accesses: AtomicU64,
    faults: AtomicU64,
    retries: AtomicU64,
    writes: AtomicU64,
    host_events: AtomicU64,
    harvests: AtomicU64,
    slot_changes: AtomicU64,
    log_toggles: AtomicU64,
}

fn run(seed: u64, cfg: MmuConfig, vcpus: u32, iters: u64, fig: &Figures) {
    let m: TMmu =
        StdMmu::new(cfg, SimFrameAllocator::new(0x100_0000_0000, 8 * GIB), FakeHost::new(), RecordingTlb::default())
            .unwrap();
    let next_pa = AtomicU64::new(0x20_0000_0000);
    let fresh = || next_pa.fetch_add(2 * MIB, SeqCst);
    for c in 0..12 {
        m.host().map_range(HVA + c * 2 * MIB, 2 * MIB, fresh(), PageSize::Size2M, true);
    }
    let spec = |id, base_gfn, npages, hva| MemslotSpec { id, base_gfn, npages, hva, readonly: false, log_dirty: false };
    m.add_memslot(spec(0, Gfn(G0), (16 * MIB) >> 12, Hva(HVA))).unwrap();
    m.add_memslot(spec(2, Gfn(G2), (4 * MIB) >> 12, Hva(HVA2))).unwrap();
    // Some huge leaves before logging starts, so enabling it protects or splits them.
    for c in 0..CHUNKS {
        let _ = m.handle_fault(Gpa(GIB + c * 2 * MIB), Access::Read);
    }
    m.set_dirty_logging(0, true).unwrap();

    let harvests_started = AtomicU64::new(0);
    let reports: Mutex<Vec<BTreeSet<u64>>> = Mutex::new(Vec::new());
    let writes: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());
    let done = AtomicBool::new(false);
    let stale: Mutex<Vec<String>> = Mutex::new(Vec::new());

    std::thread::scope(|s| {
        let mut vcpu_handles = Vec::new();
        for v in 0..vcpus {
            let (m, harvests_started, writes, fig) = (&m, &harvests_started, &writes, fig);
            vcpu_handles.push(s.spawn(move || {
                let mut rng = Rng(seed ^ 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(v as u64 + 1));
                let mut mine = Vec::new();
                for _ in 0..iters {
                    let (gpa, in_slot0) = match rng.below(8) {
                        0 => ((G2 << 12) + rng.below(4 * MIB), false),
                        1 => (2 * GIB + rng.below(8 * MIB), false),
                        // Hot pages of slot 0, so writes meet harvests.
                        2..=4 => (GIB + rng.below(64) * PAGE_SIZE, true),
                        _ => (GIB + rng.below(16 * MIB), true),
                    };
                    let access = [Access::Read, Access::Write, Access::Write, Access::Exec][rng.below(4) as usize];
                    fig.accesses.fetch_add(1, SeqCst);
                    for _ in 0..64 {
                        let epoch = harvests_started.load(SeqCst);
                        if m.with_tables(|pt| pt.hw_walk(Gpa(gpa), access).result.is_ok()) {
                            if access == Access::Write && in_slot0 {
                                mine.push(((gpa >> 12) - G0, epoch));
                                fig.writes.fetch_add(1, SeqCst);
                            }
                            break;
                        }
                        fig.faults.fetch_add(1, SeqCst);
                        match m.handle_fault_on(v, Gpa(gpa), access) {
                            Ok(FaultOutcome::Mapped { .. }) => {}
                            Ok(FaultOutcome::Retry) => {
                                fig.retries.fetch_add(1, SeqCst);
                                std::thread::yield_now();
                            }
                            // Unmapped for a moment by the host, or slot 1 is elsewhere now.
                            Ok(FaultOutcome::WriteTracked) | Err(_) => break,
                        }
                    }
                }
                writes.lock().unwrap().extend(mine);
            }));
        }
        // Host: remap (migrate / collapse) and split chunks of every slot's memory.
        {
            let (m, done, stale, fig, fresh) = (&m, &done, &stale, fig, &fresh);
            s.spawn(move || {
                let mut rng = Rng(seed.rotate_left(17) | 1);
                while !done.load(SeqCst) {
                    let c = rng.below(12);
                    let hva = HVA + c * 2 * MIB;
                    let old = m.host().lookup(Hva(hva)).map(|p| p.pfn.hpa());
                    m.invalidate_range_start(Hva(hva), Hva(hva + 2 * MIB));
                    if rng.below(3) == 0 {
                        m.host().split(hva);
                        m.invalidate_range_end(Hva(hva), Hva(hva + 2 * MIB));
                    } else {
                        m.host().unmap_range(hva, 2 * MIB);
                        let size = if rng.below(2) == 0 { PageSize::Size4K } else { PageSize::Size2M };
                        m.host().map_range(hva, 2 * MIB, fresh(), size, true);
                        m.invalidate_range_end(Hva(hva), Hva(hva + 2 * MIB));
                        // I3: nothing translates into the replaced pages any more.
                        if let Some(old) = old {
                            let bad = m.with_tables(|pt| {
                                [(GIB, 16 * MIB), (2 * GIB, 16 * MIB), (3 * GIB, 4 * MIB)]
                                    .into_iter()
                                    .flat_map(|(gpa, len)| pt.leaves(Gpa(gpa), len))
                                    .filter(|l| l.pa < old + 2 * MIB && old < l.pa + l.size.bytes())
                                    .map(|l| format!("leaf {:#x} {:?} -> {:#x}", l.gpa, l.size, l.pa))
                                    .collect::<Vec<_>>()
                            });
                            stale.lock().unwrap().extend(bad);
                        }
                    }
                    fig.host_events.fetch_add(1, SeqCst);
                    std::thread::yield_now();
                }
            });
        }
        // VMM: harvest slot 0; add / move / delete slot 1; toggle logging on slot 2.
        {
            let (m, done, harvests_started, reports, fig) = (&m, &done, &harvests_started, &reports, fig);
            s.spawn(move || {
                let mut rng = Rng(seed.rotate_left(33) | 1);
                let mut slot1: Option<u64> = None;
                while !done.load(SeqCst) {
                    match rng.below(4) {
                        0 | 1 => {
                            harvests_started.fetch_add(1, SeqCst);
                            let log = m.get_dirty_log(0).unwrap();
                            reports.lock().unwrap().push(bits(&log));
                            fig.harvests.fetch_add(1, SeqCst);
                        }
                        2 => {
                            let base = ((2 * GIB) >> 12) + rng.below(4) * 512 + rng.below(2) * 7;
                            let r = match slot1 {
                                None => m.add_memslot(spec(1, Gfn(base), (4 * MIB) >> 12, Hva(HVA1))),
                                Some(_) if rng.below(3) == 0 => m.delete_memslot(1),
                                Some(_) => m.move_memslot(1, Gfn(base)),
                            };
                            r.unwrap();
                            slot1 = match slot1 {
                                None => Some(base),
                                Some(_) if m.memslots().iter().all(|s| s.id != 1) => None,
                                Some(_) => Some(base),
                            };
                            fig.slot_changes.fetch_add(1, SeqCst);
                        }
                        _ => {
                            let on = !m.memslots().iter().any(|s| s.id == 2 && s.logging);
                            m.set_dirty_logging(2, on).unwrap();
                            fig.log_toggles.fetch_add(1, SeqCst);
                        }
                    }
                    std::thread::yield_now();
                }
            });
        }
        let joined: Vec<_> = vcpu_handles.into_iter().map(|h| h.join()).collect();
        // Stop the host and VMM threads even when a vCPU panicked.
        done.store(true, SeqCst);
        for j in joined {
            j.expect("vCPU thread panicked");
        }
    });

    // Quiesced: a final harvest, then the checks.
    reports.lock().unwrap().push(bits(&m.get_dirty_log(0).unwrap()));
    if let Err(e) = m.audit() {
        panic!("seed {seed:#x} {cfg:?}: audit: {:#?}", e.violations);
    }
    let stale = stale.into_inner().unwrap();
    assert!(stale.is_empty(), "seed {seed:#x} {cfg:?}: I3: translations into replaced host pages: {stale:?}");
    let reports = reports.into_inner().unwrap();
    for (page, epoch) in writes.into_inner().unwrap() {
        let from = epoch.saturating_sub(1) as usize;
        assert!(
            reports[from..].iter().any(|r| r.contains(&page)),
            "seed {seed:#x} {cfg:?}: I5: page {page} written after {epoch} harvests started is in no later report"
        );
    }
}

fn bits(log: &[u64]) -> BTreeSet<u64> {
    let mut s = BTreeSet::new();
    for (i, &w) in log.iter().enumerate() {
        for b in 0..64 {
            if w & (1 << b) != 0 {
                s.insert(i as u64 * 64 + b);
            }
        }
    }
    s
}

#[test]
fn vcpus_host_and_vmm_threads() {
    let runs = env("SLAT_THREADS_RUNS", 6);
    let iters = env("SLAT_THREADS_ITERS", 4000);
    let seed0 = env("SLAT_THREADS_SEED", 0x5eed);
    let fig = Figures::default();
    let start = std::time::Instant::now();
    let modes = [
        DirtyLogMode::SplitOnFault,
        DirtyLogMode::EagerSplit { chunk_tables: 2 },
        DirtyLogMode::WriteProtect,
        DirtyLogMode::HardwareDirty,
    ];
    let mut threads = 0;
    for r in 0..runs {
        let cfg = MmuConfig::default()
            .with_dirty_log(modes[(r % 4) as usize])
            .with_recovery(if r % 2 == 0 { RecoveryPolicy::InPlace } else { RecoveryPolicy::Zap })
            .with_recovery_batch(2);
        let vcpus = 2 + (r % 3) as u32;
        threads += vcpus as u64 + 2;
        run(seed0.wrapping_add(r.wrapping_mul(0x1234_5678_9abc_def1)) | 1, cfg, vcpus, iters, &fig);
    }
    eprintln!(
        "threads: {runs} runs, {threads} threads, {} accesses, {} faults ({} retries), {} logged writes checked, \
         {} host invalidations, {} harvests, {} slot changes, {} logging toggles, {:.1} s",
        fig.accesses.load(SeqCst),
        fig.faults.load(SeqCst),
        fig.retries.load(SeqCst),
        fig.writes.load(SeqCst),
        fig.host_events.load(SeqCst),
        fig.harvests.load(SeqCst),
        fig.slot_changes.load(SeqCst),
        fig.log_toggles.load(SeqCst),
        start.elapsed().as_secs_f64()
    );
}
