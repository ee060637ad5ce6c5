//! 2D walk costs: exactly (n + 1)(m + 1) - 1 references without walk caches.

use crate::hw_common::*;
use slat_pt::format::{Ept4, Ept5, Format, Npt};
use slat_pt::{Access, Gpa, PageSize, Perms};
use slat_sim::hw::{AccessOutcome, GuestPaging, GuestRegion, HwConfig, WalkRecord};

const GVA: u64 = 0x7f12_4000_0000; // 1 GiB aligned, in the lower half of a 48-bit space

/// One walk with guest pages of `guest_size` and stage-2 leaves of `s2_size` (data and guest
/// tables alike); returns the walk record.
fn one_walk<F: Format>(paging: GuestPaging, guest_size: PageSize, s2_size: PageSize, gva: u64) -> WalkRecord {
    let len = guest_size.bytes().max(PageSize::Size2M.bytes());
    let g = guest(paging, &[GuestRegion::new(gva, len, guest_size, 0)]);
    let mut pt = stage2::<F>();
    map_tables(&mut pt, &g, s2_size);
    let data_len = len.max(s2_size.bytes());
    let _ = map(&mut pt, 0, data_len, DATA_HPA, s2_size, Perms::RW);
    let mut hw = hardware(HwConfig::checked(), 1, g);
    let probe = gva + 0x3456;
    match hw.access(0, probe, Access::Read, &pt).unwrap() {
        AccessOutcome::Walked(w) => {
            assert_eq!(w.gpa, 0x3456);
            assert_eq!(w.hpa, DATA_HPA + 0x3456);
            assert_eq!(w.guest_size, guest_size);
            assert_eq!(w.stage2_size, s2_size);
            assert_eq!(w.cached_size, guest_size.min(s2_size));
            let s = hw.stats();
            assert_eq!((s.walks, s.walk_refs, s.isolation_violations), (1, w.refs as u64, 0));
            // The translation is cached now.
            assert!(matches!(hw.access(0, probe + 8, Access::Read, &pt).unwrap(), AccessOutcome::Hit { .. }));
            w
        }
        other => panic!("expected a walk, got {other:?}"),
    }
}

#[test]
fn four_by_four_is_24() {
    assert_eq!(one_walk::<Ept4>(GuestPaging::FourLevel, PageSize::Size4K, PageSize::Size4K, GVA).refs, 24);
}

#[test]
fn host_2m_leaves_give_19() {
    assert_eq!(one_walk::<Ept4>(GuestPaging::FourLevel, PageSize::Size4K, PageSize::Size2M, GVA).refs, 19);
}

#[test]
fn guest_and_host_2m_give_15() {
    assert_eq!(one_walk::<Ept4>(GuestPaging::FourLevel, PageSize::Size2M, PageSize::Size2M, GVA).refs, 15);
}

#[test]
fn host_1g_leaves_give_14() {
    assert_eq!(one_walk::<Ept4>(GuestPaging::FourLevel, PageSize::Size4K, PageSize::Size1G, GVA).refs, 14);
}

#[test]
fn other_mixes_follow_the_formula() {
    // (n + 1)(m + 1) - 1 with n = guest levels read, m = stage-2 levels read.
    let cases = [
        (PageSize::Size2M, PageSize::Size4K, 3, 4),
        (PageSize::Size2M, PageSize::Size1G, 3, 2),
        (PageSize::Size1G, PageSize::Size2M, 2, 3),
        (PageSize::Size1G, PageSize::Size1G, 2, 2),
    ];
    for (g, h, n, m) in cases {
        let w = one_walk::<Ept4>(GuestPaging::FourLevel, g, h, GVA);
        assert_eq!(w.refs, (n + 1) * (m + 1) - 1, "guest {g}, stage 2 {h}");
    }
}

#[test]
fn npt_counts_the_same() {
    assert_eq!(one_walk::<Npt>(GuestPaging::FourLevel, PageSize::Size4K, PageSize::Size4K, GVA).refs, 24);
}

#[test]
fn five_by_five_is_35() {
    let gva: u64 = 0x0123_4540_0000_0000; // 1 GiB aligned, above 48 bits, below 57
    assert!(gva >= 1 << 48, "exercise the fifth level");
    assert_eq!(one_walk::<Ept5>(GuestPaging::FiveLevel, PageSize::Size4K, PageSize::Size4K, gva).refs, 35);
    // Five guest levels over a four-level stage 2: 5 * 5 + 4.
    assert_eq!(one_walk::<Ept4>(GuestPaging::FiveLevel, PageSize::Size4K, PageSize::Size4K, gva).refs, 29);
}

#[test]
fn every_miss_pays_the_full_walk_without_walk_caches() {
    let g = guest(GuestPaging::FourLevel, &[GuestRegion::new(GVA, 4 << 20, PageSize::Size4K, 0)]);
    let mut pt = stage2::<Ept4>();
    map_tables(&mut pt, &g, PageSize::Size4K);
    let _ = map(&mut pt, 0, 4 << 20, DATA_HPA, PageSize::Size4K, Perms::RW);
    let mut hw = hardware(HwConfig::checked(), 1, g);
    for page in 0..100u64 {
        let out = hw.access(0, GVA + page * 4096, Access::Read, &pt).unwrap();
        assert_eq!(out.refs(), 24, "page {page}");
    }
    let s = hw.stats();
    assert_eq!((s.misses, s.walk_refs), (100, 2400));
    assert_eq!(s.refs_per_access(), 24.0);
    assert_eq!(s.misses_per_kilo_access(), 1000.0);
}

#[test]
fn walks_set_stage2_accessed_and_dirty() {
    let g = guest(GuestPaging::FourLevel, &[GuestRegion::new(GVA, 2 << 20, PageSize::Size4K, 0)]);
    let mut pt = stage2::<Ept4>();
    map_tables(&mut pt, &g, PageSize::Size4K);
    let _ = map(&mut pt, 0, 2 << 20, DATA_HPA, PageSize::Size4K, Perms::RW);
    let leaf = |pt: &Stage2<Ept4>, gpa: u64| pt.leaves(Gpa(gpa), 4096)[0].attrs;
    assert!(!leaf(&pt, 0x1000).accessed);
    let mut hw = hardware(HwConfig::checked(), 1, g.clone());
    hw.access(0, GVA + 0x1000, Access::Read, &pt).unwrap();
    assert!(leaf(&pt, 0x1000).accessed && !leaf(&pt, 0x1000).dirty);
    // Guest table pages were read through stage 2 as well.
    assert!(leaf(&pt, g.root_gpa()).accessed && !leaf(&pt, g.root_gpa()).dirty);
    // A write through the clean cached entry walks again to set the dirty state.
    let out = hw.access(0, GVA + 0x1000, Access::Write, &pt).unwrap();
    assert!(matches!(out, AccessOutcome::Walked(_)));
    assert!(leaf(&pt, 0x1000).dirty);
    // Now the entry is dirty: writes hit.
    assert!(matches!(hw.access(0, GVA + 0x1008, Access::Write, &pt).unwrap(), AccessOutcome::Hit { .. }));
    let s = hw.stats();
    assert_eq!((s.accesses, s.misses, s.l1_hits), (3, 2, 1));
}
