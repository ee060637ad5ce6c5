//! KSM: merge identical anonymous pages into one read-only shared page.
//!
//! The simulator has no page contents, so a merge event declares which pages are identical:
//! a `ratio` of the present pages of a range, chosen with the host's seeded generator, all equal
//! to the host's one KSM page. Each chosen page's mapping is replaced by a read-only mapping of
//! the KSM page and its own page is freed; with no KSM page yet, the first chosen page becomes it
//! (write-protected, split out of its THP). A THP holding a chosen page is PMD-split and
//! folio-split first, as ksmd's `split_huge_page` does. Writes fault and break copy-on-write
//! ([`HostState::fault_in`]); collapses skip blocks holding KSM pages.

use std::collections::BTreeSet;

use rand::Rng;
use slat_mmu::{BackingKind, MmuNotifier};
use slat_pt::{LeafAttrs, PageSize, Perms};

use super::config::PAGE;
use super::error::HostOpError;
use super::events::{EventReport, HvaRange};
use super::folio::{FolioKind, Owner};
use super::state::HostState;
use super::SimHost;

impl HostState {
    /// Present, not yet merged 4 KiB pages of `start..end`, by address.
    fn mergeable_pages(&self, start: u64, end: u64) -> Vec<u64> {
        let mut out = Vec::new();
        for l in self.pt.leaves(start, end) {
            let first = l.hva.max(start);
            let last = (l.hva + l.size.bytes()).min(end);
            for hva in (first..last).step_by(PAGE as usize) {
                if !self.is_ksm_pfn((l.pa + (hva - l.hva)) / PAGE) {
                    out.push(hva);
                }
            }
        }
        out
    }

    /// Choose `ratio` of the mergeable pages of the range; empty when nothing would merge.
    fn choose_ksm_pages(&mut self, start: u64, end: u64, ratio: f64) -> Vec<u64> {
        let mut pages = self.mergeable_pages(start, end);
        let k = ((ratio * pages.len() as f64).round() as usize).min(pages.len());
        for i in 0..k {
            let j = self.rng.gen_range(i..pages.len());
            pages.swap(i, j);
        }
        pages.truncate(k);
        pages.sort_unstable();
        if self.ksm_page.is_none() && pages.len() < 2 {
            pages.clear();
        }
        pages
    }

    /// Make the page mapped at `hva` the KSM page.
    fn make_ksm_page(&mut self, hva: u64) -> Result<Option<u64>, HostOpError> {
        let Some(t) = self.pt.translate(hva) else { return Ok(None) };
        let pfn = t.pa / PAGE;
        if let Some((head, _)) = self.folios.find(pfn) {
            if !self.split_folio(head) {
                return Ok(None);
            }
        }
        let Some((head, mut f)) = self.folios.find_mut(pfn) else { return Ok(None) };
        if let Owner::Object { object, index } = f.owner {
            if let Some(o) = self.objects.get_mut(&object) {
                o.pages.remove(index);
            }
        }
        f.kind = FolioKind::Ksm;
        f.owner = Owner::Ksm;
        drop(f);
        *self.folios.ksm_hvas_mut(head) = BTreeSet::from([hva]);
        self.pt.protect(hva, hva + PAGE, |_| Some(Perms::READ))?;
        self.ksm_page = Some(pfn);
        Ok(Some(pfn))
    }

    fn ksm_locked(&mut self, pages: &[u64], r: &mut EventReport) -> Result<(), HostOpError> {
        for &hva in pages {
            if let Some(t) = self.pt.translate(hva) {
                if t.size == PageSize::Size2M {
                    self.pt.split_pmd(hva, &mut self.folios)?;
                    self.stats.pmd_splits += 1;
                    r.huge_split += 1;
                }
            }
        }
        let mut rest = pages;
        let stable = match self.ksm_page {
            Some(pfn) => pfn,
            None => {
                let Some((&first, tail)) = pages.split_first() else { return Ok(()) };
                rest = tail;
                match self.make_ksm_page(first)? {
                    Some(pfn) => {
                        r.pages += 1;
                        self.stats.ksm_merged += 1;
                        pfn
                    }
                    None => return Ok(()),
                }
            }
        };
        let attrs = LeafAttrs::ram(Perms::READ);
        for &hva in rest {
            let Some(vma) = self.vmas.find(hva).cloned() else { continue };
            if self.pt.translate(hva).is_none_or(|t| self.is_ksm_pfn(t.pa / PAGE)) {
                continue;
            }
            self.zap(hva, hva + PAGE)?;
            if let Some(object) = vma.object {
                let index = vma.index_of(hva);
                self.discard_anon(object, index, index + 1);
            }
            self.pt.map(hva, PageSize::Size4K, stable, attrs, &mut self.folios)?;
            if let Some((head, f)) = self.folios.find(stable) {
                if f.owner == Owner::Ksm {
                    self.folios.ksm_hvas_mut(head).insert(hva);
                }
            }
            r.pages += 1;
            self.stats.ksm_merged += 1;
        }
        Ok(())
    }
}

impl SimHost {
    pub(crate) fn ksm_merge(
        &self,
        n: &dyn MmuNotifier,
        hva: u64,
        len: u64,
        ratio: f64,
    ) -> Result<EventReport, HostOpError> {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(HostOpError::Fraction { value: ratio });
        }
        let (pages, range) = {
            let mut st = self.lock();
            let end = st.check_covered(hva, len)?;
            let others = [
                BackingKind::Shmem,
                BackingKind::Hugetlbfs,
                BackingKind::PageCache,
                BackingKind::Dax,
                BackingKind::PfnMap,
            ];
            st.refuse_kinds(hva, end, "KSM merging", &others)?;
            let pages = st.choose_ksm_pages(hva, end, ratio);
            let (Some(&first), Some(&last)) = (pages.first(), pages.last()) else {
                return Ok(EventReport::default());
            };
            // Every mapping of a chosen page changes; huge ones are split, so cover them whole.
            let lo = st.expand(first, first + PAGE).start;
            let hi = st.expand(last, last + PAGE).end;
            (pages, HvaRange { start: lo, end: hi })
        };
        let mut report = EventReport::default();
        self.invalidating(n, range, &mut report, |st, r| st.ksm_locked(&pages, r))?;
        Ok(report)
    }
}
