//! slat-mmu on real memory: the MMU's huge leaves are exactly where the kernel maps PMDs.

mod common;
use common::*;

use slat_linux::backing::{Backing, HugetlbSize, Placement, ThpAdvice};
use slat_linux::memory::LocalMemory;
use slat_linux::pagemap::Pagemap;
use slat_linux::pool::{HugetlbReservation, HugetlbfsMount, TmpfsHuge, TmpfsMount};
use slat_linux::scan::{self, Categories};
use slat_mmu::testing::RecordingTlb;
use slat_mmu::{FaultOutcome, Gfn, Gpa, Hva, MemslotSpec, Mmu, MmuConfig, Parts, WhyNotHuge};
use slat_pt::format::Ept4;
use slat_pt::{Access, PageSize, SimFrameAllocator};

const BASE_GFN: u64 = 0x40000; // gpa 1 GiB: congruent with any 2M-aligned hva (and 1G-aligned ones)

type RealMmu<'a> = Mmu<Ept4, Parts<SimFrameAllocator, LocalMemory<'a>, RecordingTlb>>;

/// Fault the whole backing in through the MMU, as a guest touching every page would.
fn map_all(b: &Backing) -> RealMmu<'_> {
    let host = LocalMemory::new(vec![b]).unwrap();
    let mmu =
        RealMmu::new(MmuConfig::default(), SimFrameAllocator::new(1 << 40, 64 << 20), host, RecordingTlb::default())
            .unwrap();
    mmu.add_memslot(MemslotSpec {
        id: 0,
        base_gfn: Gfn(BASE_GFN),
        npages: b.len() >> 12,
        hva: Hva(b.hva()),
        readonly: false,
        log_dirty: false,
    })
    .unwrap();
    let mut gpa = BASE_GFN << 12;
    let end = gpa + b.len();
    while gpa < end {
        match mmu.handle_fault(Gpa(gpa), Access::Write).unwrap() {
            FaultOutcome::Mapped { size, .. } => gpa = (gpa & !(size.bytes() - 1)) + size.bytes(),
            other => panic!("fault at {gpa:#x}: {other:?}"),
        }
    }
    mmu
}

/// hva ranges (merged) of the MMU's leaves of `size`.
fn leaf_ranges(mmu: &RealMmu<'_>, b: &Backing, size: PageSize) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    mmu.with_tables(|pt| {
        pt.for_each_leaf(Gpa(BASE_GFN << 12), b.len(), |l| {
            if l.size == size {
                let s = b.hva() + (l.gpa - Gfn(BASE_GFN).gpa());
                match out.last_mut() {
                    Some(last) if last.1 == s => last.1 = s + size.bytes(),
                    _ => out.push((s, s + size.bytes())),
                }
            }
        })
    });
    out
}

/// hva ranges (merged) that PAGEMAP_SCAN reports HUGE.
fn scan_huge(b: &Backing) -> Vec<(u64, u64)> {
    let pm = Pagemap::open(0).unwrap();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for r in scan::scan(pm.file(), b.hva(), b.hva() + b.len()).unwrap() {
        if r.categories.contains(Categories::HUGE) {
            match out.last_mut() {
                Some(l) if l.1 == r.start => l.1 = r.end,
                _ => out.push((r.start, r.end)),
            }
        }
    }
    out
}

fn total(r: &[(u64, u64)]) -> u64 {
    r.iter().map(|(s, e)| e - s).sum()
}

/// The check every backing shares: slat's huge leaves == PAGEMAP_SCAN's HUGE ranges, and their
/// bytes == smaps' PMD counter for the VMA; the audit (I1, I2, I6) passes on real PFNs.
fn leaves_follow_the_kernel(b: &Backing, size: PageSize, smaps_bytes: impl Fn(&slat_linux::smaps::Vma) -> u64) {
    let mmu = map_all(b);
    let leaves = leaf_ranges(&mmu, b, size);
    let huge = scan_huge(b);
    assert_eq!(leaves, huge, "slat's {size} leaves == PAGEMAP_SCAN HUGE ranges");
    let smaps: u64 = own_vmas(b.hva(), b.hva() + b.len()).iter().map(&smaps_bytes).sum();
    assert_eq!(total(&leaves), smaps, "slat's {size} leaves == smaps");
    assert!(total(&leaves) > 0, "the kernel mapped nothing huge; the comparison would be empty");
    mmu.audit().unwrap();
}

#[test]
fn anonymous_thp() {
    let b = Backing::anonymous(16 * M, ThpAdvice::Hugepage, Placement::aligned(M2)).unwrap();
    b.populate_write().unwrap();
    leaves_follow_the_kernel(&b, PageSize::Size2M, |v| v.anon_huge_pages);
}

#[test]
fn anonymous_thp_split_by_mprotect_is_4k_there() {
    let b = Backing::anonymous(8 * M, ThpAdvice::Hugepage, Placement::aligned(M2)).unwrap();
    b.populate_write().unwrap();
    b.mprotect(2 * M2 + 4096, 4096, true).unwrap();
    let mmu = map_all_readable(&b);
    let e = mmu.explain(Gfn(BASE_GFN + ((2 * M2) >> 12)));
    assert_eq!(e.decision.size, PageSize::Size4K);
    assert_eq!(e.decision.primary(), Some(WhyNotHuge::HostMapsSmall), "{e}");
    assert_eq!(leaf_ranges(&mmu, &b, PageSize::Size2M), scan_huge(&b));
    assert!(!scan_huge(&b).iter().any(|&(s, e)| s <= b.hva() + 2 * M2 && b.hva() + 2 * M2 < e));
    mmu.audit().unwrap();
}

/// As `map_all`, with read faults (the mprotected page refuses writes).
fn map_all_readable(b: &Backing) -> RealMmu<'_> {
    let host = LocalMemory::new(vec![b]).unwrap();
    let mmu =
        RealMmu::new(MmuConfig::default(), SimFrameAllocator::new(1 << 40, 64 << 20), host, RecordingTlb::default())
            .unwrap();
    mmu.add_memslot(MemslotSpec {
        id: 0,
        base_gfn: Gfn(BASE_GFN),
        npages: b.len() >> 12,
        hva: Hva(b.hva()),
        readonly: false,
        log_dirty: false,
    })
    .unwrap();
    let mut gpa = BASE_GFN << 12;
    while gpa < (BASE_GFN << 12) + b.len() {
        match mmu.handle_fault(Gpa(gpa), Access::Read).unwrap() {
            FaultOutcome::Mapped { size, .. } => gpa = (gpa & !(size.bytes() - 1)) + size.bytes(),
            other => panic!("fault at {gpa:#x}: {other:?}"),
        }
    }
    mmu
}

#[test]
fn shmem_thp_on_tmpfs_huge_always() {
    if !root("shmem_thp_on_tmpfs_huge_always") {
        return;
    }
    let mnt = TmpfsMount::new(TmpfsHuge::Always, 32 * M).unwrap();
    let b = Backing::file(mnt.path().join("ram"), 0, 16 * M, ThpAdvice::None, Placement::aligned(M2)).unwrap();
    b.populate_write().unwrap();
    leaves_follow_the_kernel(&b, PageSize::Size2M, |v| v.shmem_pmd_mapped);
    drop(b);
}

#[test]
fn shmem_4k_off_2m_gets_no_huge_leaf() {
    if !root("shmem_4k_off_2m_gets_no_huge_leaf") {
        return;
    }
    let mnt = TmpfsMount::new(TmpfsHuge::Always, 32 * M).unwrap();
    let b = Backing::file(mnt.path().join("ram"), 0, 8 * M, ThpAdvice::None, Placement::skewed(M2, 4096)).unwrap();
    b.populate_write().unwrap();
    let host = LocalMemory::new(vec![&b]).unwrap();
    let mmu =
        RealMmu::new(MmuConfig::default(), SimFrameAllocator::new(1 << 40, 64 << 20), host, RecordingTlb::default())
            .unwrap();
    // A VMM keeping gpa congruent with this hva: the slot is fine, the host maps small.
    let base = BASE_GFN + 1;
    mmu.add_memslot(MemslotSpec {
        id: 0,
        base_gfn: Gfn(base),
        npages: b.len() >> 12,
        hva: Hva(b.hva()),
        readonly: false,
        log_dirty: false,
    })
    .unwrap();
    let e = mmu.explain(Gfn(base + 511));
    assert_eq!(e.decision.size, PageSize::Size4K);
    assert_eq!(e.decision.primary(), Some(WhyNotHuge::HostMapsSmall), "{e}");
    drop(mmu);
    drop(b);
}

#[test]
fn hugetlbfs_2m() {
    if !root("hugetlbfs_2m") {
        return;
    }
    let _pool = HugetlbReservation::reserve(HugetlbSize::Size2M, 8).unwrap();
    let mnt = HugetlbfsMount::new(HugetlbSize::Size2M).unwrap();
    let b = Backing::file(mnt.path().join("ram"), 0, 16 * M, ThpAdvice::None, Placement::aligned(M2)).unwrap();
    b.populate_write().unwrap();
    leaves_follow_the_kernel(&b, PageSize::Size2M, |v| v.hugetlb_bytes());
    drop(b);
}

#[test]
fn memfd_hugetlb_1g_when_granted() {
    if !root("memfd_hugetlb_1g_when_granted") {
        return;
    }
    let pool = match HugetlbReservation::reserve(HugetlbSize::Size1G, 1) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("SKIP memfd_hugetlb_1g_when_granted: {e}");
            return;
        }
    };
    let g = 1 << 30;
    let b = Backing::memfd(g, Some(HugetlbSize::Size1G), ThpAdvice::None, Placement::aligned(g)).unwrap();
    b.populate_write().unwrap();
    let mmu = map_all(&b);
    assert_eq!(leaf_ranges(&mmu, &b, PageSize::Size1G), vec![(b.hva(), b.hva() + g)]);
    assert_eq!(scan_huge(&b), vec![(b.hva(), b.hva() + g)]);
    assert_eq!(own_vma(b.hva()).hugetlb_bytes(), g);
    mmu.audit().unwrap();
    drop(mmu);
    drop(b);
    drop(pool);
}

#[test]
fn a_snapshot_of_a_process_gives_the_same_leaf_decisions() {
    use slat_linux::hostmap::HostMap;
    use slat_linux::memory::ProcessSnapshot;
    let b = Backing::anonymous(8 * M, ThpAdvice::Hugepage, Placement::aligned(M2)).unwrap();
    b.populate_write().unwrap();
    let live = map_all(&b);
    let snap = ProcessSnapshot::new(HostMap::of_process(0, &[(b.hva(), b.hva() + b.len())], false).unwrap(), None);
    let mmu = Mmu::<Ept4, Parts<_, _, _>>::new(
        MmuConfig::default(),
        SimFrameAllocator::new(1 << 40, 1 << 20),
        snap,
        RecordingTlb::default(),
    )
    .unwrap();
    mmu.add_memslot(MemslotSpec {
        id: 0,
        base_gfn: Gfn(BASE_GFN),
        npages: b.len() >> 12,
        hva: Hva(b.hva()),
        readonly: false,
        log_dirty: false,
    })
    .unwrap();
    for gfn in (BASE_GFN..BASE_GFN + (b.len() >> 12)).step_by(128) {
        assert_eq!(mmu.explain(Gfn(gfn)).decision, live.explain(Gfn(gfn)).decision, "gfn {gfn:#x}");
    }
}
