//! `slat probe-host`: KVM's leaves beside slat's on a micro-VM; a clear error without /dev/kvm
//! access.

use crate::common::*;

use std::process::{Command, Stdio};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")))
}

/// The micro-VM tests of this module run one at a time: one of them compacts memory (a refused
/// 1G pool) or flips the shmem THP knob, and a compaction migrating a running probe's THPs
/// zaps KVM's leaves but not slat's (its host gets no notifier), a difference of the host's.
static KVM_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// (The linux-host run tests take the same turn: they grow the hugetlb pool and need their THPs
/// left in place.)
pub(crate) fn kvm_turn() -> std::sync::MutexGuard<'static, ()> {
    KVM_TESTS.lock().unwrap_or_else(|p| p.into_inner())
}

fn kvm_usable(test: &str) -> bool {
    let ok = is_root() && std::fs::File::options().read(true).write(true).open("/dev/kvm").is_ok();
    if !ok {
        eprintln!("SKIP {test}: needs root and a usable /dev/kvm");
    }
    ok
}

#[test]
fn anon_thp_json_agrees() {
    let _turn = kvm_turn();
    if !kvm_usable("anon_thp_json_agrees") {
        return;
    }
    let o = slat(&["probe-host", "--size", "8M", "--json"]);
    assert_ok(&o);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["kvm"], v["slat"], "{}", o.stdout);
    assert_eq!(v["kvm"]["pages_2m"], 4, "{}", o.stdout);
    assert_eq!(v["kvm"]["pages_4k"], 8, "the code page and its prefetched group: {}", o.stdout);
}

#[test]
fn memfd_sparse_text_shows_reasons() {
    let _turn = kvm_turn();
    if !kvm_usable("memfd_sparse_text_shows_reasons") {
        return;
    }
    let o = slat(&["probe-host", "--backing", "anon-4k", "--size", "4M", "--stride", "64K"]);
    assert_ok(&o);
    assert!(o.stdout.contains("KVM and slat agree"), "{}", o.stdout);
    assert!(o.stdout.contains("host maps it with 4K PTEs"), "{}", o.stdout);
}

#[test]
fn bad_backing_and_size() {
    let o = slat(&["probe-host", "--backing", "floppy"]);
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.contains("anon-thp"), "{o:?}");
    let o = slat(&["probe-host", "--size", "3M"]);
    assert_input_error(&o, "multiple of 2M");
}

/// As an unprivileged user (/dev/kvm is 0600 root here): one clear error line, exit 2.
#[test]
fn no_kvm_access_is_a_clear_error() {
    if !is_root() || !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("SKIP no_kvm_access_is_a_clear_error: needs root (to drop to nobody) and /dev/kvm");
        return;
    }
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups", env!("CARGO_BIN_EXE_slat")])
        .args(["probe-host", "--size", "2M"])
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .expect("setpriv slat");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(0) {
        eprintln!("SKIP no_kvm_access_is_a_clear_error: nobody may open /dev/kvm on this host");
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/dev/kvm"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn shmem_enabled() -> String {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled").unwrap_or_default()
}

/// Seed 002 from the command line: a memfd with MADV_HUGEPAGE under `shmem_enabled=advise`
/// (set for the run and put back): 2M leaves in KVM and slat; the knob is as it was after.
#[test]
fn shmem_advise_backing_agrees_and_restores_the_knob() {
    let _turn = kvm_turn();
    if !kvm_usable("shmem_advise_backing_agrees_and_restores_the_knob") {
        return;
    }
    let before = shmem_enabled();
    let o = slat(&["probe-host", "--backing", "memfd-shmem-advise", "--size", "8M", "--json"]);
    assert_ok(&o);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["backing"], "memfd-shmem-advise");
    assert_eq!(v["kvm"], v["slat"], "{}", o.stdout);
    assert_eq!(v["kvm"]["pages_2m"], 4, "{}", o.stdout);
    assert_eq!(shmem_enabled(), before, "shmem_enabled restored");
}

/// A regular file in TMPDIR (a disk file system here): 4K without advice, 2M with
/// MADV_HUGEPAGE (PMD-order page-cache folios); KVM and slat agree on both.
#[test]
fn regular_file_backings_agree() {
    let _turn = kvm_turn();
    if !kvm_usable("regular_file_backings_agree") {
        return;
    }
    for (backing, pages_2m) in [("regular-file", 0), ("regular-file-hugepage", 4)] {
        let o = slat(&["probe-host", "--backing", backing, "--size", "8M", "--json"]);
        if o.code == 2 && o.stderr.contains("tmpfs") {
            eprintln!("SKIP regular_file_backings_agree: {}", o.stderr.trim());
            return;
        }
        assert_ok(&o);
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(v["kvm"], v["slat"], "{backing}: {}", o.stdout);
        assert_eq!(v["kvm"]["pages_2m"], pages_2m, "{backing}: {}", o.stdout);
    }
}

/// `--dirty-log manual`: KVM_CLEAR_DIRTY_LOG of the first quarter; every round's bitmap and
/// leaves agree, and the figures are the ones the guest's writes imply.
#[test]
fn manual_dirty_log_rounds_agree() {
    let _turn = kvm_turn();
    if !kvm_usable("manual_dirty_log_rounds_agree") {
        return;
    }
    let o = slat(&["probe-host", "--size", "8M", "--dirty-log", "manual", "--json"]);
    assert_ok(&o);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let d = &v["dirty"];
    assert_eq!(d["protect"], "manual", "{}", o.stdout);
    let rounds = d["rounds"].as_array().unwrap();
    let dirty: Vec<(u64, u64)> =
        rounds.iter().map(|r| (r["kvm_dirty"].as_u64().unwrap(), r["slat_dirty"].as_u64().unwrap())).collect();
    // 8M = 2048 pages. Logging on: 0. Every 16th page of the first half: 64. Clear the first
    // quarter (512 pages, 32 of them set): 32 left. Every 8th page of the first half: 128 pages
    // (32 of them still set from before, 96 new or cleared), a manual GET clears nothing: 128.
    assert_eq!(dirty, [(0, 0), (64, 64), (32, 32), (128, 128)], "{}", o.stdout);
    assert!(rounds.iter().all(|r| r["difference"].is_null() && r["kvm"] == r["slat"]), "{}", o.stdout);
    assert_eq!(d["rewritten"][0], d["rewritten"][1], "{}", o.stdout);
    assert_eq!(d["rewritten"][0]["pages_2m"], 4, "collapsed back: {}", o.stdout);
    // And as text.
    let t = slat(&["probe-host", "--size", "4M", "--dirty-log", "manual-initially-set"]);
    assert_ok(&t);
    assert!(t.stdout.contains("manual protect, initially set"), "{}", t.stdout);
    assert!(t.stdout.contains("KVM and slat agree at every step"), "{}", t.stdout);
}

/// A 1G backing the kernel cannot grant at run time: exit 2 with the reason (which GiBs hold
/// unmovable pages); the pool is as it was.
#[test]
fn refused_1g_pool_says_why() {
    let _turn = kvm_turn();
    if !kvm_usable("refused_1g_pool_says_why") {
        return;
    }
    let nr = "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages";
    let before = std::fs::read_to_string(nr).unwrap_or_default();
    let o = slat(&["probe-host", "--backing", "memfd-hugetlb-1g", "--size", "1G", "--stride", "2M"]);
    assert_eq!(std::fs::read_to_string(nr).unwrap_or_default(), before, "1G pool restored");
    if o.code == 0 {
        assert!(o.stdout.contains("KVM and slat agree"), "{}", o.stdout);
        eprintln!("refused_1g_pool_says_why: the kernel granted a 1G page; the case ran instead");
        return;
    }
    assert_eq!(o.code, 2, "{o:?}");
    assert!(o.stderr.contains("hugetlb pool 1G"), "{}", o.stderr);
    assert!(o.stderr.contains("1 GiB-aligned ranges of RAM hold no unmovable page"), "{}", o.stderr);
    assert_no_panic(&o);
}
