//! Page-table benchmarks, each row measured side by side with its raw-store floor.
//!
//! One criterion group per row of DESIGN.md "Performance targets", so the ratios come out of one
//! run. Results, ratios and the command to reproduce them are in `BENCHMARKS.md`.
//!
//! * `map/<shape>`: `PageTable::map` of the whole shape into a fresh table (the table is created
//!   in untimed setup; the allocator lives outside, so frames are reused). Floor: the same leaf
//!   values (`F::leaf(..)`) stored with plain release stores into the leaf tables of an already
//!   mapped tree, through precomputed leaf-table pointers (no walk, no allocation).
//! * `unmap/<shape>`: `unmap` of the whole shape plus `free_detached` of the batch, from a mapped
//!   table built in untimed setup. Floor: zeroing the same leaf entries through precomputed
//!   pointers.
//! * `translate/<shape>`: 1 Mi `translate` calls at xorshift-random addresses in the shape.
//!   Floor: per address, one load per level (root to leaf) through precomputed per-level table
//!   pointers, with the same random addresses.
//! * `fault/install_4K`: 262144 `PageTable::install` calls of 4K leaves (each a full walk plus
//!   CAS, allocating tables on the way) into a fresh table, on one thread, and on two threads
//!   filling disjoint halves; plus a control with the two halves in two separate tables (the
//!   speedup the machine allows when the threads share nothing but the frame allocator).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, SamplingMode, Throughput};
use slat_pt::format::{Ept4, Format, Npt, Pte};
use slat_pt::size::{level_bytes, level_shift, table_index, Level, ENTRIES_PER_TABLE};
use slat_pt::{
    FlushBatch, FrameAllocator, Gpa, LeafAttrs, Mapping, NoTlb, PageSize, PageTable, Perms, SimFrameAllocator,
};

const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;
/// Output address = guest-physical address + this (1 GiB aligned, so every leaf size fits).
const PA_OFFSET: u64 = TIB;
/// Where the simulated page-table frames live.
const FRAMES_BASE: u64 = 0x100_0000_0000;
/// Frame capacity: far more than the few trees alive at once (a 1 GiB 4K tree is 514 frames).
const FRAMES_CAPACITY: u64 = 1 << 30;
/// Random translations per iteration.
const TRANSLATIONS: u64 = 1 << 20;
/// 4K installs per fault-path iteration (1 GiB).
const FAULTS: u64 = 262_144;
const XORSHIFT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

type Table<'a, F> = PageTable<F, &'a SimFrameAllocator>;

/// A mapped region: `len` bytes at guest-physical 0 with `size` leaves.
#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    size: PageSize,
    len: u64,
}

const SHAPES: [Shape; 3] = [
    Shape { name: "1GiB_4K", size: PageSize::Size4K, len: GIB },
    Shape { name: "64GiB_2M", size: PageSize::Size2M, len: 64 * GIB },
    Shape { name: "1TiB_1G", size: PageSize::Size1G, len: TIB },
];

impl Shape {
    fn leaves(self) -> u64 {
        self.len / self.size.bytes()
    }

    fn mapping(self) -> Mapping {
        Mapping { pa: PA_OFFSET, size: self.size, attrs: LeafAttrs::ram(Perms::RW) }
    }
}

fn frames() -> SimFrameAllocator {
    SimFrameAllocator::new(FRAMES_BASE, FRAMES_CAPACITY)
}

fn mapped<F: Format>(frames: &SimFrameAllocator, shape: Shape) -> Table<'_, F> {
    let mut pt = Table::<F>::new(frames).expect("root frame");
    let mut batch = FlushBatch::new();
    pt.map(Gpa(0), shape.len, &shape.mapping(), &mut batch, &NoTlb).expect("map");
    assert!(batch.is_empty() && batch.detached().is_empty());
    pt
}

#[inline]
fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Pointers to every table of a tree mapping `0..len` with leaves at `leaf_level`, per level:
/// `levels[l][gpa >> level_shift(l + 1)]` is the level-`l` table on the path to `gpa` (the root
/// is `levels[ROOT_LEVEL][0]`). Found by decoding the parent entries, as hardware would.
struct TablePtrs {
    levels: Vec<Vec<*const AtomicU64>>,
    leaf_level: Level,
    root_level: Level,
}

impl TablePtrs {
    fn collect<F: Format>(pt: &Table<'_, F>, leaf_level: Level, len: u64) -> Self {
        assert_eq!(F::ROOT_ENTRIES, ENTRIES_PER_TABLE, "benches assume a one-frame root");
        let frames = pt.allocator();
        let mut levels = vec![Vec::new(); F::ROOT_LEVEL as usize + 1];
        levels[F::ROOT_LEVEL as usize].push(frames.frame_ptr(pt.root_pa()).as_ptr() as *const AtomicU64);
        for l in (leaf_level..F::ROOT_LEVEL).rev() {
            let parent_level = l + 1;
            let tables = len.div_ceil(level_bytes(parent_level));
            for k in 0..tables {
                let gpa = k << level_shift(parent_level);
                let parent = levels[parent_level as usize][Self::slot(gpa, parent_level)];
                // SAFETY: `parent` is a live table of `pt` with 512 entries.
                let raw =
                    unsafe { &*parent.add(table_index(gpa, parent_level, ENTRIES_PER_TABLE)) }.load(Ordering::Acquire);
                let Pte::Table { pa } = F::decode(parent_level, raw) else {
                    panic!("no level-{l} table under {gpa:#x}")
                };
                levels[l as usize].push(frames.frame_ptr(pa).as_ptr() as *const AtomicU64);
            }
        }
        TablePtrs { levels, leaf_level, root_level: F::ROOT_LEVEL }
    }

    #[inline]
    fn slot(gpa: u64, level: Level) -> usize {
        (gpa >> level_shift(level + 1)) as usize
    }

    fn leaf_tables(&self) -> &[*const AtomicU64] {
        &self.levels[self.leaf_level as usize]
    }
}

/// Floor for map (`Some(m)`: write `m`'s leaves) and unmap (`None`: zero them): every leaf entry
/// of `shape` written with one plain release store through the precomputed leaf-table pointers.
#[inline(never)]
fn floor_store<F: Format>(ptrs: &TablePtrs, shape: Shape, m: Option<&Mapping>) {
    let level = shape.size.level();
    let step = shape.size.bytes();
    let mut left = shape.leaves();
    let mut gpa = 0u64;
    for &t in ptrs.leaf_tables() {
        let n = left.min(ENTRIES_PER_TABLE as u64) as usize;
        for i in 0..n {
            let raw = match m {
                Some(m) => F::leaf(level, gpa.wrapping_add(m.pa), &m.attrs),
                None => 0,
            };
            // SAFETY: `t` is a live leaf table of the bench's tree, `i < 512`.
            unsafe { (*t.add(i)).store(raw, Ordering::Release) };
            gpa += step;
        }
        left -= n as u64;
    }
}

/// Floor for translate: for each of the random addresses, one entry load per level through
/// precomputed table pointers (no decode, no frame lookup, no dependent walk). Returns the
/// folded output addresses (equal to what [`slat_translate`] returns) and the folded non-leaf
/// entries (so no load is optimised away).
#[inline(never)]
fn floor_translate<F: Format>(ptrs: &TablePtrs, len: u64) -> (u64, u64) {
    let mut x = XORSHIFT_SEED;
    let mut acc = 0u64;
    let mut upper = 0u64;
    let leaf = ptrs.leaf_level;
    let mask = level_bytes(leaf) - 1;
    for _ in 0..TRANSLATIONS {
        let gpa = xorshift(&mut x) & (len - 1);
        let mut l = ptrs.root_level;
        loop {
            let t = ptrs.levels[l as usize][TablePtrs::slot(gpa, l)];
            // SAFETY: `t` is a live table of the bench's tree with 512 entries.
            let raw = unsafe { &*t.add(table_index(gpa, l, ENTRIES_PER_TABLE)) }.load(Ordering::Acquire);
            if l == leaf {
                acc ^= F::addr(l, raw) + (gpa & mask);
                break;
            }
            upper ^= raw;
            l -= 1;
        }
    }
    (acc, upper)
}

#[inline(never)]
fn slat_translate<F: Format>(pt: &Table<'_, F>, len: u64) -> u64 {
    let mut x = XORSHIFT_SEED;
    let mut acc = 0u64;
    for _ in 0..TRANSLATIONS {
        let gpa = xorshift(&mut x) & (len - 1);
        acc ^= pt.translate(Gpa(gpa)).map_or(u64::MAX, |t| t.pa);
    }
    acc
}

/// Install 4K leaves for `start..end` one by one, as the fault path does.
fn install_range<F: Format>(pt: &Table<'_, F>, start: u64, end: u64, attrs: LeafAttrs) {
    let mut batch = FlushBatch::new();
    let mut gpa = start;
    while gpa < end {
        let m = Mapping { pa: gpa + PA_OFFSET, size: PageSize::Size4K, attrs };
        pt.install(Gpa(gpa), &m, &mut batch, &NoTlb).expect("install");
        gpa += PageSize::Size4K.bytes();
    }
    assert!(batch.is_empty() && batch.detached().is_empty());
}

fn label<F: Format>(what: &str) -> String {
    format!("{}/{what}", F::NAME)
}

fn bench_map<F: Format>(g: &mut BenchmarkGroup<'_, WallTime>, frames: &SimFrameAllocator, shape: Shape) {
    let m = shape.mapping();
    g.bench_function(label::<F>("slat"), |b| {
        b.iter_batched(
            || Table::<F>::new(frames).expect("root frame"),
            |mut pt| {
                let mut batch = FlushBatch::new();
                pt.map(Gpa(0), shape.len, black_box(&m), &mut batch, &NoTlb).expect("map");
                (pt, batch)
            },
            BatchSize::PerIteration,
        )
    });
    let pt = mapped::<F>(frames, shape);
    let ptrs = TablePtrs::collect(&pt, shape.size.level(), shape.len);
    // The floor writes the values `map` wrote: the tree must still translate as mapped.
    floor_store::<F>(&ptrs, shape, Some(&m));
    assert_eq!(pt.translate(Gpa(shape.len - 1)).map(|t| t.pa), Some(PA_OFFSET + shape.len - 1));
    g.bench_function(label::<F>("floor"), |b| b.iter(|| floor_store::<F>(&ptrs, shape, Some(black_box(&m)))));
}

fn bench_unmap<F: Format>(g: &mut BenchmarkGroup<'_, WallTime>, frames: &SimFrameAllocator, shape: Shape) {
    g.bench_function(label::<F>("slat"), |b| {
        b.iter_batched(
            || mapped::<F>(frames, shape),
            |mut pt| {
                let mut batch = FlushBatch::new();
                pt.unmap(Gpa(0), black_box(shape.len), &mut batch, None).expect("unmap");
                // SAFETY: no TLB or walker exists in this benchmark.
                unsafe { pt.free_detached(batch.into_detached()) };
                pt
            },
            BatchSize::PerIteration,
        )
    });
    let pt = mapped::<F>(frames, shape);
    let ptrs = TablePtrs::collect(&pt, shape.size.level(), shape.len);
    // The floor clears every leaf: nothing may translate afterwards.
    floor_store::<F>(&ptrs, shape, None);
    assert_eq!((pt.translate(Gpa(0)), pt.translate(Gpa(shape.len - 1))), (None, None));
    g.bench_function(label::<F>("floor"), |b| b.iter(|| floor_store::<F>(&ptrs, shape, None)));
}

fn bench_translate<F: Format>(g: &mut BenchmarkGroup<'_, WallTime>, frames: &SimFrameAllocator, shape: Shape) {
    let pt = mapped::<F>(frames, shape);
    let ptrs = TablePtrs::collect(&pt, shape.size.level(), shape.len);
    // Both walks must agree before they are timed.
    assert_eq!(slat_translate(&pt, shape.len), floor_translate::<F>(&ptrs, shape.len).0);
    g.bench_function(label::<F>("slat"), |b| b.iter(|| slat_translate(&pt, black_box(shape.len))));
    g.bench_function(label::<F>("floor"), |b| b.iter(|| floor_translate::<F>(&ptrs, black_box(shape.len))));
}

fn map_unmap(c: &mut Criterion) {
    let frames = frames();
    for shape in SHAPES {
        let mut g = c.benchmark_group(format!("map/{}", shape.name));
        g.throughput(Throughput::Elements(shape.leaves()));
        bench_map::<Ept4>(&mut g, &frames, shape);
        bench_map::<Npt>(&mut g, &frames, shape);
        g.finish();
    }
    for shape in SHAPES {
        let mut g = c.benchmark_group(format!("unmap/{}", shape.name));
        g.throughput(Throughput::Elements(shape.leaves()));
        bench_unmap::<Ept4>(&mut g, &frames, shape);
        bench_unmap::<Npt>(&mut g, &frames, shape);
        g.finish();
    }
    assert_eq!(frames.live_frames(), 0, "every frame returned");
}

fn translate(c: &mut Criterion) {
    let frames = frames();
    for shape in [SHAPES[1], SHAPES[0]] {
        let mut g = c.benchmark_group(format!("translate/{}", shape.name));
        g.throughput(Throughput::Elements(TRANSLATIONS));
        g.sample_size(10).sampling_mode(SamplingMode::Flat);
        bench_translate::<Ept4>(&mut g, &frames, shape);
        bench_translate::<Npt>(&mut g, &frames, shape);
        g.finish();
    }
}

fn fault(c: &mut Criterion) {
    let frames = frames();
    let attrs = LeafAttrs::ram(Perms::RW);
    let end = FAULTS * PageSize::Size4K.bytes();
    let mut g = c.benchmark_group("fault/install_4K");
    g.throughput(Throughput::Elements(FAULTS));
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    g.bench_function(label::<Ept4>("1_thread"), |b| {
        b.iter_batched(
            || Table::<Ept4>::new(&frames).expect("root frame"),
            |pt| {
                install_range(&pt, 0, end, attrs);
                pt
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function(label::<Ept4>("2_threads"), |b| {
        b.iter_batched(
            || Table::<Ept4>::new(&frames).expect("root frame"),
            |pt| {
                std::thread::scope(|s| {
                    s.spawn(|| install_range(&pt, end / 2, end, attrs));
                    install_range(&pt, 0, end / 2, attrs);
                });
                pt
            },
            BatchSize::PerIteration,
        )
    });
    // Control for the speedup above: the same two halves installed into two separate tables, so
    // nothing but the frame allocator is shared. This is what two threads can gain on the machine.
    g.bench_function(label::<Ept4>("2_threads_separate_tables"), |b| {
        b.iter_batched(
            || (Table::<Ept4>::new(&frames).expect("root frame"), Table::<Ept4>::new(&frames).expect("root frame")),
            |(lo, hi)| {
                std::thread::scope(|s| {
                    s.spawn(|| install_range(&hi, end / 2, end, attrs));
                    install_range(&lo, 0, end / 2, attrs);
                });
                (lo, hi)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, map_unmap, translate, fault);
criterion_main!(benches);
