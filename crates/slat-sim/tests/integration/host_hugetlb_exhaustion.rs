//! A hugetlbfs pool exhausted mid-run: a `hugetlb-resize` event shrinks the pool (Linux's
//! `nr_hugepages`: only free pages go, pages in use stay), and the guest then touches hugetlbfs
//! memory it never touched before. Linux fails that fault with `VM_FAULT_SIGBUS`, KVM's fault
//! returns `-EFAULT` and `KVM_RUN` exits to the VMM: the simulator reports it clearly and, as
//! `vm.on_sigbus` asks, stops with an error naming the memslot, the address and the pool, or
//! drops the access and goes on (and a later fault succeeds once the pool grows again).

use slat_sim::engine::{run, RunOptions, SimError};
use slat_sim::report::RunReport;
use slat_sim::scenario::{Scenario, ScenarioSource};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// Slot 1: 64 MiB of hugetlbfs-2m at 1 GiB, over a pool of 32 pages. "warm" writes its first
/// 32 MiB (16 pages); `resize_to` then sets the pool; "rest" writes all 64 MiB; "regrow" sets the
/// pool back to 32 pages and writes all of it again.
fn scenario(resize_to: &str, on_sigbus: &str) -> Scenario {
    let text = format!(
        r#"name = "hugetlb-exhaustion"
description = "a hugetlbfs pool shrunk under a running guest"
seed = 3

[host]
memory = "1G"
hugetlb_2m = 32

[vm]
on_sigbus = "{on_sigbus}"

[[memslot]]
id = 0
gpa = 0
size = "16M"
backing = "anonymous"

[[memslot]]
id = 1
gpa = "1G"
size = "64M"
backing = "hugetlbfs-2m"

[[phase]]
name = "warm"
kind = "sequential"
gva = "1G"
len = "32M"
step = "4K"
accesses = 8192
write_ratio = 1.0

[[phase]]
name = "rest"
kind = "sequential"
gva = "1G"
len = "64M"
step = "4K"
accesses = 16384
write_ratio = 1.0

[[phase]]
name = "regrow"
kind = "sequential"
gva = "1G"
len = "64M"
step = "4K"
accesses = 16384
write_ratio = 1.0

[[event]]
phase = "rest"
at = 0
kind = "hugetlb-resize"
unit = "2M"
amount = "{resize_to}"

[[event]]
phase = "regrow"
at = 0
kind = "hugetlb-resize"
unit = "2M"
amount = "64M"
"#
    );
    ScenarioSource::from_text("hugetlb-exhaustion.toml", &text).parse().unwrap_or_else(|e| panic!("{e}"))
}

fn engine_counter(r: &RunReport, name: &str) -> u64 {
    r.totals.hw.iter().find(|(n, _)| n == name).map(|(_, v)| *v).unwrap_or_else(|| panic!("no counter {name}"))
}

#[test]
fn a_fault_on_an_emptied_pool_stops_the_run_with_a_clear_error() {
    // 40 MiB = 20 pages: of the 16 free pages 12 go, 4 stay; the 21st page of the slot has none.
    let err = run(&scenario("40M", "stop"), RunOptions::default()).expect_err("the pool is empty");
    match &err {
        SimError::HostOutOfMemory { slot, gpa, kind, hint, location } => {
            assert_eq!(*slot, 1);
            assert_eq!(*gpa, GIB + 40 * MIB, "the first page past the 20 the pool still had");
            assert_eq!(*kind, "hugetlbfs");
            assert!(location.contains("hugetlb-exhaustion.toml") && location.contains("memslot[1]"), "{location}");
            assert!(hint.contains("2M pages is empty (20 pages, all in use)"), "{hint}");
            assert!(hint.contains("SIGBUS") && hint.contains("vm.on_sigbus"), "{hint}");
        }
        other => panic!("expected HostOutOfMemory, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("memslot 1 (hugetlbfs) at gpa 0x42800000"), "{msg}");
}

#[test]
fn a_vmm_that_survives_the_sigbus_goes_on_and_faults_succeed_once_the_pool_grows() {
    let r = run(&scenario("40M", "continue"), RunOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    // Pages 21..32 of the slot (12 x 512 accesses) found the pool empty in "rest"; none in
    // "regrow", after the pool grew back to 32 pages.
    assert_eq!(engine_counter(&r, "sigbus_exits"), 12 * 512);
    assert_eq!(r.totals.isolation_violations, 0);
    assert_eq!(engine_counter(&r, "audit_failures"), 0);
    let resize: Vec<&str> = r.events.iter().filter(|e| e.kind == "hugetlb-resize").map(|e| e.detail.as_str()).collect();
    assert_eq!(resize.len(), 2, "{:?}", r.events);
    assert!(resize[0].contains("20 asked, 20 now (4 free, 16 in use)"), "{}", resize[0]);
    assert!(resize[1].contains("32 asked, 32 now (12 free, 20 in use)"), "{}", resize[1]);
    // Every 2 MiB of the slot is backed and mapped in the end (2M leaves over hugetlbfs pages).
    assert!(r.final_leaves().pages_2m >= 32, "{:?}", r.final_leaves());
}

#[test]
fn shrinking_below_the_pages_in_use_keeps_them_as_linux_does() {
    // nr_hugepages = 0 while 16 pages back guest memory: the pool keeps exactly those, so the
    // first untouched page of "rest" (the 17th) already finds it empty.
    let r = run(&scenario("0", "continue"), RunOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let resize = r.events.iter().find(|e| e.kind == "hugetlb-resize").unwrap();
    assert!(resize.detail.contains("0 asked, 16 now (0 free, 16 in use)"), "{}", resize.detail);
    assert_eq!(engine_counter(&r, "sigbus_exits"), 16 * 512);
    match run(&scenario("0", "stop"), RunOptions::default()) {
        Err(SimError::HostOutOfMemory { gpa, .. }) => assert_eq!(gpa, GIB + 32 * MIB),
        other => panic!("expected HostOutOfMemory, got {other:?}"),
    }
}

#[test]
fn resize_events_are_validated() {
    let text = |params: &str| {
        format!(
            r#"name = "x"
description = "x"
seed = 1
[host]
memory = "1G"
[[memslot]]
id = 0
gpa = 0
size = "16M"
backing = "anonymous"
[[phase]]
name = "p"
kind = "uniform"
gva = 0
len = "16M"
accesses = 10
[[event]]
phase = "p"
kind = "hugetlb-resize"
{params}"#
        )
    };
    let bad = |params: &str| {
        ScenarioSource::from_text("bad.toml", text(params)).parse().map(|_| ()).expect_err(params).to_string()
    };
    let e = bad("unit = \"4K\"\namount = \"4M\"\n");
    assert!(e.contains("event[0].unit") && e.contains("\"2M\" or \"1G\""), "{e}");
    let e = bad("unit = \"2M\"\namount = \"3M\"\n");
    assert!(e.contains("event[0].amount") && e.contains("multiple of the unit \"2M\""), "{e}");
    let e = bad("unit = \"2M\"\n");
    assert!(e.contains("need amount"), "{e}");
    let e = bad("unit = \"2M\"\namount = \"2M\"\nslot = 0\n");
    assert!(e.contains("not a parameter"), "{e}");
    let ok = text("unit = \"1G\"\namount = \"0\"\n");
    ScenarioSource::from_text("ok.toml", ok).parse().unwrap_or_else(|e| panic!("{e}"));
}
