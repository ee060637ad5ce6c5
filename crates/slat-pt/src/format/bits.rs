//! What the formats share: where each keeps its one-bit flags, and the encode/decode helpers and
//! `Format` methods written once over that description.
//!
//! A format file keeps its constants, its permission and memory-type encodings and its quirks
//! (NPT's PAT bit, arm64's DBM dirty state, RISC-V's PPN shift); everything that is only "this
//! flag lives in that bit" goes through [`Flags`].

use super::{Format, Pte};
use crate::attrs::{LeafAttrs, MemType, Perms, SwBits};
use crate::size::Level;

/// Where a format keeps its one-bit flags.
pub(super) struct Flags {
    /// Bits of which any one set makes the entry present to hardware.
    pub present: u64,
    /// The write-permission bit (for one-bit dirty formats, the bit a hardware write needs).
    pub write: u64,
    /// The accessed flag.
    pub accessed: u64,
    /// The one-bit dirty flag (0 for formats whose dirty state is not a single bit).
    pub dirty: u64,
    /// Where the format keeps [`SwBits::SW0`].
    pub sw0: u64,
    /// Where the format keeps [`SwBits::SW1`].
    pub sw1: u64,
}

/// `bit` if `on`, else 0.
#[inline]
pub(super) const fn bit_if(on: bool, bit: u64) -> u64 {
    if on {
        bit
    } else {
        0
    }
}

impl Flags {
    /// The accessed flag, the one-bit dirty flag and the software bits of `a`.
    #[inline]
    pub const fn encode_state(&self, a: &LeafAttrs) -> u64 {
        bit_if(a.accessed, self.accessed) | bit_if(a.dirty, self.dirty) | self.encode_sw(a.sw)
    }

    /// The software bits of `sw`.
    #[inline]
    pub const fn encode_sw(&self, sw: SwBits) -> u64 {
        bit_if(sw.contains(SwBits::SW0), self.sw0) | bit_if(sw.contains(SwBits::SW1), self.sw1)
    }

    /// The software bits of `raw`.
    #[inline]
    pub fn decode_sw(&self, raw: u64) -> SwBits {
        let mut sw = SwBits::empty();
        sw.set(SwBits::SW0, raw & self.sw0 != 0);
        sw.set(SwBits::SW1, raw & self.sw1 != 0);
        sw
    }

    /// A leaf's attributes from its permissions and memory type (decoded by the format) and its
    /// accessed flag, one-bit dirty flag and software bits (decoded here).
    #[inline]
    pub fn decode_leaf_attrs(&self, raw: u64, perms: Perms, mem_type: MemType) -> LeafAttrs {
        self.decode_leaf_attrs_with_dirty(raw, perms, mem_type, raw & self.dirty != 0)
    }

    /// [`Self::decode_leaf_attrs`] for a format that decodes its dirty state itself.
    #[inline]
    pub fn decode_leaf_attrs_with_dirty(&self, raw: u64, perms: Perms, mem_type: MemType, dirty: bool) -> LeafAttrs {
        LeafAttrs { perms, mem_type, accessed: raw & self.accessed != 0, dirty, sw: self.decode_sw(raw) }
    }
}

/// `Format::decode` for every format: the frozen value, entries not present and table entries
/// are told apart with the format's own tests; `leaf` decodes a present leaf (and may still call
/// it invalid, for encodings the architecture reserves).
#[inline]
pub(super) fn decode<F: Format>(level: Level, raw: u64, leaf: impl FnOnce() -> Pte) -> Pte {
    if raw == F::FROZEN {
        Pte::Frozen
    } else if !F::is_present(raw) {
        Pte::Invalid
    } else if !F::is_leaf(level, raw) {
        Pte::Table { pa: F::addr(level, raw) }
    } else {
        leaf()
    }
}

/// `Format::is_present`, `is_accessed` and `clear_accessed` from a [`Flags`] constant.
macro_rules! flag_methods {
    ($flags:expr) => {
        #[inline]
        fn is_present(raw: u64) -> bool {
            raw & $flags.present != 0
        }
        #[inline]
        fn is_accessed(raw: u64) -> bool {
            raw & $flags.accessed != 0
        }
        #[inline]
        fn clear_accessed(raw: u64) -> u64 {
            raw & !$flags.accessed
        }
    };
}

/// `Format::is_writable`, `is_dirty`, `clear_dirty` and `hw_update` for a format whose write
/// permission and dirty state are one bit each (EPT, NPT, RISC-V): a write through a writable
/// leaf sets accessed and dirty, any other use sets accessed.
macro_rules! one_bit_dirty_methods {
    ($flags:expr) => {
        #[inline]
        fn is_writable(raw: u64) -> bool {
            raw & $flags.write != 0
        }
        #[inline]
        fn is_dirty(raw: u64) -> bool {
            raw & $flags.dirty != 0
        }
        #[inline]
        fn clear_dirty(raw: u64) -> u64 {
            raw & !$flags.dirty
        }
        #[inline]
        fn hw_update(raw: u64, write: bool) -> u64 {
            if write && raw & $flags.write != 0 {
                raw | $flags.accessed | $flags.dirty
            } else {
                raw | $flags.accessed
            }
        }
    };
}

pub(super) use {flag_methods, one_bit_dirty_methods};
