//! page-table-generic 0.9: `PageTable<_, _>` with 4 levels of 9 bits. The crate ships no entry
//! format, so this one writes EPT entries bit for bit equal to slat's `Ept4` leaves.

use page_table_generic::{FrameAllocator, MapConfig, PageTable, PageTableEntry, PhysAddr, TableMeta, VirtAddr};
use slat_pt::format::{Ept4, Format};
use slat_pt::PageSize;

use crate::contender::Contender;
use crate::pool;

const RWX: u64 = 0b111;
const PS: u64 = 1 << 7;
const ADDR: u64 = ((1 << 52) - 1) & !0xfff;

/// Leaf attributes: slat's `Ept4` leaf for the bench attributes without address and size bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EptConfig(u64);

/// An EPT entry.
#[derive(Debug, Clone, Copy)]
#[repr(transparent)]
pub struct EptPte(u64);

impl PageTableEntry for EptPte {
    type PteConfig = EptConfig;
    #[inline]
    fn new_page(paddr: PhysAddr, config: EptConfig, is_huge: bool) -> Self {
        EptPte((paddr.as_usize() as u64 & ADDR) | config.0 | if is_huge { PS } else { 0 })
    }
    #[inline]
    fn new_table(paddr: PhysAddr) -> Self {
        EptPte((paddr.as_usize() as u64 & ADDR) | RWX)
    }
    #[inline]
    fn paddr(&self, _is_dir: bool) -> PhysAddr {
        PhysAddr::from_usize((self.0 & ADDR) as usize)
    }
    #[inline]
    fn config(&self, _is_dir: bool) -> EptConfig {
        EptConfig(self.0 & !(ADDR | PS))
    }
    #[inline]
    fn present(&self) -> bool {
        self.0 & RWX != 0
    }
    #[inline]
    fn huge(&self, is_dir: bool) -> bool {
        is_dir && self.0 & PS != 0
    }
    #[inline]
    fn unused(&self) -> bool {
        self.0 == 0
    }
    #[inline]
    fn clear(&mut self) {
        self.0 = 0;
    }
}

/// 4 levels of 9 bits, 4 KiB pages, blocks up to 1 GiB, no TLB maintenance.
#[derive(Debug, Clone, Copy)]
pub struct EptMeta;

impl TableMeta for EptMeta {
    type P = EptPte;
    const PAGE_SIZE: usize = 4096;
    const LEVEL_BITS: &[usize] = &[9, 9, 9, 9];
    const MAX_BLOCK_LEVEL: usize = 3;
    #[inline]
    fn flush(_vaddr: Option<VirtAddr>) {}
}

/// Frames from the pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolFrames;

impl FrameAllocator for PoolFrames {
    #[inline]
    fn alloc_frame(&self) -> Option<PhysAddr> {
        pool::alloc_raw().map(PhysAddr::from_usize)
    }
    #[inline]
    fn dealloc_frame(&self, frame: PhysAddr) {
        pool::free(frame.as_usize());
    }
    #[inline]
    fn phys_to_virt(&self, paddr: PhysAddr) -> *mut u8 {
        paddr.as_usize() as *mut u8
    }
}

/// A page-table-generic table.
pub struct Ptg(PageTable<EptMeta, PoolFrames>);

fn config() -> EptConfig {
    EptConfig(Ept4::leaf(0, 0, &crate::peers::slat::attrs()) & !(ADDR | PS))
}

impl Contender for Ptg {
    const NAME: &'static str = "page-table-generic";
    const RANGE_MAP: Option<&'static str> = Some("range `map`");
    const LEAF_MAP: Option<&'static str> = Some("per-leaf `map_page`");
    const RANGE_UNMAP: Option<&'static str> = Some("range `unmap`");
    const LEAF_UNMAP: Option<&'static str> = Some("per-leaf `unmap_page`");
    const TRANSLATE: Option<&'static str> = Some("`translate`");

    fn new() -> Self {
        Ptg(PageTable::new(PoolFrames).expect("root frame"))
    }
    #[inline(never)]
    fn map_range(&mut self, gpa: u64, len: u64, pa: u64, size: PageSize) {
        self.0
            .map(&MapConfig {
                vaddr: VirtAddr::from_usize(gpa as usize),
                paddr: PhysAddr::from_usize(pa as usize),
                size: len as usize,
                pte: config(),
                allow_huge: size != PageSize::Size4K,
                flush: false,
            })
            .expect("page-table-generic map");
    }
    #[inline(never)]
    fn map_leaves(&mut self, gpa: u64, n: u64, pa: u64, size: PageSize) {
        let step = size.bytes();
        let cfg = config();
        for i in 0..n {
            self.0
                .map_page(
                    VirtAddr::from_usize((gpa + i * step) as usize),
                    PhysAddr::from_usize((pa + i * step) as usize),
                    step as usize,
                    cfg,
                )
                .expect("page-table-generic map_page");
        }
    }
    #[inline(never)]
    fn unmap_range(&mut self, gpa: u64, len: u64, _size: PageSize) {
        self.0.unmap(VirtAddr::from_usize(gpa as usize), len as usize).expect("page-table-generic unmap");
    }
    #[inline(never)]
    fn unmap_leaves(&mut self, gpa: u64, n: u64, size: PageSize) {
        let step = size.bytes();
        for i in 0..n {
            self.0.unmap_page(VirtAddr::from_usize((gpa + i * step) as usize)).expect("page-table-generic unmap_page");
        }
    }
    #[inline]
    fn translate(&self, gpa: u64) -> Option<u64> {
        self.0.translate(VirtAddr::from_usize(gpa as usize)).ok().map(|(pa, _)| pa.as_usize() as u64)
    }
}
