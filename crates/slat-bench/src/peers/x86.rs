//! x86_64 0.15: `OffsetPageTable` with offset 0 (the pool is identity-mapped), x86-64 4-level
//! stage-1 format. Built without default features: no `invlpg`; every `MapperFlush` is ignored.
//! No range API.

use slat_pt::PageSize;
use x86_64::structures::paging::mapper::Mapper;
use x86_64::structures::paging::{
    FrameAllocator, OffsetPageTable, Page, PageTable, PageTableFlags, PhysFrame, Size1GiB, Size2MiB, Size4KiB,
    Translate,
};
use x86_64::{PhysAddr, VirtAddr};

use crate::contender::Contender;
use crate::pool;

struct PoolFrames;

// SAFETY: the pool hands out each 4 KiB frame once until it is freed or the pool is reset.
unsafe impl FrameAllocator<Size4KiB> for PoolFrames {
    #[inline]
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        pool::alloc_raw().map(|pa| PhysFrame::containing_address(PhysAddr::new(pa as u64)))
    }
}

/// An x86_64 table.
pub struct X86 {
    root: *mut PageTable,
}

const FLAGS: PageTableFlags = PageTableFlags::PRESENT.union(PageTableFlags::WRITABLE);

impl X86 {
    #[inline]
    fn mapper(&mut self) -> OffsetPageTable<'_> {
        // SAFETY: `root` is a zeroed pool frame owned by this table; physical = virtual.
        unsafe { OffsetPageTable::new(&mut *self.root, VirtAddr::new(0)) }
    }
}

impl Contender for X86 {
    const NAME: &'static str = "x86_64";
    const RANGE_MAP: Option<&'static str> = None;
    const LEAF_MAP: Option<&'static str> = Some("per-leaf `map_to`");
    const RANGE_UNMAP: Option<&'static str> = None;
    const LEAF_UNMAP: Option<&'static str> = Some("per-leaf `unmap`");
    const TRANSLATE: Option<&'static str> = Some("`translate_addr`");

    fn new() -> Self {
        let root = pool::alloc_zeroed().expect("root frame") as *mut PageTable;
        X86 { root }
    }
    fn map_range(&mut self, gpa: u64, len: u64, pa: u64, size: PageSize) {
        self.map_leaves(gpa, len / size.bytes(), pa, size);
    }
    #[inline(never)]
    fn map_leaves(&mut self, gpa: u64, n: u64, pa: u64, size: PageSize) {
        let step = size.bytes();
        let mut m = self.mapper();
        for i in 0..n {
            let (v, p) = (VirtAddr::new(gpa + i * step), PhysAddr::new(pa + i * step));
            // SAFETY: the frames are benchmark output addresses, never accessed.
            let r = unsafe {
                match size {
                    PageSize::Size4K => m
                        .map_to(
                            Page::<Size4KiB>::containing_address(v),
                            PhysFrame::containing_address(p),
                            FLAGS,
                            &mut PoolFrames,
                        )
                        .map(|f| f.ignore())
                        .is_ok(),
                    PageSize::Size2M => m
                        .map_to(
                            Page::<Size2MiB>::containing_address(v),
                            PhysFrame::containing_address(p),
                            FLAGS,
                            &mut PoolFrames,
                        )
                        .map(|f| f.ignore())
                        .is_ok(),
                    PageSize::Size1G => m
                        .map_to(
                            Page::<Size1GiB>::containing_address(v),
                            PhysFrame::containing_address(p),
                            FLAGS,
                            &mut PoolFrames,
                        )
                        .map(|f| f.ignore())
                        .is_ok(),
                }
            };
            assert!(r, "x86_64 map_to failed");
        }
    }
    fn unmap_range(&mut self, gpa: u64, len: u64, size: PageSize) {
        self.unmap_leaves(gpa, len / size.bytes(), size);
    }
    #[inline(never)]
    fn unmap_leaves(&mut self, gpa: u64, n: u64, size: PageSize) {
        let step = size.bytes();
        let mut m = self.mapper();
        for i in 0..n {
            let v = VirtAddr::new(gpa + i * step);
            let ok = match size {
                PageSize::Size4K => m.unmap(Page::<Size4KiB>::containing_address(v)).map(|(_, f)| f.ignore()).is_ok(),
                PageSize::Size2M => m.unmap(Page::<Size2MiB>::containing_address(v)).map(|(_, f)| f.ignore()).is_ok(),
                PageSize::Size1G => m.unmap(Page::<Size1GiB>::containing_address(v)).map(|(_, f)| f.ignore()).is_ok(),
            };
            assert!(ok, "x86_64 unmap failed");
        }
    }
    #[inline]
    fn translate(&self, gpa: u64) -> Option<u64> {
        // SAFETY: as in `mapper`; `translate_addr` only reads.
        let m = unsafe { OffsetPageTable::new(&mut *self.root, VirtAddr::new(0)) };
        m.translate_addr(VirtAddr::new(gpa)).map(|p| p.as_u64())
    }
}
