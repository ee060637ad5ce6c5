//! Shared test helpers: prerequisites that print why a test skips.
#![allow(dead_code)]

use slat_linux::smaps::{self, Vma};

/// Whether we run as root; prints why the test skips otherwise.
pub fn root(test: &str) -> bool {
    let ok = rustix::process::geteuid().is_root();
    if !ok {
        eprintln!("SKIP {test}: needs root (mounts, hugetlb pools, /proc/kpageflags)");
    }
    ok
}

/// The smaps entry of this process's VMA containing `hva`.
pub fn own_vma(hva: u64) -> Vma {
    smaps::read(0).unwrap().into_iter().find(|v| v.start <= hva && hva < v.end).expect("a VMA covers the backing")
}

/// The VMAs of this process overlapping [start, end).
pub fn own_vmas(start: u64, end: u64) -> Vec<Vma> {
    smaps::read(0).unwrap().into_iter().filter(|v| v.start < end && v.end > start).collect()
}

pub const M2: u64 = 2 << 20;
pub const M: u64 = 1 << 20;

/// Tests of one binary that grow a hugetlb pool and check it is restored take this lock, so a
/// concurrent reservation of another test cannot change the totals they compare.
pub static POOL_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Take [`POOL_LOCK`] (a panicked holder does not poison the others).
pub fn pool_lock() -> std::sync::MutexGuard<'static, ()> {
    POOL_LOCK.lock().unwrap_or_else(|p| p.into_inner())
}
