//! slat-pt: `PageTable<Ept4, _>` over the pool.

use slat_pt::format::Ept4;
use slat_pt::{FlushBatch, Gpa, LeafAttrs, Mapping, NoTlb, PageSize, PageTable, Perms};

use crate::contender::Contender;
use crate::pool::SlatFrames;

/// The table type every slat row uses.
pub type Table = PageTable<Ept4, SlatFrames>;

/// The attributes every slat row maps with.
pub fn attrs() -> LeafAttrs {
    LeafAttrs::ram(Perms::RW)
}

fn finish(pt: &Table, batch: FlushBatch) {
    // SAFETY: no TLB and no other walker exists in the benchmark; the tables are unreachable.
    unsafe { pt.free_detached(batch.into_detached()) };
}

/// slat with its range `map` / `unmap`, and `install` (the fault path's call) per leaf.
pub struct Slat(pub Table);

impl Contender for Slat {
    const NAME: &'static str = "slat";
    const RANGE_MAP: Option<&'static str> = Some("range `map`");
    const LEAF_MAP: Option<&'static str> = Some("per-leaf `install`");
    const RANGE_UNMAP: Option<&'static str> = Some("range `unmap` + `free_detached`");
    const LEAF_UNMAP: Option<&'static str> = Some("per-leaf `unmap`");
    const TRANSLATE: Option<&'static str> = Some("`translate`");

    fn new() -> Self {
        Slat(Table::new(SlatFrames).expect("root frame"))
    }
    #[inline(never)]
    fn map_range(&mut self, gpa: u64, len: u64, pa: u64, size: PageSize) {
        let mut batch = FlushBatch::new();
        let m = Mapping { pa, size, attrs: attrs() };
        self.0.map(Gpa(gpa), len, &m, &mut batch, &NoTlb).expect("slat map");
        assert!(batch.is_empty());
        finish(&self.0, batch);
    }
    #[inline(never)]
    fn map_leaves(&mut self, gpa: u64, n: u64, pa: u64, size: PageSize) {
        let mut batch = FlushBatch::new();
        let step = size.bytes();
        for i in 0..n {
            let m = Mapping { pa: pa + i * step, size, attrs: attrs() };
            self.0.install(Gpa(gpa + i * step), &m, &mut batch, &NoTlb).expect("slat install");
        }
        finish(&self.0, batch);
    }
    #[inline(never)]
    fn unmap_range(&mut self, gpa: u64, len: u64, _size: PageSize) {
        let mut batch = FlushBatch::new();
        self.0.unmap(Gpa(gpa), len, &mut batch, None).expect("slat unmap");
        finish(&self.0, batch);
    }
    #[inline(never)]
    fn unmap_leaves(&mut self, gpa: u64, n: u64, size: PageSize) {
        let step = size.bytes();
        for i in 0..n {
            let mut batch = FlushBatch::new();
            self.0.unmap(Gpa(gpa + i * step), step, &mut batch, None).expect("slat unmap");
            finish(&self.0, batch);
        }
    }
    #[inline]
    fn translate(&self, gpa: u64) -> Option<u64> {
        self.0.translate(Gpa(gpa)).map(|t| t.pa)
    }
}

/// slat's range `map` called with one leaf per call (the exclusive per-page path).
pub struct SlatMapOne(pub Table);

impl Contender for SlatMapOne {
    const NAME: &'static str = "slat";
    const RANGE_MAP: Option<&'static str> = None;
    const LEAF_MAP: Option<&'static str> = Some("per-leaf `map`");
    const RANGE_UNMAP: Option<&'static str> = None;
    const LEAF_UNMAP: Option<&'static str> = None;
    const TRANSLATE: Option<&'static str> = None;

    fn new() -> Self {
        SlatMapOne(Table::new(SlatFrames).expect("root frame"))
    }
    fn map_range(&mut self, gpa: u64, len: u64, pa: u64, size: PageSize) {
        Slat::map_range_on(&mut self.0, gpa, len, pa, size);
    }
    #[inline(never)]
    fn map_leaves(&mut self, gpa: u64, n: u64, pa: u64, size: PageSize) {
        let step = size.bytes();
        for i in 0..n {
            let mut batch = FlushBatch::new();
            let m = Mapping { pa: pa + i * step, size, attrs: attrs() };
            self.0.map(Gpa(gpa + i * step), step, &m, &mut batch, &NoTlb).expect("slat map");
            finish(&self.0, batch);
        }
    }
    fn unmap_range(&mut self, _: u64, _: u64, _: PageSize) {
        unreachable!("no range unmap row for slat per-leaf map")
    }
    fn unmap_leaves(&mut self, _: u64, _: u64, _: PageSize) {
        unreachable!("no per-leaf unmap row for slat per-leaf map")
    }
    fn translate(&self, gpa: u64) -> Option<u64> {
        self.0.translate(Gpa(gpa)).map(|t| t.pa)
    }
}

impl Slat {
    fn map_range_on(pt: &mut Table, gpa: u64, len: u64, pa: u64, size: PageSize) {
        let mut batch = FlushBatch::new();
        let m = Mapping { pa, size, attrs: attrs() };
        pt.map(Gpa(gpa), len, &m, &mut batch, &NoTlb).expect("slat map");
        finish(pt, batch);
    }
}
