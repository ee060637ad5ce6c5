//! The library's `dirty-log-perf` scenario (KVM's `dirty_log_perf_test -s anonymous_hugetlb_2mb
//! -v 64 -e -b 4g`: 256 GiB of guest memory on 2 MiB hugetlbfs) under both recovery policies:
//! the wall time of disabling dirty logging (the MMU's recovery, without the audit after it),
//! the faults after it, flushes, leaves, and the simulator's peak heap.
//!
//! Run: `cargo bench -p slat-sim --bench dirty_log_perf` (`-- quick` for the 4 GiB copy the
//! tests use).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod common;

use common::{Counting, LIVE, PEAK};
use slat_sim::engine::{run, RunOptions};
use slat_sim::scenario::{library, Action, Event, ScenarioSource};

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let entry = library().iter().find(|e| e.name == "dirty-log-perf").expect("dirty-log-perf is in the library");
    println!(
        "{:<9} {:>9} {:>10} {:>12} {:>8} {:>10} {:>10} {:>9} {:>9}",
        "recover", "run", "recovery", "faults after", "faults", "flushes", "2M leaves", "peak 4K", "peak heap"
    );
    for policy in ["zap", "in-place"] {
        let mut src = ScenarioSource::from_library(entry.name).expect("library scenario");
        if quick {
            for kv in entry.quick {
                src.set_arg(kv).expect("quick override");
            }
        }
        src.set("policy.recover", policy).expect("policy");
        let scenario = src.parse().expect("scenario parses");
        let mut recovery = Duration::ZERO;
        let mut on_event = |e: &Event, t: Duration| {
            if matches!(e.action, Action::DirtyLogOff { .. }) {
                recovery += t;
            }
        };
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let t = Instant::now();
        let r = run(&scenario, RunOptions { event_time: Some(&mut on_event), ..Default::default() }).expect("run");
        let wall = t.elapsed();
        let heap = PEAK.load(Ordering::Relaxed) - before;
        let after = r.phases.last().map_or(0, |p| p.faults);
        let peak_4k = r.phases.iter().map(|p| p.peak_4k).max().unwrap_or(0);
        let last = r.samples.last().cloned().unwrap_or_default();
        println!(
            "{policy:<9} {:>8.1}s {:>9.3}s {after:>12} {:>8} {:>10} {:>10} {peak_4k:>9} {:>6} MiB",
            wall.as_secs_f64(),
            recovery.as_secs_f64(),
            last.faults,
            last.flushes,
            r.final_leaves().pages_2m,
            heap >> 20
        );
        assert!(r.passed(), "{policy}: expectations failed");
    }
}
