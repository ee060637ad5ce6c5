//! Hardware page-table entry formats.
//!
//! A [`Format`] knows how one architecture encodes table and leaf entries at each level, and
//! nothing else: it has no tables, no walks and no policy. Everything above (tables, cursor, MMU)
//! is generic over it. Entries are plain `u64` values; the functions here are pure and cheap so the
//! walker can inline them.
//!
//! Each format also states its replacement rule ([`Format::BREAK_BEFORE_MAKE`]): whether a live
//! entry may be replaced in place by one that changes the leaf size or the output address, or
//! must first be invalidated and flushed ("break-before-make", arm64).

mod arm64;
mod bits;
mod ept;
mod npt;
mod riscv;

pub use arm64::{Arm64S2L0, Arm64S2L1};
pub use ept::{Ept4, Ept5};
pub use npt::Npt;
pub use riscv::{Sv39x4, Sv48x4};

use crate::attrs::LeafAttrs;
use crate::size::Level;

/// One entry, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pte {
    /// Not present: the hardware faults on it.
    Invalid,
    /// The frozen marker: not present to hardware; a software thread is changing this entry.
    Frozen,
    /// Points to the next-level table at this physical address.
    Table {
        /// Physical address of the next-level table.
        pa: u64,
    },
    /// Leaf translation.
    Leaf {
        /// Physical address of the output page or block.
        pa: u64,
        /// Permissions, memory type, A/D and software bits.
        attrs: LeafAttrs,
    },
}

/// A leaf encoding with the output address left out, from [`Format::leaf_template`]: the
/// attributes are encoded once, and [`Format::with_addr`] adds each output address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeafTemplate {
    /// `leaf(level, 0, &attrs)` for the level the template was made for.
    pub raw: u64,
    /// The attributes, for formats that re-encode the whole leaf per address (the default).
    pub attrs: LeafAttrs,
}

/// A hardware stage-2 page-table format.
///
/// Implementations are zero-sized marker types. All functions are pure.
///
/// ```
/// use slat_pt::format::{Ept4, Format, Pte};
/// use slat_pt::{LeafAttrs, Perms};
/// let raw = Ept4::leaf(1, 0x4020_0000, &LeafAttrs::ram(Perms::RW));
/// assert!(matches!(Ept4::decode(1, raw), Pte::Leaf { pa: 0x4020_0000, .. }));
/// ```
pub trait Format: Copy + Send + Sync + 'static {
    /// Human name, e.g. `"ept4"`.
    const NAME: &'static str;
    /// Level of the root table (3 for a 4-level 48-bit tree).
    const ROOT_LEVEL: Level;
    /// Entries in the root table: 512, or more when the root is concatenated (arm64) or
    /// widened (RISC-V x4); the root then spans `ROOT_ENTRIES / 512` contiguous frames.
    const ROOT_ENTRIES: usize;
    /// Width of the guest-physical input address.
    const INPUT_BITS: u32;
    /// Width of the output physical address the format can encode.
    const OUTPUT_BITS: u32;
    /// Highest level at which a leaf (block) is architecturally allowed (2 = 1 GiB for all
    /// supported formats). The CPU may support less; the MMU applies that limit as policy.
    const MAX_LEAF_LEVEL: Level;
    /// Whether hardware sets the accessed flag on use.
    const HW_ACCESSED: bool;
    /// Whether hardware records writes in the entry (EPT D, NPT D, arm64 DBM, RISC-V D).
    const HW_DIRTY: bool;
    /// Whether changing the size or output of a live leaf requires break-before-make
    /// (invalidate, flush, then write the new entry).
    const BREAK_BEFORE_MAKE: bool;
    /// The frozen marker value: never present to hardware, never produced by [`Format::leaf`]
    /// or [`Format::table`].
    const FROZEN: u64;
    /// Whether a leaf whose memory type is not cacheable (device / uncached / write-combining)
    /// may be executable. False on arm64: instruction fetches from Device memory are
    /// architecturally unpredictable there, and KVM never maps such memory executable.
    const EXEC_UNCACHED: bool = true;
    /// Where table entries keep, in bits the hardware ignores in them, the number of present
    /// leaves in the table they point to: the shift of a 10-bit field (0..=512). `None` when
    /// the format's table entries have no such room (RISC-V G-stage: two RSW bits); operations
    /// that need the number then read the table.
    const TABLE_LEAVES_SHIFT: Option<u32> = None;

    /// Whether a leaf may sit at `level`.
    #[inline]
    fn leaf_allowed(level: Level) -> bool {
        level <= Self::MAX_LEAF_LEVEL
    }

    /// Entry pointing to a next-level table at `pa` (page aligned).
    fn table(pa: u64) -> u64;

    /// Leaf entry at `level` for output `pa` (aligned to the level's size).
    fn leaf(level: Level, pa: u64, attrs: &LeafAttrs) -> u64;

    /// The attributes of a run of leaves at `level`, encoded once for [`Format::with_addr`].
    #[inline]
    fn leaf_template(level: Level, attrs: &LeafAttrs) -> LeafTemplate {
        LeafTemplate { raw: Self::leaf(level, 0, attrs), attrs: *attrs }
    }

    /// The leaf at `level` for output `pa` with the attributes of `template` (made by
    /// [`Format::leaf_template`] for the same `level`). Always equal to
    /// `leaf(level, pa, &template.attrs)`; formats where the address is a plain bit field
    /// override it with an OR.
    #[inline]
    fn with_addr(level: Level, template: &LeafTemplate, pa: u64) -> u64 {
        Self::leaf(level, pa, &template.attrs)
    }

    /// Decode any entry value at `level`.
    fn decode(level: Level, raw: u64) -> Pte;

    /// Whether the entry is present to hardware (table or leaf).
    fn is_present(raw: u64) -> bool;

    /// Whether a present entry at `level` is a leaf (always true at level 0).
    fn is_leaf(level: Level, raw: u64) -> bool;

    /// Output address of a present leaf at `level`, or table address of a table entry.
    fn addr(level: Level, raw: u64) -> u64;

    /// Whether the guest may write through this present leaf without a fault.
    fn is_writable(raw: u64) -> bool;

    /// Whether the hardware dirty state of a present leaf is set.
    fn is_dirty(raw: u64) -> bool;

    /// The leaf with its hardware dirty state cleared (write permission kept where the format
    /// tracks dirtiness separately, e.g. arm64 DBM writable-clean).
    fn clear_dirty(raw: u64) -> u64;

    /// Whether the accessed flag of a present leaf is set.
    fn is_accessed(raw: u64) -> bool;

    /// The leaf with its accessed flag cleared.
    fn clear_accessed(raw: u64) -> u64;

    /// What hardware writes back into a present leaf it used for an access (`write` = store):
    /// sets the accessed flag and, on a permitted write, the dirty state.
    fn hw_update(raw: u64, write: bool) -> u64;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attrs::{MemType, Perms, SwBits};

    /// `with_addr(leaf_template(..))` is bit-exact with `leaf` for every format, level and a
    /// spread of attributes and addresses (including address bits the level must drop).
    fn template_matches_leaf<F: Format>() {
        let mts = [MemType::WriteBack, MemType::WriteThrough, MemType::WriteCombining, MemType::Uncached];
        let perms = [Perms::empty(), Perms::READ, Perms::RW, Perms::READ | Perms::EXEC, Perms::RW | Perms::EXEC];
        let sws = [SwBits::empty(), SwBits::SW0, SwBits::SW1];
        let pas = [0, 0x1000, 0x20_0000, 0x4000_0000, 0x1234_5000, 0xabc_def0_1000, (1 << 52) - 0x1000, u64::MAX];
        for level in 0..=F::MAX_LEAF_LEVEL {
            for mt in mts {
                for p in perms {
                    for sw in sws {
                        for (accessed, dirty) in [(false, false), (true, false), (true, true), (false, true)] {
                            let a = LeafAttrs { perms: p, mem_type: mt, accessed, dirty, sw };
                            let t = F::leaf_template(level, &a);
                            for pa in pas {
                                let size_mask = crate::size::level_bytes(level) - 1;
                                for pa in [pa, pa & !size_mask] {
                                    assert_eq!(
                                        F::with_addr(level, &t, pa),
                                        F::leaf(level, pa, &a),
                                        "{} {level} {pa:#x} {a:?}",
                                        F::NAME
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn templates_are_bit_exact() {
        template_matches_leaf::<Ept4>();
        template_matches_leaf::<Ept5>();
        template_matches_leaf::<Npt>();
        template_matches_leaf::<Arm64S2L0>();
        template_matches_leaf::<Arm64S2L1>();
        template_matches_leaf::<Sv39x4>();
        template_matches_leaf::<Sv48x4>();
    }
}
