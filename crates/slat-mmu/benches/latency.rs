//! Fault latency while long MMU operations run beside the faults (DESIGN.md performance
//! targets; issue: "bound every exclusive hold to a chunk, and let faults run during eager split
//! and in-place recovery").
//!
//! Two vCPU threads fault 4 KiB pages of their own small memslot as fast as they can, timing
//! every fault; meanwhile the main thread runs one operation over a large slot (64 GiB by
//! default, `SLAT_LATENCY_GIB` to change): write-protect for logging, eager split, a dirty-log
//! harvest, in-place recovery, a memslot delete. Prints the operation's duration and the fault
//! latency (median, p99, max) measured while it ran, and the same with nothing running beside.
//!
//! `cargo bench -p slat-mmu --bench latency`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use slat_mmu::testing::InstantHost;
use slat_mmu::{DirtyLogMode, Gfn, Gpa, Hva, MemslotSpec, MmuConfig, Pfn, StdMmu};
use slat_pt::format::Ept4;
use slat_pt::{Access, NoTlb, PageSize, SimFrameAllocator};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// Host address of the big slot (2 MiB host pages).
const BIG_HVA: u64 = 0x1000_0000_0000;
/// Host address of the vCPUs' slots (4 KiB host pages, so every fault installs a new leaf).
const VCPU_HVA: u64 = 0x2000_0000_0000;
const VCPU_SLOT: u64 = 512 * MIB;

/// A host that answers at once: 2 MiB pages for the big slot, 4 KiB for the vCPUs' slots.
const HOST: InstantHost =
    InstantHost::new(Hva(0), Pfn(0), PageSize::Size2M).with_size_from(Hva(VCPU_HVA), PageSize::Size4K);

type BenchMmu = StdMmu<Ept4, SimFrameAllocator, InstantHost, NoTlb>;

fn mmu(config: MmuConfig, big: u64) -> Arc<BenchMmu> {
    let m = StdMmu::new(config, SimFrameAllocator::new(0x100_0000_0000, 4 * GIB), HOST, NoTlb).unwrap();
    m.add_memslot(MemslotSpec {
        id: 0,
        base_gfn: Gfn((64 * GIB) >> 12),
        npages: big >> 12,
        hva: Hva(BIG_HVA),
        readonly: false,
        log_dirty: false,
    })
    .unwrap();
    for v in 0..2u64 {
        m.add_memslot(MemslotSpec {
            id: 1 + v as u32,
            base_gfn: Gfn((v * GIB) >> 12),
            npages: VCPU_SLOT >> 12,
            hva: Hva(VCPU_HVA + v * GIB),
            readonly: false,
            log_dirty: false,
        })
        .unwrap();
    }
    Arc::new(m)
}

/// Fault every page of the big slot once (`access`), from the main thread.
fn populate(m: &BenchMmu, big: u64, step: u64, access: Access) {
    let mut gpa = 64 * GIB;
    while gpa < 64 * GIB + big {
        m.handle_fault(Gpa(gpa), access).unwrap();
        gpa += step;
    }
}

#[derive(Debug)]
struct Latency {
    faults: usize,
    median: Duration,
    p99: Duration,
    max: Duration,
}

/// Run `op` on this thread while two vCPU threads fault; the faults' latencies while `op` ran.
fn while_running(m: &Arc<BenchMmu>, op: impl FnOnce()) -> (Duration, Latency) {
    let stop = Arc::new(AtomicBool::new(false));
    let recording = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(3));
    let cursor = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let threads: Vec<_> = (0..2u64)
        .map(|v| {
            let (m, stop, recording, start, cursor) =
                (m.clone(), stop.clone(), recording.clone(), start.clone(), cursor.clone());
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(1 << 20);
                start.wait();
                let mut page = cursor[v as usize].load(Ordering::Relaxed);
                while !stop.load(Ordering::Relaxed) {
                    let gpa = v * GIB + (page % (VCPU_SLOT >> 12)) * 4096;
                    let t = Instant::now();
                    let _ = m.handle_fault(Gpa(gpa), Access::Write);
                    let d = t.elapsed();
                    if recording.load(Ordering::Relaxed) {
                        lat.push(d);
                    }
                    page += 1;
                }
                cursor[v as usize].store(page, Ordering::Relaxed);
                lat
            })
        })
        .collect();
    start.wait();
    std::thread::sleep(Duration::from_millis(20));
    recording.store(true, Ordering::Relaxed);
    let t = Instant::now();
    op();
    let took = t.elapsed();
    recording.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<Duration> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    all.sort_unstable();
    let at = |q: f64| all.get(((all.len() as f64 - 1.0) * q) as usize).copied().unwrap_or_default();
    (took, Latency { faults: all.len(), median: at(0.5), p99: at(0.99), max: all.last().copied().unwrap_or_default() })
}

fn row(name: &str, took: Duration, l: &Latency) {
    println!(
        "| {name:<34} | {:>9.1} ms | {:>9} | {:>8.2} µs | {:>9.2} µs | {:>10.2} µs |",
        took.as_secs_f64() * 1e3,
        l.faults,
        l.median.as_secs_f64() * 1e6,
        l.p99.as_secs_f64() * 1e6,
        l.max.as_secs_f64() * 1e6
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let big = std::env::var("SLAT_LATENCY_GIB").ok().and_then(|v| v.parse().ok()).unwrap_or(64u64) * GIB;
    println!("fault latency on 2 vCPU threads while an operation runs on a {} GiB slot", big / GIB);
    println!("| operation                          |  duration    |  faults   |  median     |  p99         |  max          |");
    println!("|------------------------------------|--------------|-----------|-------------|--------------|---------------|");

    // Baseline: nothing beside the faults.
    let m = mmu(MmuConfig::default(), big);
    let (took, l) = while_running(&m, || std::thread::sleep(Duration::from_millis(200)));
    row("(nothing: 200 ms idle)", took, &l);

    // Enabling logging on 2 MiB leaves: write-protect every leaf.
    populate(&m, big, 2 * MIB, Access::Write);
    let (took, l) = while_running(&m, || m.set_dirty_logging(0, true).unwrap());
    row("enable logging (write-protect 2M)", took, &l);
    drop(m);

    // Eager split of every 2 MiB leaf.
    let m = mmu(MmuConfig::default().with_dirty_log(DirtyLogMode::EagerSplit { chunk_tables: 64 }), big);
    populate(&m, big, 2 * MIB, Access::Write);
    let (took, l) = while_running(&m, || m.set_dirty_logging(0, true).unwrap());
    row("enable logging (eager split)", took, &l);
    drop(m);

    // Harvest and in-place recovery of 4 KiB leaves.
    let m = mmu(MmuConfig::default(), big);
    m.set_dirty_logging(0, true).unwrap();
    populate(&m, big, 4096, Access::Write);
    let (took, l) = while_running(&m, || {
        m.get_dirty_log(0).unwrap();
    });
    row("harvest (get_dirty_log, all dirty)", took, &l);
    let (took, l) = while_running(&m, || m.set_dirty_logging(0, false).unwrap());
    row("logging off: in-place recovery", took, &l);
    let (took, l) = while_running(&m, || m.delete_memslot(0).unwrap());
    row("delete memslot", took, &l);
}
