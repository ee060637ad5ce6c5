//! Shared set-up for the hardware-model tests.
#![allow(dead_code)]

use std::sync::Arc;

use slat_pt::format::Format;
use slat_pt::{FlushBatch, Gpa, LeafAttrs, Mapping, NoTlb, PageSize, PageTable, Perms, SimFrameAllocator};
use slat_sim::hw::{GuestPaging, GuestRegion, GuestTables, Hardware, HwConfig};

/// Where guest page-table pages live (gpa).
pub const TABLE_GPA: u64 = 0x40_0000_0000;
/// Host-physical base of guest data.
pub const DATA_HPA: u64 = 0x10_0000_0000;
/// Host-physical base of guest page-table pages.
pub const TABLE_HPA: u64 = 0x20_0000_0000;
/// Where stage-2 page-table frames live (hpa).
pub const FRAMES_HPA: u64 = 0x100_0000_0000;

/// A stage-2 table with frames from its own simulated allocator.
pub type Stage2<F> = PageTable<F, Arc<SimFrameAllocator>>;

/// An empty stage-2 table of format `F`.
pub fn stage2<F: Format>() -> Stage2<F> {
    PageTable::new(Arc::new(SimFrameAllocator::new(FRAMES_HPA, 1 << 30))).unwrap()
}

/// Attributes that start clean and not accessed, so hardware A/D updates are visible.
pub fn fresh(perms: Perms) -> LeafAttrs {
    LeafAttrs { accessed: false, ..LeafAttrs::ram(perms) }
}

/// Map `len` bytes at `gpa` to `hpa` with `size` leaves; returns the batch (to apply or drop).
pub fn map<F: Format>(pt: &mut Stage2<F>, gpa: u64, len: u64, hpa: u64, size: PageSize, perms: Perms) -> FlushBatch {
    let m = Mapping { pa: hpa, size, attrs: fresh(perms) };
    let mut batch = FlushBatch::new();
    pt.map(Gpa(gpa), len, &m, &mut batch, &NoTlb).unwrap();
    batch
}

/// Map the guest's table area with `size` leaves (rounded up to whole leaves).
pub fn map_tables<F: Format>(pt: &mut Stage2<F>, guest: &GuestTables, size: PageSize) {
    let r = guest.table_gpa_range();
    let start = size.align_down(r.start);
    let end = size.align_down(r.end + size.bytes() - 1);
    let hpa = TABLE_HPA + (start - size.align_down(TABLE_GPA));
    let b = map(pt, start, end - start, hpa, size, Perms::RW);
    assert!(b.is_empty());
}

/// Guest tables of depth `paging` over `regions`, tables at [`TABLE_GPA`].
pub fn guest(paging: GuestPaging, regions: &[GuestRegion]) -> GuestTables {
    GuestTables::new(paging, TABLE_GPA, regions.iter().copied()).unwrap()
}

/// Hardware with `vcpus` vCPUs in checked mode.
pub fn hardware(config: HwConfig, vcpus: usize, guest: GuestTables) -> Hardware {
    Hardware::new(config, vcpus, guest).unwrap()
}
