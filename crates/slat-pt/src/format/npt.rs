//! AMD NPT: nested page tables in the x86-64 long-mode 4-level format (48-bit guest-physical).
//!
//! AMD64 APM Vol. 2, 5.3.3 "4-Kbyte Page Translation" / 5.3.4 "2-Mbyte Page Translation" /
//! 5.3.5 "1-Gbyte Page Translation", Figures 5-20..5-25 (long-mode PML4E, PDPE, PDE, PTE), and
//! 15.25 "Nested Paging": bit 0 present, 1 read/write, 2 user/supervisor, 3 PWT, 4 PCD,
//! 5 accessed, 6 dirty (leaves only), 7 page size (PDPE / PDE) or PAT (4-Kbyte PTE), 8 global,
//! 11:9 available to software, 12 PAT (2-Mbyte and 1-Gbyte leaves), 51:12 physical address
//! (51:21 for 2-Mbyte and 51:30 for 1-Gbyte leaves), 62:52 available to software, 63 no-execute.
//! An entry with P clear is not present and all its other bits are ignored.
//!
//! APM 15.25.5: nested walks treat every access as a user access, so every leaf *and* every table
//! entry sets U/S. Table entries are `P | R/W | U/S` (no NX): the leaf alone decides the rights.
//! x86 cannot express write-only or execute-only: [`Perms::READ`] is the present bit, and a leaf
//! without it is encoded not present (it decodes as [`Pte::Invalid`]). No-execute requires
//! `EFER.NXE` in the host.
//!
//! Memory type (APM 7.8 "Page-Attribute Table Mechanism"): nested leaves select a PAT entry of the
//! host PAT MSR with index `PAT << 2 | PCD << 1 | PWT`. This format assumes the Linux default PAT
//! layout (MSR value `0x0407_0506_0007_0106`: 0 WB, 1 WC, 2 UC-, 3 UC, 4 WB, 5 WP, 6 UC-, 7 WT):
//! WriteBack = index 0 (no bits), WriteCombining = index 1 (PWT), Uncached = index 3
//! (PCD | PWT), WriteThrough = index 7 (PAT | PCD | PWT). Under the power-on default PAT only
//! index 1 differs in meaning (it is WT there). Decoding maps index 4 to WriteBack, 2, 3 and 6 to
//! Uncached and 5 (WP) to WriteThrough.
//!
//! Software bits live in bits 52 and 53 (available to software; Linux leaves them unused, so the
//! same encoding can describe a Linux host's own page tables, whose software flags sit in 11:9,
//! 57 and 58). The frozen value is not present (P clear) with only ignored bits 11 and 57 set; it
//! has U/S clear, which every [`Format::leaf`] and [`Format::table`] value sets.
//!
//! Replacement rule: as for EPT, x86 tolerates a leaf being replaced in place by a larger or
//! smaller one (the TLB may hold either until flushed), so [`Format::BREAK_BEFORE_MAKE`] is false.

use super::bits::{self, bit_if, flag_methods, one_bit_dirty_methods, Flags};
use super::{Format, LeafTemplate, Pte};
use crate::attrs::{LeafAttrs, MemType, Perms};
use crate::size::Level;

const P: u64 = 1 << 0;
const RW: u64 = 1 << 1;
const US: u64 = 1 << 2;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
const PS: u64 = 1 << 7;
/// PAT bit of a 4-Kbyte PTE (the bit that is PS in higher levels).
const PAT_4K: u64 = 1 << 7;
/// PAT bit of a 2-Mbyte / 1-Gbyte leaf.
const PAT_LARGE: u64 = 1 << 12;
const NX: u64 = 1 << 63;

const FLAGS: Flags = Flags { present: P, write: RW, accessed: A, dirty: D, sw0: 1 << 52, sw1: 1 << 53 };
const ADDR_MASK: u64 = ((1 << 52) - 1) & !0xfff;
/// Address bits of a large leaf: bit 12 is PAT there.
const LARGE_ADDR_MASK: u64 = ADDR_MASK & !PAT_LARGE;

/// The PAT bit position of a leaf at `level`.
#[inline]
const fn pat_bit(level: Level) -> u64 {
    if level == 0 {
        PAT_4K
    } else {
        PAT_LARGE
    }
}

/// Linux default PAT layout (see the module doc): WB 0, WC 1, UC 3, WT 7.
#[inline]
const fn mt_encode(level: Level, mt: MemType) -> u64 {
    match mt {
        MemType::WriteBack => 0,
        MemType::WriteCombining => PWT,
        MemType::Uncached => PCD | PWT,
        MemType::WriteThrough => pat_bit(level) | PCD | PWT,
    }
}

#[inline]
const fn mt_decode(level: Level, raw: u64) -> MemType {
    let pat = if raw & pat_bit(level) != 0 { 4 } else { 0 };
    let pcd = if raw & PCD != 0 { 2 } else { 0 };
    let pwt = if raw & PWT != 0 { 1 } else { 0 };
    match pat | pcd | pwt {
        0 | 4 => MemType::WriteBack,
        1 => MemType::WriteCombining,
        5 | 7 => MemType::WriteThrough,
        _ => MemType::Uncached,
    }
}

#[inline]
fn npt_leaf(level: Level, pa: u64, a: &LeafAttrs) -> u64 {
    let mask = if level == 0 { ADDR_MASK } else { LARGE_ADDR_MASK };
    (pa & mask)
        | US
        | mt_encode(level, a.mem_type)
        | bit_if(a.perms.contains(Perms::READ), P)
        | bit_if(a.perms.contains(Perms::WRITE), RW)
        | bit_if(!a.perms.contains(Perms::EXEC), NX)
        | bit_if(level > 0, PS)
        | FLAGS.encode_state(a)
}

/// A present leaf at `level`.
#[inline]
fn npt_decode_leaf(level: Level, raw: u64) -> Pte {
    let mut perms = Perms::READ;
    perms.set(Perms::WRITE, raw & RW != 0);
    perms.set(Perms::EXEC, raw & NX == 0);
    let mask = if level == 0 { ADDR_MASK } else { LARGE_ADDR_MASK };
    Pte::Leaf { pa: raw & mask, attrs: FLAGS.decode_leaf_attrs(raw, perms, mt_decode(level, raw)) }
}

macro_rules! npt_format {
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
            // APM Vol. 2 5.3.3: bits 62:52 of a non-leaf entry are available to software.
            const TABLE_LEAVES_SHIFT: Option<u32> = Some(52);
            const FROZEN: u64 = (1 << 11) | (1 << 57);

            #[inline]
            fn table(pa: u64) -> u64 {
                // APM 15.25.5: nested table entries need U/S; rights are decided by the leaf.
                (pa & ADDR_MASK) | P | RW | US
            }
            #[inline]
            fn leaf(level: Level, pa: u64, attrs: &LeafAttrs) -> u64 {
                npt_leaf(level, pa, attrs)
            }
            #[inline]
            fn with_addr(level: Level, template: &LeafTemplate, pa: u64) -> u64 {
                // `npt_leaf` ORs the address under the level's mask (which keeps bit 12, PAT of a
                // large leaf, out of the address) into bits that depend only on the attributes.
                let mask = if level == 0 { ADDR_MASK } else { LARGE_ADDR_MASK };
                template.raw | (pa & mask)
            }
            #[inline]
            fn decode(level: Level, raw: u64) -> Pte {
                bits::decode::<Self>(level, raw, || npt_decode_leaf(level, raw))
            }
            #[inline]
            fn is_leaf(level: Level, raw: u64) -> bool {
                level == 0 || raw & PS != 0
            }
            #[inline]
            fn addr(level: Level, raw: u64) -> u64 {
                if level > 0 && raw & PS != 0 {
                    raw & LARGE_ADDR_MASK
                } else {
                    raw & ADDR_MASK
                }
            }
            flag_methods!(FLAGS);
            one_bit_dirty_methods!(FLAGS);
        }
    };
}

npt_format!(
    Npt,
    "npt",
    3,
    48,
    "AMD NPT: x86-64 long-mode 4-level nested page tables (PML4 root, 48-bit guest-physical \
     addresses). Also describes a Linux host's own x86-64 page tables."
);
