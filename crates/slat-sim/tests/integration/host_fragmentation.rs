//! Fragmentation: pinned pages make 2 MiB and 1 GiB allocations fail at the configured rate,
//! THP faults fall back and are counted, compaction restores blocks, and placement is
//! deterministic for a seed.

use crate::host_common::*;
use slat_mmu::{HostMemory, Hva};
use slat_pt::PageSize;
use slat_sim::host::{Advice, Backing, HostConfig, HostEvent, MmapRequest, SimHost, ThpMode};

fn fragmented(memory: u64, fragmentation: f64, seed: u64) -> SimHost {
    host_with(HostConfig { memory, fragmentation, seed, ..HostConfig::default() })
}

#[test]
fn fragmentation_blocks_the_configured_fraction_of_2m_blocks() {
    for &(f, seed) in &[(0.0, 1), (0.1, 2), (0.25, 3), (0.5, 4), (1.0, 5)] {
        let h = fragmented(4 * G1, f, seed);
        let s = h.stats();
        let blocks = 4 * G1 / M2;
        let blocked = (f * blocks as f64).round() as u64;
        assert_eq!(s.pinned_pages, blocked, "fraction {f}");
        assert_eq!(s.allocatable_2m, blocks - blocked, "fraction {f}");
        assert_eq!(s.free_pages, 4 * G1 / K4 - blocked);
        if f > 0.0 {
            assert_eq!(s.allocatable_1g, 0, "a pin lands in every 1 GiB block at {f}");
        }
    }
}

#[test]
fn thp_faults_fall_back_at_the_fragmentation_rate() {
    let h = fragmented(G1, 0.3, 7);
    let hva = h.mmap(&MmapRequest::new(G1, Backing::Anonymous { thp: ThpMode::Always })).unwrap();
    let free_2m = h.stats().allocatable_2m;
    // Touch the first page of every 2 MiB block until memory runs out.
    let mut huge = 0;
    let mut small = 0;
    for b in 0..G1 / M2 {
        match h.fault_in(Hva(hva + b * M2), true) {
            Ok(p) if p.size == PageSize::Size2M => huge += 1,
            Ok(_) => small += 1,
            Err(e) => panic!("fault failed: {e}"),
        }
    }
    let s = h.stats();
    assert_eq!(huge, free_2m, "every allocatable 2 MiB block was used for THP");
    assert_eq!(s.thp_alloc, huge);
    assert_eq!(s.thp_fallback, small);
    assert_eq!(small, 512 - free_2m);
    let expected = 0.3 * 512.0;
    assert!((small as f64 - expected).abs() <= 1.0, "{small} fallbacks, expected about {expected}");
    h.audit().unwrap();
}

#[test]
fn fragmentation_1g_is_a_separate_knob() {
    let h = host_with(HostConfig { memory: 8 * G1, fragmentation_1g: 0.5, seed: 3, ..HostConfig::default() });
    let s = h.stats();
    assert_eq!(s.allocatable_1g, 4);
    assert_eq!(s.pinned_pages, 4);
    assert_eq!(s.allocatable_2m, 8 * 512 - 4, "each 1 GiB pin costs one 2 MiB block");

    // A 1 GiB hugetlb pool grown at runtime gets only the intact blocks.
    let r = h.apply(&HostEvent::HugetlbResize { page_size: PageSize::Size1G, pages: 6 }, &Recorder::new()).unwrap();
    assert_eq!(r.pages, 4 * 512 * 512);
    assert_eq!(h.stats().hugetlb_1g.total, 4);
    h.audit().unwrap();
}

#[test]
fn boot_time_pools_are_reserved_before_fragmentation() {
    let h = host_with(HostConfig {
        memory: 4 * G1,
        hugetlb_1g_pages: 1,
        hugetlb_2m_pages: 10,
        fragmentation: 1.0,
        ..HostConfig::default()
    });
    let s = h.stats();
    assert_eq!((s.hugetlb_1g.total, s.hugetlb_1g.free), (1, 1));
    assert_eq!((s.hugetlb_2m.total, s.hugetlb_2m.free), (10, 10));
    assert_eq!(s.allocatable_2m, 0);
    assert_eq!(s.pinned_pages, 3 * 512 - 10);
}

#[test]
fn same_seed_same_pfns_different_seed_different_pfns() {
    let run = |seed: u64| {
        let h = fragmented(G1, 0.4, seed);
        let hva = h.mmap(&MmapRequest::new(256 * M2, Backing::Anonymous { thp: ThpMode::Always })).unwrap();
        let pfns: Vec<(slat_mmu::Pfn, PageSize)> = (0..256)
            .map(|b| {
                let p = h.fault_in(Hva(hva + b * M2 + 5 * K4), b % 3 == 0).unwrap();
                (p.pfn, p.size)
            })
            .collect();
        (pfns, h.stats())
    };
    let (a, sa) = run(11);
    let (b, sb) = run(11);
    assert_eq!(a, b);
    assert_eq!(sa, sb);
    let (c, _) = run(12);
    assert_ne!(a, c);
}

#[test]
fn runtime_fragmentation_event() {
    let h = host(G1);
    let r = h.apply(&HostEvent::Fragment { fraction: 0.5 }, &Recorder::new()).unwrap();
    assert_eq!(r.pages, 256);
    assert_eq!(h.stats().allocatable_2m, 256);
    assert!(h.apply(&HostEvent::Fragment { fraction: 1.5 }, &Recorder::new()).is_err());
}

#[test]
fn compaction_migrates_movable_pages_to_restore_2m_blocks() {
    // 64 MiB, no pins: fill it with 4 KiB anonymous pages, then free most of them in a
    // scattered pattern so that every 2 MiB block is partly used.
    let h = host(64 << 20);
    let hva = h.mmap(&MmapRequest::new(64 << 20, Backing::Anonymous { thp: ThpMode::Never })).unwrap();
    for p in 0..(64 << 20) / K4 {
        h.fault_in(Hva(hva + p * K4), true).unwrap();
    }
    assert_eq!(h.stats().free_pages, 0);
    let n = Recorder::new();
    // Keep one page in 8 in each block.
    for p in 0..(64 << 20) / K4 {
        if p % 8 != 0 {
            h.apply(&HostEvent::Madvise { hva: hva + p * K4, len: K4, advice: Advice::DontNeed }, &n).unwrap();
        }
    }
    let before = h.stats();
    assert_eq!(before.allocatable_2m, 0);
    let pfn_before = h.lookup(Hva(hva)).unwrap().pfn;
    n.clear();
    let r = h.apply(&HostEvent::Compact { max_blocks: u64::MAX }, &n).unwrap();
    let after = h.stats();
    // 2048 used pages fit in 2048 / 512 = 4 full blocks; the other 28 become free.
    assert_eq!(r.blocks_freed, 28);
    assert_eq!(after.allocatable_2m, 28);
    assert_eq!(after.compaction_blocks_freed, 28);
    assert_eq!(r.folios_migrated, after.migrations);
    assert_eq!(after.free_pages, before.free_pages, "migration moves, it does not allocate");
    // Each migrated page's mapping was invalidated, and lookups show the new pfns.
    assert_eq!(n.invalidations().len() as u64, r.folios_migrated);
    let moved = n.invalidations().iter().any(|&(s, _)| s == hva);
    assert_eq!(h.lookup(Hva(hva)).unwrap().pfn != pfn_before, moved);
    h.audit().unwrap();

    // A THP fault now succeeds.
    let t = h.mmap(&MmapRequest::new(M2, Backing::Anonymous { thp: ThpMode::Always })).unwrap();
    assert_eq!(h.fault_in(Hva(t), false).unwrap().size, PageSize::Size2M);
}

#[test]
fn compaction_cannot_move_pinned_pages() {
    let h = fragmented(64 << 20, 1.0, 9);
    let r = h.apply(&HostEvent::Compact { max_blocks: u64::MAX }, &Recorder::new()).unwrap();
    assert_eq!(r.blocks_freed, 0);
    assert_eq!(h.stats().allocatable_2m, 0);
}
