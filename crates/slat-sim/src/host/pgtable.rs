//! The VMM process's own page tables: real x86-64 long-mode tables (slat-pt's [`Npt`] format,
//! which is the host format too) keyed by host virtual address, with PTE (4K), PMD (2M) and PUD
//! (1G) leaves whose output is `pfn << 12`. Their frames come from a [`SimFrameAllocator`] of
//! their own, outside RAM.
//!
//! Every change of the tables goes through [`VmmPageTable`], which keeps the folio map counts
//! and a per-2M-block count of mapped pages in step with the leaves. Callers make sure a range
//! they unmap or re-protect does not cut through a huge leaf (they split or zap it first), and
//! that the range they map is empty.

use std::collections::BTreeMap;
use std::sync::Arc;

use slat_pt::format::Npt;
use slat_pt::{
    Counts, FlushBatch, Gpa, Leaf, LeafAttrs, Mapping, NoTlb, PageSize, PageTable, Perms, PtError, SimFrameAllocator,
    Translation,
};

use super::config::{PAGE, SIZE_1G, SIZE_2M};
use super::folio::Folios;

/// A leaf of the VMM's page tables: slat-pt's [`Leaf`], whose input address is a host virtual
/// address here (slat-pt calls every input address a gpa).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VmmLeaf {
    /// Host virtual address of the leaf's first byte.
    pub hva: u64,
    /// Leaf size (PTE, PMD or PUD).
    pub size: PageSize,
    /// Physical address of the leaf's first byte.
    pub pa: u64,
    /// Attributes.
    pub attrs: LeafAttrs,
}

impl From<&Leaf> for VmmLeaf {
    fn from(l: &Leaf) -> Self {
        VmmLeaf { hva: l.gpa.0, size: l.size, pa: l.pa, attrs: l.attrs }
    }
}

pub(crate) struct VmmPageTable {
    pt: PageTable<Npt, Arc<SimFrameAllocator>>,
    /// 4 KiB pages mapped by PTE and PMD leaves, per 2 MiB block.
    cover_2m: BTreeMap<u64, u64>,
}

/// Raise or lower the map count of the folio holding `pfn` for one leaf of `size`.
fn account(folios: &mut Folios, pfn: u64, size: PageSize, up: bool) {
    if let Some((_, mut f)) = folios.find_mut(pfn) {
        let c = match size {
            PageSize::Size4K => &mut f.pte_mapped,
            PageSize::Size2M => &mut f.pmd_mapped,
            PageSize::Size1G => &mut f.pud_mapped,
        };
        *c = if up { *c + 1 } else { c.saturating_sub(1) };
    }
}

impl VmmPageTable {
    pub fn new(frames: Arc<SimFrameAllocator>) -> Result<Self, PtError> {
        Ok(VmmPageTable { pt: PageTable::new(frames)?, cover_2m: BTreeMap::new() })
    }

    pub fn translate(&self, hva: u64) -> Option<Translation> {
        self.pt.translate(Gpa(hva))
    }

    /// Leaves overlapping `start..end`, in address order.
    pub fn leaves(&self, start: u64, end: u64) -> Vec<VmmLeaf> {
        let mut v = Vec::new();
        self.pt.for_each_leaf(Gpa(start), end.saturating_sub(start), |l| v.push(VmmLeaf::from(l)));
        v
    }

    /// 4 KiB pages mapped inside the `size` block at `block` (aligned).
    pub fn mapped_pages(&self, block: u64, size: PageSize) -> u64 {
        let pud = || self.translate(block).is_some_and(|t| t.size == PageSize::Size1G);
        match size {
            PageSize::Size4K => u64::from(self.translate(block).is_some()),
            PageSize::Size2M if pud() => 512,
            PageSize::Size2M => self.cover_2m.get(&block).copied().unwrap_or(0),
            PageSize::Size1G if pud() => 512 * 512,
            PageSize::Size1G => self.cover_2m.range(block..block + SIZE_1G).map(|(_, &n)| n).sum(),
        }
    }

    pub fn counts(&self) -> Counts {
        self.pt.counts()
    }

    /// Map the `size` leaf at `hva` to `pfn` (both aligned to `size`). Whatever was mapped in
    /// the block is unmapped first.
    pub fn map(
        &mut self,
        hva: u64,
        size: PageSize,
        pfn: u64,
        attrs: LeafAttrs,
        folios: &mut Folios,
    ) -> Result<(), PtError> {
        if self.mapped_pages(size.align_down(hva), size) > 0 {
            self.unmap(hva, hva + size.bytes(), folios)?;
        }
        let mut batch = FlushBatch::new();
        let m = Mapping { pa: pfn * PAGE, size, attrs };
        // No TLB caches the host tables (see `retire`), so nothing to invalidate.
        let r = self.pt.map(Gpa(hva), size.bytes(), &m, &mut batch, &NoTlb);
        self.retire(batch);
        r?;
        if size != PageSize::Size1G {
            *self.cover_2m.entry(hva & !(SIZE_2M - 1)).or_insert(0) += size.pages();
        }
        account(folios, pfn, size, true);
        Ok(())
    }

    /// Remove every leaf overlapping `start..end` (whole leaves); returns them.
    pub fn unmap(&mut self, start: u64, end: u64, folios: &mut Folios) -> Result<Vec<VmmLeaf>, PtError> {
        if start >= end {
            return Ok(Vec::new());
        }
        let mut removed = Vec::new();
        let mut batch = FlushBatch::new();
        let r =
            self.pt.unmap(Gpa(start), end - start, &mut batch, Some(&mut |l: &Leaf| removed.push(VmmLeaf::from(l))));
        self.retire(batch);
        r?;
        removed.sort_by_key(|l| l.hva);
        for l in &removed {
            if l.size != PageSize::Size1G {
                let block = l.hva & !(SIZE_2M - 1);
                if let Some(n) = self.cover_2m.get_mut(&block) {
                    *n = n.saturating_sub(l.size.pages());
                    if *n == 0 {
                        self.cover_2m.remove(&block);
                    }
                }
            }
            account(folios, l.pa / PAGE, l.size, false);
        }
        Ok(removed)
    }

    /// Split the PMD leaf mapping `hva` into 512 PTEs with the same translation.
    pub fn split_pmd(&mut self, hva: u64, folios: &mut Folios) -> Result<(), PtError> {
        let t = self.translate(hva).ok_or(PtError::NoLeaf { gpa: Gpa(hva), size: PageSize::Size2M })?;
        if t.size != PageSize::Size2M {
            return Err(PtError::NoLeaf { gpa: Gpa(hva), size: PageSize::Size2M });
        }
        self.pt.split(Gpa(hva), PageSize::Size2M, &NoTlb)?;
        let head = (t.pa & !(SIZE_2M - 1)) / PAGE;
        if let Some((_, mut f)) = folios.find_mut(head) {
            f.pmd_mapped = f.pmd_mapped.saturating_sub(1);
            f.pte_mapped += 512;
        }
        Ok(())
    }

    /// Set the permissions of the leaves overlapping `start..end` to what `f` returns (`None`
    /// leaves a leaf alone). Returns the number of leaves changed.
    pub fn protect(
        &mut self,
        start: u64,
        end: u64,
        mut f: impl FnMut(&VmmLeaf) -> Option<Perms>,
    ) -> Result<u64, PtError> {
        let mut batch = FlushBatch::new();
        let r = self.pt.update_leaves(Gpa(start), end - start, &mut batch, |l| {
            f(&VmmLeaf::from(l)).map(|p| l.attrs.with_perms(p))
        });
        self.retire(batch);
        r
    }

    /// Free the table frames a change detached. The simulated host has no TLB caching its own
    /// tables and nothing walks them except through this struct, which the caller holds
    /// exclusively, so the frames can go at once.
    fn retire(&self, batch: FlushBatch) {
        let detached = batch.into_detached();
        if !detached.is_empty() {
            // SAFETY: no TLB caches the host page tables and no walker other than this struct's
            // methods (all called through `&mut self` or `&self` under the host's mutex) can hold
            // a pointer into the detached frames.
            unsafe { self.pt.free_detached(detached) };
        }
    }
}
