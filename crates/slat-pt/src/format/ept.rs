//! Intel EPT, 4-level (48-bit guest-physical) and 5-level (57-bit).
//!
//! Intel SDM Vol. 3C, 29.3.2 "EPT Translation Mechanism", Tables 29-1..29-6 (EPT PML5E/PML4E,
//! PDPTE mapping a 1-GByte page, PDE mapping a 2-MByte page, PTE mapping a 4-KByte page):
//! bit 0 read, 1 write, 2 execute (supervisor), 5:3 memory type (leaves only), 6 ignore PAT
//! (leaves only), 7 page size (PDPTE / PDE), 8 accessed, 9 dirty (leaves only; requires EPTP bit 6
//! "enable accessed and dirty flags"), 10 user-execute (mode-based execute control; unused here),
//! 51:12 physical address, 63 suppress #VE. An entry with bits 2:0 all clear is not present.
//!
//! Software bits live in bits 52 and 53 (ignored by hardware, SDM tables list 62:52 as ignored
//! except bit 63 suppress-#VE). The frozen value sets ignored bits only (bits 11 and 57) with
//! R/W/X clear.
//!
//! Replacement rule: x86 tolerates a leaf being replaced in place by a larger or smaller one with
//! the same translation (the TLB may hold either until flushed), so
//! [`Format::BREAK_BEFORE_MAKE`] is false.

use super::bits::{self, bit_if, flag_methods, one_bit_dirty_methods, Flags};
use super::{Format, LeafTemplate, Pte};
use crate::attrs::{LeafAttrs, MemType, Perms};
use crate::size::Level;

const R: u64 = 1 << 0;
const W: u64 = 1 << 1;
const X: u64 = 1 << 2;
const RWX: u64 = R | W | X;
const MT_SHIFT: u32 = 3;
const MT_MASK: u64 = 7 << MT_SHIFT;
const IPAT: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const A: u64 = 1 << 8;
const D: u64 = 1 << 9;
const ADDR_MASK: u64 = ((1 << 52) - 1) & !0xfff;

const FLAGS: Flags = Flags { present: RWX, write: W, accessed: A, dirty: D, sw0: 1 << 52, sw1: 1 << 53 };

/// SDM 29.3.7 / 11.3: memory type encodings (0 UC, 1 WC, 4 WT, 6 WB).
const fn mt_encode(mt: MemType) -> u64 {
    (match mt {
        MemType::Uncached => 0,
        MemType::WriteCombining => 1,
        MemType::WriteThrough => 4,
        MemType::WriteBack => 6,
    }) << MT_SHIFT
}

const fn mt_decode(raw: u64) -> MemType {
    match (raw & MT_MASK) >> MT_SHIFT {
        6 => MemType::WriteBack,
        4 => MemType::WriteThrough,
        1 => MemType::WriteCombining,
        _ => MemType::Uncached,
    }
}

#[inline]
fn ept_leaf(level: Level, pa: u64, a: &LeafAttrs) -> u64 {
    (pa & ADDR_MASK)
        | mt_encode(a.mem_type)
        | IPAT
        | bit_if(a.perms.contains(Perms::READ), R)
        | bit_if(a.perms.contains(Perms::WRITE), W)
        | bit_if(a.perms.contains(Perms::EXEC), X)
        | bit_if(level > 0, PS)
        | FLAGS.encode_state(a)
}

/// A present leaf.
#[inline]
fn ept_decode_leaf(raw: u64) -> Pte {
    let mut perms = Perms::empty();
    perms.set(Perms::READ, raw & R != 0);
    perms.set(Perms::WRITE, raw & W != 0);
    perms.set(Perms::EXEC, raw & X != 0);
    Pte::Leaf { pa: raw & ADDR_MASK, attrs: FLAGS.decode_leaf_attrs(raw, perms, mt_decode(raw)) }
}

macro_rules! ept_format {
    ($name:ident, $label:literal, $root:expr, $bits:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name;

        impl Format for $name {
            const NAME: &'static str = $label;
            const ROOT_LEVEL: Level = $root;
            const ROOT_ENTRIES: usize = 512;
            const INPUT_BITS: u32 = $bits;
            const OUTPUT_BITS: u32 = 52;
            const MAX_LEAF_LEVEL: Level = 2;
            const HW_ACCESSED: bool = true;
            const HW_DIRTY: bool = true;
            const BREAK_BEFORE_MAKE: bool = false;
            // SDM Tables 29-2..29-5: bits 62:52 of a non-leaf entry are ignored.
            const TABLE_LEAVES_SHIFT: Option<u32> = Some(52);
            const FROZEN: u64 = (1 << 11) | (1 << 57);

            #[inline]
            fn table(pa: u64) -> u64 {
                // SDM Table 29-3: non-leaf entries carry R/W/X as the upper bound of the subtree.
                (pa & ADDR_MASK) | RWX
            }
            #[inline]
            fn leaf(level: Level, pa: u64, attrs: &LeafAttrs) -> u64 {
                ept_leaf(level, pa, attrs)
            }
            #[inline]
            fn with_addr(_level: Level, template: &LeafTemplate, pa: u64) -> u64 {
                // `ept_leaf` ORs `pa & ADDR_MASK` into bits that depend only on the attributes.
                template.raw | (pa & ADDR_MASK)
            }
            #[inline]
            fn decode(level: Level, raw: u64) -> Pte {
                bits::decode::<Self>(level, raw, || ept_decode_leaf(raw))
            }
            #[inline]
            fn is_leaf(level: Level, raw: u64) -> bool {
                level == 0 || raw & PS != 0
            }
            #[inline]
            fn addr(_level: Level, raw: u64) -> u64 {
                raw & ADDR_MASK
            }
            flag_methods!(FLAGS);
            one_bit_dirty_methods!(FLAGS);
        }
    };
}

ept_format!(Ept4, "ept4", 3, 48, "Intel EPT with a 4-level tree (PML4 root, 48-bit guest-physical addresses).");
ept_format!(Ept5, "ept5", 4, 57, "Intel EPT with a 5-level tree (PML5 root, 57-bit guest-physical addresses).");
