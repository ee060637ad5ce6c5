//! Collapse: khugepaged and `MADV_COLLAPSE` turn a PTE-mapped 2 MiB block into one PMD mapping.
//!
//! Anonymous memory (and file blocks not already held by one PMD-sized folio) is copied into a
//! freshly allocated 2 MiB folio: new pfns, same contents (page state carried over, empty PTEs
//! become zero pages of the new folio), the old pages freed. A file block already held by one
//! PMD-sized folio that is only PTE-mapped is collapsed in place: its page table is retracted and
//! the same folio PMD-mapped. Either way the block is invalidated first.
//!
//! A block is eligible when it lies inside one VMA, hva and file index are congruent, some of
//! its PTEs are present, no KSM page is in it, the VMA is not `MADV_NOHUGEPAGE`, and (khugepaged
//! only) the THP policy covers the VMA and at most `khugepaged_max_ptes_none` PTEs are empty.

use slat_mmu::{BackingKind, MmuNotifier};
use slat_pt::PageSize;

use super::buddy::PMD_ORDER;
use super::config::{PAGE, SIZE_2M};
use super::error::HostOpError;
use super::events::{EventReport, HvaRange};
use super::folio::{Folio, FolioKind, Owner};
use super::state::{leaf_attrs, HostState};
use super::vma::{Backing, ShmemHuge, ThpAdvice, ThpMode, Vma};
use super::SimHost;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Khugepaged,
    Madvise,
}

/// How a block will be collapsed.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// PMD-map the PMD-sized file folio at this pfn.
    InPlace { head: u64 },
    /// Copy into the 2 MiB block allocated at this pfn.
    Copy { new: u64 },
}

/// Why a block was not collapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// Already PMD- or PUD-mapped (counts as success for `MADV_COLLAPSE`).
    AlreadyHuge,
    /// Not eligible.
    Ineligible,
    /// No free 2 MiB block.
    NoMemory,
}

/// Whether khugepaged looks at the VMA at all (the THP policy covers it).
fn khugepaged_vma(v: &Vma) -> bool {
    if v.advice == ThpAdvice::NoHugePage {
        return false;
    }
    match v.backing {
        Backing::Anonymous { thp } => {
            thp == ThpMode::Always || (thp == ThpMode::Madvise && v.advice == ThpAdvice::HugePage)
        }
        Backing::Shmem { huge, .. } => match huge {
            ShmemHuge::Never => false,
            ShmemHuge::Always | ShmemHuge::WithinSize => true,
            ShmemHuge::Advise => v.advice == ThpAdvice::HugePage,
        },
        Backing::PageCache { max_folio_order, .. } => max_folio_order >= PMD_ORDER,
        _ => false,
    }
}

impl HostState {
    fn plan_collapse(&mut self, block: u64, mode: Mode) -> Result<Plan, Skip> {
        let vma =
            self.vmas.find(block).filter(|v| v.contains_block(block, SIZE_2M)).cloned().ok_or(Skip::Ineligible)?;
        if let Some(t) = self.pt.translate(block) {
            if t.size != PageSize::Size4K {
                return Err(Skip::AlreadyHuge);
            }
        }
        let eligible = match mode {
            Mode::Khugepaged => khugepaged_vma(&vma),
            Mode::Madvise => {
                vma.advice != ThpAdvice::NoHugePage
                    && match vma.backing {
                        Backing::Anonymous { .. } | Backing::Shmem { .. } => true,
                        Backing::PageCache { max_folio_order, .. } => max_folio_order >= PMD_ORDER,
                        _ => false,
                    }
            }
        };
        let object = vma.object.filter(|_| eligible).ok_or(Skip::Ineligible)?;
        let bi = vma.index_of(block);
        let obj = self.objects.get(&object).ok_or(Skip::Ineligible)?;
        if bi % 512 != 0 || bi + 512 > obj.file_pages {
            return Err(Skip::Ineligible);
        }
        let present = self.pt.mapped_pages(block, PageSize::Size2M);
        let none = 512 - present;
        if present == 0 || (mode == Mode::Khugepaged && none > u64::from(self.config.khugepaged_max_ptes_none)) {
            return Err(Skip::Ineligible);
        }
        if self.pt.leaves(block, block + SIZE_2M).iter().any(|l| self.is_ksm_pfn(l.pa / PAGE)) {
            return Err(Skip::Ineligible);
        }
        if vma.kind() != BackingKind::Anonymous {
            if let Some((hi, head, order)) = obj.folio_at(bi) {
                if hi == bi && order == PMD_ORDER {
                    return Ok(Plan::InPlace { head });
                }
            }
        }
        match self.buddy.alloc(PMD_ORDER) {
            Some(new) => Ok(Plan::Copy { new }),
            None => {
                self.stats.collapse_alloc_failed += 1;
                Err(Skip::NoMemory)
            }
        }
    }

    fn execute_collapse(&mut self, block: u64, plan: Plan, r: &mut EventReport) -> Result<(), HostOpError> {
        let Some((vma, object)) = self.vmas.find(block).and_then(|v| Some((v.clone(), v.object?))) else {
            // The block went away since it was planned: return the new folio's memory.
            if let Plan::Copy { new } = plan {
                let _ = self.buddy.free(new, PMD_ORDER);
            }
            return Ok(());
        };
        let bi = vma.index_of(block);
        self.zap(block, block + SIZE_2M)?;
        let head = match plan {
            Plan::InPlace { head } => head,
            Plan::Copy { new } => {
                let kind = match vma.kind() {
                    BackingKind::Shmem => FolioKind::Shmem,
                    BackingKind::PageCache => FolioKind::PageCache,
                    _ => FolioKind::Anonymous,
                };
                self.flags.reset(new, 512);
                self.folios.insert(new, Folio::new(PMD_ORDER, kind, Owner::Object { object, index: bi }));
                let old = self.objects.get(&object).map(|o| o.overlapping(bi, bi + 512)).unwrap_or_default();
                for (hi, pfn, order) in old {
                    let to = new + (hi - bi);
                    self.flags.copy(pfn, to, 1 << order);
                    self.folios.move_foreign(pfn, to, 1 << order);
                    self.free_folio(pfn);
                }
                if let Some(o) = self.objects.get_mut(&object) {
                    o.pages.insert(bi, (new, PMD_ORDER));
                }
                self.stats.thp_alloc += 1;
                new
            }
        };
        self.pt.map(block, PageSize::Size2M, head, leaf_attrs(&vma), &mut self.folios)?;
        self.stats.collapses += 1;
        r.huge_collapsed += 1;
        r.pages += 512;
        Ok(())
    }

    /// The next `blocks` 2 MiB blocks khugepaged scans: inside `range` from its start, or from
    /// the cursor, wrapping once.
    fn khugepaged_candidates(&mut self, blocks: u64, range: Option<HvaRange>) -> Vec<u64> {
        let (lo, hi) = range.map_or((0, u64::MAX), |r| (r.start, r.end));
        let all: Vec<u64> = self
            .vmas
            .iter()
            .filter(|v| khugepaged_vma(v))
            .flat_map(|v| {
                let (start, end) = (v.start.max(lo), v.end.min(hi));
                let first = start.saturating_add(SIZE_2M - 1) & !(SIZE_2M - 1);
                (first..end).step_by(SIZE_2M as usize).filter(move |&b| b + SIZE_2M <= end)
            })
            .collect();
        if all.is_empty() {
            return Vec::new();
        }
        if range.is_some() {
            return all.into_iter().take(blocks.min(usize::MAX as u64) as usize).collect();
        }
        let from = all.partition_point(|&b| b < self.khugepaged_cursor);
        let take = blocks.min(all.len() as u64) as usize;
        let out: Vec<u64> = all.iter().cycle().skip(from).take(take).copied().collect();
        if let Some(&last) = out.last() {
            self.khugepaged_cursor = last + SIZE_2M;
        }
        out
    }
}

impl SimHost {
    fn collapse_block(
        &self,
        n: &dyn MmuNotifier,
        block: u64,
        mode: Mode,
        r: &mut EventReport,
    ) -> Result<(), HostOpError> {
        let plan = match self.lock().plan_collapse(block, mode) {
            Ok(plan) => plan,
            Err(Skip::AlreadyHuge) => return Ok(()),
            Err(Skip::Ineligible | Skip::NoMemory) => {
                r.failed += 1;
                return Ok(());
            }
        };
        let range = HvaRange { start: block, end: block + SIZE_2M };
        self.invalidating(n, range, r, |st, r| st.execute_collapse(block, plan, r))
    }

    pub(crate) fn khugepaged(&self, n: &dyn MmuNotifier, blocks: u64, range: Option<HvaRange>) -> EventReport {
        let mut report = EventReport::default();
        let candidates = self.lock().khugepaged_candidates(blocks, range);
        for block in candidates {
            // Only page-table exhaustion fails here; khugepaged just moves on.
            if self.collapse_block(n, block, Mode::Khugepaged, &mut report).is_err() {
                report.failed += 1;
            }
        }
        report
    }

    pub(crate) fn madvise_collapse(&self, n: &dyn MmuNotifier, hva: u64, len: u64) -> Result<EventReport, HostOpError> {
        let end = self.lock().check_covered(hva, len)?;
        let mut report = EventReport::default();
        let first = (hva + SIZE_2M - 1) & !(SIZE_2M - 1);
        let mut block = first;
        while block + SIZE_2M <= end {
            self.collapse_block(n, block, Mode::Madvise, &mut report)?;
            block += SIZE_2M;
        }
        Ok(report)
    }
}
