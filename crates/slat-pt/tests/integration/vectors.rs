//! Spec-derived encode/decode vectors for every page-table format.
//!
//! Every expected `u64` below is written by hand from the bit positions in the cited
//! specification section, never computed by calling an encoder. Each vector is checked both ways:
//! `leaf(...) == raw` and `decode(raw) == Pte::Leaf { .. }`.

use proptest::prelude::*;
use slat_pt::format::{Arm64S2L0, Arm64S2L1, Ept4, Ept5, Format, Npt, Sv39x4, Sv48x4};
use slat_pt::{LeafAttrs, MemType, Perms, Pte, SwBits};

const HW: SwBits = SwBits::SW0;
const WP: SwBits = SwBits::SW1;
const NOSW: SwBits = SwBits::empty();

fn la(perms: Perms, mem_type: MemType, accessed: bool, dirty: bool, sw: SwBits) -> LeafAttrs {
    LeafAttrs { perms, mem_type, accessed, dirty, sw }
}

/// One leaf vector: `leaf(level, pa, attrs)` must be `raw`, and `decode(level, raw)` must give
/// back `pa` and `decoded` (the attributes the format can represent).
struct V {
    level: u8,
    pa: u64,
    attrs: LeafAttrs,
    raw: u64,
    decoded: LeafAttrs,
}

fn v(level: u8, pa: u64, attrs: LeafAttrs, raw: u64) -> V {
    V { level, pa, attrs, raw, decoded: attrs }
}

fn check_leaves<F: Format>(vectors: &[V]) {
    for (i, t) in vectors.iter().enumerate() {
        let got = F::leaf(t.level, t.pa, &t.attrs);
        assert_eq!(got, t.raw, "{} vector {i}: leaf() = {got:#018x}, spec says {:#018x}", F::NAME, t.raw);
        assert_eq!(
            F::decode(t.level, t.raw),
            Pte::Leaf { pa: t.pa, attrs: t.decoded },
            "{} vector {i}: decode({:#018x})",
            F::NAME,
            t.raw
        );
        assert!(F::is_present(t.raw), "{} vector {i}", F::NAME);
        assert!(F::is_leaf(t.level, t.raw), "{} vector {i}", F::NAME);
        assert_eq!(F::addr(t.level, t.raw), t.pa, "{} vector {i}", F::NAME);
        assert_eq!(F::is_accessed(t.raw), t.decoded.accessed, "{} vector {i}", F::NAME);
        assert_eq!(F::is_dirty(t.raw), t.decoded.dirty, "{} vector {i}", F::NAME);
        assert_eq!(F::is_writable(t.raw), t.decoded.perms.contains(Perms::WRITE), "{} vector {i}", F::NAME);
        assert_ne!(t.raw, F::FROZEN, "{} vector {i}", F::NAME);
    }
}

/// `table(pa) == raw` and it decodes as a table (and is not a leaf) at every non-leaf level.
fn check_table<F: Format>(pa: u64, raw: u64) {
    assert_eq!(F::table(pa), raw, "{} table({pa:#x})", F::NAME);
    for level in 1..=F::ROOT_LEVEL {
        assert_eq!(F::decode(level, raw), Pte::Table { pa }, "{} level {level}", F::NAME);
        assert!(F::is_present(raw));
        assert!(!F::is_leaf(level, raw), "{} level {level}", F::NAME);
        assert_eq!(F::addr(level, raw), pa, "{} level {level}", F::NAME);
    }
    assert_ne!(raw, F::FROZEN);
}

/// FROZEN decodes as frozen and is not present; zero is invalid; at every level.
fn check_frozen_and_zero<F: Format>(frozen: u64) {
    assert_eq!(F::FROZEN, frozen, "{} FROZEN", F::NAME);
    assert!(!F::is_present(F::FROZEN), "{} FROZEN must not be present", F::NAME);
    assert!(!F::is_present(0));
    for level in 0..=F::ROOT_LEVEL {
        assert_eq!(F::decode(level, F::FROZEN), Pte::Frozen, "{} level {level}", F::NAME);
        assert_eq!(F::decode(level, 0), Pte::Invalid, "{} level {level}", F::NAME);
    }
}

/// `decode(leaf(x)) == x` at every leaf level for attribute sets the format represents exactly.
fn check_round_trip<F: Format>(pa_by_level: [u64; 3], perms_list: &[Perms], mem_types: &[MemType], dirty_ok: bool) {
    for (level, &pa) in pa_by_level.iter().enumerate() {
        let level = level as u8;
        assert!(F::leaf_allowed(level));
        for &perms in perms_list {
            for &mem_type in mem_types {
                for accessed in [false, true] {
                    for dirty in [false, true] {
                        if dirty && !dirty_ok && !perms.contains(Perms::WRITE) {
                            continue;
                        }
                        for sw in [NOSW, HW, WP, HW | WP] {
                            let a = la(perms, mem_type, accessed, dirty, sw);
                            let raw = F::leaf(level, pa, &a);
                            assert_eq!(F::decode(level, raw), Pte::Leaf { pa, attrs: a }, "{} {raw:#x}", F::NAME);
                            assert_ne!(raw, F::FROZEN);
                        }
                    }
                }
            }
        }
    }
    assert!(!F::leaf_allowed(3));
}

/// `(HW_ACCESSED, HW_DIRTY, BREAK_BEFORE_MAKE)`.
fn hw_flags<F: Format>() -> (bool, bool, bool) {
    (F::HW_ACCESSED, F::HW_DIRTY, F::BREAK_BEFORE_MAKE)
}

const ALL_MT: [MemType; 4] = [MemType::WriteBack, MemType::WriteThrough, MemType::WriteCombining, MemType::Uncached];
const X86_PERMS: [Perms; 4] = [Perms::READ, Perms::RW, Perms::RX, Perms::RWX];

// ---------------------------------------------------------------------------------------------
// Intel EPT: SDM Vol. 3C 29.3.2, Tables 29-3 (PML4E), 29-4 (PDPTE 1G), 29-5 (PDE 2M), 29-6 (PTE);
// memory types SDM 29.3.7 (0 UC, 1 WC, 4 WT, 6 WB). R=0x1 W=0x2 X=0x4, MT<<3, IPAT=0x40,
// PS=0x80, A=0x100, D=0x200, software bits 52/53.
// ---------------------------------------------------------------------------------------------

fn ept_vectors() -> Vec<V> {
    vec![
        // PTE, read-only WB: R | MT 6<<3 (0x30) | IPAT.
        v(0, 0x1234_5000, la(Perms::READ, MemType::WriteBack, false, false, NOSW), 0x0000_0000_1234_5071),
        // PTE, RW WB accessed, host-writable: R|W | 0x30 | IPAT | A | bit 52.
        v(0, 0x1234_5000, la(Perms::RW, MemType::WriteBack, true, false, HW), 0x0010_0000_1234_5173),
        // PTE, RWX accessed dirty, both software bits (52, 53).
        v(0, 0x1234_5000, la(Perms::RWX, MemType::WriteBack, true, true, HW | WP), 0x0030_0000_1234_5377),
        // PDE 2M (Table 29-5), RX WT (4<<3) accessed: R|X | 0x20 | IPAT | PS | A.
        v(1, 0x4020_0000, la(Perms::RX, MemType::WriteThrough, true, false, NOSW), 0x0000_0000_4020_01e5),
        // PDPTE 1G (Table 29-4), RW UC (0): R|W | IPAT | PS.
        v(2, 0x1_c000_0000, la(Perms::RW, MemType::Uncached, false, false, NOSW), 0x0000_0001_c000_00c3),
        // PDE 2M at the top of the 52-bit output space, RWX WC (1<<3): 7 | 0x08 | IPAT | PS.
        v(1, 0x000f_ffff_ffe0_0000, la(Perms::RWX, MemType::WriteCombining, false, false, NOSW), 0x000f_ffff_ffe0_00cf),
    ]
}

#[test]
fn ept4_leaf_vectors() {
    check_leaves::<Ept4>(&ept_vectors());
}

#[test]
fn ept5_leaf_vectors() {
    check_leaves::<Ept5>(&ept_vectors());
}

#[test]
fn ept_tables_frozen_zero() {
    // SDM Table 29-3: non-leaf entries carry R|W|X and the next table's address.
    check_table::<Ept4>(0x12_3456_7000, 0x0000_0012_3456_7007);
    check_table::<Ept5>(0x12_3456_7000, 0x0000_0012_3456_7007);
    // Ignored bits 11 and 57 with R/W/X clear.
    check_frozen_and_zero::<Ept4>(0x0200_0000_0000_0800);
    check_frozen_and_zero::<Ept5>(0x0200_0000_0000_0800);
}

#[test]
fn ept_constants() {
    assert_eq!((Ept4::ROOT_LEVEL, Ept4::ROOT_ENTRIES, Ept4::INPUT_BITS, Ept4::OUTPUT_BITS), (3, 512, 48, 52));
    assert_eq!((Ept5::ROOT_LEVEL, Ept5::ROOT_ENTRIES, Ept5::INPUT_BITS, Ept5::OUTPUT_BITS), (4, 512, 57, 52));
    assert_eq!(hw_flags::<Ept4>(), (true, true, false));
    assert_eq!(hw_flags::<Ept5>(), (true, true, false));
}

#[test]
fn ept_ad_bits() {
    // SDM 29.3.5 "Accessed and Dirty Flags for EPT": A bit 8, D bit 9.
    let clean = 0x0000_0000_1234_5073; // RW WB, A=0, D=0
    assert!(!Ept4::is_accessed(clean) && !Ept4::is_dirty(clean) && Ept4::is_writable(clean));
    assert_eq!(Ept4::hw_update(clean, false), 0x0000_0000_1234_5173);
    assert_eq!(Ept4::hw_update(clean, true), 0x0000_0000_1234_5373);
    assert_eq!(Ept4::clear_dirty(0x0000_0000_1234_5373), 0x0000_0000_1234_5173);
    assert_eq!(Ept4::clear_accessed(0x0000_0000_1234_5173), clean);
    // Read-only leaf: a write does not set D.
    assert_eq!(Ept4::hw_update(0x0000_0000_1234_5071, true), 0x0000_0000_1234_5171);
    // A PTE with R/W/X clear is not present (29.3.2).
    assert_eq!(Ept4::decode(0, 0x0000_0000_1234_5070), Pte::Invalid);
}

#[test]
fn ept_round_trip() {
    let pas = [0x1234_5000, 0x4020_0000, 0x1_c000_0000];
    check_round_trip::<Ept4>(pas, &[Perms::READ, Perms::RW, Perms::RX, Perms::RWX, Perms::EXEC], &ALL_MT, true);
    check_round_trip::<Ept5>(pas, &[Perms::READ, Perms::RW, Perms::RX, Perms::RWX, Perms::EXEC], &ALL_MT, true);
}

// ---------------------------------------------------------------------------------------------
// AMD NPT: APM Vol. 2 5.3.3-5.3.5, Figures 5-20..5-25 (long-mode PML4E/PDPE/PDE/PTE), 15.25.5.
// P=0x1 RW=0x2 US=0x4 PWT=0x8 PCD=0x10 A=0x20 D=0x40 PS=0x80; PAT=0x80 in a 4K PTE and
// 0x1000 in a 2M/1G leaf (APM 7.8.1 "PAT Indexing"); NX=bit 63; software bits 52/53.
// Linux default PAT: WB idx 0, WC idx 1 (PWT), UC idx 3 (PCD|PWT), WT idx 7 (PAT|PCD|PWT).
// ---------------------------------------------------------------------------------------------

#[test]
fn npt_leaf_vectors() {
    check_leaves::<Npt>(&[
        // PTE (Figure 5-21), read-only WB: P | US | NX.
        v(0, 0x1234_5000, la(Perms::READ, MemType::WriteBack, false, false, NOSW), 0x8000_0000_1234_5005),
        // PTE, RW WB accessed, host-writable: P|RW|US | A | NX | bit 52.
        v(0, 0x1234_5000, la(Perms::RW, MemType::WriteBack, true, false, HW), 0x8010_0000_1234_5027),
        // PTE, RWX accessed dirty, both software bits: P|RW|US | A | D, NX clear.
        v(0, 0x1234_5000, la(Perms::RWX, MemType::WriteBack, true, true, HW | WP), 0x0030_0000_1234_5067),
        // PTE, RX WT accessed: P|US | PWT|PCD | PAT (bit 7) | A.
        v(0, 0x1234_5000, la(Perms::RX, MemType::WriteThrough, true, false, NOSW), 0x0000_0000_1234_50bd),
        // PTE, RW WC: P|RW|US | PWT | NX.
        v(0, 0x1234_5000, la(Perms::RW, MemType::WriteCombining, false, false, NOSW), 0x8000_0000_1234_500f),
        // PDE 2M (Figure 5-24), RX WT accessed: P|US | PWT|PCD | PS | A | PAT (bit 12).
        v(1, 0x4020_0000, la(Perms::RX, MemType::WriteThrough, true, false, NOSW), 0x0000_0000_4020_10bd),
        // PDPE 1G (Figure 5-25), RW UC: P|RW|US | PWT|PCD | PS | NX.
        v(2, 0x1_c000_0000, la(Perms::RW, MemType::Uncached, false, false, NOSW), 0x8000_0001_c000_009f),
        // PDE 2M at the top of the 52-bit output space, RWX WC: P|RW|US | PWT | PS.
        v(1, 0x000f_ffff_ffe0_0000, la(Perms::RWX, MemType::WriteCombining, false, false, NOSW), 0x000f_ffff_ffe0_008f),
        // PDPE 1G, RWX WT: PAT at bit 12 next to a 1G-aligned address.
        v(2, 0x40_0000_0000, la(Perms::RWX, MemType::WriteThrough, true, true, NOSW), 0x0000_0040_0000_10ff),
    ]);
}

#[test]
fn npt_tables_frozen_zero() {
    // 15.25.5: table entries need US; P|RW|US, no NX.
    check_table::<Npt>(0x12_3456_7000, 0x0000_0012_3456_7007);
    // A table address with bit 12 set keeps it (bit 12 is PAT only in large leaves).
    check_table::<Npt>(0x1234_5000, 0x0000_0000_1234_5007);
    // Not present, ignored bits 11 and 57, US clear.
    check_frozen_and_zero::<Npt>(0x0200_0000_0000_0800);
}

#[test]
fn npt_constants() {
    assert_eq!((Npt::ROOT_LEVEL, Npt::ROOT_ENTRIES, Npt::INPUT_BITS, Npt::OUTPUT_BITS), (3, 512, 48, 52));
    assert_eq!(hw_flags::<Npt>(), (true, true, false));
}

#[test]
fn npt_no_read_is_not_present() {
    // 5.4.1: READ is the present bit; write-only is encoded P=0 (with US and NX) -> invalid.
    let raw = Npt::leaf(0, 0x1234_5000, &la(Perms::WRITE, MemType::WriteBack, false, false, NOSW));
    assert_eq!(raw, 0x8000_0000_1234_5006);
    assert!(!Npt::is_present(raw));
    assert_eq!(Npt::decode(0, raw), Pte::Invalid);
    assert_ne!(raw, Npt::FROZEN);
}

#[test]
fn npt_ad_bits_and_large_addr() {
    // 5.4.2 "Accessed (A) Bit" / "Dirty (D) Bit".
    let clean = 0x8000_0000_1234_5007; // RW WB, A=0, D=0
    assert!(!Npt::is_accessed(clean) && !Npt::is_dirty(clean) && Npt::is_writable(clean));
    assert_eq!(Npt::hw_update(clean, false), 0x8000_0000_1234_5027);
    assert_eq!(Npt::hw_update(clean, true), 0x8000_0000_1234_5067);
    assert_eq!(Npt::clear_dirty(0x8000_0000_1234_5067), 0x8000_0000_1234_5027);
    assert_eq!(Npt::clear_accessed(0x8000_0000_1234_5027), clean);
    // Read-only: a write sets A only.
    assert_eq!(Npt::hw_update(0x8000_0000_1234_5005, true), 0x8000_0000_1234_5025);
    // PAT (bit 12) of a 2M leaf is not part of its address.
    assert_eq!(Npt::addr(1, 0x0000_0000_4020_10bd), 0x4020_0000);
    assert!(Npt::is_leaf(1, 0x0000_0000_4020_10bd));
}

#[test]
fn npt_linux_host_pte() {
    // A Linux x86-64 user PTE: P|RW|US|A|D + _PAGE_SOFT_DIRTY (bit 11) + NX, PAT index 0 (WB).
    assert_eq!(
        Npt::decode(0, 0x8000_0001_2345_6867),
        Pte::Leaf { pa: 0x1_2345_6000, attrs: la(Perms::RW, MemType::WriteBack, true, true, NOSW) }
    );
    // PAT index 2 (PCD only, UC- in the Linux layout) and 5 (PAT|PWT, WP).
    assert!(matches!(
        Npt::decode(0, 0x8000_0000_1234_5015),
        Pte::Leaf { attrs: LeafAttrs { mem_type: MemType::Uncached, .. }, .. }
    ));
    assert!(matches!(
        Npt::decode(0, 0x8000_0000_1234_508d),
        Pte::Leaf { attrs: LeafAttrs { mem_type: MemType::WriteThrough, .. }, .. }
    ));
}

#[test]
fn npt_round_trip() {
    check_round_trip::<Npt>([0x1234_5000, 0x4020_0000, 0x1_c000_0000], &X86_PERMS, &ALL_MT, true);
}

// ---------------------------------------------------------------------------------------------
// arm64 stage 2: DDI 0487 D8.3 "Translation table descriptor formats" (stage 2 block and page
// descriptors), D8.5 "Stage 2 memory type and Cacheability attributes (MemAttr)".
// Valid=0x1, table/page=0x2, MemAttr<<2 (WB 0xf -> 0x3c, WT 0xa -> 0x28, NC 0x5 -> 0x14, Device
// nGnRnE 0), S2AP R=0x40 W=0x80, SH inner=0x300, AF=0x400, DBM=bit 51, XN 0b10 = bit 54,
// software bits 55/56.
// ---------------------------------------------------------------------------------------------

fn arm64_vectors() -> Vec<V> {
    let r_dirty = la(Perms::READ, MemType::WriteBack, false, true, NOSW);
    vec![
        // Page, read-only WB: 0b11 | 0x3c | S2AP R | SH | XN.
        v(0, 0x1234_5000, la(Perms::READ, MemType::WriteBack, false, false, NOSW), 0x0040_0000_1234_537f),
        // Page, RW WB accessed, writable-clean (DBM=1, S2AP[1]=0), host-writable (bit 55).
        v(0, 0x1234_5000, la(Perms::RW, MemType::WriteBack, true, false, HW), 0x00c8_0000_1234_577f),
        // Page, RW WB accessed, writable-dirty (DBM=1, S2AP[1]=1).
        v(0, 0x1234_5000, la(Perms::RW, MemType::WriteBack, true, true, HW), 0x00c8_0000_1234_57ff),
        // Page, RWX dirty, both software bits (55, 56), XN = 0b00.
        v(0, 0x1234_5000, la(Perms::RWX, MemType::WriteBack, true, true, HW | WP), 0x0188_0000_1234_57ff),
        // Level-2 block (2M), RX WT accessed: 0b01 | 0x28 | R | SH | AF.
        v(1, 0x4020_0000, la(Perms::RX, MemType::WriteThrough, true, false, NOSW), 0x0000_0000_4020_0769),
        // Level-1 block (1G), RW Device-nGnRnE, clean: 0b01 | R | SH | DBM | XN.
        v(2, 0x1_c000_0000, la(Perms::RW, MemType::Uncached, false, false, NOSW), 0x0048_0001_c000_0341),
        // 2M block at the top of the 48-bit output space, RWX Normal-NC accessed.
        v(1, 0x0000_ffff_ffe0_0000, la(Perms::RWX, MemType::WriteCombining, true, false, NOSW), 0x0008_ffff_ffe0_0755),
        // Page with no access (S2AP=00, XN): still a valid descriptor.
        v(0, 0x1234_5000, la(Perms::empty(), MemType::WriteBack, true, false, NOSW), 0x0040_0000_1234_573f),
        // Execute-only page: S2AP=00, XN=0b00.
        v(0, 0x1234_5000, la(Perms::EXEC, MemType::WriteBack, true, false, NOSW), 0x0000_0000_1234_573f),
        // Dirty without write permission is not representable: no DBM, decodes clean.
        V {
            level: 0,
            pa: 0x1234_5000,
            attrs: r_dirty,
            raw: 0x0040_0000_1234_537f,
            decoded: LeafAttrs { dirty: false, ..r_dirty },
        },
    ]
}

#[test]
fn arm64_l0_leaf_vectors() {
    check_leaves::<Arm64S2L0>(&arm64_vectors());
}

#[test]
fn arm64_l1_leaf_vectors() {
    check_leaves::<Arm64S2L1>(&arm64_vectors());
}

#[test]
fn arm64_tables_frozen_zero() {
    // D8.3: stage-2 table descriptor = next-level table address | 0b11.
    check_table::<Arm64S2L0>(0x12_3456_7000, 0x0000_0012_3456_7003);
    check_table::<Arm64S2L1>(0x12_3456_7000, 0x0000_0012_3456_7003);
    // Invalid (bit 0 clear) with software bits 58:55 set.
    check_frozen_and_zero::<Arm64S2L0>(0x0780_0000_0000_0000);
    check_frozen_and_zero::<Arm64S2L1>(0x0780_0000_0000_0000);
}

#[test]
fn arm64_constants() {
    // VTCR_EL2 SL0=2, T0SZ=16: start at lookup level 0, one 512-entry root.
    assert_eq!(
        (Arm64S2L0::ROOT_LEVEL, Arm64S2L0::ROOT_ENTRIES, Arm64S2L0::INPUT_BITS, Arm64S2L0::OUTPUT_BITS),
        (3, 512, 48, 48)
    );
    // SL0=1, T0SZ=24: start at lookup level 1, two concatenated tables (D8.2 "concatenated
    // translation tables").
    assert_eq!(
        (Arm64S2L1::ROOT_LEVEL, Arm64S2L1::ROOT_ENTRIES, Arm64S2L1::INPUT_BITS, Arm64S2L1::OUTPUT_BITS),
        (2, 1024, 40, 48)
    );
    assert_eq!(hw_flags::<Arm64S2L0>(), (true, true, true));
    assert_eq!(hw_flags::<Arm64S2L1>(), (true, true, true));
}

#[test]
fn arm64_descriptor_types() {
    // D8.3: 0b01 at lookup level 3 (our 0) is reserved -> invalid; 0b11 is a page.
    assert_eq!(Arm64S2L0::decode(0, 0x0040_0000_1234_577d), Pte::Invalid);
    // 0b11 at lookup level 2 (our 1) is a table, 0b01 a block.
    assert_eq!(Arm64S2L0::decode(1, 0x0000_0000_4020_0003), Pte::Table { pa: 0x4020_0000 });
    assert!(Arm64S2L0::is_leaf(1, 0x0000_0000_4020_0769));
    assert!(!Arm64S2L0::is_leaf(1, 0x0000_0000_4020_0003));
    // No block at lookup level 0 with a 4 KiB granule.
    assert_eq!(Arm64S2L0::decode(3, 0x0000_0080_0000_0741), Pte::Invalid);
    // bit 0 clear: invalid whatever else is set.
    assert_eq!(Arm64S2L0::decode(0, 0x00c8_0000_1234_57fe), Pte::Invalid);
    assert!(!Arm64S2L0::is_present(0x00c8_0000_1234_57fe));
}

#[test]
fn arm64_memattr_decode() {
    // D8.5 MemAttr 0b0001 = Device-nGnRE -> Uncached.
    assert!(matches!(
        Arm64S2L0::decode(0, 0x0040_0000_1234_5747),
        Pte::Leaf { attrs: LeafAttrs { mem_type: MemType::Uncached, .. }, .. }
    ));
    // MemAttr 0b1101: outer WB (3:2 = 0b11), inner NC (1:0 = 0b01) -> WriteCombining.
    assert!(matches!(
        Arm64S2L0::decode(0, 0x0040_0000_1234_5777),
        Pte::Leaf { attrs: LeafAttrs { mem_type: MemType::WriteCombining, .. }, .. }
    ));
}

#[test]
fn arm64_dbm_dirty_state() {
    // D8 "Hardware management of the Access flag and dirty state" (FEAT_HAFDBS, VTCR_EL2.HA/HD).
    let clean = 0x00c8_0000_1234_577f; // RW, AF, DBM=1, S2AP[1]=0 (writable-clean)
    let dirty = 0x00c8_0000_1234_57ff; // DBM=1, S2AP[1]=1 (writable-dirty)
    assert!(Arm64S2L0::is_writable(clean) && !Arm64S2L0::is_dirty(clean));
    assert!(Arm64S2L0::is_writable(dirty) && Arm64S2L0::is_dirty(dirty));
    assert_eq!(Arm64S2L0::clear_dirty(dirty), clean);
    assert_eq!(Arm64S2L0::clear_dirty(clean), clean);
    // A write through a DBM leaf sets S2AP[1]; a read leaves it clean.
    assert_eq!(Arm64S2L0::hw_update(clean, true), dirty);
    assert_eq!(Arm64S2L0::hw_update(clean, false), clean);
    // AF clear -> set by any access.
    let clean_old = 0x00c8_0000_1234_537f;
    assert!(!Arm64S2L0::is_accessed(clean_old));
    assert_eq!(Arm64S2L0::clear_accessed(clean), clean_old);
    assert_eq!(Arm64S2L0::hw_update(clean_old, false), clean);
    assert_eq!(Arm64S2L0::hw_update(clean_old, true), dirty);

    // S2AP = 0b11 without DBM (hand-written, leaf() never makes it): writable, never dirty.
    let rw_nodbm = 0x0040_0000_1234_57ff;
    assert!(Arm64S2L0::is_writable(rw_nodbm) && !Arm64S2L0::is_dirty(rw_nodbm));
    assert_eq!(Arm64S2L0::clear_dirty(rw_nodbm), rw_nodbm);
    assert_eq!(Arm64S2L0::hw_update(rw_nodbm & !0x400, true), rw_nodbm);
    assert_eq!(
        Arm64S2L0::decode(0, rw_nodbm),
        Pte::Leaf { pa: 0x1234_5000, attrs: la(Perms::RW, MemType::WriteBack, true, false, NOSW) }
    );

    // Read-only (DBM=0, S2AP[1]=0): a write faults, AF only.
    let ro = 0x0040_0000_1234_537f;
    assert!(!Arm64S2L0::is_writable(ro));
    assert_eq!(Arm64S2L0::hw_update(ro, true), 0x0040_0000_1234_577f);
}

#[test]
fn arm64_round_trip() {
    let perms = [
        Perms::empty(),
        Perms::READ,
        Perms::WRITE,
        Perms::EXEC,
        Perms::RW,
        Perms::RX,
        Perms::RWX,
        Perms::WRITE | Perms::EXEC,
    ];
    let pas = [0x1234_5000, 0x4020_0000, 0x1_c000_0000];
    check_round_trip::<Arm64S2L0>(pas, &perms, &ALL_MT, false);
    check_round_trip::<Arm64S2L1>(pas, &perms, &ALL_MT, false);
}

// ---------------------------------------------------------------------------------------------
// RISC-V G-stage: privileged spec 4.4.1 (Sv39 PTE format, Figure "Sv39 page table entry"), 4.5
// (Sv48), H extension 9.5 "Two-Stage Address Translation", Svpbmt, Svadu.
// V=0x1 R=0x2 W=0x4 X=0x8 U=0x10 A=0x40 D=0x80, RSW 0x100/0x200, PPN at bit 10 (PTE = PA >> 2 in
// the PPN field), PBMT bits 62:61 (NC = 1<<61, IO = 2<<61).
// ---------------------------------------------------------------------------------------------

fn riscv_vectors() -> Vec<V> {
    let rx_wt = la(Perms::RX, MemType::WriteThrough, true, false, NOSW);
    let wx = la(Perms::WRITE | Perms::EXEC, MemType::WriteBack, false, false, NOSW);
    vec![
        // 4K leaf, read-only PMA: V|R|U, PPN = 0x1234_5000 >> 2.
        v(0, 0x1234_5000, la(Perms::READ, MemType::WriteBack, false, false, NOSW), 0x0000_0000_048d_1413),
        // RW accessed, host-writable (RSW bit 8).
        v(0, 0x1234_5000, la(Perms::RW, MemType::WriteBack, true, false, HW), 0x0000_0000_048d_1557),
        // RWX accessed dirty, both RSW bits.
        v(0, 0x1234_5000, la(Perms::RWX, MemType::WriteBack, true, true, HW | WP), 0x0000_0000_048d_17df),
        // Execute-only accessed: V|X|U|A.
        v(0, 0x1234_5000, la(Perms::EXEC, MemType::WriteBack, true, false, NOSW), 0x0000_0000_048d_1459),
        // 2M megapage, RX, WriteThrough -> PBMT NC (no WT encoding), decodes WriteCombining.
        V {
            level: 1,
            pa: 0x4020_0000,
            attrs: rx_wt,
            raw: 0x2000_0000_1008_005b,
            decoded: LeafAttrs { mem_type: MemType::WriteCombining, ..rx_wt },
        },
        // 1G gigapage, RW, PBMT IO.
        v(2, 0x1_c000_0000, la(Perms::RW, MemType::Uncached, false, false, NOSW), 0x4000_0000_7000_0017),
        // 2M at the top of the 56-bit physical space, RWX, PBMT NC.
        v(1, 0x00ff_ffff_ffe0_0000, la(Perms::RWX, MemType::WriteCombining, false, false, NOSW), 0x203f_ffff_fff8_001f),
        // W|X without R: W=1,R=0 is reserved, so W is dropped: V|X|U.
        V {
            level: 0,
            pa: 0x1234_5000,
            attrs: wx,
            raw: 0x0000_0000_048d_1419,
            decoded: la(Perms::EXEC, MemType::WriteBack, false, false, NOSW),
        },
    ]
}

#[test]
fn sv39x4_leaf_vectors() {
    check_leaves::<Sv39x4>(&riscv_vectors());
}

#[test]
fn sv48x4_leaf_vectors() {
    check_leaves::<Sv48x4>(&riscv_vectors());
}

#[test]
fn riscv_tables_frozen_zero() {
    // 4.4.1: non-leaf PTE = V with R=W=X=0 and the PPN; A/D/U clear.
    check_table::<Sv39x4>(0x12_3456_7000, 0x0000_0004_8d15_9c01);
    check_table::<Sv48x4>(0x12_3456_7000, 0x0000_0004_8d15_9c01);
    // V=0 with both RSW bits.
    check_frozen_and_zero::<Sv39x4>(0x0000_0000_0000_0300);
    check_frozen_and_zero::<Sv48x4>(0x0000_0000_0000_0300);
}

#[test]
fn riscv_constants() {
    // 9.5.1: Sv39x4 = 41-bit GPA, Sv48x4 = 50-bit; root 16 KiB (2048 entries).
    assert_eq!((Sv39x4::ROOT_LEVEL, Sv39x4::ROOT_ENTRIES, Sv39x4::INPUT_BITS, Sv39x4::OUTPUT_BITS), (2, 2048, 41, 56));
    assert_eq!((Sv48x4::ROOT_LEVEL, Sv48x4::ROOT_ENTRIES, Sv48x4::INPUT_BITS, Sv48x4::OUTPUT_BITS), (3, 2048, 50, 56));
    assert_eq!(hw_flags::<Sv39x4>(), (true, true, false));
    assert_eq!(hw_flags::<Sv48x4>(), (true, true, false));
}

#[test]
fn riscv_unrepresentable_perms() {
    // No R and no X: cannot be a leaf (R=W=X=0 means "table"), so V is clear: U|A, invalid.
    let raw = Sv39x4::leaf(0, 0x1234_5000, &la(Perms::WRITE, MemType::WriteBack, true, false, NOSW));
    assert_eq!(raw, 0x0000_0000_048d_1450);
    assert!(!Sv39x4::is_present(raw));
    assert_eq!(Sv39x4::decode(0, raw), Pte::Invalid);
    assert_ne!(raw, Sv39x4::FROZEN);
    let raw = Sv48x4::leaf(1, 0x4020_0000, &la(Perms::empty(), MemType::WriteBack, false, false, NOSW));
    assert_eq!(raw, 0x0000_0000_1008_0010);
    assert_eq!(Sv48x4::decode(1, raw), Pte::Invalid);
}

#[test]
fn riscv_ad_bits() {
    // Svadu: A bit 6, D bit 7 set by hardware.
    let clean = 0x0000_0000_048d_1417; // V|R|W|U, A=0 D=0
    assert!(!Sv39x4::is_accessed(clean) && !Sv39x4::is_dirty(clean) && Sv39x4::is_writable(clean));
    assert_eq!(Sv39x4::hw_update(clean, false), 0x0000_0000_048d_1457);
    assert_eq!(Sv39x4::hw_update(clean, true), 0x0000_0000_048d_14d7);
    assert_eq!(Sv39x4::clear_dirty(0x0000_0000_048d_14d7), 0x0000_0000_048d_1457);
    assert_eq!(Sv39x4::clear_accessed(0x0000_0000_048d_1457), clean);
    // Read-only: a write sets A only.
    assert_eq!(Sv48x4::hw_update(0x0000_0000_048d_1413, true), 0x0000_0000_048d_1453);
    // A valid PTE with R=W=X=0 is a table above level 0 and a (no-access) leaf at level 0.
    assert!(!Sv48x4::is_leaf(1, 0x0000_0000_1008_0001));
    assert!(Sv48x4::is_leaf(0, 0x0000_0000_048d_1411));
    // PBMT 3 is reserved: decoded as Uncached.
    assert!(matches!(
        Sv39x4::decode(0, 0x6000_0000_048d_1413),
        Pte::Leaf { attrs: LeafAttrs { mem_type: MemType::Uncached, .. }, .. }
    ));
}

#[test]
fn riscv_round_trip() {
    let perms = [Perms::READ, Perms::RW, Perms::RX, Perms::RWX, Perms::EXEC];
    let mts = [MemType::WriteBack, MemType::WriteCombining, MemType::Uncached];
    let pas = [0x1234_5000, 0x4020_0000, 0x1_c000_0000];
    check_round_trip::<Sv39x4>(pas, &perms, &mts, true);
    check_round_trip::<Sv48x4>(pas, &perms, &mts, true);
}

// ---------------------------------------------------------------------------------------------
// Property tests: decode(leaf(x)) == normalize(x) over random aligned addresses and attributes.
// ---------------------------------------------------------------------------------------------

/// What each format can represent: `None` = encodes as not present.
fn expect_ept(a: LeafAttrs) -> Option<LeafAttrs> {
    (!a.perms.is_empty()).then_some(a)
}

fn expect_npt(a: LeafAttrs) -> Option<LeafAttrs> {
    a.perms.contains(Perms::READ).then_some(a)
}

fn expect_arm64(a: LeafAttrs) -> Option<LeafAttrs> {
    Some(LeafAttrs { dirty: a.dirty && a.perms.contains(Perms::WRITE), ..a })
}

fn expect_riscv(a: LeafAttrs) -> Option<LeafAttrs> {
    let mut perms = a.perms;
    if !perms.contains(Perms::READ) {
        perms.remove(Perms::WRITE);
    }
    if perms.is_empty() {
        return None;
    }
    let mem_type = if a.mem_type == MemType::WriteThrough { MemType::WriteCombining } else { a.mem_type };
    Some(LeafAttrs { perms, mem_type, ..a })
}

fn attrs_strategy() -> impl Strategy<Value = LeafAttrs> {
    (0u8..8, 0usize..4, any::<bool>(), any::<bool>(), 0u8..4).prop_map(|(p, mt, accessed, dirty, sw)| LeafAttrs {
        perms: Perms::from_bits_truncate(p),
        mem_type: ALL_MT[mt],
        accessed,
        dirty,
        sw: SwBits::from_bits_truncate(sw),
    })
}

fn prop_round_trip<F: Format>(
    level: u8,
    raw_pa: u64,
    a: LeafAttrs,
    expect: fn(LeafAttrs) -> Option<LeafAttrs>,
) -> Result<(), TestCaseError> {
    let shift = 12 + 9 * u32::from(level);
    let pa = raw_pa & ((1u64 << F::OUTPUT_BITS) - 1) & !((1u64 << shift) - 1);
    let raw = F::leaf(level, pa, &a);
    prop_assert_ne!(raw, F::FROZEN);
    match expect(a) {
        Some(e) => {
            prop_assert_eq!(F::decode(level, raw), Pte::Leaf { pa, attrs: e });
            prop_assert!(F::is_present(raw));
            prop_assert!(F::is_leaf(level, raw));
            prop_assert_eq!(F::addr(level, raw), pa);
            prop_assert_eq!(F::is_writable(raw), e.perms.contains(Perms::WRITE));
            prop_assert_eq!(F::is_dirty(raw), e.dirty);
            prop_assert_eq!(F::is_accessed(raw), e.accessed);
            // clear/update helpers agree with decode.
            let cleared = F::clear_accessed(F::clear_dirty(raw));
            prop_assert_eq!(
                F::decode(level, cleared),
                Pte::Leaf { pa, attrs: LeafAttrs { accessed: false, dirty: false, ..e } }
            );
            let updated = F::hw_update(cleared, true);
            let w = e.perms.contains(Perms::WRITE);
            prop_assert_eq!(
                F::decode(level, updated),
                Pte::Leaf { pa, attrs: LeafAttrs { accessed: true, dirty: w, ..e } }
            );
        }
        None => {
            prop_assert!(!F::is_present(raw));
            prop_assert_eq!(F::decode(level, raw), Pte::Invalid);
        }
    }
    // Tables round-trip too.
    let tpa = raw_pa & ((1u64 << F::OUTPUT_BITS) - 1) & !0xfff;
    for l in 1..=F::ROOT_LEVEL {
        prop_assert_eq!(F::decode(l, F::table(tpa)), Pte::Table { pa: tpa });
    }
    Ok(())
}

macro_rules! prop_format {
    ($test:ident, $fmt:ty, $expect:expr) => {
        proptest! {
            #[test]
            fn $test(level in 0u8..3, raw_pa in any::<u64>(), a in attrs_strategy()) {
                prop_round_trip::<$fmt>(level, raw_pa, a, $expect)?;
            }
        }
    };
}

prop_format!(prop_ept4, Ept4, expect_ept);
prop_format!(prop_ept5, Ept5, expect_ept);
prop_format!(prop_npt, Npt, expect_npt);
prop_format!(prop_arm64_s2l0, Arm64S2L0, expect_arm64);
prop_format!(prop_arm64_s2l1, Arm64S2L1, expect_arm64);
prop_format!(prop_sv39x4, Sv39x4, expect_riscv);
prop_format!(prop_sv48x4, Sv48x4, expect_riscv);
