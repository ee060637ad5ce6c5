//! `inspect` with `--range` on this test process's own backings (any VMM's memory looks alike).

mod common;
use common::*;

use slat_linux::backing::{Backing, Placement, ThpAdvice};
use slat_linux::hostmap::MapSource;
use slat_linux::inspect::{inspect, Options, RangeSpec};

fn me() -> i32 {
    std::process::id() as i32
}

fn range(b: &Backing, gpa: u64) -> RangeSpec {
    format!("{:#x}:{}@{gpa:#x}", b.hva(), b.len()).parse().unwrap()
}

#[test]
fn a_thp_split_by_a_partial_mprotect_is_reported_pte_mapped() {
    let b = Backing::anonymous(8 * M, ThpAdvice::Hugepage, Placement::aligned(M2)).unwrap();
    b.populate_write().unwrap();
    let opts = Options { ranges: vec![range(&b, 1 << 30)], no_debugfs: true, ..Options::default() };
    let before = inspect(me(), &opts).unwrap();
    if before.blocks[0].host.bytes_2m != 8 * M {
        eprintln!("SKIP: the kernel gave only {:#x} bytes of THP", before.blocks[0].host.bytes_2m);
        return;
    }
    assert_eq!(before.blocks[0].stage2.bytes_2m, 8 * M);
    assert_eq!(before.blocks[0].fix, None);
    b.mprotect(M2 + 8 * 4096, 4096, true).unwrap();
    let r = inspect(me(), &opts).unwrap();
    let blk = &r.blocks[0];
    assert_eq!((blk.host.bytes_4k, blk.host.bytes_2m), (M2, 6 * M), "exactly one 2M block is PTE-mapped now");
    assert_eq!((blk.stage2.bytes_4k, blk.stage2.bytes_2m), (M2, 6 * M));
    assert_eq!(blk.stage2.not_2m.get("host-maps-small"), Some(&M2));
    assert_eq!(blk.vmas, 3, "the mprotect split the VMA");
    if rustix::process::geteuid().is_root() {
        // pagemap + kpageflags: the 4K-mapped block is still one THP folio.
        assert_eq!(blk.pte_mapped_thp, Some(M2));
        assert!(blk.verdict.contains("2 MiB is THP folios mapped with 4K PTEs"), "{}", blk.verdict);
    } else {
        assert_eq!(blk.pte_mapped_thp, None);
        assert!(blk.verdict.contains("PTE-mapped"), "{}", blk.verdict);
    }
    assert!(blk.fix.as_deref().unwrap().contains("MADV_COLLAPSE"));
}

#[test]
fn incongruent_gpa_is_misaligned_for_the_whole_slot() {
    let b = Backing::anonymous(8 * M, ThpAdvice::Hugepage, Placement::aligned(M2)).unwrap();
    b.populate_write().unwrap();
    let opts = Options { ranges: vec![range(&b, (1 << 30) + 4096)], no_debugfs: true, ..Options::default() };
    let r = inspect(me(), &opts).unwrap();
    let blk = &r.blocks[0];
    assert_eq!(blk.stage2.bytes_2m, 0);
    assert_eq!(blk.stage2.bytes_4k, 8 * M);
    // The partial blocks at the slot's ends count under the earlier reason in slat-mmu's order.
    assert_eq!(blk.stage2.not_2m.get("misaligned"), Some(&(6 * M)));
    assert_eq!(blk.stage2.not_2m.get("crosses-slot"), Some(&M2));
    assert!(blk.verdict.contains("not congruent"), "{}", blk.verdict);
}

#[test]
fn without_pagemap_scan_the_smaps_fallback_says_so() {
    let b = Backing::anonymous(4 * M, ThpAdvice::Hugepage, Placement::aligned(M2)).unwrap();
    b.populate_write().unwrap();
    let opts = Options { ranges: vec![range(&b, 1 << 30)], force_smaps: true, no_debugfs: true, ..Options::default() };
    let r = inspect(me(), &opts).unwrap();
    assert_eq!(r.host_source, MapSource::Smaps);
    assert!(r.notes.iter().any(|n| n.contains("THP positions are unknown")), "{:?}", r.notes);
    let blk = &r.blocks[0];
    assert_eq!(blk.host.present(), 4 * M);
    assert_eq!(blk.smaps_huge_bytes, own_vma(b.hva()).anon_huge_pages);
}

#[test]
fn the_huge_zero_page_is_present_huge_and_zero() {
    let b = Backing::anonymous(4 * M, ThpAdvice::Hugepage, Placement::aligned(M2)).unwrap();
    b.populate_read().unwrap();
    let opts = Options { ranges: vec![range(&b, 1 << 30)], no_debugfs: true, ..Options::default() };
    let blk = inspect(me(), &opts).unwrap().blocks.remove(0);
    if blk.host.bytes_zero == 0 {
        eprintln!("SKIP: no huge zero page (use_zero_page off)");
        return;
    }
    assert_eq!((blk.host.bytes_2m, blk.host.bytes_zero, blk.smaps_huge_bytes), (4 * M, 4 * M, 0));
}

#[test]
fn nothing_present_says_so() {
    let b = Backing::anonymous(4 * M, ThpAdvice::Hugepage, Placement::aligned(M2)).unwrap();
    let opts = Options { ranges: vec![range(&b, 1 << 30)], no_debugfs: true, ..Options::default() };
    let blk = inspect(me(), &opts).unwrap().blocks.remove(0);
    assert_eq!(blk.host.bytes_absent, 4 * M);
    assert_eq!(blk.stage2.bytes_absent, 4 * M);
    assert!(blk.verdict.contains("nothing is present"), "{}", blk.verdict);
}

#[test]
fn range_specs_parse_and_reject() {
    let r: RangeSpec = "0x7f0000000000:1G@0x100000000".parse().unwrap();
    assert_eq!((r.hva, r.len, r.gpa), (0x7f00_0000_0000, 1 << 30, Some(1 << 32)));
    let r: RangeSpec = "4096:8K".parse().unwrap();
    assert_eq!((r.hva, r.len, r.gpa), (4096, 8192, None));
    assert!("0x1001:4K".parse::<RangeSpec>().is_err());
    assert!("nonsense".parse::<RangeSpec>().is_err());
    assert!("0x1000:0".parse::<RangeSpec>().is_err());
    assert!("0xfffffffffffff000:1G".parse::<RangeSpec>().is_err());
    assert!("0x1000:4K@0xfffffffffffff000".parse::<RangeSpec>().is_err());
    let e = inspect(me(), &Options { ranges: vec!["0x1000:4K".parse().unwrap()], ..Options::default() }).unwrap_err();
    assert!(e.to_string().contains("not mapped"), "{e}");
}

#[test]
fn a_regular_file_is_page_cache_and_says_hugetlbfs_may_be_masked() {
    let dir = std::env::temp_dir().join(format!("slat-inspect-file-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let b = Backing::file(dir.join("ram"), 0, 4 * M, ThpAdvice::None, Placement::aligned(M2)).unwrap();
    b.populate_write().unwrap();
    let opts = Options { ranges: vec![range(&b, 1 << 30)], no_debugfs: true, ..Options::default() };
    let blk = inspect(me(), &opts).unwrap().blocks.remove(0);
    let fs = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if blk.kind == "page-cache" {
        assert!(blk.backing.ends_with(" file"), "{}", blk.backing);
        if blk.host.bytes_2m < blk.host.present() {
            assert!(blk.verdict.contains("not on a hugetlbfs mount"), "{}", blk.verdict);
        }
    } else {
        eprintln!("SKIP: {} is on {} ({fs:.0})", dir.display(), blk.kind);
    }
    drop(b);
    std::fs::remove_dir_all(&dir).unwrap();
}
