//! I5 across zaps: a page the guest wrote through a writable leaf (no fault, hardware dirty bit
//! only) must still be reported when a host invalidation zaps the leaf before the harvest.

use crate::common::*;
use slat_mmu::Hva;
use slat_mmu::{DirtyLogMode, Gpa, MmuConfig, MmuNotifier};
use slat_pt::{Access, PageSize};

#[test]
fn zapped_hardware_dirty_pages_reach_the_log() {
    let m = mmu(MmuConfig::default().with_dirty_log(DirtyLogMode::HardwareDirty));
    m.host().map_range(HVA, 8 * MIB, HPA, PageSize::Size2M, true);
    m.add_memslot(slot(0, GIB, 8 * MIB, HVA)).unwrap();
    m.set_dirty_logging(0, true).unwrap();
    let pages = [3u64, 77, 512, 1500, 2047];
    for p in pages {
        // A read fault maps the page writable with its dirty state clear (hardware-dirty mode)...
        assert_eq!(touch(&m, GIB + p * 4096, Access::Read), PageSize::Size4K);
        // ...and the guest's write goes through without a fault, setting only the dirty bit.
        assert!(m.with_tables(|pt| pt.hw_walk(Gpa(GIB + p * 4096), Access::Write).result.is_ok()));
    }
    let faults = m.stats().faults;
    // The host invalidates the whole slot (e.g. compaction) before the harvest.
    m.invalidate_range_start(Hva(HVA), Hva(HVA + 8 * MIB));
    m.invalidate_range_end(Hva(HVA), Hva(HVA + 8 * MIB));
    audit(&m);
    assert_eq!(leaves(&m), [0, 0, 0]);
    let log = m.get_dirty_log(0).unwrap();
    for p in pages {
        assert!(log[(p / 64) as usize] & (1 << (p % 64)) != 0, "page {p} written before the zap is missing");
    }
    assert_eq!(m.stats().faults, faults, "the writes themselves did not fault");
}
