//! `slat run` with `host.kind = "linux"`: a scenario played over this machine's kernel, its
//! stage-2 leaf mix checked against what the kernel itself says is huge-mapped, and the clear
//! errors for what a real host cannot do.

use std::path::Path;

use crate::common::*;

fn scenario(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../slat-sim/scenarios").join(name).display().to_string()
}

/// Why a real-host run cannot happen here, if it cannot.
fn skip_reason() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().nth(1));
    if euid != Some("0") {
        return Some("not root (the run mounts a tmpfs and grows the hugetlb pool)".into());
    }
    if !Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists() {
        return Some("no 2M hugetlb pool on this kernel".into());
    }
    let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if thp.contains("[never]") {
        return Some("THP is off on this kernel".into());
    }
    None
}

#[test]
fn linux_run_leaf_mix_matches_the_kernels_huge_mappings() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping linux-host run: {why}");
        return;
    }
    let _turn = crate::probe_host::kvm_turn();
    let dir = tempfile::tempdir().unwrap();
    let out = slat_in(dir.path(), &["run", "--quiet", &scenario("linux-backings.toml"), "--json", "run.json"]);
    assert_ok(&out);
    assert!(out.stdout.contains("Host (linux)"), "summary lacks the host section:\n{}", out.stdout);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run.json")).unwrap()).unwrap();
    let host = &json["host"];
    assert_eq!(host["kind"], "linux");
    let slots = host["memslots"].as_array().expect("memslots");
    assert_eq!(slots.len(), 5);
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    for s in slots {
        let (id, stage2) = (n(&s["slot"]), s["stage2"].as_array().unwrap());
        let (leaves_2m, bytes_2m) = (n(&stage2[1]), n(&s["bytes_2m"]));
        let (pmd, hugetlb) = (n(&s["smaps_pmd_bytes"]), n(&s["smaps_hugetlb_bytes"]));
        if id == 4 {
            // The slot starts 4K into its mapping; smaps counts the whole mapping's PMDs.
            assert!(pmd >= bytes_2m && pmd - bytes_2m < 2 << 20, "slot 4: PAGEMAP_SCAN vs smaps: {s}");
            // hva = gpa + 4K: the host maps 2M, but no 2M stage-2 leaf is legal.
            assert!(bytes_2m >= 7 << 21, "slot 4 host THPs: {s}");
            assert_eq!(leaves_2m, 0, "slot 4: {s}");
        } else {
            // The kernel's two views agree on what is PMD-mapped.
            assert_eq!(bytes_2m, pmd + hugetlb, "slot {id}: PAGEMAP_SCAN huge bytes vs smaps: {s}");
            // Every page written, gpa and hva congruent: one 2M leaf per host PMD, no more.
            assert_eq!(leaves_2m << 21, bytes_2m, "slot {id}: stage-2 2M leaves vs the host's PMDs: {s}");
        }
    }
    assert_eq!(n(&slots[1]["bytes_2m"]), 0, "anonymous without MADV_HUGEPAGE stays 4K in madvise mode");
    assert_eq!(n(&json["totals"]["isolation_violations"]), 0);
    // The pool grown for the run is given back.
    let pool = std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/resv_hugepages").unwrap();
    assert_eq!(pool.trim(), "0", "hugetlb reservations left behind");
}

#[test]
fn linux_run_refuses_too_much_real_memory() {
    let out = slat(&["run", &scenario("linux-backings.toml"), "--max-real-memory", "40M"]);
    assert_input_error(&out, "linux-backings.toml:");
    for needle in ["memslot[1].size", "\"16M\"", "over the limit of 40 MiB", "--max-real-memory"] {
        assert!(out.stderr.contains(needle), "stderr lacks {needle:?}: {}", out.stderr);
    }
    // Pool pages count too, before any is reserved.
    let out =
        slat(&["run", &scenario("linux-backings.toml"), "--set", "host.hugetlb_2m=500", "--set", "host.memory=2G"]);
    assert_input_error(&out, "host.hugetlb_2m = 500: a linux-host run maps real memory");
}

#[test]
fn linux_run_refuses_events_only_the_simulator_makes() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(scenario("linux-backings.toml")).unwrap()
        + "\n[[event]]\nphase = \"run\"\nat = 10\nkind = \"compact\"\n";
    std::fs::write(dir.path().join("s.toml"), &text).unwrap();
    let line = text.lines().position(|l| l == "kind = \"compact\"").unwrap() + 1;
    let out = slat_in(dir.path(), &["run", "./s.toml"]);
    assert_input_error(&out, &format!("s.toml:{line}: event[0].kind = \"compact\": a linux-host run cannot produce"));
    // The simulated host plays the same file.
    let out = slat_in(dir.path(), &["check", "./s.toml", "--set", "host.kind=simulated"]);
    assert_ok(&out);
}

#[test]
fn linux_run_refuses_backings_and_knobs_it_cannot_honour() {
    let out = slat(&["run", &scenario("linux-backings.toml"), "--set", "memslot[1].backing=page-cache"]);
    assert_input_error(&out, "memslot[1].backing");
    let out = slat(&["run", &scenario("linux-backings.toml"), "--set", "host.fragmentation=0.5"]);
    assert_input_error(&out, "host.fragmentation");
}
