//! Randomised check against a reference: whatever the MMU-like operations do to stage 2, as long
//! as every flush is applied, every access translates exactly as guest tables + current stage-2
//! tables say, and checked mode finds nothing.

use crate::hw_common::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use slat_pt::format::Ept4;
use slat_pt::{Access, FlushBatch, Gpa, Mapping, PageSize, Perms};
use slat_sim::hw::{AccessOutcome, GuestPaging, GuestRegion, GuestTables, Hardware, HwConfig, SimTlb, TlbArrayConfig};

const MB2: u64 = 2 << 20;
/// Data gpa space touched by stage-2 operations: 32 MiB of 2M blocks, plus one 1G block.
const BLOCKS: u64 = 16;
const GIG_GPA: u64 = 1 << 30;

fn guest_tables() -> GuestTables {
    guest(
        GuestPaging::FourLevel,
        &[
            GuestRegion::new(0x1000_0000, 16 << 20, PageSize::Size4K, 0),
            GuestRegion::new(0x4000_0000, 16 << 20, PageSize::Size2M, 16 << 20),
            GuestRegion::new(0x80_0000_0000, 1 << 30, PageSize::Size1G, GIG_GPA),
        ],
    )
}

fn random_gva(rng: &mut ChaCha8Rng, g: &GuestTables) -> u64 {
    if rng.gen_ratio(1, 50) {
        return 0x2000_0000 + rng.gen_range(0..1u64 << 20); // not mapped by the guest
    }
    let r = g.regions()[rng.gen_range(0..g.regions().len())];
    // Favour a small hot set so that hits, STLB hits and evictions all happen.
    let span = if rng.gen_bool(0.7) { r.len.min(64 * 4096) } else { r.len };
    r.gva + rng.gen_range(0..span)
}

fn apply(tlb: &SimTlb, batch: FlushBatch) {
    slat_mmu::tlb::apply(tlb, &batch);
    let _ = batch.into_detached(); // simulated frames: leaking the detached tables is harmless here
}

/// One random stage-2 change over the data area, with its flush applied.
fn mutate(rng: &mut ChaCha8Rng, pt: &mut Stage2<Ept4>, tlb: &SimTlb) {
    let block = rng.gen_range(0..BLOCKS) * MB2;
    let hpa_block = DATA_HPA + rng.gen_range(0..64u64) * MB2;
    let perms = if rng.gen_bool(0.8) { Perms::RWX } else { Perms::READ };
    let mut batch = FlushBatch::new();
    match rng.gen_range(0..9) {
        0 => {
            let m = Mapping { pa: hpa_block, size: PageSize::Size2M, attrs: fresh(perms) };
            pt.map(Gpa(block), MB2, &m, &mut batch, tlb).unwrap();
        }
        1 | 2 => {
            let page = block + rng.gen_range(0..512u64) * 4096;
            let m = Mapping {
                pa: hpa_block + rng.gen_range(0..512u64) * 4096,
                size: PageSize::Size4K,
                attrs: fresh(perms),
            };
            pt.map(Gpa(page), 4096, &m, &mut batch, tlb).unwrap();
        }
        3 => {
            let len = if rng.gen_bool(0.5) { 4096 } else { MB2 };
            pt.unmap(Gpa(block + rng.gen_range(0..512u64) * 4096 / len * len), len, &mut batch, None).unwrap();
        }
        4 => {
            pt.protect(Gpa(block), MB2, perms, &mut batch).unwrap();
        }
        5 => {
            let _ = pt.split(Gpa(block), PageSize::Size2M, tlb);
        }
        6 => {
            let _ = pt.collapse(Gpa(block), PageSize::Size2M, &mut batch, tlb);
        }
        7 => {
            let _ = pt.harvest_dirty(Gpa(block), 512, &mut batch).unwrap();
        }
        _ => {
            let size = if rng.gen_bool(0.5) { PageSize::Size1G } else { PageSize::Size2M };
            let m = Mapping { pa: 0x40_0000_0000 + rng.gen_range(0..4u64) * (1 << 30), size, attrs: fresh(Perms::RWX) };
            pt.map(Gpa(GIG_GPA), 1 << 30, &m, &mut batch, tlb).unwrap();
        }
    }
    apply(tlb, batch);
}

fn run(seed: u64, config: HwConfig) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let g = guest_tables();
    let mut pt = stage2::<Ept4>();
    map_tables(&mut pt, &g, PageSize::Size4K);
    let _ = map(&mut pt, 0, BLOCKS * MB2, DATA_HPA, PageSize::Size4K, Perms::RWX);
    let mut hw = Hardware::new(config, 4, g.clone()).unwrap();
    let tlb = hw.tlb_handle();
    let (mut completed, mut hits) = (0u64, 0u64);
    for _ in 0..300 {
        mutate(&mut rng, &mut pt, &tlb);
        for _ in 0..200 {
            let vcpu = rng.gen_range(0..4);
            let gva = random_gva(&mut rng, &g);
            let kind = [Access::Read, Access::Write, Access::Exec][rng.gen_range(0..3)];
            let out = hw.access(vcpu, gva, kind, &pt).unwrap();
            let Some(gt) = g.translate(gva) else {
                assert!(matches!(out, AccessOutcome::GuestFault { .. }), "{gva:#x}: {out:?}");
                continue;
            };
            let allowed = |p: Perms| match kind {
                Access::Read => p.contains(Perms::READ),
                Access::Write => p.contains(Perms::WRITE),
                Access::Exec => p.contains(Perms::EXEC),
            };
            match pt.translate(Gpa(gt.gpa)) {
                Some(t) if allowed(t.attrs.perms) => {
                    assert_eq!(out.hpa(), Some(t.pa), "gva {gva:#x} gpa {:#x} {kind:?}: {out:?}", gt.gpa);
                    completed += 1;
                    hits += matches!(out, AccessOutcome::Hit { .. }) as u64;
                }
                _ => {
                    let AccessOutcome::Stage2Fault(f) = out else { panic!("gva {gva:#x} {kind:?}: {out:?}") };
                    assert_eq!((f.gpa, f.access, f.on_guest_table), (gt.gpa, kind, false));
                }
            }
        }
    }
    let s = hw.stats();
    assert_eq!(s.isolation_violations, 0, "{:?}", hw.violations());
    assert_eq!(s.dirty_violations, 0, "{:?}", hw.violations());
    assert_eq!(s.accesses, s.l1_hits + s.stlb_hits + s.misses);
    assert!(completed > 10_000 && hits > completed / 4, "completed {completed}, hits {hits}");
    assert!(s.stlb_hits > 0 && s.entries_invalidated > 0);
}

#[test]
fn random_stage2_changes_with_flushes_never_leave_stale_translations() {
    for seed in 0..4 {
        run(seed, HwConfig::checked());
    }
}

#[test]
fn same_with_walk_caches_and_a_small_tlb() {
    let small = HwConfig {
        l1_4k: TlbArrayConfig::new(16, 4),
        l1_2m: TlbArrayConfig::new(8, 4),
        stlb: TlbArrayConfig::new(64, 8),
        stlb_1g: TlbArrayConfig::fully_associative(2),
        ..HwConfig::checked().with_walk_caches(true)
    };
    for seed in 10..14 {
        run(seed, small.clone());
    }
}

#[test]
fn the_simulation_is_deterministic() {
    let stats = || {
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        let g = guest_tables();
        let mut pt = stage2::<Ept4>();
        map_tables(&mut pt, &g, PageSize::Size2M);
        let _ = map(&mut pt, 0, BLOCKS * MB2, DATA_HPA, PageSize::Size4K, Perms::RWX);
        let mut hw = Hardware::new(HwConfig::checked().with_walk_caches(true), 2, g.clone()).unwrap();
        let tlb = hw.tlb_handle();
        for _ in 0..50 {
            mutate(&mut rng, &mut pt, &tlb);
            for _ in 0..100 {
                let gva = random_gva(&mut rng, &g);
                hw.access(rng.gen_range(0..2), gva, Access::Write, &pt).unwrap();
            }
        }
        hw.stats()
    };
    assert_eq!(stats(), stats());
}
