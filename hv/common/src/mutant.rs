//! The `bad-encoding` injected bug: a format that is exactly `F` except that every leaf it
//! encodes loses the bits in `CLEAR` (one line, below). Used only to show that the hardware
//! checks catch an encoding slip; slat's own formats are never touched.

use core::marker::PhantomData;

use slat_pt::format::{Format, Pte};
use slat_pt::{LeafAttrs, Level};

/// `F` with the bits `CLEAR` dropped from every leaf.
#[derive(Debug)]
pub struct Mutant<F, const CLEAR: u64>(PhantomData<F>);

impl<F, const CLEAR: u64> Clone for Mutant<F, CLEAR> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<F, const CLEAR: u64> Copy for Mutant<F, CLEAR> {}

impl<F: Format, const CLEAR: u64> Format for Mutant<F, CLEAR> {
    const NAME: &'static str = F::NAME;
    const ROOT_LEVEL: Level = F::ROOT_LEVEL;
    const ROOT_ENTRIES: usize = F::ROOT_ENTRIES;
    const INPUT_BITS: u32 = F::INPUT_BITS;
    const OUTPUT_BITS: u32 = F::OUTPUT_BITS;
    const MAX_LEAF_LEVEL: Level = F::MAX_LEAF_LEVEL;
    const HW_ACCESSED: bool = F::HW_ACCESSED;
    const HW_DIRTY: bool = F::HW_DIRTY;
    const BREAK_BEFORE_MAKE: bool = F::BREAK_BEFORE_MAKE;
    const FROZEN: u64 = F::FROZEN;

    fn table(pa: u64) -> u64 {
        F::table(pa)
    }
    fn leaf(level: Level, pa: u64, attrs: &LeafAttrs) -> u64 {
        F::leaf(level, pa, attrs) & !CLEAR // the injected bug
    }
    fn decode(level: Level, raw: u64) -> Pte {
        F::decode(level, raw)
    }
    fn is_present(raw: u64) -> bool {
        F::is_present(raw)
    }
    fn is_leaf(level: Level, raw: u64) -> bool {
        F::is_leaf(level, raw)
    }
    fn addr(level: Level, raw: u64) -> u64 {
        F::addr(level, raw)
    }
    fn is_writable(raw: u64) -> bool {
        F::is_writable(raw)
    }
    fn is_dirty(raw: u64) -> bool {
        F::is_dirty(raw)
    }
    fn clear_dirty(raw: u64) -> u64 {
        F::clear_dirty(raw)
    }
    fn is_accessed(raw: u64) -> bool {
        F::is_accessed(raw)
    }
    fn clear_accessed(raw: u64) -> u64 {
        F::clear_accessed(raw)
    }
    fn hw_update(raw: u64, write: bool) -> u64 {
        F::hw_update(raw, write)
    }
}
