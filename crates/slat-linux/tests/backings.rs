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
    let _knob = slat_linux::pool::ShmemEnabledGuard::keep().unwrap();
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

/// Every view of `b` agrees on its host leaves: PAGEMAP_SCAN, smaps (`ShmemPmdMapped` or
/// `FilePmdMapped`), the host map over each source, and slat's `LocalMemory` per 2M block.
/// Returns the PMD-mapped bytes.
fn views_agree(b: &Backing, what: &str) -> u64 {
    use slat_linux::hostmap::HostMap;
    use slat_linux::memory::LocalMemory;
    use slat_mmu::{HostMemory, Hva};
    let (start, end) = (b.hva(), b.hva() + b.len());
    let (present, huge, _) = scanned(start, end);
    assert_eq!(present, b.len(), "{what}: every page present");
    let v = own_vma(start);
    let smaps_huge = if b.kind() == slat_mmu::BackingKind::Shmem { v.shmem_pmd_mapped } else { v.file_pmd_mapped };
    assert_eq!(huge, smaps_huge, "{what}: PAGEMAP_SCAN HUGE == smaps PmdMapped");
    let map = HostMap::of_process(0, &[(start, end)], false).unwrap();
    let split = map.split(start, end);
    assert_eq!((split.bytes_2m, split.bytes_4k), (huge, b.len() - huge), "{what}: host map");
    assert!(
        map.extents().iter().filter(|e| e.start < end && e.end > start).all(|e| e.kind == b.kind()),
        "{what}: kind"
    );
    // The smaps fallback knows presence and hugetlb sizes only (no THP placement).
    let fallback = HostMap::of_process(0, &[(start, end)], true).unwrap();
    assert_eq!(fallback.split(start, end).present(), b.len(), "{what}: smaps fallback presence");
    // `slat inspect` on the same range (gpa 1 GiB: congruent): host and stage-2 mix, policy.
    let spec: slat_linux::inspect::RangeSpec = format!("{start:#x}:{}@{:#x}", b.len(), 1u64 << 30).parse().unwrap();
    let opts = slat_linux::inspect::Options { ranges: vec![spec], no_debugfs: true, ..Default::default() };
    let r = slat_linux::inspect::inspect(std::process::id() as i32, &opts).unwrap();
    let blk = &r.blocks[0];
    assert_eq!((blk.host.bytes_2m, blk.host.bytes_4k), (huge, b.len() - huge), "{what}: inspect host");
    assert_eq!((blk.stage2.bytes_2m, blk.stage2.bytes_4k), (huge, b.len() - huge), "{what}: inspect stage 2");
    if huge > 0 {
        assert_eq!(blk.policy.allows_thp, Some(true), "{what}: {}", blk.policy.because);
    }
    let host = LocalMemory::new(vec![b]).unwrap();
    for block in (start..end).step_by(M2 as usize) {
        let page = host.lookup(Hva(block)).unwrap_or_else(|| panic!("{what}: {block:#x} present"));
        let (_, h, _) = scanned(block, (block + M2).min(end));
        let want = if h == M2 { slat_pt::PageSize::Size2M } else { slat_pt::PageSize::Size4K };
        assert_eq!(page.size, want, "{what}: LocalMemory at {block:#x}");
        assert_eq!(page.kind, b.kind());
    }
    huge
}

/// tmpfs `huge=within_size`: a huge page only where it lies wholly inside `i_size`. A 9 MiB
/// file: the first four 2M blocks are PMD-mapped, the last MiB (its 2M block ends past EOF)
/// is 4K.
#[test]
fn tmpfs_huge_within_size_stops_at_i_size() {
    if !root("tmpfs_huge_within_size") {
        return;
    }
    let mnt = TmpfsMount::new(TmpfsHuge::WithinSize, 64 * M).unwrap();
    let mounts = slat_linux::policy::mounts_of(std::process::id() as i32);
    let m = mounts.iter().find(|m| m.mount_point == mnt.path().to_str().unwrap()).expect("mount in mountinfo");
    assert_eq!((m.fstype.as_str(), m.option("huge")), ("tmpfs", Some("within_size")));
    let b = Backing::file(mnt.path().join("ram"), 0, 9 * M, ThpAdvice::None, Placement::aligned(M2)).unwrap();
    b.populate_write().unwrap();
    assert_eq!(views_agree(&b, "within_size, 9 MiB file"), 8 * M);
    drop(b);
    // The mount is gone after the guard drops.
    let path = mnt.path().to_path_buf();
    drop(mnt);
    let mounts = slat_linux::policy::mounts_of(std::process::id() as i32);
    assert!(!mounts.iter().any(|m| m.mount_point == path.to_str().unwrap()), "unmounted");
    assert!(!path.exists(), "mount point removed");
}

/// tmpfs `huge=advise`: huge pages only for mappings with `MADV_HUGEPAGE`.
#[test]
fn tmpfs_huge_advise_needs_madvise() {
    if !root("tmpfs_huge_advise") {
        return;
    }
    let mnt = TmpfsMount::new(TmpfsHuge::Advise, 64 * M).unwrap();
    let plain = Backing::file(mnt.path().join("plain"), 0, 8 * M, ThpAdvice::None, Placement::aligned(M2)).unwrap();
    plain.populate_write().unwrap();
    assert_eq!(views_agree(&plain, "advise, no madvise"), 0);
    let advised =
        Backing::file(mnt.path().join("advised"), 0, 8 * M, ThpAdvice::Hugepage, Placement::aligned(M2)).unwrap();
    advised.populate_write().unwrap();
    assert!(own_vma(advised.hva()).vm_flags.contains(VmFlag::Hugepage));
    assert_eq!(views_agree(&advised, "advise, MADV_HUGEPAGE"), 8 * M);
    drop((plain, advised));
}

/// Seed 002: `shmem_enabled=advise` gives a memfd THP only with `MADV_HUGEPAGE`; the knob is
/// put back by its guard, also when the holder panics.
#[test]
fn shmem_enabled_advise_memfd() {
    use slat_linux::pool::{ShmemEnabled, ShmemEnabledGuard};
    if !root("shmem_enabled_advise_memfd") {
        return;
    }
    let before = ShmemEnabled::read().unwrap();
    {
        let knob = ShmemEnabledGuard::set(ShmemEnabled::Advise).unwrap();
        assert_eq!(knob.previous(), before);
        assert_eq!(ShmemEnabled::read().unwrap(), ShmemEnabled::Advise);
        let plain = Backing::memfd(8 * M, None, ThpAdvice::None, Placement::aligned(M2)).unwrap();
        plain.populate_write().unwrap();
        assert_eq!(views_agree(&plain, "memfd, advise, no madvise"), 0);
        let advised = Backing::memfd(8 * M, None, ThpAdvice::Hugepage, Placement::aligned(M2)).unwrap();
        advised.populate_write().unwrap();
        assert_eq!(views_agree(&advised, "memfd, advise, MADV_HUGEPAGE"), 8 * M);
        // 4K off 2M (QEMU's memfd RAM): no PMD even with the advice.
        let skewed = Backing::memfd(8 * M, None, ThpAdvice::Hugepage, Placement::skewed(M2, 4096)).unwrap();
        skewed.populate_write().unwrap();
        assert_eq!(views_agree(&skewed, "memfd, advise, 4K off 2M"), 0);
    }
    assert_eq!(ShmemEnabled::read().unwrap(), before, "restored on drop");
    let r = std::panic::catch_unwind(|| {
        let _knob = ShmemEnabledGuard::set(ShmemEnabled::Force).unwrap();
        panic!("a test failing while it holds the knob");
    });
    assert!(r.is_err());
    assert_eq!(ShmemEnabled::read().unwrap(), before, "restored on panic");
}

/// A regular file on this host's disk file system (ext4 for /tmp here): without
/// `MADV_HUGEPAGE` the mmap fault reads around with small folios and maps PTEs; with it,
/// `do_sync_mmap_readahead` (mm/filemap.c) asks `page_cache_ra_order` for PMD-order folios and
/// `finish_fault` → `do_set_pmd` maps each with a PMD. Every view agrees either way.
#[test]
fn regular_file_pmd_mapped_only_with_madvise() {
    let file = slat_linux::pool::TempFile::new("ram").unwrap();
    let plain = Backing::file(file.path(), 0, 8 * M, ThpAdvice::None, Placement::aligned(M2)).unwrap();
    if plain.kind() != slat_mmu::BackingKind::PageCache {
        eprintln!(
            "SKIP regular_file_pmd_mapped_only_with_madvise: {} is not on a disk file system",
            file.path().display()
        );
        return;
    }
    plain.populate_write().unwrap();
    assert_eq!(views_agree(&plain, "regular file"), 0);
    let file2 = slat_linux::pool::TempFile::new("ram").unwrap();
    let advised = Backing::file(file2.path(), 0, 8 * M, ThpAdvice::Hugepage, Placement::aligned(M2)).unwrap();
    advised.populate_write().unwrap();
    assert_eq!(views_agree(&advised, "regular file, MADV_HUGEPAGE"), 8 * M);
    if rustix::process::geteuid().is_root() {
        let (pm, kpf) = (Pagemap::open(0).unwrap(), KpageFlags::open().unwrap());
        let fb = folio_block(&pm, &kpf, advised.hva()).unwrap();
        assert_eq!((fb.present, fb.thp), (512, 512), "a PMD-order page-cache folio");
        let fb = folio_block(&pm, &kpf, plain.hva()).unwrap();
        eprintln!("regular file without advice, first 2M: {fb:?}");
    }
    drop((plain, advised));
}
