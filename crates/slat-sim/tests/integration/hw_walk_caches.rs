//! Paging-structure caches and the nested TLB: cheaper walks, flushed with stage 2.

use crate::hw_common::*;
use slat_mmu::Tlb;
use slat_pt::format::Ept4;
use slat_pt::{Access, FlushBatch, FlushRange, Gpa, PageSize, Perms};
use slat_sim::hw::{AccessOutcome, GuestPaging, GuestRegion, Hardware, HwConfig, ViolationKind};

const GVA: u64 = 0x40_0000_0000;

fn setup(table_leaf: PageSize) -> (Hardware, Stage2<Ept4>) {
    let g = guest(GuestPaging::FourLevel, &[GuestRegion::new(GVA, 8 << 20, PageSize::Size4K, 0)]);
    let mut pt = stage2::<Ept4>();
    map_tables(&mut pt, &g, table_leaf);
    let _ = map(&mut pt, 0, 8 << 20, DATA_HPA, PageSize::Size4K, Perms::RW);
    (hardware(HwConfig::checked().with_walk_caches(true), 2, g), pt)
}

fn refs(hw: &mut Hardware, vcpu: usize, gva: u64, pt: &Stage2<Ept4>) -> u32 {
    let out = hw.access(vcpu, gva, Access::Read, pt).unwrap();
    assert!(matches!(out, AccessOutcome::Walked(_)), "{out:?}");
    out.refs()
}

#[test]
fn paging_structure_caches_shorten_walks() {
    let (mut hw, pt) = setup(PageSize::Size4K);
    assert_eq!(refs(&mut hw, 0, GVA, &pt), 24);
    // Same page table: the PDE cache gives the PT and its host address: 1 + 4.
    assert_eq!(refs(&mut hw, 0, GVA + 0x1000, &pt), 5);
    // Next page table, same PD: the PDPTE cache gives the PD (1), the PT needs a stage-2 walk
    // (4 + 1), then the data (4).
    assert_eq!(refs(&mut hw, 0, GVA + (2 << 20), &pt), 10);
    assert_eq!(refs(&mut hw, 0, GVA + (2 << 20) + 0x1000, &pt), 5);
    // Caches are per vCPU.
    assert_eq!(refs(&mut hw, 1, GVA + 0x1000, &pt), 24);
    let s = hw.stats();
    assert_eq!(s.psc_hits, 3);
    assert_eq!(s.walk_refs, 24 + 5 + 10 + 5 + 24);
    assert_eq!(s.isolation_violations, 0);
}

#[test]
fn the_nested_tlb_covers_huge_stage2_leaves_of_table_pages() {
    let (mut hw, pt) = setup(PageSize::Size2M);
    // 4 x (3 + 1) + 4, but the nested TLB already holds the 2M leaf of the table area after
    // the root read: the other three table reads cost 1 each.
    assert_eq!(refs(&mut hw, 0, GVA, &pt), 3 + 1 + 3 + 4);
    // Next page table: PDPTE cache (1), PT via the nested TLB (1), data (4).
    assert_eq!(refs(&mut hw, 0, GVA + (2 << 20), &pt), 6);
    let s = hw.stats();
    assert_eq!((s.psc_hits, s.nested_tlb_hits), (1, 4));
}

#[test]
fn stage2_flushes_invalidate_walk_caches() {
    let (mut hw, pt) = setup(PageSize::Size4K);
    let tlb = hw.tlb_handle();
    refs(&mut hw, 0, GVA, &pt);
    // A data flush leaves walk caches alone.
    tlb.flush_range(&FlushRange { gpa: Gpa(0), len: 4096, size: PageSize::Size4K });
    assert_eq!(refs(&mut hw, 0, GVA + 0x1000, &pt), 5);
    assert_eq!(hw.stats().walk_cache_invalidated, 0);
    // Flushing the guest table area drops every walk-cache entry (3 PSC + 4 nested).
    let area = hw.guest().table_gpa_range();
    tlb.flush_range(&FlushRange { gpa: Gpa(area.start), len: area.end - area.start, size: PageSize::Size4K });
    assert_eq!(hw.stats().walk_cache_invalidated, 7);
    assert_eq!(refs(&mut hw, 0, GVA + 0x2000, &pt), 24);
    tlb.flush_all();
    assert_eq!(refs(&mut hw, 0, GVA + 0x2000, &pt), 24);
}

#[test]
fn a_stale_walk_cache_entry_is_caught() {
    let (mut hw, mut pt) = setup(PageSize::Size4K);
    refs(&mut hw, 0, GVA, &pt);
    let pt_page = hw.guest().table_gpa(0, GVA).unwrap();
    let mut batch = FlushBatch::new();
    pt.unmap(Gpa(pt_page), 4096, &mut batch, None).unwrap();
    // Not flushed: the PDE cache still points at the page table's old host page.
    drop(batch);
    hw.access(0, GVA + 0x3000, Access::Read, &pt).unwrap();
    let v = &hw.violations()[0];
    assert_eq!(v.kind, ViolationKind::StaleWalkCache);
    assert_eq!((v.gpa, v.current_hpa), (pt_page + 3 * 8, None));

    // Flushed: the walk faults on the page-table entry instead.
    let (mut hw, mut pt) = setup(PageSize::Size4K);
    refs(&mut hw, 0, GVA, &pt);
    let mut batch = FlushBatch::new();
    pt.unmap(Gpa(pt_page), 4096, &mut batch, None).unwrap();
    slat_mmu::tlb::apply(&hw.tlb_handle(), &batch);
    let out = hw.access(0, GVA + 0x3000, Access::Read, &pt).unwrap();
    let AccessOutcome::Stage2Fault(f) = out else { panic!("{out:?}") };
    assert!(f.on_guest_table);
    assert_eq!((f.gpa, f.access), (pt_page + 3 * 8, Access::Read));
    assert_eq!(hw.stats().isolation_violations, 0);
}
