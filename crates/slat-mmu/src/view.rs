//! [`TablesView`]: the embedder's read-only window on the stage-2 tables.
//!
//! Everything that changes an entry goes through the [`Mmu`](crate::Mmu) and its locking
//! protocol; the view can only read (and, for [`hw_walk`](TablesView::hw_walk), do what the CPU's
//! own page walker does: set accessed and dirty state).

use alloc::vec::Vec;

#[cfg(feature = "sim")]
use slat_pt::{Access, HwWalk};
use slat_pt::{Counts, Format, FrameAllocator, Gpa, Leaf, PageSize, PageTable, Translation};

/// Shared, read-only access to the stage-2 tables, from
/// [`Mmu::with_tables`](crate::Mmu::with_tables). Holding it holds the table lock shared:
/// faults proceed, zaps and harvests wait.
pub struct TablesView<'a, F: Format, A: FrameAllocator> {
    pt: &'a PageTable<F, A>,
}

impl<'a, F: Format, A: FrameAllocator> TablesView<'a, F, A> {
    pub(crate) fn new(pt: &'a PageTable<F, A>) -> Self {
        TablesView { pt }
    }

    /// The leaf translating `gpa`: output address, size and attributes.
    pub fn translate(&self, gpa: Gpa) -> Option<Translation> {
        self.pt.translate(gpa)
    }

    /// Output address and leaf size only (no attribute decode).
    pub fn translate_pa(&self, gpa: Gpa) -> Option<(u64, PageSize)> {
        self.pt.translate_pa(gpa)
    }

    /// Every leaf overlapping `gpa..gpa + len`, in address order.
    pub fn leaves(&self, gpa: Gpa, len: u64) -> Vec<Leaf> {
        self.pt.leaves(gpa, len)
    }

    /// Call `f` for every leaf overlapping `gpa..gpa + len`, in address order.
    pub fn for_each_leaf(&self, gpa: Gpa, len: u64, f: impl FnMut(&Leaf)) {
        self.pt.for_each_leaf(gpa, len, f)
    }

    /// Leaf and table-page counts.
    pub fn counts(&self) -> Counts {
        self.pt.counts()
    }

    /// One past the highest guest-physical address the format translates.
    pub fn input_limit(&self) -> u64 {
        self.pt.input_limit()
    }

    /// Physical address of the root table.
    pub fn root_pa(&self) -> u64 {
        self.pt.root_pa()
    }

    /// Walk as the CPU's stage-2 walker would for `access` at `gpa`: check permissions and, on
    /// success, set the accessed (and for a write, dirty) state the way the format's hardware
    /// does. For hardware models (the simulator, tests): feature `sim`.
    #[cfg(feature = "sim")]
    pub fn hw_walk(&self, gpa: Gpa, access: Access) -> HwWalk {
        self.pt.hw_walk(Gpa(gpa.0), access)
    }
}
