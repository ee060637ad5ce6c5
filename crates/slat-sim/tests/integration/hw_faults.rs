//! Stage-2 and guest faults during 2D walks, and the fault-then-retry cycle the engine runs.

use crate::hw_common::*;
use slat_pt::format::Ept4;
use slat_pt::size::{table_index, ENTRIES_PER_TABLE};
use slat_pt::{Access, PageSize, Perms, WalkFault};
use slat_sim::hw::{AccessOutcome, GuestPaging, GuestRegion, HwConfig, Stage2Fault};

const GVA: u64 = 0x3_0000_0000;

#[test]
fn faults_name_the_gpa_and_access_kind_then_retry_succeeds() {
    let g = guest(GuestPaging::FourLevel, &[GuestRegion::new(GVA, 2 << 20, PageSize::Size4K, 0x80_0000)]);
    let root_entry = g.root_gpa() + table_index(GVA, 3, ENTRIES_PER_TABLE) as u64 * 8;
    assert_eq!(g.entry_gpa(3, GVA), Some(root_entry));
    let mut pt = stage2::<Ept4>();
    let mut hw = hardware(HwConfig::checked(), 1, g.clone());

    // Nothing mapped: the very first guest table read faults, as a read.
    let out = hw.access(0, GVA + 0x10, Access::Write, &pt).unwrap();
    assert_eq!(
        out,
        AccessOutcome::Stage2Fault(Stage2Fault {
            gva: GVA + 0x10,
            gpa: root_entry,
            access: Access::Read,
            fault: WalkFault::NotPresent { level: 3 },
            on_guest_table: true,
            refs: 1,
        })
    );

    // The "MMU" maps the guest tables; the retry reaches the data, which faults as a write.
    map_tables(&mut pt, &g, PageSize::Size4K);
    let out = hw.access(0, GVA + 0x10, Access::Write, &pt).unwrap();
    let AccessOutcome::Stage2Fault(f) = out else { panic!("{out:?}") };
    assert_eq!((f.gpa, f.access, f.on_guest_table), (0x80_0010, Access::Write, false));
    assert!(matches!(f.fault, WalkFault::NotPresent { .. }));
    // 4 guest levels x (4 + 1), then the data walk stops after 2 levels (gpa 8 MiB shares only
    // the top-level entry with the table area at 256 GiB).
    assert_eq!(f.refs, 4 * 5 + 2);

    let _ = map(&mut pt, 0x80_0000, 4096, DATA_HPA, PageSize::Size4K, Perms::RW);
    let out = hw.access(0, GVA + 0x10, Access::Write, &pt).unwrap();
    assert!(matches!(out, AccessOutcome::Walked(w) if w.refs == 24 && w.hpa == DATA_HPA + 0x10));
    let s = hw.stats();
    assert_eq!((s.accesses, s.misses, s.stage2_faults, s.walk_refs), (3, 3, 2, 1 + 22 + 24));
}

#[test]
fn an_engine_style_fault_loop_converges() {
    // Fault in pages one at a time, exactly as the engine will: access, map the faulting gpa,
    // retry. Guest tables and data both start unmapped.
    let g = guest(GuestPaging::FourLevel, &[GuestRegion::new(GVA, 4 << 20, PageSize::Size4K, 0)]);
    let mut pt = stage2::<Ept4>();
    let mut hw = hardware(HwConfig::checked(), 1, g);
    let tlb = hw.tlb_handle();
    let mut faults = 0;
    for page in 0..1024u64 {
        let gva = GVA + page * 4096;
        loop {
            match hw.access(0, gva, Access::Write, &pt).unwrap() {
                AccessOutcome::Stage2Fault(f) => {
                    faults += 1;
                    let gpa = PageSize::Size4K.align_down(f.gpa);
                    let hpa = if f.on_guest_table { TABLE_HPA + (gpa - TABLE_GPA) } else { DATA_HPA + gpa };
                    let batch = map(&mut pt, gpa, 4096, hpa, PageSize::Size4K, Perms::RW);
                    slat_mmu::tlb::apply(&tlb, &batch);
                }
                AccessOutcome::GuestFault { .. } => panic!("gva {gva:#x} is mapped by the guest"),
                _ => break,
            }
        }
    }
    // 1024 data pages + root, PDPT, PD, 2 PTs.
    assert_eq!(faults, 1024 + 5);
    assert_eq!(hw.stats().isolation_violations, 0);
}

#[test]
fn permission_faults_carry_the_leaf_size() {
    let g = guest(GuestPaging::FourLevel, &[GuestRegion::new(GVA, 2 << 20, PageSize::Size2M, 0)]);
    let mut pt = stage2::<Ept4>();
    map_tables(&mut pt, &g, PageSize::Size4K);
    let _ = map(&mut pt, 0, 2 << 20, DATA_HPA, PageSize::Size2M, Perms::RX);
    let mut hw = hardware(HwConfig::checked(), 1, g);
    assert!(matches!(hw.access(0, GVA, Access::Exec, &pt).unwrap(), AccessOutcome::Walked(_)));
    let out = hw.access(0, GVA + 0x1234, Access::Write, &pt).unwrap();
    let AccessOutcome::Stage2Fault(f) = out else { panic!("{out:?}") };
    assert_eq!((f.gpa, f.access, f.fault), (0x1234, Access::Write, WalkFault::Permission { size: PageSize::Size2M }));
}

#[test]
fn guest_faults_stop_where_the_guest_tables_end() {
    let g = guest(GuestPaging::FourLevel, &[GuestRegion::new(GVA, 0x2000, PageSize::Size4K, 0)]);
    let mut pt = stage2::<Ept4>();
    map_tables(&mut pt, &g, PageSize::Size4K);
    let _ = map(&mut pt, 0, 2 << 20, DATA_HPA, PageSize::Size4K, Perms::RW);
    let mut hw = hardware(HwConfig::checked(), 1, g);
    // Same page table, entry not present: all four guest levels read.
    assert_eq!(
        hw.access(0, GVA + 0x3000, Access::Read, &pt).unwrap(),
        AccessOutcome::GuestFault { gva: GVA + 0x3000, refs: 4 * 5 }
    );
    // Another top-level slot: only the root entry is read.
    let far = GVA + (1 << 39);
    assert_eq!(hw.access(0, far, Access::Read, &pt).unwrap(), AccessOutcome::GuestFault { gva: far, refs: 5 });
    // Outside the 48-bit space altogether.
    assert!(matches!(hw.access(0, 1 << 50, Access::Read, &pt).unwrap(), AccessOutcome::GuestFault { .. }));
    let s = hw.stats();
    assert_eq!((s.guest_faults, s.stage2_faults), (3, 0));
    assert_eq!(hw.tlb_occupancy(0).unwrap(), 0);
}
