//! Every built-in scenario parses, validates, builds its workload, and stays small enough for a
//! fast run; the variants their comments suggest are valid too.

use slat_sim::scenario::{library, Backing, Format, ScenarioSource};

#[test]
fn every_library_scenario_parses_and_validates() {
    assert!(library().len() >= 10);
    assert_eq!(library()[0].name, "default");
    for entry in library() {
        let source = ScenarioSource::from_library(entry.name).expect("listed scenarios load");
        assert_eq!(source.file(), format!("{}.toml", entry.name));
        let scenario = source.parse().unwrap_or_else(|e| panic!("{}: {e}", entry.name));
        assert_eq!(scenario.name, entry.name, "the file's name key matches the library name");
        assert_eq!(scenario.description, entry.description, "{}: descriptions agree", entry.name);
        assert!(!scenario.checks.is_empty(), "{}: a scenario states what it should show", entry.name);
        let workload = scenario.workload().unwrap_or_else(|e| panic!("{}: {e}", entry.name));
        assert_eq!(workload.total_accesses(), scenario.total_accesses());
    }
}

/// A large scenario's quick copy tells the same story: the same phases and events, and at
/// full size it is what its name promises (dirty-log-perf: 64 vCPUs x 4 GiB, 2 MiB hugetlbfs).
#[test]
fn large_scenarios_keep_their_story_in_the_quick_copy() {
    for entry in library().iter().filter(|e| e.large) {
        let full = ScenarioSource::from_library(entry.name).unwrap().parse().unwrap();
        let mut src = ScenarioSource::from_library(entry.name).unwrap();
        for kv in entry.quick {
            src.set_arg(kv).unwrap();
        }
        let quick = src.parse().unwrap();
        let names = |s: &slat_sim::scenario::Scenario| s.phases.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&full), names(&quick), "{}", entry.name);
        assert_eq!(full.events.len(), quick.events.len(), "{}", entry.name);
        assert!(quick.estimate().memory() < full.estimate().memory() / 8, "{}", entry.name);
    }
    let dlp = ScenarioSource::from_library("dirty-log-perf").unwrap().parse().unwrap();
    assert_eq!(dlp.vm.vcpus, 64);
    assert_eq!(dlp.memslots[0].size.get(), 256 << 30);
    assert_eq!(dlp.memslots[0].backing, Backing::Hugetlbfs2M);
}

#[test]
fn library_names_are_unique() {
    let mut names: Vec<_> = library().iter().map(|e| e.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), library().len());
}

#[test]
fn library_scenarios_are_small_enough_for_a_fast_run() {
    for entry in library() {
        let mut src = ScenarioSource::from_library(entry.name).unwrap();
        assert_eq!(entry.large, !entry.quick.is_empty(), "{}: a large scenario has a quick copy", entry.name);
        for kv in entry.quick {
            src.set_arg(kv).unwrap_or_else(|e| panic!("{}: {kv}: {e}", entry.name));
        }
        let s = src.parse().unwrap();
        let guest: u64 = s.memslots.iter().map(|m| m.size.get()).sum();
        assert!((256 << 20..=8 << 30).contains(&guest), "{}: guest memory {guest:#x}", s.name);
        assert!((100_000..=5_000_000).contains(&s.total_accesses()), "{}: {} accesses", s.name, s.total_accesses());
    }
}

#[test]
fn there_is_a_scenario_per_seed_thread() {
    let get = |name: &str| ScenarioSource::from_library(name).unwrap().parse().unwrap();
    // 000/003: DAX with 2M and 1G leaves.
    let dax = get("dax-huge");
    assert!(dax.memslots.iter().any(|m| m.backing == Backing::Dax));
    // 001: arm64 stage-2 on THP and hugetlbfs with a misaligned slot.
    let arm = get("arm64-misaligned");
    assert_eq!(arm.vm.format, Format::Arm64L1);
    assert!(arm.memslots.iter().any(|m| m.backing == Backing::Hugetlbfs2M && m.hva_offset.get() != 0));
    assert!(arm.memslots.iter().any(|m| m.backing == Backing::Anonymous));
    // 002: shmem THP shared with a second process.
    let shmem = get("shmem-thp-shared");
    assert!(shmem.events.iter().any(|e| e.action.kind().name() == "share-pte-map"));
    // 004: dirty logging then zap recovery.
    let lazy = get("lazy-collapse");
    assert_eq!(lazy.policy.recover.name(), "zap");
    for name in ["fragmented-khugepaged", "hugetlbfs-1g", "balloon", "ksm", "nx-huge-pages", "default"] {
        get(name);
    }
}

#[test]
fn suggested_variants_are_valid() {
    for (name, key, values) in [
        ("default", "policy.recover", &["zap", "in-place"][..]),
        ("lazy-collapse", "policy.recover", &["zap", "in-place"]),
        ("lazy-collapse", "policy.dirty_log", &["write-protect", "split-on-fault", "eager-split", "hardware-dirty"]),
        ("dax-huge", "host.dax_align", &["2M", "1G"]),
        ("shmem-thp-shared", "host.shmem_huge", &["never", "always", "within_size", "advise"]),
        ("hugetlbfs-1g", "policy.max_leaf", &["2M", "1G"]),
        ("balloon", "event[0].unit", &["4K", "2M"]),
        ("nx-huge-pages", "policy.nx_huge_pages", &["true", "false"]),
    ] {
        let source = ScenarioSource::from_library(name).unwrap();
        let variants = source.vary(key, values).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(variants.len(), values.len());
        for v in variants {
            v.parse().unwrap_or_else(|e| panic!("{}: {e}", v.label()));
        }
    }
}
