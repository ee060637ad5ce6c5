//! Simulated-hardware throughput: guest accesses per second on the TLB-hit path and on the
//! miss/walk path (target: >= 20 M accesses/s on the hit path, single thread).
//!
//! Each benchmark performs a fixed batch of accesses per iteration and reports elements/s, i.e.
//! simulated guest accesses per second.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use slat_pt::format::Ept4;
use slat_pt::{Access, FlushBatch, Gpa, LeafAttrs, Mapping, NoTlb, PageSize, PageTable, Perms, SimFrameAllocator};
use slat_sim::hw::{AccessOutcome, GuestPaging, GuestRegion, GuestTables, Hardware, HwConfig};

type Stage2 = PageTable<Ept4, Arc<SimFrameAllocator>>;

const GVA: u64 = 0x7f00_0000_0000;
const TABLE_GPA: u64 = 0x40_0000_0000;
const BATCH: usize = 1 << 14;

fn map(pt: &mut Stage2, gpa: u64, len: u64, hpa: u64, size: PageSize) {
    let m = Mapping { pa: hpa, size, attrs: LeafAttrs::ram(Perms::RW) };
    let mut batch = FlushBatch::new();
    pt.map(Gpa(gpa), len, &m, &mut batch, &NoTlb).expect("map");
    assert!(batch.is_empty());
}

/// Hardware over `len` bytes of guest memory (guest pages `guest_size`, stage-2 leaves
/// `s2_size` for data and guest tables alike).
fn setup(config: HwConfig, len: u64, guest_size: PageSize, s2_size: PageSize) -> (Hardware, Stage2) {
    let g = GuestTables::new(GuestPaging::FourLevel, TABLE_GPA, [GuestRegion::new(GVA, len, guest_size, 0)])
        .expect("guest tables");
    let mut pt = PageTable::new(Arc::new(SimFrameAllocator::new(0x100_0000_0000, 4 << 30))).expect("stage 2");
    let t = g.table_gpa_range();
    let tables_end = s2_size.align_down(t.end + s2_size.bytes() - 1);
    map(&mut pt, TABLE_GPA, tables_end - TABLE_GPA, 0x20_0000_0000, s2_size);
    map(&mut pt, 0, len.max(s2_size.bytes()), 0x10_0000_0000, s2_size);
    (Hardware::new(config, 1, g).expect("hardware"), pt)
}

/// `BATCH` gvas over `pages` pages of `page` bytes, in a scrambled order, at varying offsets.
fn gvas(pages: u64, page: u64) -> Vec<u64> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..BATCH)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            GVA + (x % pages) * page + (x >> 40) % page / 8 * 8
        })
        .collect()
}

fn run(hw: &mut Hardware, pt: &Stage2, gvas: &[u64]) {
    for &gva in gvas {
        let out = hw.access(0, black_box(gva), Access::Read, pt);
        debug_assert!(matches!(out, Ok(AccessOutcome::Hit { .. } | AccessOutcome::Walked(_))));
        black_box(out.ok());
    }
}

fn hit_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("hw_hit");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.measurement_time(Duration::from_secs(3));
    let cases: [(&str, HwConfig, u64, PageSize, PageSize, u64); 5] = [
        // 32 guest 4K pages on 2M stage-2 leaves: all L1 hits.
        ("l1_4k", HwConfig::default(), 32, PageSize::Size4K, PageSize::Size2M, 4096),
        // 1024 pages: beyond L1 reach, inside the STLB.
        ("stlb_4k", HwConfig::default(), 1024, PageSize::Size4K, PageSize::Size2M, 4096),
        // 16 guest 2M pages on 2M leaves: L1 2M hits.
        ("l1_2m", HwConfig::default(), 16, PageSize::Size2M, PageSize::Size2M, 2 << 20),
        // 4 guest 1G pages on 1G leaves: L1 1G hits (after two L1 misses per access).
        ("l1_1g", HwConfig::default(), 4, PageSize::Size1G, PageSize::Size1G, 1 << 30),
        // Checked mode: every hit re-translates through stage 2.
        ("l1_4k_checked", HwConfig::checked(), 32, PageSize::Size4K, PageSize::Size2M, 4096),
    ];
    for (name, config, pages, guest_size, s2_size, page) in cases {
        let (mut hw, pt) = setup(config, pages * page, guest_size, s2_size);
        let v = gvas(pages, page);
        run(&mut hw, &pt, &v); // warm the TLB
        hw.reset_counters();
        g.bench_function(name, |b| b.iter(|| run(&mut hw, &pt, &v)));
        let s = hw.stats();
        assert_eq!(s.misses, 0, "{name}: the hit benchmark must not miss");
    }
    g.finish();
}

fn walk_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("hw_walk");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.measurement_time(Duration::from_secs(3));
    let gib = 1u64 << 30;
    let cases: [(&str, HwConfig, PageSize, PageSize); 4] = [
        ("4k_on_4k", HwConfig::default(), PageSize::Size4K, PageSize::Size4K),
        ("4k_on_2m", HwConfig::default(), PageSize::Size4K, PageSize::Size2M),
        ("2m_on_2m", HwConfig::default(), PageSize::Size2M, PageSize::Size2M),
        ("4k_on_4k_walk_caches", HwConfig::default().with_walk_caches(true), PageSize::Size4K, PageSize::Size4K),
    ];
    for (name, config, guest_size, s2_size) in cases {
        let len = if guest_size == PageSize::Size2M { 64 * gib } else { gib };
        let (mut hw, pt) = setup(config, len, guest_size, s2_size);
        let v = gvas(len / 4096, 4096);
        g.bench_function(name, |b| b.iter(|| run(&mut hw, &pt, &v)));
        let s = hw.stats();
        if s.accesses == 0 {
            continue; // filtered out
        }
        eprintln!(
            "{name}: {:.1} misses per 1000 accesses, {:.2} walk refs per access",
            s.misses_per_kilo_access(),
            s.refs_per_access()
        );
    }
    g.finish();
}

criterion_group!(benches, hit_path, walk_path);
criterion_main!(benches);
