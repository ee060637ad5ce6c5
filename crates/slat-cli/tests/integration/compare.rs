//! `slat compare`: variants side by side, JSON and HTML.

use crate::common::*;

fn args_with<'a>(base: &[&'a str], extra: &'a [String]) -> Vec<&'a str> {
    let mut v = base.to_vec();
    v.extend(extra.iter().map(String::as_str));
    v
}

#[test]
fn compares_recovery_policies_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let small = shrink("default", 16);
    let base = [
        "compare",
        "default",
        "--quiet",
        "--vary",
        "policy.recover=zap,in-place",
        "--json",
        "cmp.json",
        "--report",
        "cmp.html",
    ];
    let out = slat_in(dir.path(), &args_with(&base, &small));
    assert!(out.code == 0 || out.code == 1, "exit {}: {}", out.code, out.stderr);
    assert_no_panic(&out);
    let s = &out.stdout;
    for needle in [
        "slat compare · default",
        "columns: policy.recover",
        "zap",
        "in-place",
        "4K leaves (final)",
        "2M leaves (final)",
        "1G leaves (final)",
        "peak 4K leaves",
        "faults",
        "retries",
        "splits",
        "recoveries",
        "flushes",
        "TLB misses / 1k accesses",
        "walk refs / access",
        "page-table memory",
        "expectations",
        "result: ",
    ] {
        assert!(s.contains(needle), "comparison lacks {needle:?}:\n{s}");
    }
    // Both columns appear on the header line, in --vary order.
    let header = s.lines().find(|l| l.contains("zap") && l.contains("in-place")).expect("header line");
    assert!(header.find("zap") < header.find("in-place"));

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("cmp.json")).unwrap()).unwrap();
    assert_eq!(v["schema"], 1);
    assert_eq!(v["keys"], serde_json::json!(["policy.recover"]));
    let variants = v["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 2);
    assert_eq!(variants[0]["label"], "zap");
    assert_eq!(variants[1]["label"], "in-place");
    // Identical inputs: same seed and same number of accesses.
    assert_eq!(variants[0]["report"]["seed"], variants[1]["report"]["seed"]);
    let guest_accesses =
        |v: &serde_json::Value| v["report"]["samples"].as_array().unwrap().last().unwrap()["access"].clone();
    assert_eq!(guest_accesses(&variants[0]), guest_accesses(&variants[1]));
    let phase_lengths = |v: &serde_json::Value| -> Vec<(String, u64)> {
        v["report"]["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap().to_string(), p["accesses"].as_u64().unwrap()))
            .collect()
    };
    assert_eq!(phase_lengths(&variants[0]), phase_lengths(&variants[1]));

    let html = std::fs::read_to_string(dir.path().join("cmp.html")).unwrap();
    let charts = check_wellformed(&html);
    assert!(charts >= 4, "{charts} charts");
    assert!(html.contains("Side by side"));
    // Both variants are overlaid on the charts (one legend entry each).
    let first = svg_elements(&html)[0];
    assert!(first.contains(">zap</text>") && first.contains(">in-place</text>"), "legend lacks variants");
}

#[test]
fn several_vary_give_the_cartesian_product() {
    let small = shrink("default", 256);
    let out = slat(&args_with(
        &["compare", "--quiet", "--json", "-", "--vary", "policy.recover=zap,in-place", "--vary", "vm.vcpus=1,2"],
        &small,
    ));
    assert!(out.code == 0 || out.code == 1, "exit {}: {}", out.code, out.stderr);
    assert_no_panic(&out);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("stdout is only JSON");
    let labels: Vec<&str> = v["variants"].as_array().unwrap().iter().map(|x| x["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["zap / 1", "zap / 2", "in-place / 1", "in-place / 2"]);
    assert_eq!(v["keys"], serde_json::json!(["policy.recover", "vm.vcpus"]));
    assert!(v["common"].as_array().unwrap().iter().any(|s| s.as_str().unwrap().starts_with("phase[0].accesses=")));
}

/// Twelve variants in an 80- or 100-column terminal: no line is wider than the terminal, every
/// variant's values show, and the variants come in groups of columns instead of one wide table.
#[test]
fn many_variants_fit_the_terminal_width() {
    let small = shrink("default", 256);
    let mut args = vec![
        "compare",
        "default",
        "--quiet",
        "--vary",
        "policy.recover=zap,in-place",
        "--vary",
        "policy.dirty_log=write-protect,split-on-fault,eager-split",
        "--vary",
        "vm.vcpus=1,2",
    ];
    args.extend(small.iter().map(String::as_str));
    for cols in [80usize, 100] {
        let c = cols.to_string();
        let out = slat_env(&args, &[("COLUMNS", Some(&c)), ("NO_COLOR", Some("1"))]);
        assert!(out.code == 0 || out.code == 1, "exit {}: {}", out.code, out.stderr);
        assert_no_panic(&out);
        for line in out.stdout.lines() {
            assert!(line.chars().count() <= cols, "{cols} columns: {line:?} is {} wide", line.chars().count());
        }
        for value in ["zap", "in-place", "write-protect", "split-on-fault", "eager-split"] {
            assert!(out.stdout.contains(value), "{value} missing:\n{}", out.stdout);
        }
        assert!(out.stdout.contains("12 variants"), "{}", out.stdout);
        assert!(out.stdout.contains("variants 1–"), "grouped:\n{}", out.stdout);
        // Every variant has its column: 12 expectation cells in all.
        let verdicts: usize = out
            .stdout
            .lines()
            .filter(|l| l.trim_start().starts_with("expectations"))
            .map(|l| l.matches("PASS ").count() + l.matches("FAIL ").count())
            .sum();
        assert_eq!(verdicts, 12, "{}", out.stdout);
    }
}
