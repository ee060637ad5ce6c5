//! The bench at a tiny size, in `cargo test`: every row runs (each case checks its own result),
//! and every contender translates exactly as slat does after map and after unmap.

use std::sync::Mutex;

use slat_bench::contender::Contender;
use slat_bench::peers::aarch64::Aarch64;
use slat_bench::peers::multiarch::Multiarch;
use slat_bench::peers::ptg::Ptg;
use slat_bench::peers::slat::Slat;
use slat_bench::peers::x86::X86;
use slat_bench::pool;
use slat_bench::run::{self, Scale, Shape};

/// The pool is process-wide and reset by every case: one test at a time.
static POOL: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    let g = POOL.lock().unwrap_or_else(|e| e.into_inner());
    pool::init(run::pool_frames(Scale::Tiny));
    g
}

#[test]
fn every_row_runs_at_tiny_size() {
    let _g = lock();
    for row in run::rows(Scale::Tiny) {
        assert!(!row.cases.is_empty(), "{} has no cases", row.key);
        for c in &row.cases {
            let s = c.run(Scale::Tiny, &row.shape);
            assert!(s.ns.is_finite() && s.ns >= 0.0, "{}: {} ns/op", c.key, s.ns);
        }
    }
}

/// Addresses probed: the first and last byte of every leaf, and a few past the end.
fn probes(s: &Shape) -> Vec<u64> {
    let step = s.size.bytes();
    let mut v: Vec<u64> = (0..s.leaves()).flat_map(|i| [i * step, i * step + step - 1]).collect();
    v.extend([s.len, s.len + step, s.len + 123 * 4096]);
    v
}

fn same_as_slat<C: Contender>(s: &Shape, per_leaf: bool) {
    pool::reset();
    let mut slat = Slat::new();
    slat.map_range(0, s.len, s.pa_offset, s.size);
    let mut c = C::new();
    if per_leaf || C::RANGE_MAP.is_none() {
        c.map_leaves(0, s.leaves(), s.pa_offset, s.size);
    } else {
        c.map_range(0, s.len, s.pa_offset, s.size);
    }
    for gpa in probes(s) {
        assert_eq!(c.translate(gpa), slat.translate(gpa), "{} after map of {}: {gpa:#x}", C::NAME, s.name);
    }
    slat.unmap_range(0, s.len, s.size);
    if per_leaf || C::RANGE_UNMAP.is_none() {
        c.unmap_leaves(0, s.leaves(), s.size);
    } else {
        c.unmap_range(0, s.len, s.size);
    }
    for gpa in probes(s) {
        assert_eq!(c.translate(gpa), None, "{} after unmap of {}: {gpa:#x}", C::NAME, s.name);
        assert_eq!(slat.translate(gpa), None, "slat after unmap of {}: {gpa:#x}", s.name);
    }
}

#[test]
fn every_contender_translates_as_slat_does() {
    let _g = lock();
    for s in run::shapes(Scale::Tiny) {
        for per_leaf in [false, true] {
            same_as_slat::<X86>(&s, per_leaf);
            same_as_slat::<Multiarch>(&s, per_leaf);
            same_as_slat::<Aarch64>(&s, per_leaf);
            same_as_slat::<Ptg>(&s, per_leaf);
            same_as_slat::<Slat>(&s, per_leaf);
        }
    }
}
