//! The rows: what each case does in its untimed setup, its timed operation and its untimed check.

use slat_mmu::testing::InstantHost;
use slat_mmu::{Gfn, Gpa, Hva, Pfn};
use std::time::Instant;

use slat_pt::format::{Ept4, Format};
use slat_pt::{Access, FlushBatch, NoTlb, PageSize};

use crate::contender::Contender;
use crate::counting::allocations;
use crate::floor::{self, TablePtrs};
use crate::peers::aarch64::Aarch64;
use crate::peers::multiarch::Multiarch;
use crate::peers::ptg::Ptg;
use crate::peers::slat::{attrs, Slat, SlatMapOne, Table};
use crate::peers::x86::X86;
use crate::pool::{self, SlatFrames};

const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;
const XORSHIFT_SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Sizes of everything: the real run or a tiny one for the smoke test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// DESIGN.md's sizes.
    Full,
    /// A few MiB of each shape, for `cargo test`.
    Tiny,
}

/// A mapped region: `len` bytes at guest-physical 0 with `size` leaves, output `gpa + pa_offset`.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Name in the tables.
    pub name: &'static str,
    /// Leaf size.
    pub size: PageSize,
    /// Bytes mapped.
    pub len: u64,
    /// Output address of guest-physical 0.
    pub pa_offset: u64,
    /// Tables operated on per sample (lifts tiny operations above clock resolution).
    pub copies: usize,
}

impl Shape {
    /// Leaves in the shape.
    pub fn leaves(&self) -> u64 {
        self.len / self.size.bytes()
    }
    /// The fewest page-table frames that can hold it in a 4-level tree: the root plus, per level
    /// from the 1G level down to the leaves' level, one table per entry of the level above.
    pub fn min_frames(&self) -> u64 {
        1 + (self.size.level()..=2).map(|l| self.len.div_ceil(slat_pt::size::level_bytes(l + 1))).sum::<u64>()
    }
}

/// The three map/unmap shapes.
pub fn shapes(scale: Scale) -> [Shape; 3] {
    let (l4, l2, l1) = match scale {
        Scale::Full => (GIB, 64 * GIB, TIB),
        Scale::Tiny => (8 << 20, GIB, 4 * GIB),
    };
    let full = scale == Scale::Full;
    [
        Shape {
            name: if full { "1 GiB as 4K" } else { "8 MiB as 4K" },
            size: PageSize::Size4K,
            len: l4,
            pa_offset: TIB,
            copies: 1,
        },
        // +2 MiB: range APIs that pick the largest aligned leaf make 2M leaves, not 1G.
        Shape {
            name: if full { "64 GiB as 2M" } else { "1 GiB as 2M" },
            size: PageSize::Size2M,
            len: l2,
            pa_offset: TIB + (2 << 20),
            copies: if full { 4 } else { 1 },
        },
        Shape {
            name: if full { "1 TiB as 1G" } else { "4 GiB as 1G" },
            size: PageSize::Size1G,
            len: l1,
            pa_offset: TIB,
            copies: if full { 64 } else { 1 },
        },
    ]
}

/// Region of the dirty-logging rows (64 GiB of 2M leaves, or 64 MiB tiny).
pub fn dirty_len(scale: Scale) -> u64 {
    match scale {
        Scale::Full => 64 * GIB,
        Scale::Tiny => 64 << 20,
    }
}

/// Random translations per sample.
pub fn translations(scale: Scale) -> u64 {
    match scale {
        Scale::Full => 1 << 20,
        Scale::Tiny => 1 << 12,
    }
}

/// Pool frames a full run needs (the 64 GiB 4K tree of the dirty rows, plus slack).
pub fn pool_frames(scale: Scale) -> usize {
    let tables = dirty_len(scale) / (2 << 20);
    tables as usize + tables as usize / 512 + 2048
}

/// What kind of call a case makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// One call for the whole range.
    Range,
    /// One call per leaf.
    Leaf,
    /// The raw-store floor.
    Floor,
}

/// One measurement of one case.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// Nanoseconds per op (per leaf, per translation, per fault).
    pub ns: f64,
    /// Heap allocations per table operation (whole shape, one table).
    pub allocs: f64,
    /// Page-table frames per table after the operation.
    pub frames: f64,
}

/// Nanoseconds of CPU time used by this thread.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(r, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The timed region: never inlined, so callgrind can count exactly this
/// (`--toggle-collect='*cg_region*'`).
#[inline(never)]
pub fn cg_region<R>(f: impl FnOnce() -> R) -> R {
    std::hint::black_box(f())
}

/// Time `f` in thread CPU time; returns (ns, heap allocations).
fn timed<R>(f: impl FnOnce() -> R) -> (R, u64, u64) {
    let a0 = allocations();
    let t0 = thread_cpu_ns();
    let r = cg_region(f);
    let t1 = thread_cpu_ns();
    let a1 = allocations();
    (r, t1 - t0, a1 - a0)
}

fn check_mapped<C: Contender>(c: &C, s: &Shape, who: &str) {
    for gpa in [0, s.len / 2 + 4096 + 8, s.len - 1] {
        assert_eq!(c.translate(gpa), Some(gpa + s.pa_offset), "{who}: {} translates {gpa:#x} wrongly", s.name);
    }
}

fn check_unmapped<C: Contender>(c: &C, s: &Shape, who: &str) {
    for gpa in [0, s.len / 2 + 4096, s.len - 1] {
        assert_eq!(c.translate(gpa), None, "{who}: {} still translates {gpa:#x} after unmap", s.name);
    }
}

fn setup_mapped<C: Contender>(s: &Shape) -> C {
    let mut c = C::new();
    if C::RANGE_MAP.is_some() {
        c.map_range(0, s.len, s.pa_offset, s.size);
    } else {
        c.map_leaves(0, s.leaves(), s.pa_offset, s.size);
    }
    c
}

/// Map row, one contender, one API.
pub fn map<C: Contender>(s: &Shape, api: Api) -> Sample {
    pool::reset();
    let mut ts: Vec<C> = (0..s.copies).map(|_| C::new()).collect();
    let ((), ns, allocs) = timed(|| {
        for t in ts.iter_mut() {
            match api {
                Api::Range => t.map_range(0, s.len, s.pa_offset, s.size),
                _ => t.map_leaves(0, s.leaves(), s.pa_offset, s.size),
            }
        }
    });
    check_mapped(&ts[0], s, C::NAME);
    let frames = pool::live() as f64 / s.copies as f64;
    drop(ts);
    per_leaf(s, ns, allocs, frames)
}

/// Unmap row, one contender, one API (mapped with its best API in setup).
pub fn unmap<C: Contender>(s: &Shape, api: Api) -> Sample {
    pool::reset();
    let mut ts: Vec<C> = (0..s.copies).map(|_| setup_mapped::<C>(s)).collect();
    let ((), ns, allocs) = timed(|| {
        for t in ts.iter_mut() {
            match api {
                Api::Range => t.unmap_range(0, s.len, s.size),
                _ => t.unmap_leaves(0, s.leaves(), s.size),
            }
        }
    });
    check_unmapped(&ts[0], s, C::NAME);
    let frames = pool::live() as f64 / s.copies as f64;
    drop(ts);
    per_leaf(s, ns, allocs, frames)
}

fn per_leaf(s: &Shape, ns: u64, allocs: u64, frames: f64) -> Sample {
    let ops = s.leaves() as f64 * s.copies as f64;
    Sample { ns: ns as f64 / ops, allocs: allocs as f64 / s.copies as f64, frames }
}

/// The random addresses of the translate row.
pub fn addresses(len: u64, n: u64) -> impl Iterator<Item = u64> {
    let mut x = XORSHIFT_SEED;
    (0..n).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x & (len - 1)
    })
}

fn expected_checksum(s: &Shape, n: u64) -> u64 {
    addresses(s.len, n).fold(0, |acc, gpa| acc ^ (gpa + s.pa_offset))
}

/// Translate row: `n` random addresses in the 4K shape.
pub fn translate<C: Contender>(s: &Shape, n: u64) -> Sample {
    pool::reset();
    let c = setup_mapped::<C>(s);
    let (sum, ns, allocs) =
        timed(|| addresses(s.len, n).fold(0u64, |acc, gpa| acc ^ c.translate(gpa).unwrap_or(u64::MAX)));
    assert_eq!(sum, expected_checksum(s, n), "{}: translate checksum differs", C::NAME);
    let frames = pool::live() as f64;
    drop(c);
    Sample { ns: ns as f64 / n as f64, allocs: allocs as f64, frames }
}

fn slat_mapped(s: &Shape) -> Table {
    let mut c = Slat::new();
    c.map_range(0, s.len, s.pa_offset, s.size);
    c.0
}

fn template(level: u8) -> u64 {
    Ept4::leaf(level, 0, &attrs())
}

/// Map floor: the shape's leaves stored into the leaf tables of an already mapped tree.
pub fn map_floor(s: &Shape) -> Sample {
    pool::reset();
    let pts: Vec<Table> = (0..s.copies).map(|_| slat_mapped(s)).collect();
    let ptrs: Vec<TablePtrs> = pts.iter().map(|pt| TablePtrs::collect(pt, s.size.level(), s.len)).collect();
    let tmpl = template(s.size.level());
    let ((), ns, allocs) = timed(|| {
        for p in &ptrs {
            floor::store_leaves(p, s.leaves(), s.pa_offset, Some(tmpl));
        }
    });
    check_mapped(&Slat(pts.into_iter().next().expect("one table")), s, "floor");
    per_leaf(s, ns, allocs, f64::NAN)
}

/// Unmap floor: the shape's leaves zeroed through precomputed pointers.
pub fn unmap_floor(s: &Shape) -> Sample {
    pool::reset();
    let pts: Vec<Table> = (0..s.copies).map(|_| slat_mapped(s)).collect();
    let ptrs: Vec<TablePtrs> = pts.iter().map(|pt| TablePtrs::collect(pt, s.size.level(), s.len)).collect();
    let ((), ns, allocs) = timed(|| {
        for p in &ptrs {
            floor::store_leaves(p, s.leaves(), 0, None);
        }
    });
    check_unmapped(&Slat(pts.into_iter().next().expect("one table")), s, "floor");
    per_leaf(s, ns, allocs, f64::NAN)
}

/// Translate floor: one load per level through precomputed pointers.
pub fn translate_floor(s: &Shape, n: u64) -> Sample {
    pool::reset();
    let pt = slat_mapped(s);
    let ptrs = TablePtrs::collect(&pt, s.size.level(), s.len);
    let (sum, ns, allocs) = timed(|| floor::translate(&ptrs, addresses(s.len, n)));
    assert_eq!(sum, expected_checksum(s, n), "floor: translate checksum differs");
    Sample { ns: ns as f64 / n as f64, allocs: allocs as f64, frames: f64::NAN }
}

// ---- fault path ------------------------------------------------------------------------------

/// Host virtual address of the fault-path and recovery memslots.
const HVA: u64 = 0x7f00_0000_0000;

/// The host of the fault-path and recovery rows: it answers at once, hva mapping linearly to
/// pfns from `1 << 28` with host leaves of `size`.
fn instant_host(size: PageSize) -> InstantHost {
    InstantHost::new(Hva(HVA), Pfn(1 << 28), size)
}

type BenchMmu =
    slat_mmu::Mmu<Ept4, slat_mmu::Parts<SlatFrames, InstantHost, NoTlb, slat_mmu::sharded::ShardedRawRwLock>>;

/// An MMU over the pool with one memslot of `len` bytes at gpa 1 GiB, backed by the instant host
/// with host leaves of `host_size`.
fn instant_vm(config: slat_mmu::MmuConfig, host_size: PageSize, len: u64) -> BenchMmu {
    let m = slat_mmu::Mmu::new(config, SlatFrames, instant_host(host_size), NoTlb).expect("mmu");
    m.add_memslot(slat_mmu::MemslotSpec {
        id: 0,
        base_gfn: Gfn(GIB >> 12),
        npages: len >> 12,
        hva: Hva(HVA),
        readonly: false,
        log_dirty: false,
    })
    .expect("memslot");
    m
}

/// Fault-path length: 1 GiB of 4K faults (tiny: 8 MiB).
pub fn fault_len(scale: Scale) -> u64 {
    match scale {
        Scale::Full => GIB,
        Scale::Tiny => 8 << 20,
    }
}

/// 4K write faults over the whole slot through `Mmu::handle_fault` on `threads` threads
/// (disjoint halves). Wall time per fault.
pub fn fault(len: u64, threads: u64) -> Sample {
    pool::reset();
    let m = instant_vm(slat_mmu::MmuConfig::default(), PageSize::Size4K, len);
    let n = len >> 12;
    let run = |t: u64| {
        for p in t * n / threads..(t + 1) * n / threads {
            m.handle_fault(Gpa(GIB + (p << 12)), Access::Write).expect("fault");
        }
    };
    let a0 = allocations();
    let t0 = Instant::now();
    cg_region(|| {
        std::thread::scope(|s| {
            for t in 1..threads {
                let run = &run;
                s.spawn(move || run(t));
            }
            run(0);
        })
    });
    let ns = t0.elapsed().as_nanos() as f64;
    let allocs = allocations() - a0;
    for gpa in [GIB, GIB + len - 4096] {
        let t = m.with_tables(|pt| pt.translate(Gpa(gpa))).expect("faulted address translates");
        assert_eq!(t.size, PageSize::Size4K);
    }
    let frames = pool::live() as f64;
    drop(m);
    Sample { ns: ns / n as f64, allocs: allocs as f64, frames }
}

// ---- dirty logging: eager split, harvest, in-place recovery ----------------------------------

fn slat_mapped_len(len: u64, size: PageSize) -> Table {
    let s = Shape { name: "", size, len, pa_offset: TIB, copies: 1 };
    slat_mapped(&s)
}

/// Eager split of `len` bytes of 2M leaves into 4K (`split_range`), per 4K leaf written.
pub fn split(len: u64) -> Sample {
    pool::reset();
    let mut pt = slat_mapped_len(len, PageSize::Size2M);
    let (p, ns, allocs) =
        timed(|| pt.split_range(Gpa(0), len, PageSize::Size4K, u64::MAX, &NoTlb).expect("split_range"));
    assert_eq!((p.resume_at, pt.counts().leaves), (None, [len >> 12, 0, 0]));
    assert_eq!(pt.translate(Gpa(len - 1)).map(|t| t.pa), Some(TIB + len - 1));
    let frames = pool::live() as f64;
    drop(pt);
    Sample { ns: ns as f64 / (len >> 12) as f64, allocs: allocs as f64, frames }
}

/// Eager split's floor (tables of a split tree rewritten through pointers).
pub fn split_floor(len: u64) -> Sample {
    pool::reset();
    let pt = slat_mapped_len(len, PageSize::Size4K);
    let ptrs = TablePtrs::collect(&pt, 0, len);
    let ((), ns, allocs) = timed(|| floor::split(&ptrs, TIB, template(0)));
    assert_eq!(pt.translate(Gpa(len - 1)).map(|t| t.pa), Some(TIB + len - 1));
    Sample { ns: ns as f64 / (len >> 12) as f64, allocs: allocs as f64, frames: f64::NAN }
}

/// Every `DIRTY_STRIDE`-th 4K page is written by the guest before a harvest.
pub const DIRTY_STRIDE: u64 = 64;

fn dirty_some(pt: &Table, len: u64) -> u64 {
    let mut n = 0;
    for page in (0..len >> 12).step_by(DIRTY_STRIDE as usize) {
        assert!(pt.hw_walk(Gpa(page << 12), Access::Write).result.is_ok());
        n += 1;
    }
    n
}

/// Harvest of `len` bytes of 4K leaves, one in `DIRTY_STRIDE` dirty (`harvest_dirty`), per 4K
/// page of the range.
pub fn harvest(len: u64) -> Sample {
    pool::reset();
    let mut pt = slat_mapped_len(len, PageSize::Size4K);
    let dirty = dirty_some(&pt, len);
    let mut batch = FlushBatch::new();
    let (bitmap, ns, allocs) = timed(|| pt.harvest_dirty(Gpa(0), len >> 12, &mut batch).expect("harvest"));
    assert_eq!(bitmap.iter().map(|w| w.count_ones() as u64).sum::<u64>(), dirty);
    assert!(!batch.is_empty());
    // SAFETY: no TLB or other walker in the benchmark.
    unsafe { pt.free_detached(batch.into_detached()) };
    let frames = pool::live() as f64;
    drop(pt);
    Sample { ns: ns as f64 / (len >> 12) as f64, allocs: allocs as f64, frames }
}

/// Harvest's floor.
pub fn harvest_floor(len: u64) -> Sample {
    pool::reset();
    let pt = slat_mapped_len(len, PageSize::Size4K);
    let dirty = dirty_some(&pt, len);
    let ptrs = TablePtrs::collect(&pt, 0, len);
    let mut bitmap = vec![0u64; (len >> 12).div_ceil(64) as usize];
    let (n, ns, allocs) = timed(|| floor::harvest(&ptrs, &mut bitmap));
    assert_eq!(n, dirty);
    Sample { ns: ns as f64 / (len >> 12) as f64, allocs: allocs as f64, frames: f64::NAN }
}

/// In-place recovery of `len` bytes of 4K leaves into 2M leaves through slat-mmu's real path, per
/// 2M block: a memslot faulted in as 2M leaves (host maps 2M), dirty logging on with eager split
/// (every leaf split to 4K) in setup; timed, dirty logging off, which recovers the slot in place
/// under the shared lock (`Mmu::set_dirty_logging(id, false)`: `collapse_range` per step).
pub fn recover(len: u64) -> Sample {
    pool::reset();
    let mut config = slat_mmu::MmuConfig::default();
    config.dirty_log = slat_mmu::DirtyLogMode::EagerSplit { chunk_tables: u64::MAX };
    config.recovery = slat_mmu::RecoveryPolicy::InPlace;
    let m = instant_vm(config, PageSize::Size2M, len);
    let blocks = len >> 21;
    for b in 0..blocks {
        m.handle_fault(Gpa(GIB + (b << 21)), Access::Write).expect("fault");
    }
    m.set_dirty_logging(0, true).expect("logging on");
    assert_eq!(m.with_tables(|pt| pt.counts().leaves), [len >> 12, 0, 0], "eager split");
    let (r, ns, allocs) = timed(|| m.set_dirty_logging(0, false));
    r.expect("logging off");
    assert_eq!(m.with_tables(|pt| pt.counts().leaves), [0, blocks, 0], "recovered");
    let last = m.with_tables(|pt| pt.translate(Gpa(GIB + len - 1))).expect("translates");
    assert_eq!(last.size, PageSize::Size2M);
    let frames = pool::live() as f64;
    drop(m);
    Sample { ns: ns as f64 / blocks as f64, allocs: allocs as f64, frames }
}

/// In-place recovery's floor.
pub fn recover_floor(len: u64) -> Sample {
    pool::reset();
    let pt = slat_mapped_len(len, PageSize::Size4K);
    let ptrs = TablePtrs::collect(&pt, 0, len);
    let (n, ns, allocs) = timed(|| floor::recover(&ptrs, template(1)));
    assert_eq!(n, len >> 21);
    assert_eq!(pt.translate(Gpa(len - 1)).map(|t| t.pa), Some(TIB + len - 1));
    // The floor unlinked the 4K tables without freeing them; the pool reset reclaims them.
    std::mem::forget(pt);
    Sample { ns: ns as f64 / (len >> 21) as f64, allocs: allocs as f64, frames: f64::NAN }
}

// ---- the case list -----------------------------------------------------------------------------

/// What a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// Map a shape.
    Map(usize),
    /// Unmap a shape.
    Unmap(usize),
    /// Random translations.
    Translate,
    /// Fault path.
    Fault,
    /// Eager split.
    Split,
    /// Harvest.
    Harvest,
    /// In-place recovery.
    Recover,
}

/// One case of a row.
#[derive(Debug, Clone)]
pub struct Case {
    /// Stable key, e.g. `map-4k/slat/range`.
    pub key: String,
    /// Contender name.
    pub imp: &'static str,
    /// API description.
    pub api_name: &'static str,
    /// Kind of call.
    pub api: Api,
    run: fn(Scale, &Shape, Api) -> Sample,
}

impl Case {
    /// Run once.
    pub fn run(&self, scale: Scale, shape: &Shape) -> Sample {
        (self.run)(scale, shape, self.api)
    }
}

/// One row: a name, a kind and its cases.
#[derive(Debug, Clone)]
pub struct Row {
    /// Stable key, e.g. `map-4k`.
    pub key: String,
    /// Title in the tables.
    pub title: String,
    /// Kind.
    pub kind: RowKind,
    /// The shape (for map/unmap/translate rows).
    pub shape: Shape,
    /// Cases in a fixed order.
    pub cases: Vec<Case>,
}

fn push<C: Contender>(cases: &mut Vec<Case>, row: &str, kind: RowKind) {
    let mut add = |api: Api, name: Option<&'static str>, run: fn(Scale, &Shape, Api) -> Sample| {
        if let Some(api_name) = name {
            let tag = match api {
                Api::Range => "range",
                Api::Leaf if api_name.contains("`map`") && C::NAME == "slat" => "leaf-map",
                Api::Leaf => "leaf",
                Api::Floor => "floor",
            };
            cases.push(Case { key: format!("{row}/{}/{tag}", C::NAME), imp: C::NAME, api_name, api, run });
        }
    };
    match kind {
        RowKind::Map(_) => {
            add(Api::Range, C::RANGE_MAP, |_, s, a| map::<C>(s, a));
            add(Api::Leaf, C::LEAF_MAP, |_, s, a| map::<C>(s, a));
        }
        RowKind::Unmap(_) => {
            add(Api::Range, C::RANGE_UNMAP, |_, s, a| unmap::<C>(s, a));
            add(Api::Leaf, C::LEAF_UNMAP, |_, s, a| unmap::<C>(s, a));
        }
        RowKind::Translate => add(Api::Range, C::TRANSLATE, |sc, s, _| translate::<C>(s, translations(sc))),
        _ => unreachable!(),
    }
}

fn floor_case(row: &str, api_name: &'static str, run: fn(Scale, &Shape, Api) -> Sample) -> Case {
    Case { key: format!("{row}/floor/floor"), imp: "floor", api_name, api: Api::Floor, run }
}

fn slat_case(row: &str, tag: &str, api_name: &'static str, api: Api, run: fn(Scale, &Shape, Api) -> Sample) -> Case {
    Case { key: format!("{row}/slat/{tag}"), imp: "slat", api_name, api, run }
}

fn peers(cases: &mut Vec<Case>, row: &str, kind: RowKind) {
    push::<Slat>(cases, row, kind);
    if matches!(kind, RowKind::Map(_)) {
        push::<SlatMapOne>(cases, row, kind);
    }
    push::<X86>(cases, row, kind);
    push::<Multiarch>(cases, row, kind);
    push::<Aarch64>(cases, row, kind);
    push::<Ptg>(cases, row, kind);
}

/// Every row, in report order.
pub fn rows(scale: Scale) -> Vec<Row> {
    let sh = shapes(scale);
    let tags = ["4k", "2m", "1g"];
    let mut rows = Vec::new();
    for (i, s) in sh.iter().enumerate() {
        let key = format!("map-{}", tags[i]);
        let mut cases = Vec::new();
        peers(&mut cases, &key, RowKind::Map(i));
        cases.push(floor_case(&key, "raw stores", |_, s, _| map_floor(s)));
        rows.push(Row { title: format!("map {}", s.name), key, kind: RowKind::Map(i), shape: *s, cases });
    }
    for (i, s) in sh.iter().enumerate() {
        let key = format!("unmap-{}", tags[i]);
        let mut cases = Vec::new();
        peers(&mut cases, &key, RowKind::Unmap(i));
        cases.push(floor_case(&key, "raw zero stores", |_, s, _| unmap_floor(s)));
        let title = format!("unmap {}", s.name.replace(" as ", " of "));
        rows.push(Row { title, key, kind: RowKind::Unmap(i), shape: *s, cases });
    }
    {
        let key = "translate".to_string();
        let mut cases = Vec::new();
        peers(&mut cases, &key, RowKind::Translate);
        cases.push(floor_case(&key, "one load per level", |sc, s, _| translate_floor(s, translations(sc))));
        let title = format!("translate {} random, {}", translations(scale), sh[0].name.replace(" as ", " of "));
        rows.push(Row { title, key, kind: RowKind::Translate, shape: sh[0], cases });
    }
    {
        let key = "fault-4k".to_string();
        let cases = vec![
            slat_case(&key, "1-thread", "`Mmu::handle_fault`, 1 thread", Api::Leaf, |sc, _, _| fault(fault_len(sc), 1)),
            slat_case(&key, "2-threads", "`Mmu::handle_fault`, 2 threads", Api::Leaf, |sc, _, _| {
                fault(fault_len(sc), 2)
            }),
        ];
        let title = format!("fault path, {} of 4K faults (instant host)", human(fault_len(scale)));
        rows.push(Row { title, key, kind: RowKind::Fault, shape: sh[0], cases });
    }
    let dl = human(dirty_len(scale));
    rows.push(Row {
        key: "split".into(),
        title: format!("eager split, {dl} of 2M into 4K (per 4K leaf)"),
        kind: RowKind::Split,
        shape: sh[1],
        cases: vec![
            slat_case("split", "range", "`split_range`", Api::Range, |sc, _, _| split(dirty_len(sc))),
            floor_case("split", "raw stores into preallocated tables", |sc, _, _| split_floor(dirty_len(sc))),
        ],
    });
    rows.push(Row {
        key: "harvest".into(),
        title: format!("harvest, {dl} of 4K, 1 in {DIRTY_STRIDE} dirty (per 4K page)"),
        kind: RowKind::Harvest,
        shape: sh[0],
        cases: vec![
            slat_case("harvest", "range", "`harvest_dirty`", Api::Range, |sc, _, _| harvest(dirty_len(sc))),
            floor_case("harvest", "read every leaf, clear dirty ones", |sc, _, _| harvest_floor(dirty_len(sc))),
        ],
    });
    rows.push(Row {
        key: "recover".into(),
        title: format!("in-place recovery, {dl} of 4K into 2M (per 2M block)"),
        kind: RowKind::Recover,
        shape: sh[1],
        cases: vec![
            slat_case("recover", "range", "`Mmu::set_dirty_logging(off)`: in place", Api::Range, |sc, _, _| {
                recover(dirty_len(sc))
            }),
            floor_case("recover", "read 512 leaves, store one", |sc, _, _| recover_floor(dirty_len(sc))),
        ],
    });
    rows
}

/// "64 GiB", "8 MiB".
pub fn human(bytes: u64) -> String {
    if bytes >= TIB && bytes % TIB == 0 {
        format!("{} TiB", bytes / TIB)
    } else if bytes >= GIB && bytes % GIB == 0 {
        format!("{} GiB", bytes / GIB)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}
