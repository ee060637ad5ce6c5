//! Simulator memory per guest 4 KiB page: the figure behind
//! `slat_sim::scenario::resources::BYTES_PER_4K_PAGE`.
//!
//! A counting global allocator records the peak heap of whole runs. Each shape runs at two guest
//! sizes; the difference of the peaks divided by the difference of the 4 KiB pages mapped is the
//! marginal cost of one page (fixed costs such as the TLB arrays cancel out). Shapes:
//!
//! - `4k-host`: a host without THP; every guest page is a 4 KiB folio, a host PTE and a 4 KiB
//!   stage-2 leaf (the most the simulator spends on a page).
//! - `thp-split`: THP-backed guest memory written once, then dirty logging splits every 2 MiB
//!   stage-2 leaf into 4 KiB leaves by writes (host folios stay 2 MiB).
//! - `hugetlb-split`: the same on a 2 MiB hugetlbfs pool (KVM's `dirty_log_perf_test -s
//!   anonymous_hugetlb_2mb`).
//!
//! Run: `cargo bench -p slat-sim --bench memory` (`-- 4096` for 4 GiB as the larger size).

use std::sync::atomic::Ordering;
use std::time::Instant;

mod common;

use common::{Counting, LIVE, PEAK};
use slat_sim::engine::{run, RunOptions};
use slat_sim::scenario::ScenarioSource;
use slat_sim::scenario::BYTES_PER_4K_PAGE;

#[global_allocator]
static ALLOC: Counting = Counting;

/// A scenario of `mib` MiB of guest memory in the given shape.
fn scenario(shape: &str, mib: u64) -> String {
    let host_mib = mib * 2 + 1024;
    let pages = mib * 256;
    let (thp, backing, hugetlb, split) = match shape {
        "4k-host" => ("never", "anonymous", 0, false),
        "thp-split" => ("always", "anonymous", 0, true),
        _ => ("never", "hugetlbfs-2m", mib / 2, true),
    };
    let mut s = format!(
        r#"
name = "memory"
description = "simulator memory per page"
seed = 1
[host]
memory = "{host_mib}M"
thp = "{thp}"
hugetlb_2m = {hugetlb}
[vm]
format = "ept4"
vcpus = 1
[[vm.guest_pages]]
gva = 0
len = "{mib}M"
size = "2M"
[[memslot]]
id = 0
gpa = 0
size = "{mib}M"
backing = "{backing}"
[policy]
dirty_log = "split-on-fault"
[[phase]]
name = "touch"
kind = "sequential"
gva = 0
len = "{mib}M"
step = "4K"
accesses = {pages}
write_ratio = 1.0
"#
    );
    if split {
        s.push_str(&format!(
            r#"
[[phase]]
name = "log"
kind = "sequential"
gva = 0
len = "{mib}M"
step = "4K"
accesses = {pages}
write_ratio = 1.0
[[event]]
phase = "log"
at = 0
kind = "dirty-log-on"
slot = 0
"#
        ));
    }
    s
}

/// Peak heap bytes of one run, and the 4 KiB leaves at its end.
fn peak(shape: &str, mib: u64) -> (usize, u64, f64) {
    let text = scenario(shape, mib);
    let sc = ScenarioSource::from_text("memory.toml", text).parse().expect("scenario parses");
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    let before = LIVE.load(Ordering::Relaxed);
    let t = Instant::now();
    let report = run(&sc, RunOptions::default()).expect("run");
    if std::env::var_os("SLAT_MEMORY_DEBUG").is_some() {
        eprintln!(
            "{shape} {mib} MiB: peak {} live after {}",
            PEAK.load(Ordering::Relaxed) - before,
            LIVE.load(Ordering::Relaxed) - before
        );
    }
    let secs = t.elapsed().as_secs_f64();
    let p = PEAK.load(Ordering::Relaxed) - before;
    let leaves = report.final_leaves().pages_4k;
    drop(report);
    (p, leaves, secs)
}

fn main() {
    let large: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1024);
    let small = large / 4;
    println!("simulator memory per guest 4 KiB page (estimate used up front: {BYTES_PER_4K_PAGE} bytes)");
    println!(
        "{:<14} {:>12} {:>12} {:>10} {:>10} {:>9}",
        "shape", "peak small", "peak large", "4K leaves", "bytes/4K", "time"
    );
    for shape in ["4k-host", "thp-split", "hugetlb-split"] {
        let (p1, l1, _) = peak(shape, small);
        let (p2, l2, secs) = peak(shape, large);
        let per = (p2 as f64 - p1 as f64) / (l2 as f64 - l1 as f64);
        println!("{shape:<14} {:>10} M {:>10} M {l2:>10} {per:>10.1} {secs:>8.2}s", p1 >> 20, p2 >> 20);
    }
}
