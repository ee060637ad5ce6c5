//! RISC-V G-stage translation, Sv39x4 (41-bit guest-physical) and Sv48x4 (50-bit).
//!
//! RISC-V privileged specification, 4.4.1 "Addressing and Memory Protection" (Sv39 PTE format),
//! 4.5 "Sv48", and the hypervisor extension 9.5 "Two-Stage Address Translation" / 9.5.1 "Guest
//! Physical Address Translation": bit 0 V, 1 R, 2 W, 3 X, 4 U, 5 G, 6 A, 7 D, 9:8 RSW (reserved
//! for supervisor software), 53:10 PPN (physical address = PPN << 12), 60:54 reserved, 62:61
//! PBMT (Svpbmt), 63 N (Svnapot; never set here). The x4 variants widen the root table by two
//! bits: 2048 entries in a 16 KiB, 16 KiB-aligned root (four contiguous pages).
//!
//! A PTE with V clear is invalid and its other bits are free for software. A valid PTE with
//! R = W = X = 0 points to the next-level table (its D, A, U and PBMT bits must be zero); any
//! other valid PTE is a leaf. G-stage accesses are treated as U-mode accesses, so every leaf sets
//! U; G is unused by the G-stage and left clear. Table entries are just `V` and the PPN.
//!
//! Permissions: W without R is a reserved encoding, so write is encoded only together with read
//! (a [`Perms::WRITE`] without [`Perms::READ`] is dropped, never widened). A leaf with neither
//! read nor execute cannot be expressed and is encoded with V clear (it decodes as
//! [`Pte::Invalid`]). Execute-only leaves are allowed.
//!
//! Memory types (Svpbmt, "Page-Based Memory Types"): PBMT 0 (PMA) for WriteBack, 1 (NC) for
//! WriteCombining, 2 (IO) for Uncached. WriteThrough has no encoding; it is encoded as NC (memory
//! is never left holding dirty cache lines, which is the guarantee write-through gives, whereas
//! PMA could be write-back) and therefore decodes as WriteCombining. The reserved PBMT 3
//! decodes as Uncached.
//!
//! Accessed and dirty: with Svadu (`henvcfg.ADUE` / `menvcfg.ADUE`) hardware sets A on use and
//! D on a write through a writable leaf, so [`Format::HW_ACCESSED`] and [`Format::HW_DIRTY`] are
//! true.
//!
//! Software bits live in RSW: bit 8 is [`SwBits::SW0`], bit 9 is
//! [`SwBits::SW1`]. The frozen value has V clear and both RSW bits set (`0x300`); it has
//! U clear, which every [`Format::leaf`] value sets, and [`Format::table`] values set V.
//!
//! Replacement rule: the spec lets software overwrite a PTE in place, including replacing a
//! superpage leaf with a table or a leaf with one of another output; until the following
//! `HFENCE.GVMA` (`SFENCE.VMA` for single-stage tables) completes, the hart may use either the
//! old or the new translation. No invalid step is required, so [`Format::BREAK_BEFORE_MAKE`] is
//! false.

use super::bits::{self, bit_if, flag_methods, one_bit_dirty_methods, Flags};
use super::{Format, LeafTemplate, Pte};
use crate::attrs::{LeafAttrs, MemType, Perms};
use crate::size::Level;

const V: u64 = 1 << 0;
const R: u64 = 1 << 1;
const W: u64 = 1 << 2;
const X: u64 = 1 << 3;
const RWX: u64 = R | W | X;
const U: u64 = 1 << 4;
const A: u64 = 1 << 6;
const D: u64 = 1 << 7;
const SW0: u64 = 1 << 8;
const SW1: u64 = 1 << 9;
const PPN_SHIFT: u32 = 10;
/// PPN field, bits 53:10 (44 bits).
const PPN_MASK: u64 = ((1 << 44) - 1) << PPN_SHIFT;
const PBMT_SHIFT: u32 = 61;
const PBMT_MASK: u64 = 3 << PBMT_SHIFT;

const FLAGS: Flags = Flags { present: V, write: W, accessed: A, dirty: D, sw0: SW0, sw1: SW1 };

/// Physical address to the PTE's PPN field (PA bits 55:12 land in PTE bits 53:10).
#[inline]
const fn pa_to_ppn(pa: u64) -> u64 {
    (pa >> (12 - PPN_SHIFT)) & PPN_MASK
}

/// The PTE's PPN field back to a physical address.
#[inline]
const fn ppn_to_pa(raw: u64) -> u64 {
    (raw & PPN_MASK) << (12 - PPN_SHIFT)
}

/// Svpbmt encodings: 0 PMA, 1 NC, 2 IO (WriteThrough has none and becomes NC).
const fn mt_encode(mt: MemType) -> u64 {
    (match mt {
        MemType::WriteBack => 0,
        MemType::WriteCombining | MemType::WriteThrough => 1,
        MemType::Uncached => 2,
    }) << PBMT_SHIFT
}

const fn mt_decode(raw: u64) -> MemType {
    match (raw & PBMT_MASK) >> PBMT_SHIFT {
        0 => MemType::WriteBack,
        1 => MemType::WriteCombining,
        _ => MemType::Uncached,
    }
}

#[inline]
fn g_leaf(pa: u64, a: &LeafAttrs) -> u64 {
    // W only with R: write-only is reserved.
    let rwx = bit_if(a.perms.contains(Perms::READ), R)
        | bit_if(a.perms.contains(Perms::RW), W)
        | bit_if(a.perms.contains(Perms::EXEC), X);
    pa_to_ppn(pa) | U | mt_encode(a.mem_type) | rwx | bit_if(rwx != 0, V) | FLAGS.encode_state(a)
}

/// A present leaf.
#[inline]
fn g_decode_leaf(raw: u64) -> Pte {
    let mut perms = Perms::empty();
    perms.set(Perms::READ, raw & R != 0);
    perms.set(Perms::WRITE, raw & W != 0);
    perms.set(Perms::EXEC, raw & X != 0);
    Pte::Leaf { pa: ppn_to_pa(raw), attrs: FLAGS.decode_leaf_attrs(raw, perms, mt_decode(raw)) }
}

macro_rules! riscv_format {
    ($name:ident, $label:literal, $root:expr, $bits:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name;

        impl Format for $name {
            const NAME: &'static str = $label;
            const ROOT_LEVEL: Level = $root;
            const ROOT_ENTRIES: usize = 2048;
            const INPUT_BITS: u32 = $bits;
            const OUTPUT_BITS: u32 = 56;
            const MAX_LEAF_LEVEL: Level = 2;
            const HW_ACCESSED: bool = true;
            const HW_DIRTY: bool = true;
            const BREAK_BEFORE_MAKE: bool = false;
            const FROZEN: u64 = SW0 | SW1;

            #[inline]
            fn table(pa: u64) -> u64 {
                // 4.4.1: a non-leaf PTE has R = W = X = 0; D, A, U (and PBMT) must be zero.
                pa_to_ppn(pa) | V
            }
            #[inline]
            fn leaf(_level: Level, pa: u64, attrs: &LeafAttrs) -> u64 {
                g_leaf(pa, attrs)
            }
            #[inline]
            fn with_addr(_level: Level, template: &LeafTemplate, pa: u64) -> u64 {
                // `g_leaf` ORs the PPN (bits 53:10) into bits that depend only on the attributes.
                template.raw | pa_to_ppn(pa)
            }
            #[inline]
            fn decode(level: Level, raw: u64) -> Pte {
                bits::decode::<Self>(level, raw, || g_decode_leaf(raw))
            }
            #[inline]
            fn is_leaf(level: Level, raw: u64) -> bool {
                level == 0 || raw & RWX != 0
            }
            #[inline]
            fn addr(_level: Level, raw: u64) -> u64 {
                ppn_to_pa(raw)
            }
            flag_methods!(FLAGS);
            one_bit_dirty_methods!(FLAGS);
        }
    };
}

riscv_format!(
    Sv39x4,
    "sv39x4",
    2,
    41,
    "RISC-V G-stage Sv39x4 (`hgatp.MODE = 8`): a 2048-entry (16 KiB) root at level 2, 41-bit \
     guest-physical addresses."
);
riscv_format!(
    Sv48x4,
    "sv48x4",
    3,
    50,
    "RISC-V G-stage Sv48x4 (`hgatp.MODE = 9`): a 2048-entry (16 KiB) root at level 3, 50-bit \
     guest-physical addresses."
);
