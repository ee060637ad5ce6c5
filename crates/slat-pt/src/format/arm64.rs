//! arm64 stage-2 translation (VMSAv8-64, 4 KiB granule), starting at lookup level 0 (48-bit IPA)
//! or lookup level 1 with two concatenated root tables (40-bit IPA).
//!
//! Arm ARM (DDI 0487) D8.3 "Translation table descriptor formats" (stage 2 table, block and page
//! descriptors) and D8.5 "Memory region attributes", "Stage 2 memory type and Cacheability
//! attributes (MemAttr)" with FEAT_S2FWB disabled: bits 1:0 descriptor type (`0b11` table at
//! lookup levels 0..2, i.e. our levels 3..1, and page at lookup level 3, our level 0; `0b01` block
//! at lookup levels 1 and 2, our levels 2 and 1; bit 0 clear is invalid), 5:2 MemAttr, 7:6 S2AP
//! (bit 6 read, bit 7 write), 9:8 SH, 10 AF, 47:12 output address (47:21 for 2 MiB blocks, 47:30
//! for 1 GiB blocks), 51 DBM, 52 Contiguous (unused here), 54:53 XN (FEAT_XNX encoding; `0b00`
//! executable, `0b10` execute-never at EL1 and EL0), 58:55 reserved for software use. Stage-2
//! table descriptors carry no hierarchical attributes: they are the next-level table address and
//! `0b11`. Lookup level 0 cannot hold a block with a 4 KiB granule (without FEAT_LPA2).
//!
//! Memory types (MemAttr, outer in 3:2 and inner in 1:0): WriteBack `0b1111` (Normal, inner and
//! outer write-back), WriteThrough `0b1010` (Normal write-through), WriteCombining `0b0101`
//! (Normal non-cacheable), Uncached `0b0000` (Device-nGnRnE). SH is always `0b11` (inner
//! shareable; ignored for Device memory). Decoding maps any `0b00xx` to Uncached, and mixed
//! Normal attributes to the weakest of their halves.
//!
//! Access and dirty state (chapter D8, "Hardware management of the Access flag and dirty state",
//! FEAT_HAFDBS with `VTCR_EL2.HA` and `VTCR_EL2.HD` set): hardware sets AF on use, and on a write
//! through a leaf with DBM set it sets S2AP\[1\]. A leaf with [`Perms::WRITE`] is therefore encoded
//! with DBM = 1 and S2AP\[1\] = dirty: writable-clean (S2AP\[1\] = 0) takes the first write
//! without a fault and hardware turns it writable-dirty (S2AP\[1\] = 1). A leaf without
//! [`Perms::WRITE`] has DBM = 0 and S2AP\[1\] = 0 and is never dirty. Decoding: DBM = 1 means
//! writable with dirty = S2AP\[1\]; DBM = 0 means writable = S2AP\[1\] and not dirty.
//!
//! Software bits live in bits 55 ([`SwBits::SW0`]) and 56 ([`SwBits::SW1`]).
//! The frozen value is an invalid descriptor (bit 0 clear; all other bits are then ignored) with
//! the four software bits 58:55 set; [`Format::leaf`] and [`Format::table`] always set bit 0.
//!
//! Replacement rule (DDI 0487 chapter D8, "Using break-before-make when updating translation
//! table entries"): an entry may be replaced in place when only its permissions (S2AP, XN) change
//! or when AF / DBM-managed dirty state is updated, and an invalid entry may be made valid. A
//! change of output address, of block size (block to table, table to block) or of memory type or
//! shareability of a live entry must go through break-before-make: write an invalid entry, issue
//! `TLBI IPAS2E1IS` (plus `DSB`), then write the new entry. Hence [`Format::BREAK_BEFORE_MAKE`] is
//! true.

use super::bits::{self, bit_if, flag_methods, Flags};
use super::{Format, LeafTemplate, Pte};
use crate::attrs::{LeafAttrs, MemType, Perms};
use crate::size::Level;

const VALID: u64 = 1 << 0;
/// Bit 1: table (levels 1..3) or page (level 0) when set, block when clear.
const TABLE_OR_PAGE: u64 = 1 << 1;
const TYPE_MASK: u64 = VALID | TABLE_OR_PAGE;
const MEMATTR_SHIFT: u32 = 2;
const MEMATTR_MASK: u64 = 0xf << MEMATTR_SHIFT;
const S2AP_R: u64 = 1 << 6;
const S2AP_W: u64 = 1 << 7;
/// SH = 0b11, inner shareable.
const SH_INNER: u64 = 3 << 8;
const AF: u64 = 1 << 10;
const DBM: u64 = 1 << 51;
/// XN\[1:0\] = 0b10: execute-never at EL1 and EL0.
const XN: u64 = 2 << 53;
const XN_MASK: u64 = 3 << 53;
const SW0: u64 = 1 << 55;
const SW1: u64 = 1 << 56;
const SW_ALL: u64 = 0xf << 55;
const ADDR_MASK: u64 = ((1 << 48) - 1) & !0xfff;

/// arm64's dirty state is DBM plus S2AP\[1\] (see the module doc), not one bit: `dirty` is 0
/// and `write` is unused here.
const FLAGS: Flags = Flags { present: VALID, write: S2AP_W, accessed: AF, dirty: 0, sw0: SW0, sw1: SW1 };

/// D8.5 stage 2 MemAttr encodings (FEAT_S2FWB disabled).
const fn mt_encode(mt: MemType) -> u64 {
    (match mt {
        MemType::WriteBack => 0b1111,
        MemType::WriteThrough => 0b1010,
        MemType::WriteCombining => 0b0101,
        MemType::Uncached => 0b0000,
    }) << MEMATTR_SHIFT
}

const fn mt_decode(raw: u64) -> MemType {
    let attr = (raw & MEMATTR_MASK) >> MEMATTR_SHIFT;
    let (outer, inner) = (attr >> 2, attr & 3);
    if outer == 0 {
        // 0b00xx: Device memory.
        MemType::Uncached
    } else if outer == 0b01 || inner == 0b01 || inner == 0b00 {
        // Non-cacheable in either half (inner 0b00 is UNPREDICTABLE: treat as non-cacheable).
        MemType::WriteCombining
    } else if outer == 0b10 || inner == 0b10 {
        MemType::WriteThrough
    } else {
        MemType::WriteBack
    }
}

#[inline]
fn s2_leaf(level: Level, pa: u64, a: &LeafAttrs) -> u64 {
    let write = a.perms.contains(Perms::WRITE);
    (pa & ADDR_MASK)
        | VALID
        | mt_encode(a.mem_type)
        | SH_INNER
        | bit_if(level == 0, TABLE_OR_PAGE)
        | bit_if(a.perms.contains(Perms::READ), S2AP_R)
        | bit_if(write, DBM)
        | bit_if(write && a.dirty, S2AP_W)
        | bit_if(!a.perms.contains(Perms::EXEC), XN)
        | FLAGS.encode_state(a)
}

/// A valid entry that is not a table: a page at level 0, a block above, or a reserved encoding.
#[inline]
fn s2_decode_leaf(level: Level, raw: u64) -> Pte {
    if level == 0 && raw & TABLE_OR_PAGE == 0 {
        // 0b01 at lookup level 3 is reserved: the walk faults as if invalid.
        return Pte::Invalid;
    }
    if level > 2 {
        // No blocks at lookup level 0 with a 4 KiB granule: translation fault.
        return Pte::Invalid;
    }
    let mut perms = Perms::empty();
    perms.set(Perms::READ, raw & S2AP_R != 0);
    perms.set(Perms::WRITE, raw & (S2AP_W | DBM) != 0);
    perms.set(Perms::EXEC, raw & XN_MASK == 0);
    Pte::Leaf {
        pa: raw & ADDR_MASK,
        attrs: FLAGS.decode_leaf_attrs_with_dirty(raw, perms, mt_decode(raw), s2_dirty(raw)),
    }
}

/// Dirty only where DBM tracks it: writable-dirty is DBM = 1 with S2AP\[1\] = 1.
#[inline]
const fn s2_dirty(raw: u64) -> bool {
    raw & DBM != 0 && raw & S2AP_W != 0
}

macro_rules! arm64_format {
    ($name:ident, $label:literal, $root:expr, $entries:expr, $bits:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name;

        impl Format for $name {
            const NAME: &'static str = $label;
            const ROOT_LEVEL: Level = $root;
            const ROOT_ENTRIES: usize = $entries;
            const INPUT_BITS: u32 = $bits;
            const OUTPUT_BITS: u32 = 48;
            const MAX_LEAF_LEVEL: Level = 2;
            const HW_ACCESSED: bool = true;
            const HW_DIRTY: bool = true;
            const BREAK_BEFORE_MAKE: bool = true;
            // DDI 0487 D8.3.1: bits 11:2 of a stage-2 table descriptor are IGNORED.
            const TABLE_LEAVES_SHIFT: Option<u32> = Some(2);
            const FROZEN: u64 = SW_ALL;
            const EXEC_UNCACHED: bool = false;

            #[inline]
            fn table(pa: u64) -> u64 {
                // D8.3: stage-2 table descriptors are the table address and 0b11; bits 63:59 RES0.
                (pa & ADDR_MASK) | VALID | TABLE_OR_PAGE
            }
            #[inline]
            fn leaf(level: Level, pa: u64, attrs: &LeafAttrs) -> u64 {
                s2_leaf(level, pa, attrs)
            }
            #[inline]
            fn with_addr(_level: Level, template: &LeafTemplate, pa: u64) -> u64 {
                // `s2_leaf` ORs `pa & ADDR_MASK` into bits that depend only on level and attributes.
                template.raw | (pa & ADDR_MASK)
            }
            #[inline]
            fn decode(level: Level, raw: u64) -> Pte {
                bits::decode::<Self>(level, raw, || s2_decode_leaf(level, raw))
            }
            flag_methods!(FLAGS);
            #[inline]
            fn is_leaf(level: Level, raw: u64) -> bool {
                level == 0 || raw & TYPE_MASK == VALID
            }
            #[inline]
            fn addr(_level: Level, raw: u64) -> u64 {
                raw & ADDR_MASK
            }
            #[inline]
            fn is_writable(raw: u64) -> bool {
                raw & (S2AP_W | DBM) != 0
            }
            #[inline]
            fn is_dirty(raw: u64) -> bool {
                s2_dirty(raw)
            }
            #[inline]
            fn clear_dirty(raw: u64) -> u64 {
                // Writable-dirty -> writable-clean; without DBM, S2AP[1] is a plain permission.
                if raw & DBM != 0 {
                    raw & !S2AP_W
                } else {
                    raw
                }
            }
            #[inline]
            fn hw_update(raw: u64, write: bool) -> u64 {
                if write && raw & DBM != 0 {
                    raw | AF | S2AP_W
                } else {
                    raw | AF
                }
            }
        }
    };
}

arm64_format!(
    Arm64S2L0,
    "arm64-s2l0",
    3,
    512,
    48,
    "arm64 stage 2, 4 KiB granule, starting at lookup level 0 (`VTCR_EL2.SL0 = 2`, `T0SZ = 16`): \
     a 512-entry root at our level 3, 48-bit IPA."
);
arm64_format!(
    Arm64S2L1,
    "arm64-s2l1",
    2,
    1024,
    40,
    "arm64 stage 2, 4 KiB granule, starting at lookup level 1 (`VTCR_EL2.SL0 = 1`, `T0SZ = 24`) \
     with two concatenated root tables: a 1024-entry (8 KiB) root at our level 2, 40-bit IPA."
);
