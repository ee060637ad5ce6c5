//! End-to-end tests of the built `slat` binary on the bad inputs of the newcomer trial
//! (`research/newcomer-trial.md`): each failed before its fix.

mod common;

use common::*;

/// A small scenario: 256 MiB guest on one anonymous THP slot, with `extra` TOML appended.
fn small(extra: &str) -> String {
    format!(
        r#"
name = "small"
description = "trial"
seed = 1

[host]
memory = "2G"
thp = "always"

[vm]
vcpus = 1

[[vm.guest_pages]]
gva = 0
len = "256M"
size = "2M"

[[memslot]]
id = 0
gpa = 0
size = "256M"
backing = "anonymous"
{extra}
"#
    )
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// The JSON report of `slat run FILE --json -`.
fn run_json(dir: &std::path::Path, file: &str, extra: &[&str]) -> (Out, serde_json::Value) {
    let mut args = vec!["run", file, "--json", "-", "-q"];
    args.extend_from_slice(extra);
    let out = slat_in(dir, &args);
    let v = serde_json::from_str(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, v)
}

/// A final counter of the JSON report (`totals.mmu`, `totals.hw` or `totals.host`).
fn total(v: &serde_json::Value, key: &str) -> u64 {
    for group in ["mmu", "hw", "host"] {
        if let Some(rows) = v["totals"][group].as_array() {
            if let Some(row) = rows.iter().find(|r| r[0] == key) {
                return row[1].as_u64().unwrap();
            }
        }
    }
    panic!("no counter {key} in {}", v["totals"])
}

// Item 1: accesses that exit to the VMM are not retries of one fault.

#[test]
fn writes_to_a_readonly_slot_exit_instead_of_livelocking() {
    let dir = tempfile::tempdir().unwrap();
    // A second, read-only slot mapped by the guest and written every time.
    let toml = small(
        r#"
[[vm.guest_pages]]
gva = "1G"
gpa = "1G"
len = "64M"
size = "4K"

[[memslot]]
id = 1
gpa = "1G"
size = "64M"
backing = "anonymous"
readonly = true

[[phase]]
name = "write-rom"
kind = "uniform"
gva = "1G"
len = "64M"
accesses = 5000
write_ratio = 1.0
"#,
    );
    let f = write(dir.path(), "rom.toml", &toml);
    // Two samples: the whole phase is one batch, so 65 exits come in a row.
    let (out, v) = run_json(dir.path(), &f, &["--samples", "2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(total(&v, "readonly_exits") >= 4000, "{}", v["totals"]);
}

#[test]
fn touching_memory_without_a_memslot_exits_instead_of_livelocking() {
    let dir = tempfile::tempdir().unwrap();
    // The guest maps gva 1G onto gpa 1G, where no memslot is: every access is an MMIO exit.
    let toml = small(
        r#"
[[vm.guest_pages]]
gva = "1G"
gpa = "1G"
len = "2M"
size = "2M"

[[phase]]
name = "mmio"
kind = "sequential"
gva = "1G"
len = "2M"
step = "4K"
accesses = 512
"#,
    );
    let f = write(dir.path(), "mmio.toml", &toml);
    let (out, v) = run_json(dir.path(), &f, &["--samples", "2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(total(&v, "mmio_exits"), 512, "{}", v["totals"]);
}

#[test]
fn harvest_after_a_logged_slot_moved_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let toml = small(
        r#"
[[vm.guest_pages]]
gva = "1G"
gpa = "1G"
len = "64M"
size = "4K"

[[memslot]]
id = 1
gpa = "1G"
size = "64M"
backing = "anonymous"

[[phase]]
name = "write"
kind = "sequential"
gva = "1G"
len = "64M"
step = "4K"
accesses = 1000
write_ratio = 1.0

[[phase]]
name = "after"
kind = "sequential"
gva = 0
len = "1M"
step = "4K"
accesses = 10

[[event]]
phase = "write"
at = 0
kind = "dirty-log-on"
slot = 1

[[event]]
phase = "after"
at = 0
kind = "memslot-move"
slot = 1
gpa = "2G"

[[event]]
phase = "after"
at = 5
kind = "harvest"
slot = 1
"#,
    );
    let f = write(dir.path(), "move.toml", &toml);
    let (out, v) = run_json(dir.path(), &f, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(total(&v, "dirty_lost"), 0, "{}", v["totals"]);
}

// Item 2: the last sample is not taken over an empty interval.

#[test]
fn rate_series_do_not_end_in_a_false_zero() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["fragmented-khugepaged", "balloon"] {
        let (out, v) = run_json(dir.path(), name, &[]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let samples = v["samples"].as_array().unwrap();
        let n = samples.len();
        let rate = |i: usize| samples[i]["tlb_misses_per_1k"].as_f64().unwrap();
        assert!(rate(n - 2) > 0.0, "{name}: {}", samples[n - 2]);
        assert!(rate(n - 1) > 0.0, "{name}: the last sample ends in 0: {}", samples[n - 1]);
        assert!(samples[n - 1]["walk_refs_per_access"].as_f64().unwrap() > 0.0, "{name}");
    }
}
