//! The TLB model: cached sizes, arrays and LRU, per-vCPU TLBs, flushes, configuration errors.

use crate::hw_common::*;
use slat_mmu::Tlb;
use slat_pt::format::Ept4;
use slat_pt::{Access, FlushRange, Gpa, PageSize, Perms};
use slat_sim::hw::{
    AccessOutcome, CachedTranslation, GuestPaging, GuestRegion, Hardware, HwConfig, HwError, TlbArrayConfig, TlbLevel,
};

const GVA: u64 = 0x5555_4000_0000;

/// Hardware over `len` bytes at [`GVA`] -> gpa 0 with guest pages of `guest_size` and stage-2
/// leaves of `s2_size`.
fn setup(
    config: HwConfig,
    vcpus: usize,
    len: u64,
    guest_size: PageSize,
    s2_size: PageSize,
) -> (Hardware, Stage2<Ept4>) {
    let g = guest(GuestPaging::FourLevel, &[GuestRegion::new(GVA, len, guest_size, 0)]);
    let mut pt = stage2::<Ept4>();
    map_tables(&mut pt, &g, PageSize::Size2M);
    let _ = map(&mut pt, 0, len.max(s2_size.bytes()), DATA_HPA, s2_size, Perms::RW);
    (hardware(config, vcpus, g), pt)
}

fn cached(hw: &mut Hardware, vcpu: usize) -> Vec<CachedTranslation> {
    let mut v = Vec::new();
    hw.for_each_cached(vcpu, |c| v.push(c)).unwrap();
    v
}

fn is_hit(out: AccessOutcome) -> bool {
    matches!(out, AccessOutcome::Hit { .. })
}

#[test]
fn caches_the_smaller_of_guest_and_stage2_sizes() {
    // Guest 2M on stage-2 4K: cached as 4K, the neighbouring 4K page misses.
    let (mut hw, pt) = setup(HwConfig::checked(), 1, 4 << 20, PageSize::Size2M, PageSize::Size4K);
    assert!(!is_hit(hw.access(0, GVA, Access::Read, &pt).unwrap()));
    assert!(!is_hit(hw.access(0, GVA + 0x1000, Access::Read, &pt).unwrap()));
    assert!(cached(&mut hw, 0).iter().all(|c| c.size == PageSize::Size4K && c.stage2_size == PageSize::Size4K));

    // Guest 4K on stage-2 2M: cached as 4K too.
    let (mut hw, pt) = setup(HwConfig::checked(), 1, 4 << 20, PageSize::Size4K, PageSize::Size2M);
    assert!(!is_hit(hw.access(0, GVA, Access::Read, &pt).unwrap()));
    assert!(!is_hit(hw.access(0, GVA + 0x1000, Access::Read, &pt).unwrap()));
    let c = cached(&mut hw, 0);
    assert!(c.iter().all(|c| c.size == PageSize::Size4K && c.stage2_size == PageSize::Size2M));

    // Both 2M: one entry covers the 2M page.
    let (mut hw, pt) = setup(HwConfig::checked(), 1, 4 << 20, PageSize::Size2M, PageSize::Size2M);
    assert!(!is_hit(hw.access(0, GVA, Access::Read, &pt).unwrap()));
    for off in (0x1000..2 << 20).step_by(0x3_1000) {
        assert_eq!(
            hw.access(0, GVA + off, Access::Read, &pt).unwrap(),
            AccessOutcome::Hit { hpa: DATA_HPA + off, level: TlbLevel::L1 }
        );
    }
    let c = cached(&mut hw, 0);
    assert!(!c.is_empty() && c.iter().all(|c| c.size == PageSize::Size2M && c.gva == GVA && c.hpa == DATA_HPA));
    assert_eq!(hw.stats().misses, 1);

    // Both 1G: one 1G entry.
    let (mut hw, pt) = setup(HwConfig::checked(), 1, 1 << 30, PageSize::Size1G, PageSize::Size1G);
    assert!(!is_hit(hw.access(0, GVA, Access::Read, &pt).unwrap()));
    assert!(is_hit(hw.access(0, GVA + (1 << 30) - 8, Access::Read, &pt).unwrap()));
    assert!(cached(&mut hw, 0).iter().all(|c| c.size == PageSize::Size1G));
}

#[test]
fn l1_lru_eviction_falls_back_to_the_stlb() {
    // Default L1 4K: 16 sets x 4 ways. Pages 16 apart share an L1 set but not an STLB set.
    let (mut hw, pt) = setup(HwConfig::checked(), 1, 8 << 20, PageSize::Size4K, PageSize::Size4K);
    let page = |i: u64| GVA + i * 16 * 4096;
    for i in 0..4 {
        hw.access(0, page(i), Access::Read, &pt).unwrap();
    }
    // Touch page 0 (now most recently used), then a fifth page evicts page 1, the LRU.
    assert!(matches!(
        hw.access(0, page(0), Access::Read, &pt).unwrap(),
        AccessOutcome::Hit { level: TlbLevel::L1, .. }
    ));
    hw.access(0, page(4), Access::Read, &pt).unwrap();
    assert!(matches!(
        hw.access(0, page(0), Access::Read, &pt).unwrap(),
        AccessOutcome::Hit { level: TlbLevel::L1, .. }
    ));
    assert!(matches!(
        hw.access(0, page(1), Access::Read, &pt).unwrap(),
        AccessOutcome::Hit { level: TlbLevel::Stlb, .. }
    ));
    // The STLB hit refilled L1: page 1 hits there now.
    assert!(matches!(
        hw.access(0, page(1), Access::Read, &pt).unwrap(),
        AccessOutcome::Hit { level: TlbLevel::L1, .. }
    ));
    let s = hw.stats();
    assert_eq!((s.misses, s.l1_hits, s.stlb_hits), (5, 3, 1));
    assert_eq!(s.accesses, s.l1_hits + s.stlb_hits + s.misses);
}

#[test]
fn stlb_capacity_and_reach() {
    // A tiny TLB: L1 4 entries, STLB 8 entries, both fully associative.
    let config = HwConfig {
        l1_4k: TlbArrayConfig::fully_associative(4),
        stlb: TlbArrayConfig::fully_associative(8),
        ..HwConfig::checked()
    };
    let (mut hw, pt) = setup(config, 1, 8 << 20, PageSize::Size4K, PageSize::Size4K);
    // Cycle over 8 pages: after the first round everything hits (STLB holds 8).
    for round in 0..3 {
        for i in 0..8u64 {
            let out = hw.access(0, GVA + i * 4096, Access::Read, &pt).unwrap();
            assert_eq!(is_hit(out), round > 0, "round {round} page {i}");
        }
    }
    // Cycle over 9 pages with LRU: every access misses (the classic LRU cliff).
    hw.reset_counters();
    for _ in 0..3 {
        for i in 100..109u64 {
            hw.access(0, GVA + i * 4096, Access::Read, &pt).unwrap();
        }
    }
    assert_eq!(hw.stats().misses, 27);
    assert_eq!(hw.tlb_occupancy(0).unwrap(), 12);
}

#[test]
fn disabled_arrays_mean_every_access_walks() {
    let off = TlbArrayConfig::disabled();
    let config = HwConfig { l1_4k: off, l1_2m: off, l1_1g: off, stlb: off, stlb_1g: off, ..HwConfig::checked() };
    let (mut hw, pt) = setup(config, 1, 2 << 20, PageSize::Size4K, PageSize::Size4K);
    for _ in 0..3 {
        // Guest tables on 2M stage-2 leaves (4 x (3 + 1)), data on 4K leaves (4).
        assert_eq!(hw.access(0, GVA, Access::Read, &pt).unwrap().refs(), 20);
    }
    assert_eq!(hw.tlb_occupancy(0).unwrap(), 0);
}

#[test]
fn each_vcpu_has_its_own_tlb_and_flushes_reach_all() {
    let (mut hw, pt) = setup(HwConfig::checked(), 3, 8 << 20, PageSize::Size4K, PageSize::Size4K);
    for vcpu in 0..3 {
        // vCPU 0 filling its TLB does not help vCPU 1.
        assert!(!is_hit(hw.access(vcpu, GVA, Access::Read, &pt).unwrap()));
        assert!(!is_hit(hw.access(vcpu, GVA + (4 << 20), Access::Read, &pt).unwrap()));
        assert!(is_hit(hw.access(vcpu, GVA, Access::Read, &pt).unwrap()));
    }
    let tlb = hw.tlb_handle();
    // Flushing gpa 0..4K (a 4K stage-2 leaf) removes that translation from every vCPU (L1 + STLB).
    tlb.flush_range(&FlushRange { gpa: Gpa(0), len: 4096, size: PageSize::Size4K });
    let s = hw.stats();
    assert_eq!((s.range_flushes, s.entries_invalidated), (1, 6));
    for vcpu in 0..3 {
        assert!(!is_hit(hw.access(vcpu, GVA, Access::Read, &pt).unwrap()));
        assert!(is_hit(hw.access(vcpu, GVA + (4 << 20), Access::Read, &pt).unwrap()), "unrelated entry kept");
    }
    tlb.flush_all();
    for vcpu in 0..3 {
        assert_eq!(hw.tlb_occupancy(vcpu).unwrap(), 0);
    }
    let s = hw.stats();
    assert_eq!((s.range_flushes, s.full_flushes, s.entries_invalidated), (1, 1, 6 + 12));
}

#[test]
fn a_flush_inside_a_huge_stage2_leaf_removes_every_piece_of_it() {
    // Guest 4K pages on one 2M stage-2 leaf: entries are 4K but belong to the 2M leaf.
    let (mut hw, pt) = setup(HwConfig::checked(), 1, 4 << 20, PageSize::Size4K, PageSize::Size2M);
    for i in 0..8u64 {
        hw.access(0, GVA + i * 4096, Access::Read, &pt).unwrap();
    }
    hw.access(0, GVA + (2 << 20), Access::Read, &pt).unwrap(); // another 2M leaf
    let tlb = hw.tlb_handle();
    tlb.flush_range(&FlushRange { gpa: Gpa(0x5000), len: 4096, size: PageSize::Size4K });
    let left = cached(&mut hw, 0);
    assert!(left.iter().all(|c| c.stage2_gpa == 2 << 20), "{left:?}");
    assert_eq!(hw.stats().entries_invalidated, 16); // 8 pages, L1 + STLB
}

#[test]
fn flushes_apply_before_inspection_and_counting() {
    let (mut hw, pt) = setup(HwConfig::checked(), 2, 2 << 20, PageSize::Size4K, PageSize::Size4K);
    hw.access(1, GVA, Access::Read, &pt).unwrap();
    let tlb = hw.tlb_handle();
    let handle_clone = tlb.clone();
    handle_clone.flush_range(&FlushRange { gpa: Gpa(0), len: 2 << 20, size: PageSize::Size4K });
    assert_eq!(hw.tlb_occupancy(1).unwrap(), 0);
    // An empty range is counted but changes nothing.
    tlb.flush_range(&FlushRange { gpa: Gpa(0), len: 0, size: PageSize::Size4K });
    assert_eq!(hw.stats().range_flushes, 2);
}

#[test]
fn guest_initiated_flush_empties_one_vcpu() {
    let (mut hw, pt) = setup(HwConfig::checked(), 2, 2 << 20, PageSize::Size4K, PageSize::Size4K);
    hw.access(0, GVA, Access::Read, &pt).unwrap();
    hw.access(1, GVA, Access::Read, &pt).unwrap();
    hw.flush_vcpu(0).unwrap();
    assert_eq!(hw.tlb_occupancy(0).unwrap(), 0);
    assert_eq!(hw.tlb_occupancy(1).unwrap(), 2);
    assert_eq!(hw.stats().full_flushes, 0);
}

#[test]
fn read_only_entries_walk_again_for_writes() {
    let g = guest(GuestPaging::FourLevel, &[GuestRegion::new(GVA, 2 << 20, PageSize::Size4K, 0)]);
    let mut pt = stage2::<Ept4>();
    map_tables(&mut pt, &g, PageSize::Size2M);
    let _ = map(&mut pt, 0, 2 << 20, DATA_HPA, PageSize::Size4K, Perms::READ);
    let mut hw = hardware(HwConfig::checked(), 1, g);
    assert!(!is_hit(hw.access(0, GVA, Access::Read, &pt).unwrap()));
    assert!(is_hit(hw.access(0, GVA, Access::Read, &pt).unwrap()));
    // Exec is not allowed either (RAM mapped read-only without X).
    assert!(matches!(hw.access(0, GVA, Access::Exec, &pt).unwrap(), AccessOutcome::Stage2Fault(_)));
    assert!(matches!(hw.access(0, GVA, Access::Write, &pt).unwrap(), AccessOutcome::Stage2Fault(_)));
    let s = hw.stats();
    assert_eq!((s.accesses, s.misses, s.stage2_faults, s.l1_hits), (4, 3, 2, 1));
}

#[test]
fn configuration_errors_are_reported() {
    let g = guest(GuestPaging::FourLevel, &[GuestRegion::new(GVA, 2 << 20, PageSize::Size4K, 0)]);
    let bad_ways = HwConfig { l1_4k: TlbArrayConfig::new(64, 5), ..Default::default() };
    assert_eq!(
        Hardware::new(bad_ways, 1, g.clone()).unwrap_err(),
        HwError::InvalidTlbArray { array: "l1_4k", entries: 64, ways: 5 }
    );
    // 1536 entries in 8-way sets = 192 sets: not a power of two.
    let bad_sets = HwConfig { stlb: TlbArrayConfig::new(1536, 8), ..Default::default() };
    assert!(matches!(Hardware::new(bad_sets, 1, g.clone()), Err(HwError::InvalidTlbArray { array: "stlb", .. })));
    let zero_ways = HwConfig { stlb_1g: TlbArrayConfig::new(16, 0), ..Default::default() };
    assert!(Hardware::new(zero_ways, 1, g.clone()).is_err());
    assert_eq!(Hardware::new(HwConfig::default(), 0, g.clone()).unwrap_err(), HwError::NoVcpus);

    let pt = stage2::<Ept4>();
    let mut hw = Hardware::new(HwConfig::default(), 2, g).unwrap();
    assert_eq!(hw.access(2, GVA, Access::Read, &pt).unwrap_err(), HwError::NoSuchVcpu { vcpu: 2, vcpus: 2 });
    assert!(hw.tlb_occupancy(7).is_err());
    assert!(hw.flush_vcpu(7).is_err());
    assert!(hw.for_each_cached(7, |_| {}).is_err());
    assert!(HwConfig::default().validate().is_ok());
}

#[test]
fn config_round_trips_through_toml_with_defaults() {
    let c: HwConfig = toml::from_str("checked = true\n[stlb]\nentries = 2048\nways = 16\n").unwrap();
    assert!(c.checked);
    assert_eq!(c.stlb, TlbArrayConfig::new(2048, 16));
    assert_eq!(c.l1_4k, HwConfig::default().l1_4k);
    let back: HwConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
    assert_eq!(back, c);
}
