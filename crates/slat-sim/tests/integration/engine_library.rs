//! Every library scenario runs with its expectations met, the audit passing at every event;
//! runs are deterministic.

use slat_sim::engine::{run, RunOptions};
use slat_sim::scenario::{library, ScenarioSource};

/// Run a library scenario; a large one as its quick copy.
fn run_named(name: &str) -> slat_sim::report::RunReport {
    let mut src = ScenarioSource::from_library(name).unwrap();
    let entry = library().iter().find(|e| e.name == name).unwrap();
    for kv in entry.quick {
        src.set_arg(kv).unwrap_or_else(|e| panic!("{name}: quick override {kv}: {e}"));
    }
    let scenario = src.parse().unwrap();
    run(&scenario, RunOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_library_scenario_meets_its_expectations() {
    let mut failures = Vec::new();
    for entry in library() {
        let t = std::time::Instant::now();
        let r = run_named(entry.name);
        let l = r.final_leaves();
        eprintln!(
            "{:<24} {:>6.2}s accesses {:>9} leaves 4k={} 2m={} 1g={} audits={} violations={}",
            entry.name,
            t.elapsed().as_secs_f64(),
            r.totals.accesses,
            l.pages_4k,
            l.pages_2m,
            l.pages_1g,
            r.totals.audits,
            r.totals.isolation_violations
        );
        for e in &r.expectations {
            eprintln!("    {} {} (actual {})", if e.ok { "ok  " } else { "FAIL" }, e.expectation, e.actual);
        }
        for ev in r.events.iter().filter(|e| e.kind == "audit-failed") {
            eprintln!("    AUDIT {}", ev.detail);
        }
        if !r.passed() || r.mmu_stat("pages_4k").is_none() {
            failures.push(entry.name);
        }
        assert_eq!(r.totals.isolation_violations, 0, "{}", entry.name);
    }
    assert!(failures.is_empty(), "scenarios with failed expectations: {failures:?}");
}

#[test]
fn same_seed_same_report_to_the_byte() {
    let a = serde_json::to_string(&run_named("default")).unwrap();
    let b = serde_json::to_string(&run_named("default")).unwrap();
    assert_eq!(a, b);
    // A different seed changes the run.
    let mut src = ScenarioSource::from_library("default").unwrap();
    src.set("seed", "7").unwrap();
    let c = serde_json::to_string(&run(&src.parse().unwrap(), RunOptions::default()).unwrap()).unwrap();
    assert_ne!(a, c);
}

#[test]
fn progress_is_reported_and_reaches_the_total() {
    let scenario = ScenarioSource::from_library("dax-huge").unwrap().parse().unwrap();
    let mut last = (0, 0);
    let mut calls = 0;
    let mut progress = |done, total| {
        last = (done, total);
        calls += 1;
    };
    run(&scenario, RunOptions { progress: Some(&mut progress), samples: 50, ..Default::default() }).unwrap();
    assert!(calls > 10);
    assert_eq!(last.0, last.1);
    assert_eq!(last.1, scenario.total_accesses());
}

#[test]
fn bad_host_pool_is_a_validation_error_not_a_panic() {
    let mut src = ScenarioSource::from_library("hugetlbfs-1g").unwrap();
    src.set("host.hugetlb_1g", "1").unwrap();
    // An empty pool is found by validation, before the run, against the slot's line.
    let err = src.parse().unwrap_err();
    assert_eq!(err.field(), Some("memslot[0].size"), "{err}");
    assert!(err.to_string().contains("host.hugetlb_1g has 1"), "{err}");
}
