//! aarch64-paging 0.12: `Mapping<_, Stage2>` with the root at lookup level 0 (48-bit IPA), frames
//! from the pool. Never activated, so it skips break-before-make checks and TLB maintenance (its
//! `tlbi` is compiled for aarch64 only anyway). No point lookup (`walk_range` over one page
//! stands in) and no per-page call (`map_range` over one page stands in).

use std::ptr::NonNull;

use aarch64_paging::descriptor::{PhysicalAddress, Stage2Attributes};
use aarch64_paging::paging::{Constraints, MemoryRegion, PageTable, Stage2, Translation};
use aarch64_paging::Mapping;
use slat_pt::PageSize;

use crate::contender::Contender;
use crate::pool;

/// Frames from the pool, identity mapped.
pub struct PoolTranslation;

impl Translation<Stage2Attributes> for PoolTranslation {
    #[inline]
    fn allocate_table(&mut self) -> (NonNull<PageTable<Stage2Attributes>>, PhysicalAddress) {
        let pa = pool::alloc_zeroed().expect("aarch64-paging: pool exhausted");
        (NonNull::new(pa as *mut _).expect("non-null frame"), PhysicalAddress(pa))
    }
    #[inline]
    unsafe fn deallocate_table(&mut self, page_table: NonNull<PageTable<Stage2Attributes>>) {
        pool::free(page_table.as_ptr() as usize);
    }
    #[inline]
    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<PageTable<Stage2Attributes>> {
        NonNull::new(pa.0 as *mut _).expect("non-null frame")
    }
}

/// An aarch64-paging stage-2 table.
pub struct Aarch64(Mapping<PoolTranslation, Stage2>);

const FLAGS: Stage2Attributes = Stage2Attributes::VALID
    .union(Stage2Attributes::ACCESS_FLAG)
    .union(Stage2Attributes::S2AP_ACCESS_RW)
    .union(Stage2Attributes::SH_INNER)
    .union(Stage2Attributes::MEMATTR_NORMAL_INNER_WB)
    .union(Stage2Attributes::MEMATTR_NORMAL_OUTER_WB);

fn constraints(size: PageSize) -> Constraints {
    if size == PageSize::Size4K {
        Constraints::NO_BLOCK_MAPPINGS | Constraints::NO_CONTIGUOUS_HINT
    } else {
        Constraints::NO_CONTIGUOUS_HINT
    }
}

fn region(gpa: u64, len: u64) -> MemoryRegion {
    MemoryRegion::new(gpa as usize, (gpa + len) as usize)
}

impl Contender for Aarch64 {
    const NAME: &'static str = "aarch64-paging";
    const RANGE_MAP: Option<&'static str> = Some("range `map_range`");
    const LEAF_MAP: Option<&'static str> = Some("per-leaf `map_range`");
    const RANGE_UNMAP: Option<&'static str> = Some("range `map_range`(!VALID)");
    const LEAF_UNMAP: Option<&'static str> = Some("per-leaf `map_range`(!VALID)");
    const TRANSLATE: Option<&'static str> = Some("`walk_range` over one page");

    fn new() -> Self {
        Aarch64(Mapping::new(PoolTranslation, 0, Stage2))
    }
    #[inline(never)]
    fn map_range(&mut self, gpa: u64, len: u64, pa: u64, size: PageSize) {
        self.0
            .map_range(&region(gpa, len), PhysicalAddress(pa as usize), FLAGS, constraints(size))
            .expect("aarch64-paging map_range");
    }
    #[inline(never)]
    fn map_leaves(&mut self, gpa: u64, n: u64, pa: u64, size: PageSize) {
        let step = size.bytes();
        for i in 0..n {
            self.0
                .map_range(
                    &region(gpa + i * step, step),
                    PhysicalAddress((pa + i * step) as usize),
                    FLAGS,
                    constraints(size),
                )
                .expect("aarch64-paging map_range");
        }
    }
    #[inline(never)]
    fn unmap_range(&mut self, gpa: u64, len: u64, size: PageSize) {
        self.0
            .map_range(&region(gpa, len), PhysicalAddress(0), Stage2Attributes::empty(), constraints(size))
            .expect("aarch64-paging unmap");
    }
    #[inline(never)]
    fn unmap_leaves(&mut self, gpa: u64, n: u64, size: PageSize) {
        let step = size.bytes();
        for i in 0..n {
            self.0
                .map_range(
                    &region(gpa + i * step, step),
                    PhysicalAddress(0),
                    Stage2Attributes::empty(),
                    constraints(size),
                )
                .expect("aarch64-paging unmap");
        }
    }
    #[inline]
    fn translate(&self, gpa: u64) -> Option<u64> {
        let mut out = None;
        self.0
            .walk_range(&region(gpa, 1), &mut |_, desc, level| {
                if desc.is_valid() {
                    let block = 4096u64 << ((3 - level) * 9);
                    out = Some(desc.output_address().0 as u64 + (gpa & (block - 1)));
                }
                Ok(())
            })
            .ok()?;
        out
    }
}
