//! Fault-path throughput with an instant host: 4K faults on one thread and on two threads
//! (disjoint halves), plus 2M faults. Targets (DESIGN.md): >= 5 M 4K faults/s on one thread,
//! two threads >= 1.7x one.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use slat_mmu::testing::{InstantHost, RecordingTlb};
use slat_mmu::{Gfn, Gpa, Hva, MemslotSpec, Mmu, MmuConfig, Parts, Pfn};
use slat_pt::format::Ept4;
use slat_pt::{Access, NoTlb, PageSize, SimFrameAllocator};

const GIB: u64 = 1 << 30;
const HVA: u64 = 0x7f00_0000_0000;

type BenchMmu = Mmu<Ept4, Parts<SimFrameAllocator, InstantHost, NoTlb, slat_mmu::sharded::ShardedRawRwLock>>;

fn vm(host_size: PageSize) -> BenchMmu {
    let m = Mmu::new(
        MmuConfig::default(),
        SimFrameAllocator::new(0x100_0000_0000, 4 * GIB),
        InstantHost::new(Hva(HVA), Pfn(1 << 28), host_size),
        NoTlb,
    )
    .unwrap();
    m.add_memslot(MemslotSpec {
        id: 0,
        base_gfn: Gfn(GIB >> 12),
        npages: GIB >> 12,
        hva: Hva(HVA),
        readonly: false,
        log_dirty: false,
    })
    .unwrap();
    m
}

fn faults(c: &mut Criterion) {
    let n = GIB >> 12;
    let mut g = c.benchmark_group("fault_4k_1GiB");
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);
    g.bench_function("one_thread", |b| {
        b.iter_batched(
            || vm(PageSize::Size4K),
            |m| {
                for p in 0..n {
                    m.handle_fault(Gpa(GIB + (p << 12)), Access::Write).unwrap();
                }
                m
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("two_threads", |b| {
        b.iter_batched(
            || vm(PageSize::Size4K),
            |m| {
                std::thread::scope(|s| {
                    for t in 0..2u64 {
                        let m = &m;
                        s.spawn(move || {
                            for p in t * n / 2..(t + 1) * n / 2 {
                                m.handle_fault(Gpa(GIB + (p << 12)), Access::Write).unwrap();
                            }
                        });
                    }
                });
                m
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("fault_2m_1GiB");
    g.throughput(Throughput::Elements(512));
    g.bench_function("one_thread", |b| {
        b.iter_batched(
            || vm(PageSize::Size2M),
            |m| {
                for blk in 0..512u64 {
                    m.handle_fault(Gpa(GIB + (blk << 21)), Access::Write).unwrap();
                }
                m
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    let _ = RecordingTlb::default();
}

criterion_group!(benches, faults);
criterion_main!(benches);
