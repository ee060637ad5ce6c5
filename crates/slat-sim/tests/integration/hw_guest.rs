//! Guest page tables: regions, table placement and validation.

use slat_pt::PageSize::{Size1G, Size2M, Size4K};
use slat_sim::hw::{GuestPaging, GuestRegion, GuestTables, HwError};

const BASE: u64 = 0x1_0000_0000;

fn tables(paging: GuestPaging, regions: &[GuestRegion]) -> Result<GuestTables, HwError> {
    GuestTables::new(paging, BASE, regions.iter().copied())
}

#[test]
fn table_pages_follow_the_regions() {
    let four = GuestPaging::FourLevel;
    // 4 MiB of 4K pages: root, PDPT, PD, 2 PTs.
    assert_eq!(tables(four, &[GuestRegion::new(0x40_0000, 4 << 20, Size4K, 0)]).unwrap().table_pages(), 5);
    // 2M pages need no PTs; 1G pages need no PDs.
    assert_eq!(tables(four, &[GuestRegion::new(0x40_0000, 4 << 20, Size2M, 0)]).unwrap().table_pages(), 3);
    assert_eq!(tables(four, &[GuestRegion::new(1 << 30, 4 << 30, Size1G, 0)]).unwrap().table_pages(), 2);
    // Regions in different top-level slots share only the root.
    let two = [GuestRegion::new(0, 4096, Size4K, 0), GuestRegion::new(1 << 39, 4096, Size4K, 4096)];
    assert_eq!(tables(four, &two).unwrap().table_pages(), 1 + 2 * 3);
    // A 4K region and a 2M region in one PD share the PD, PDPT and root.
    let mixed =
        [GuestRegion::new(0x20_0000, 2 << 20, Size4K, 0), GuestRegion::new(0x40_0000, 4 << 20, Size2M, 2 << 20)];
    assert_eq!(tables(four, &mixed).unwrap().table_pages(), 4);
    // 5-level paging adds one level.
    let g = tables(GuestPaging::FiveLevel, &[GuestRegion::new(1 << 50, 4096, Size4K, 0)]).unwrap();
    assert_eq!((g.levels(), g.table_pages()), (5, 5));
    // 1 GiB of 4K pages: 512 PTs + PD + PDPT + root.
    assert_eq!(tables(four, &[GuestRegion::new(0, 1 << 30, Size4K, 0)]).unwrap().table_pages(), 515);
}

#[test]
fn table_pages_are_distinct_and_inside_the_table_area() {
    let regions = [
        GuestRegion::new(0x1000_0000, 6 << 20, Size4K, 0),
        GuestRegion::new(0x1060_0000, 10 << 20, Size2M, 6 << 20),
        GuestRegion::new(0x80_4000_0000, 2 << 30, Size1G, 1 << 30),
        GuestRegion::new(0x7fff_ffe0_0000, 2 << 20, Size4K, 4 << 30),
    ];
    let g = tables(GuestPaging::FourLevel, &regions).unwrap();
    assert_eq!(g.root_gpa(), BASE);
    let area = g.table_gpa_range();
    assert_eq!(area, BASE..BASE + g.table_pages() * 4096);
    let mut seen = std::collections::BTreeSet::new();
    for r in g.regions() {
        for gva in (r.gva..r.gva + r.len).step_by(r.page_size.bytes() as usize) {
            for level in r.page_size.level()..4 {
                let t = g.table_gpa(level, gva).expect("table on the path of a mapped gva");
                assert!(area.contains(&t) && t % 4096 == 0);
                seen.insert(t);
                let e = g.entry_gpa(level, gva).unwrap();
                assert_eq!(e - t, ((gva >> (12 + 9 * level as u32)) & 511) * 8);
            }
            if let Some(below) = r.page_size.level().checked_sub(1) {
                assert_eq!(g.table_gpa(below, gva), None, "no table under a huge guest leaf");
            }
        }
    }
    assert_eq!(seen.len() as u64, g.table_pages(), "every table page is on some path, none shared by mistake");
    // No PT exists for the 2M region, and nothing for an unmapped slot.
    assert_eq!(g.table_gpa(0, 0x1060_0000), None);
    assert_eq!(g.table_gpa(2, 0x100_0000_0000), None);
}

#[test]
fn translate_uses_the_region_of_the_gva() {
    let regions =
        [GuestRegion::new(0x40_0000, 2 << 20, Size4K, 0x1000_0000), GuestRegion::new(1 << 30, 1 << 30, Size1G, 0)];
    let g = tables(GuestPaging::FourLevel, &regions).unwrap();
    let t = g.translate(0x40_1234).unwrap();
    assert_eq!((t.gpa, t.size), (0x1000_1234, Size4K));
    let t = g.translate((1 << 30) + 0x1234_5678).unwrap();
    assert_eq!((t.gpa, t.size), (0x1234_5678, Size1G));
    assert_eq!(g.translate(0x60_0000), None);
    assert_eq!(g.translate(0), None);
    assert_eq!(g.region_of(0x40_0000).unwrap().gpa, 0x1000_0000);
}

#[test]
fn bad_regions_are_rejected() {
    let four = GuestPaging::FourLevel;
    assert!(matches!(
        tables(four, &[GuestRegion::new(0x1000, 2 << 20, Size2M, 0)]),
        Err(HwError::RegionMisaligned { gva: 0x1000, .. })
    ));
    assert!(matches!(
        tables(four, &[GuestRegion::new(0, 2 << 20, Size2M, 0x1000)]),
        Err(HwError::RegionMisaligned { .. })
    ));
    assert!(matches!(tables(four, &[GuestRegion::new(0, 0, Size4K, 0)]), Err(HwError::RegionMisaligned { .. })));
    assert!(matches!(tables(four, &[GuestRegion::new(0, 0x1800, Size4K, 0)]), Err(HwError::RegionMisaligned { .. })));
    assert_eq!(
        tables(four, &[GuestRegion::new(0, 0x3000, Size4K, 0), GuestRegion::new(0x2000, 0x1000, Size4K, 0)]),
        Err(HwError::RegionOverlap { first: 0, second: 0x2000 })
    );
    assert!(matches!(
        tables(four, &[GuestRegion::new(1 << 48, 4096, Size4K, 0)]),
        Err(HwError::RegionOutOfRange { gva_bits: 48, .. })
    ));
    assert!(matches!(
        tables(four, &[GuestRegion::new(0, 4096, Size4K, u64::MAX - 4095)]),
        Err(HwError::RegionOutOfRange { .. })
    ));
    assert!(tables(GuestPaging::FiveLevel, &[GuestRegion::new(1 << 48, 4096, Size4K, 0)]).is_ok());
    assert_eq!(
        GuestTables::new(four, 0x1234, [GuestRegion::new(0, 4096, Size4K, 0)]),
        Err(HwError::TableAreaMisaligned { gpa: 0x1234 })
    );
    // No regions at all: just the root.
    assert_eq!(tables(four, &[]).unwrap().table_pages(), 1);
}
