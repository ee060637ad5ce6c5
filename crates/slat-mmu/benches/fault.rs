//! Fault-path throughput with an instant host: 4K faults on one thread and on two threads
//! (disjoint halves), plus 2M faults. Targets (DESIGN.md): >= 5 M 4K faults/s on one thread,
//! two threads >= 1.7x one.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use slat_mmu::testing::RecordingTlb;
use slat_mmu::{
    BackingKind, Gfn, Gpa, HostError, HostMemory, HostPage, Hva, MemslotSpec, Mmu, MmuConfig, Parts, Pfn, Tlb,
};
use slat_pt::format::Ept4;
use slat_pt::{Access, FlushRange, PageSize, SimFrameAllocator};

const GIB: u64 = 1 << 30;
const HVA: u64 = 0x7f00_0000_0000;

/// A host that answers at once: hva maps linearly to pfns, at a fixed host leaf size.
struct InstantHost(PageSize);

impl HostMemory for InstantHost {
    fn fault_in(&self, hva: Hva, _write: bool) -> Result<HostPage, HostError> {
        let hva = hva.0;
        Ok(HostPage::new(Pfn((hva - HVA) >> 12 | (1 << 28)), self.0, true, BackingKind::Anonymous))
    }
    fn lookup(&self, hva: Hva) -> Option<HostPage> {
        let hva = hva.0;
        self.fault_in(Hva(hva), false).ok()
    }
    fn mark_dirty(&self, _: Pfn, _: u64) {}
    fn mark_accessed(&self, _: Pfn, _: u64) {}
}

/// A TLB that does nothing (faults into empty ranges never flush).
struct NoTlb;
impl Tlb for NoTlb {
    fn flush_range(&self, _: &FlushRange) {}
    fn flush_all(&self) {}
    fn cache_maintenance(&self) -> slat_mmu::CacheMaintenance {
        slat_mmu::CacheMaintenance::NOT_NEEDED
    }
    fn clean_dcache(&self, _: u64, _: u64) {}
    fn invalidate_icache(&self, _: u64, _: u64) {}
}

type BenchMmu = Mmu<Ept4, Parts<SimFrameAllocator, InstantHost, NoTlb, slat_mmu::sharded::ShardedRawRwLock>>;

fn vm(host_size: PageSize) -> BenchMmu {
    let m =
        Mmu::new(MmuConfig::default(), SimFrameAllocator::new(0x100_0000_0000, 4 * GIB), InstantHost(host_size), NoTlb)
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
