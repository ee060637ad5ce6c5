//! Memory objects: what a folio-backed VMA maps. A private anonymous region, or a file (shmem,
//! hugetlbfs, page cache) whose page index holds folios.
//!
//! Each `mmap` creates its own object; the VMAs that pieces of that mapping become (after
//! splits) share it. An object lives while any VMA refers to it: unmapping the last piece drops
//! it and frees its folios, as closing the file would. Anonymous objects hold exactly the pages
//! the process has; file objects keep their pages when they are unmapped (page cache).

use std::collections::BTreeMap;

/// Identifies a memory object (one per `mmap`; 32 bits keep the per-page folio records small).
pub(crate) type ObjectId = u32;

/// A folio in an object's index: `(head index, head pfn, order)`.
pub(crate) type IndexedFolio = (u64, u64, u8);

#[derive(Debug)]
pub(crate) struct MemObject {
    /// Pages in the file (`u64::MAX` for anonymous memory); faults past it fail.
    pub file_pages: u64,
    /// Which folio holds each page. Heads are aligned to their order.
    pub pages: PageIndex,
    /// VMAs referring to the object.
    pub vmas: u32,
}

impl MemObject {
    pub fn new(file_pages: u64) -> Self {
        MemObject { file_pages, pages: PageIndex::default(), vmas: 1 }
    }

    /// The folio holding page `index`.
    pub fn folio_at(&self, index: u64) -> Option<IndexedFolio> {
        self.pages.folio_at(index)
    }

    /// The pfn of page `index`.
    pub fn pfn_of(&self, index: u64) -> Option<u64> {
        self.folio_at(index).map(|(hi, pfn, _)| pfn + (index - hi))
    }

    /// Folios overlapping the indices `start..end`, in index order.
    pub fn overlapping(&self, start: u64, end: u64) -> Vec<IndexedFolio> {
        let mut out = Vec::new();
        self.pages.scan(start, end, |f| {
            out.push(f);
            true
        });
        out
    }

    /// Whether no folio holds any page of `start..end`.
    pub fn is_hole(&self, start: u64, end: u64) -> bool {
        self.pages.scan(start, end, |_| false)
    }
}

/// Indices per chunk of the page index (one 2 MiB block of the object).
const CHUNK: u64 = 512;

/// One chunk of a [`PageIndex`].
#[derive(Debug)]
enum IndexChunk {
    /// Folios smaller than the chunk: per index, `0` (a hole) or the index's own pfn plus one
    /// with the folio's order in the top bits ([`pack`]). Counts the indices held.
    Small(Box<[u64; CHUNK as usize]>, u16),
    /// Part of (or all of) one folio of at least a chunk.
    Huge(IndexedFolio),
}

const ORDER_SHIFT: u32 = 58;

fn pack(pfn: u64, order: u8) -> u64 {
    (u64::from(order) << ORDER_SHIFT) | (pfn + 1)
}

fn unpack(v: u64) -> (u64, u8) {
    ((v & ((1 << ORDER_SHIFT) - 1)) - 1, (v >> ORDER_SHIFT) as u8)
}

/// Page index of a memory object: which folio holds each page, in chunks of 512 indices that
/// hold 8 bytes per page for small folios and one entry for a folio of 2 MiB or more (a radix
/// of fixed-size chunks instead of a tree node per folio).
#[derive(Debug, Default)]
pub(crate) struct PageIndex {
    chunks: BTreeMap<u64, IndexChunk>,
}

impl PageIndex {
    /// The folio holding page `index`.
    pub fn folio_at(&self, index: u64) -> Option<IndexedFolio> {
        match self.chunks.get(&(index / CHUNK))? {
            IndexChunk::Huge(f) => Some(*f),
            IndexChunk::Small(slots, _) => {
                let v = slots[(index % CHUNK) as usize];
                if v == 0 {
                    return None;
                }
                let (pfn, order) = unpack(v);
                let hi = index & !((1u64 << order) - 1);
                Some((hi, pfn - (index - hi), order))
            }
        }
    }

    /// The folio whose head is at `index` as `(head pfn, order)`.
    pub fn get(&self, index: u64) -> Option<(u64, u8)> {
        self.folio_at(index).filter(|f| f.0 == index).map(|(_, pfn, order)| (pfn, order))
    }

    /// Enter the folio `(pfn, order)` with its head at `index` (aligned to the order), in place
    /// of whatever held those pages.
    pub fn insert(&mut self, index: u64, (pfn, order): (u64, u8)) {
        let pages = 1u64 << order;
        if pages >= CHUNK {
            for c in index / CHUNK..(index + pages).div_ceil(CHUNK) {
                self.chunks.insert(c, IndexChunk::Huge((index, pfn, order)));
            }
            return;
        }
        for i in 0..pages {
            self.set(index + i, pack(pfn + i, order));
        }
    }

    /// Set or clear (`v == 0`) the slot of one index in a small chunk.
    fn set(&mut self, index: u64, v: u64) {
        let c = index / CHUNK;
        let chunk = match self.chunks.get_mut(&c) {
            Some(IndexChunk::Small(..)) => self.chunks.get_mut(&c),
            _ if v == 0 => {
                if matches!(self.chunks.get(&c), Some(IndexChunk::Huge(_))) {
                    self.chunks.remove(&c);
                }
                return;
            }
            _ => {
                self.chunks.insert(c, IndexChunk::Small(Box::new([0; CHUNK as usize]), 0));
                self.chunks.get_mut(&c)
            }
        };
        let Some(IndexChunk::Small(slots, used)) = chunk else { return };
        let slot = &mut slots[(index % CHUNK) as usize];
        match (*slot == 0, v == 0) {
            (true, false) => *used += 1,
            (false, true) => *used -= 1,
            _ => {}
        }
        *slot = v;
        if *used == 0 {
            self.chunks.remove(&c);
        }
    }

    /// Remove the folio whose head is at `index`; returns it as `(head pfn, order)`.
    pub fn remove(&mut self, index: u64) -> Option<(u64, u8)> {
        let (pfn, order) = self.get(index)?;
        let pages = 1u64 << order;
        if pages >= CHUNK {
            for c in index / CHUNK..(index + pages).div_ceil(CHUNK) {
                self.chunks.remove(&c);
            }
        } else {
            for i in 0..pages {
                self.set(index + i, 0);
            }
        }
        Some((pfn, order))
    }

    /// Every folio, in index order.
    pub fn iter(&self) -> Vec<IndexedFolio> {
        let mut out = Vec::new();
        self.scan(0, u64::MAX, |f| {
            out.push(f);
            true
        });
        out
    }

    /// Call `f` with each folio overlapping `start..end`, in index order, until it returns
    /// false. Returns whether it never did (true when there was no folio at all).
    fn scan(&self, start: u64, end: u64, mut f: impl FnMut(IndexedFolio) -> bool) -> bool {
        if start >= end {
            return true;
        }
        let mut last: Option<u64> = None;
        for (&c, chunk) in self.chunks.range(start / CHUNK..=(end - 1) / CHUNK) {
            match chunk {
                IndexChunk::Huge(folio) => {
                    if last != Some(folio.0) {
                        last = Some(folio.0);
                        if !f(*folio) {
                            return false;
                        }
                    }
                }
                IndexChunk::Small(slots, _) => {
                    let base = c * CHUNK;
                    let (mut i, stop) = (start.max(base), end.min(base + CHUNK));
                    while i < stop {
                        let v = slots[(i - base) as usize];
                        if v == 0 {
                            i += 1;
                            continue;
                        }
                        let (pfn, order) = unpack(v);
                        let hi = i & !((1u64 << order) - 1);
                        if last != Some(hi) {
                            last = Some(hi);
                            if !f((hi, pfn - (i - hi), order)) {
                                return false;
                            }
                        }
                        i = hi + (1 << order);
                    }
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::{MemObject, PageIndex};

    #[test]
    fn small_and_huge_folios_are_found_from_every_page() {
        let mut p = PageIndex::default();
        p.insert(3, (100, 0));
        p.insert(8, (208, 3));
        p.insert(512, (4096, 9));
        p.insert(1 << 18, (1 << 20, 18));
        assert_eq!(p.folio_at(3), Some((3, 100, 0)));
        assert_eq!(p.folio_at(4), None);
        assert_eq!(p.folio_at(13), Some((8, 208, 3)));
        assert_eq!(p.folio_at(1023), Some((512, 4096, 9)));
        assert_eq!(p.folio_at((1 << 18) + 70_000), Some((1 << 18, 1 << 20, 18)));
        assert_eq!(p.get(8), Some((208, 3)));
        assert_eq!(p.get(9), None);
        assert_eq!(p.iter(), vec![(3, 100, 0), (8, 208, 3), (512, 4096, 9), (1 << 18, 1 << 20, 18)]);
        assert_eq!(p.remove(9), None);
        assert_eq!(p.remove(8), Some((208, 3)));
        assert_eq!(p.remove(1 << 18), Some((1 << 20, 18)));
        assert_eq!(p.iter(), vec![(3, 100, 0), (512, 4096, 9)]);
        assert_eq!(p.remove(3), Some((100, 0)));
        assert_eq!(p.chunks.len(), 1, "an emptied small chunk is freed");
    }

    #[test]
    fn ranges_include_a_folio_that_starts_before_them() {
        let mut o = MemObject::new(u64::MAX);
        o.pages.insert(0, (512, 9));
        for i in 0..4 {
            o.pages.insert(512 + 2 * i, (7000 + 2 * i, 1));
        }
        assert_eq!(o.overlapping(500, 515), vec![(0, 512, 9), (512, 7000, 1), (514, 7002, 1)]);
        assert_eq!(o.overlapping(513, 514), vec![(512, 7000, 1)]);
        assert!(o.is_hole(520, 2000));
        assert!(!o.is_hole(519, 2000));
        assert_eq!(o.pfn_of(517), Some(7005));
        // A large folio replaced by small ones (a folio split).
        o.pages.remove(0);
        for i in 0..512 {
            o.pages.insert(i, (512 + i, 0));
        }
        assert_eq!(o.overlapping(0, 3), vec![(0, 512, 0), (1, 513, 0), (2, 514, 0)]);
    }
}
