//! What every page-table implementation in the comparison offers, in one trait.

use slat_pt::PageSize;

/// One page-table implementation driven through its public API.
///
/// `None` names mean the crate has no such API (its row is left out, never emulated).
pub trait Contender: Sized {
    /// Name in the tables.
    const NAME: &'static str;
    /// The range map call, if any.
    const RANGE_MAP: Option<&'static str>;
    /// The per-leaf map call, if any.
    const LEAF_MAP: Option<&'static str>;
    /// The range unmap call, if any.
    const RANGE_UNMAP: Option<&'static str>;
    /// The per-leaf unmap call, if any.
    const LEAF_UNMAP: Option<&'static str>;
    /// The point lookup.
    const TRANSLATE: Option<&'static str>;

    /// An empty table (root allocated from the pool).
    fn new() -> Self;
    /// Map `len` bytes at `gpa` to `pa..` with leaves of `size`.
    fn map_range(&mut self, gpa: u64, len: u64, pa: u64, size: PageSize);
    /// Map `n` leaves of `size` one call per leaf, the first at `gpa` -> `pa`.
    fn map_leaves(&mut self, gpa: u64, n: u64, pa: u64, size: PageSize);
    /// Unmap `len` bytes at `gpa` (mapped with leaves of `size`) and free what the crate frees.
    fn unmap_range(&mut self, gpa: u64, len: u64, size: PageSize);
    /// Unmap `n` leaves of `size` from `gpa`, one call per leaf.
    fn unmap_leaves(&mut self, gpa: u64, n: u64, size: PageSize);
    /// Output address of `gpa`, if mapped.
    fn translate(&self, gpa: u64) -> Option<u64>;
}
