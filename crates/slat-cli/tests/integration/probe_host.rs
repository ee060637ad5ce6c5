//! `slat probe-host`: KVM's leaves beside slat's on a micro-VM; a clear error without /dev/kvm
//! access.

use crate::common::*;

use std::process::{Command, Stdio};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")))
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
