//! Memory objects: what a folio-backed VMA maps. A private anonymous region, or a file (shmem,
//! hugetlbfs, page cache) whose page index holds folios.
//!
//! Each `mmap` creates its own object; the VMAs that pieces of that mapping become (after
//! splits) share it. An object lives while any VMA refers to it: unmapping the last piece drops
//! it and frees its folios, as closing the file would. Anonymous objects hold exactly the pages
//! the process has; file objects keep their pages when they are unmapped (page cache).

use std::collections::BTreeMap;

/// Identifies a memory object.
pub(crate) type ObjectId = u64;

/// A folio in an object's index: `(head index, head pfn, order)`.
pub(crate) type IndexedFolio = (u64, u64, u8);

#[derive(Debug)]
pub(crate) struct MemObject {
    /// Pages in the file (`u64::MAX` for anonymous memory); faults past it fail.
    pub file_pages: u64,
    /// Head index -> (head pfn, order). Heads are aligned to their order.
    pub pages: BTreeMap<u64, (u64, u8)>,
    /// VMAs referring to the object.
    pub vmas: u32,
}

impl MemObject {
    pub fn new(file_pages: u64) -> Self {
        MemObject { file_pages, pages: BTreeMap::new(), vmas: 1 }
    }

    /// The folio holding page `index`.
    pub fn folio_at(&self, index: u64) -> Option<IndexedFolio> {
        let (&hi, &(pfn, order)) = self.pages.range(..=index).next_back()?;
        (index < hi + (1 << order)).then_some((hi, pfn, order))
    }

    /// The pfn of page `index`.
    pub fn pfn_of(&self, index: u64) -> Option<u64> {
        self.folio_at(index).map(|(hi, pfn, _)| pfn + (index - hi))
    }

    /// Folios overlapping the indices `start..end`, in index order.
    pub fn overlapping(&self, start: u64, end: u64) -> Vec<IndexedFolio> {
        let mut out: Vec<IndexedFolio> = self.folio_at(start).filter(|f| f.0 < start).into_iter().collect();
        out.extend(self.pages.range(start..end).map(|(&hi, &(pfn, order))| (hi, pfn, order)));
        out
    }

    /// Whether no folio holds any page of `start..end`.
    pub fn is_hole(&self, start: u64, end: u64) -> bool {
        self.folio_at(start).is_none() && self.pages.range(start..end).next().is_none()
    }
}
