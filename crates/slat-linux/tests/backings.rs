//! Each backing kind on the real kernel, checked with smaps and PAGEMAP_SCAN (they must agree).

mod common;
use common::*;

use slat_linux::backing::{Backing, HugetlbSize, Placement, ThpAdvice};
use slat_linux::pagemap::{folio_block, KpageFlags, Pagemap};
use slat_linux::pool::{HugetlbReservation, HugetlbfsMount, TmpfsHuge, TmpfsMount};
use slat_linux::scan::{self, Categories};
use slat_linux::smaps::VmFlag;

/// Bytes of [start, end) that PAGEMAP_SCAN reports present / huge / zero.
fn scanned(start: u64, end: u64) -> (u64, u64, u64) {
    let pm = Pagemap::open(0).unwrap();
    let regions = scan::scan(pm.file(), start, end).unwrap();
    let sum = |c: Categories| regions.iter().filter(|r| r.categories.contains(c)).map(|r| r.len()).sum::<u64>();
    (sum(Categories::PRESENT), sum(Categories::HUGE), sum(Categories::PFNZERO))
}

#[test]
fn anonymous_thp_is_pmd_mapped_and_agrees_with_smaps() {
    let b = Backing::anonymous(64 * M, ThpAdvice::Hugepage, Placement::aligned(M2)).unwrap();
    b.populate_write().unwrap();
    let v = own_vma(b.hva());
    assert!(v.vm_flags.contains(VmFlag::Hugepage), "MADV_HUGEPAGE shows as hg: {}", v.vm_flags);
    assert_eq!(v.thp_eligible, Some(true));
    assert_eq!(v.kernel_page_size, 4096);
    let (present, huge, zero) = scanned(b.hva(), b.hva() + b.len());
    assert_eq!(present, 64 * M);
    assert_eq!(zero, 0);
    // THP allocation can fail under fragmentation; whatever the kernel did, both views agree.
    assert_eq!(huge, v.anon_huge_pages, "PAGEMAP_SCAN HUGE == smaps AnonHugePages");
    assert!(huge > 0, "THP=madvise with MADV_HUGEPAGE gave no THP at all");
}

#[test]
fn anonymous_without_advice_is_4k_under_madvise_mode() {
    let mode = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if !mode.contains("[madvise]") {
        eprintln!("SKIP: THP mode is not madvise ({})", mode.trim());
        return;
    }
    let b = Backing::anonymous(8 * M, ThpAdvice::None, Placement::aligned(M2)).unwrap();
    b.populate_write().unwrap();
    let v = own_vma(b.hva());
    let (present, huge, _) = scanned(b.hva(), b.hva() + b.len());
    assert_eq!((present, huge, v.anon_huge_pages), (8 * M, 0, 0));
}

#[test]
fn huge_zero_page_is_huge_with_pfnzero_and_absent_from_rss() {
    let zero = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/use_zero_page").unwrap_or_default();
    if zero.trim() != "1" {
        eprintln!("SKIP: use_zero_page is {}", zero.trim());
        return;
    }
    let b = Backing::anonymous(8 * M, ThpAdvice::Hugepage, Placement::aligned(M2)).unwrap();
    b.populate_read().unwrap();
    let v = own_vma(b.hva());
    let (present, huge, zero) = scanned(b.hva(), b.hva() + b.len());
    assert_eq!((present, huge, zero), (8 * M, 8 * M, 8 * M));
    assert_eq!((v.rss, v.anon_huge_pages), (0, 0), "the huge zero page is in no smaps counter");
}

#[test]
fn anonymous_4k_off_2m_loses_head_and_tail_only() {
    let b = Backing::anonymous(16 * M, ThpAdvice::Hugepage, Placement::skewed(M2, 4096)).unwrap();
    b.populate_write().unwrap();
    let (present, huge, _) = scanned(b.hva(), b.hva() + b.len());
    assert_eq!(present, 16 * M);
    // 7 whole 2M blocks fit between the first and last partial blocks.
    assert!(huge <= 7 * M2, "at most 7 THPs fit, got {huge:#x}");
    let v = own_vma(b.hva());
    assert_eq!(v.anon_huge_pages, huge);
}

#[test]
fn memfd_follows_shmem_enabled() {
    let b = Backing::memfd(8 * M, None, ThpAdvice::Hugepage, Placement::aligned(M2)).unwrap();
    b.populate_write().unwrap();
    let v = own_vma(b.hva());
    assert!(v.path.starts_with("/memfd:slat-guest-ram"), "{}", v.path);
    assert!(v.vm_flags.contains(VmFlag::Shared));
    let (present, huge, _) = scanned(b.hva(), b.hva() + b.len());
    assert_eq!(present, 8 * M);
    assert_eq!(huge, v.shmem_pmd_mapped, "PAGEMAP_SCAN HUGE == smaps ShmemPmdMapped");
    let shmem = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled").unwrap_or_default();
    if shmem.contains("[never]") || shmem.contains("[deny]") {
        assert_eq!(huge, 0, "shmem_enabled=never: memfd gets no THP");
    }
}

#[test]
fn memfd_hugetlb_2m_is_huge_and_absent_from_rss() {
    if !root("memfd_hugetlb_2m") {
        return;
    }
    let _lock = pool_lock();
    let _pool = HugetlbReservation::reserve(HugetlbSize::Size2M, 8).unwrap();
    let b = Backing::memfd(8 * M, Some(HugetlbSize::Size2M), ThpAdvice::None, Placement::aligned(M2)).unwrap();
    b.populate_write().unwrap();
    let v = own_vma(b.hva());
    assert!(v.is_hugetlb(), "ht: {}", v.vm_flags);
    assert_eq!(v.kernel_page_size, M2);
    assert_eq!(v.rss, 0, "hugetlb is not in Rss");
    assert_eq!(v.hugetlb_bytes(), 8 * M);
    let (present, huge, _) = scanned(b.hva(), b.hva() + b.len());
    assert_eq!((present, huge), (8 * M, 8 * M));
    // kpageflags: hugetlb pages, PFN-contiguous per 2M.
    let kpf = KpageFlags::open().unwrap();
    let fb = folio_block(&Pagemap::open(0).unwrap(), &kpf, b.hva()).unwrap();
    assert_eq!((fb.present, fb.hugetlb), (512, 512));
    assert!(fb.contiguous_aligned);
}

#[test]
fn hugetlb_pool_reservation_is_restored() {
    if !root("hugetlb_pool_reservation_is_restored") {
        return;
    }
    let _lock = pool_lock();
    let before = slat_linux::pool::PoolState::read(HugetlbSize::Size2M).unwrap();
    {
        let _a = HugetlbReservation::reserve(HugetlbSize::Size2M, 3).unwrap();
        let _b = HugetlbReservation::reserve(HugetlbSize::Size2M, 2).unwrap();
        let during = slat_linux::pool::PoolState::read(HugetlbSize::Size2M).unwrap();
        assert!(during.total >= before.total + 5);
    }
    assert_eq!(slat_linux::pool::PoolState::read(HugetlbSize::Size2M).unwrap().total, before.total, "pool restored");
}

#[test]
fn tmpfs_huge_always_file_is_pmd_mapped_only_when_congruent() {
    if !root("tmpfs_huge_always") {
        return;
    }
    let mnt = TmpfsMount::new(TmpfsHuge::Always, 64 * M).unwrap();
    let mounts = slat_linux::policy::mounts_of(std::process::id() as i32);
    let m = mounts.iter().find(|m| m.mount_point == mnt.path().to_str().unwrap()).expect("mount in mountinfo");
    assert_eq!((m.fstype.as_str(), m.option("huge")), ("tmpfs", Some("always")));
    let path = mnt.path().join("ram");
    let good = Backing::file(&path, 0, 8 * M, ThpAdvice::None, Placement::aligned(M2)).unwrap();
    good.populate_write().unwrap();
    let v = own_vma(good.hva());
    let (_, huge, _) = scanned(good.hva(), good.hva() + good.len());
    assert_eq!(huge, 8 * M);
    assert_eq!(v.shmem_pmd_mapped, 8 * M);
    assert_eq!(v.file_skew(M2), 0);
    // The same file 4K off a 2M boundary (QEMU's default): no PMD at all.
    let bad = Backing::file(&path, 0, 8 * M, ThpAdvice::None, Placement::skewed(M2, 4096)).unwrap();
    bad.populate_write().unwrap();
    let v = own_vma(bad.hva());
    let (present, huge, _) = scanned(bad.hva(), bad.hva() + bad.len());
    assert_eq!((present, huge, v.shmem_pmd_mapped), (8 * M, 0, 0));
    assert_eq!(v.file_skew(M2), 4096);
    assert_eq!(v.thp_eligible, Some(false));
    drop((good, bad));
}

#[test]
fn hugetlbfs_file_2m() {
    if !root("hugetlbfs_file_2m") {
        return;
    }
    let _lock = pool_lock();
    let _pool = HugetlbReservation::reserve(HugetlbSize::Size2M, 4).unwrap();
    let mnt = HugetlbfsMount::new(HugetlbSize::Size2M).unwrap();
    let b = Backing::file(mnt.path().join("ram"), 0, 8 * M, ThpAdvice::None, Placement::aligned(M2)).unwrap();
    assert_eq!(b.kind(), slat_mmu::BackingKind::Hugetlbfs);
    assert_eq!(b.hugetlb(), Some(HugetlbSize::Size2M));
    b.populate_write().unwrap();
    let v = own_vma(b.hva());
    assert_eq!((v.kernel_page_size, v.rss, v.hugetlb_bytes()), (M2, 0, 8 * M));
    assert_eq!(scanned(b.hva(), b.hva() + b.len()).1, 8 * M);
    // hugetlb mappings cannot sit off their page size.
    assert!(Backing::file(mnt.path().join("x"), 0, 2 * M, ThpAdvice::None, Placement::skewed(M2, 4096)).is_err());
    drop(b);
}

#[test]
fn regular_file_is_page_cache() {
    let dir = std::env::temp_dir().join(format!("slat-regular-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let b = Backing::file(dir.join("ram"), 0, 4 * M, ThpAdvice::None, Placement::aligned(M2)).unwrap();
    b.populate_write().unwrap();
    let v = own_vma(b.hva());
    assert!(v.has_file());
    let (present, huge, _) = scanned(b.hva(), b.hva() + b.len());
    assert_eq!(present, 4 * M);
    assert_eq!(huge, v.file_pmd_mapped);
    drop(b);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn partial_mprotect_leaves_a_pte_mapped_thp() {
    let b = Backing::anonymous(8 * M, ThpAdvice::Hugepage, Placement::aligned(M2)).unwrap();
    b.populate_write().unwrap();
    let (_, huge_before, _) = scanned(b.hva(), b.hva() + b.len());
    if huge_before != 8 * M {
        eprintln!("SKIP: the kernel gave only {huge_before:#x} bytes of THP");
        return;
    }
    b.mprotect(M2 + 4096 * 7, 4096, true).unwrap();
    let (present, huge, _) = scanned(b.hva(), b.hva() + b.len());
    assert_eq!(present, 8 * M);
    assert_eq!(huge, 6 * M, "exactly the 2M block holding the mprotect lost its PMD");
    let vmas = own_vmas(b.hva(), b.hva() + b.len());
    assert_eq!(vmas.len(), 3, "the VMA split in three");
    assert_eq!(vmas.iter().map(|v| v.anon_huge_pages).sum::<u64>(), 6 * M);
    if rustix::process::geteuid().is_root() {
        // The folio is still an order-9 THP: only the mapping changed.
        let fb = folio_block(&Pagemap::open(0).unwrap(), &KpageFlags::open().unwrap(), b.hva() + M2).unwrap();
        assert_eq!((fb.present, fb.thp), (512, 512));
        assert!(fb.contiguous_aligned);
    }
}

#[test]
fn smaps_parses_every_vma_of_this_process() {
    let vmas = slat_linux::smaps::read(0).unwrap();
    assert!(vmas.len() > 5);
    for v in &vmas {
        assert_eq!(v.size, v.len(), "{v:?}");
        assert!(v.kernel_page_size >= 4096);
        assert!(v.vm_flags.contains(VmFlag::MayRead) || v.perms.starts_with('-'), "{}", v.vm_flags);
        assert!(v.vm_flags.unknown.is_empty(), "unknown VmFlags {:?}", v.vm_flags.unknown);
    }
}

#[test]
fn errors_are_clear() {
    let e = slat_linux::smaps::read(i32::MAX).unwrap_err();
    assert!(matches!(e, slat_linux::Error::NoSuchProcess { pid: i32::MAX }), "{e}");
    assert!(Backing::anonymous(0, ThpAdvice::None, Placement::aligned(M2)).is_err());
    assert!(Backing::anonymous(4096, ThpAdvice::None, Placement::skewed(M2, M2)).is_err());
}

#[test]
fn scan_loops_on_walk_end_without_losing_or_doubling_pages() {
    // 64 MiB with every other page discarded: 8192 one-page regions, more than one ioctl's buffer.
    let b = Backing::anonymous(64 * M, ThpAdvice::NoHugepage, Placement::aligned(M2)).unwrap();
    b.populate_write().unwrap();
    for off in (4096..b.len()).step_by(8192) {
        b.discard(off, 4096).unwrap();
    }
    let pm = Pagemap::open(0).unwrap();
    let regions = scan::scan(pm.file(), b.hva(), b.hva() + b.len()).unwrap();
    let present: u64 = regions.iter().filter(|r| r.categories.contains(Categories::PRESENT)).map(|r| r.len()).sum();
    let by_pagemap = pm.read(b.hva(), (b.len() / 4096) as usize).unwrap().iter().filter(|e| e.present()).count() as u64;
    assert_eq!(by_pagemap * 4096, 32 * M);
    assert_eq!(present, 32 * M, "{} regions", regions.len());
    assert!(regions.windows(2).all(|w| w[0].end <= w[1].start), "sorted, disjoint");
}
