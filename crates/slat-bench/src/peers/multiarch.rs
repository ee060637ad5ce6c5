//! page_table_multiarch 0.6: `PageTable64<_, X64PTE, _>` (x86-64 format) with a metadata type
//! whose TLB flush is empty, frames from the pool.

use memory_addr::{PhysAddr, VirtAddr};
use page_table_entry::x86_64::X64PTE;
use page_table_multiarch::{MappingFlags, PageSize as MPageSize, PageTable64, PagingHandler, PagingMetaData};
use slat_pt::PageSize;

use crate::contender::Contender;
use crate::pool;

/// Frames from the pool.
pub struct PoolHandler;

impl PagingHandler for PoolHandler {
    #[inline]
    fn alloc_frames(num: usize, _align: usize) -> Option<PhysAddr> {
        if num == 1 {
            pool::alloc_raw().map(PhysAddr::from)
        } else {
            None
        }
    }
    #[inline]
    fn dealloc_frames(paddr: PhysAddr, num: usize) {
        for i in 0..num {
            pool::free(paddr.as_usize() + i * pool::FRAME);
        }
    }
    #[inline]
    fn phys_to_virt(paddr: PhysAddr) -> VirtAddr {
        VirtAddr::from(paddr.as_usize())
    }
}

/// x86-64 4-level metadata with no TLB maintenance.
pub struct NoFlushMeta;

impl PagingMetaData for NoFlushMeta {
    const LEVELS: usize = 4;
    const PA_MAX_BITS: usize = 52;
    const VA_MAX_BITS: usize = 48;
    type VirtAddr = VirtAddr;
    #[inline]
    fn flush_tlb(_vaddr: Option<VirtAddr>) {}
}

/// A multiarch table.
pub struct Multiarch(PageTable64<NoFlushMeta, X64PTE, PoolHandler>);

const FLAGS: MappingFlags = MappingFlags::READ.union(MappingFlags::WRITE);

fn msize(size: PageSize) -> MPageSize {
    match size {
        PageSize::Size4K => MPageSize::Size4K,
        PageSize::Size2M => MPageSize::Size2M,
        PageSize::Size1G => MPageSize::Size1G,
    }
}

impl Contender for Multiarch {
    const NAME: &'static str = "page_table_multiarch";
    const RANGE_MAP: Option<&'static str> = Some("range `map_region`");
    const LEAF_MAP: Option<&'static str> = Some("per-leaf `map`");
    const RANGE_UNMAP: Option<&'static str> = Some("range `unmap_region`");
    const LEAF_UNMAP: Option<&'static str> = Some("per-leaf `unmap`");
    const TRANSLATE: Option<&'static str> = Some("`query`");

    fn new() -> Self {
        Multiarch(PageTable64::try_new().expect("root frame"))
    }
    #[inline(never)]
    fn map_range(&mut self, gpa: u64, len: u64, pa: u64, size: PageSize) {
        let off = pa.wrapping_sub(gpa) as usize;
        let huge = size != PageSize::Size4K;
        self.0
            .cursor()
            .map_region(
                VirtAddr::from(gpa as usize),
                |v| PhysAddr::from(v.as_usize().wrapping_add(off)),
                len as usize,
                FLAGS,
                huge,
            )
            .expect("multiarch map_region");
    }
    #[inline(never)]
    fn map_leaves(&mut self, gpa: u64, n: u64, pa: u64, size: PageSize) {
        let step = size.bytes();
        let mut c = self.0.cursor();
        for i in 0..n {
            c.map(
                VirtAddr::from((gpa + i * step) as usize),
                PhysAddr::from((pa + i * step) as usize),
                msize(size),
                FLAGS,
            )
            .expect("multiarch map");
        }
    }
    #[inline(never)]
    fn unmap_range(&mut self, gpa: u64, len: u64, _size: PageSize) {
        self.0.cursor().unmap_region(VirtAddr::from(gpa as usize), len as usize).expect("multiarch unmap_region");
    }
    #[inline(never)]
    fn unmap_leaves(&mut self, gpa: u64, n: u64, size: PageSize) {
        let step = size.bytes();
        let mut c = self.0.cursor();
        for i in 0..n {
            c.unmap(VirtAddr::from((gpa + i * step) as usize)).expect("multiarch unmap");
        }
    }
    #[inline]
    fn translate(&self, gpa: u64) -> Option<u64> {
        self.0.query(VirtAddr::from(gpa as usize)).ok().map(|(pa, _, _)| pa.as_usize() as u64)
    }
}
