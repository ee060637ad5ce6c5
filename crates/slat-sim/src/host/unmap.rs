//! Events that remove or change mappings over a range: `munmap`, `mprotect`, `madvise` (advice
//! changes and `MADV_DONTNEED`) and balloon inflation / deflation.
//!
//! A range that cuts into a huge mapping first breaks it at the edges
//! ([`HostState::break_huge_edges`]): anonymous PMDs split into PTEs of the same folio, other
//! huge mappings are zapped whole and refault. Hugetlb pages cannot be split: cuts into them must
//! be aligned to their size, except for the balloon, which discards a hugetlb page only once all
//! of it is in the balloon.

use slat_mmu::{BackingKind, MmuNotifier};
use slat_pt::Perms;

use super::config::PAGE;
use super::error::HostOpError;
use super::events::{EventReport, HvaRange};
use super::state::HostState;
use super::vma::{Prot, ThpAdvice, Vma};
use super::SimHost;

/// The part of a VMA a ranged operation covers.
struct Piece {
    vma: Vma,
    start: u64,
    end: u64,
}

impl HostState {
    fn pieces(&self, start: u64, end: u64) -> Vec<Piece> {
        self.vmas
            .overlapping(start, end)
            .into_iter()
            .map(|vma| Piece { start: start.max(vma.start), end: end.min(vma.end), vma })
            .collect()
    }

    fn munmap_locked(&mut self, start: u64, end: u64, r: &mut EventReport) -> Result<(), HostOpError> {
        self.break_huge_edges(start, end, r)?;
        r.pages += self.zap(start, end)?;
        self.split_vmas(start, end);
        for v in self.vmas.overlapping(start, end) {
            self.vmas.remove(v.start);
            if let Some(object) = v.object {
                if v.kind() == BackingKind::Anonymous {
                    self.discard_anon(object, v.pgoff, v.index_of(v.end - PAGE) + 1);
                }
                self.drop_object_ref(object);
            }
        }
        let gone: Vec<u64> = self.ballooned.range(start..end).copied().collect();
        for p in gone {
            self.ballooned.remove(&p);
        }
        Ok(())
    }

    fn mprotect_locked(&mut self, start: u64, end: u64, prot: Prot, r: &mut EventReport) -> Result<(), HostOpError> {
        self.break_huge_edges(start, end, r)?;
        if prot.readable() {
            let perms = if prot.writable() { Perms::RW } else { Perms::READ };
            let mut pages = 0;
            let folios = &self.folios;
            let ksm = |pfn: u64| folios.find(pfn).is_some_and(|(_, f)| f.kind == super::folio::FolioKind::Ksm);
            self.pt.protect(start, end, |l| {
                pages += l.size.pages();
                Some(if ksm(l.pa / PAGE) { Perms::READ } else { perms })
            })?;
            r.pages += pages;
        } else {
            r.pages += self.zap(start, end)?;
        }
        self.split_vmas(start, end);
        for v in self.vmas.overlapping(start, end) {
            if let Some(v) = self.vmas.get_mut(v.start) {
                v.prot = prot;
            }
        }
        self.merge_vmas(start, end);
        Ok(())
    }

    fn dontneed_locked(&mut self, start: u64, end: u64, r: &mut EventReport) -> Result<(), HostOpError> {
        self.break_huge_edges(start, end, r)?;
        r.pages += self.zap(start, end)?;
        self.discard_anon_range(start, end);
        Ok(())
    }

    /// Hugetlb pages (with memory behind them) of `piece` that are wholly in the balloon once
    /// the pages of the piece are (the answer is the same before and after adding them).
    fn complete_hugetlb_pages(&self, piece: &Piece) -> Vec<HvaRange> {
        let Some(size) = HostState::hugetlb_size(&piece.vma) else { return Vec::new() };
        let mut out = Vec::new();
        let mut page = size.align_down(piece.start);
        while page < piece.end {
            let end = page + size.bytes();
            let all = (page..end)
                .step_by(PAGE as usize)
                .all(|p| (p >= piece.start && p < piece.end) || self.ballooned.contains(&p));
            if all && self.hugetlb_page_present(&piece.vma, page) {
                out.push(HvaRange { start: page, end });
            }
            page = end;
        }
        out
    }

    fn hugetlb_page_present(&self, vma: &Vma, page: u64) -> bool {
        vma.object.and_then(|o| self.objects.get(&o)).is_some_and(|o| o.folio_at(vma.index_of(page)).is_some())
    }

    fn inflate_locked(&mut self, pieces: &[Piece], r: &mut EventReport) -> Result<(), HostOpError> {
        for p in pieces {
            let mut added = 0;
            for page in (p.start..p.end).step_by(PAGE as usize) {
                added += u64::from(self.ballooned.insert(page));
            }
            r.pages += added;
            // The report counts pages entering the balloon; of the discards, only splits and zaps.
            let mut inner = EventReport::default();
            match p.vma.kind() {
                BackingKind::Anonymous => self.dontneed_locked(p.start, p.end, &mut inner)?,
                BackingKind::Shmem | BackingKind::PageCache => self.punch_hole(&p.vma, p.start, p.end, &mut inner)?,
                BackingKind::Hugetlbfs => {
                    for h in self.complete_hugetlb_pages(p) {
                        self.punch_hole(&p.vma, h.start, h.end, &mut inner)?;
                    }
                }
                BackingKind::Dax | BackingKind::PfnMap => {}
            }
            r.huge_split += inner.huge_split;
            r.huge_zapped += inner.huge_zapped;
        }
        Ok(())
    }
}

impl SimHost {
    pub(crate) fn munmap(&self, n: &dyn MmuNotifier, hva: u64, len: u64) -> Result<EventReport, HostOpError> {
        let (end, range) = {
            let st = self.lock();
            let end = st.check_covered(hva, len)?;
            st.check_hugetlb_edges(hva, end)?;
            (end, st.expand(hva, end))
        };
        let mut report = EventReport::default();
        self.invalidating(n, range, &mut report, |st, r| st.munmap_locked(hva, end, r))?;
        Ok(report)
    }

    pub(crate) fn mprotect(
        &self,
        n: &dyn MmuNotifier,
        hva: u64,
        len: u64,
        prot: Prot,
    ) -> Result<EventReport, HostOpError> {
        let (end, range) = {
            let st = self.lock();
            let end = st.check_covered(hva, len)?;
            st.check_hugetlb_edges(hva, end)?;
            (end, st.expand(hva, end))
        };
        let mut report = EventReport::default();
        self.invalidating(n, range, &mut report, |st, r| st.mprotect_locked(hva, end, prot, r))?;
        Ok(report)
    }

    /// Change the THP advice of the range. No mapping changes, except that splitting a VMA
    /// through a huge mapping first splits (anonymous) or zaps (file) it, as Linux's
    /// `vma_adjust_trans_huge` does, inside an invalidation of that mapping.
    pub(crate) fn set_advice(
        &self,
        n: &dyn MmuNotifier,
        hva: u64,
        len: u64,
        advice: ThpAdvice,
    ) -> Result<EventReport, HostOpError> {
        let (end, crossing) = {
            let st = self.lock();
            let end = st.check_covered(hva, len)?;
            st.check_hugetlb_edges(hva, end)?;
            (end, st.crossing_leaves(hva, end))
        };
        let change = |st: &mut HostState, r: &mut EventReport| -> Result<(), HostOpError> {
            st.break_huge_edges(hva, end, r)?;
            st.split_vmas(hva, end);
            for v in st.vmas.overlapping(hva, end) {
                if let Some(v) = st.vmas.get_mut(v.start) {
                    v.advice = advice;
                }
            }
            st.merge_vmas(hva, end);
            r.pages += len / PAGE;
            Ok(())
        };
        let mut report = EventReport::default();
        match crossing {
            Some(range) => self.invalidating(n, range, &mut report, change)?,
            None => change(&mut self.lock(), &mut report)?,
        }
        Ok(report)
    }

    pub(crate) fn dontneed(&self, n: &dyn MmuNotifier, hva: u64, len: u64) -> Result<EventReport, HostOpError> {
        let (end, range) = {
            let st = self.lock();
            let end = st.check_covered(hva, len)?;
            st.refuse_kinds(hva, end, "MADV_DONTNEED", &[BackingKind::PfnMap])?;
            st.check_hugetlb_edges(hva, end)?;
            (end, st.expand(hva, end))
        };
        let mut report = EventReport::default();
        self.invalidating(n, range, &mut report, |st, r| st.dontneed_locked(hva, end, r))?;
        Ok(report)
    }

    pub(crate) fn balloon_inflate(&self, n: &dyn MmuNotifier, hva: u64, len: u64) -> Result<EventReport, HostOpError> {
        let (pieces, range) = {
            let st = self.lock();
            let end = st.check_covered(hva, len)?;
            st.refuse_kinds(hva, end, "balloon inflation", &[BackingKind::Dax, BackingKind::PfnMap])?;
            let pieces = st.pieces(hva, end);
            let mut hull: Option<HvaRange> = None;
            let mut widen = |r: HvaRange| {
                hull = Some(hull.map_or(r, |h| HvaRange { start: h.start.min(r.start), end: h.end.max(r.end) }));
            };
            for p in &pieces {
                if p.vma.kind() == BackingKind::Hugetlbfs {
                    st.complete_hugetlb_pages(p).into_iter().for_each(&mut widen);
                } else {
                    widen(st.expand(p.start, p.end));
                }
            }
            (pieces, hull)
        };
        let mut report = EventReport::default();
        match range {
            Some(range) => self.invalidating(n, range, &mut report, |st, r| st.inflate_locked(&pieces, r))?,
            None => self.lock().inflate_locked(&pieces, &mut report)?,
        }
        Ok(report)
    }

    pub(crate) fn balloon_deflate(&self, hva: u64, len: u64) -> Result<EventReport, HostOpError> {
        let mut st = self.lock();
        let end = st.check_covered(hva, len)?;
        let mut pages = 0;
        for page in (hva..end).step_by(PAGE as usize) {
            pages += u64::from(st.ballooned.remove(&page));
        }
        Ok(EventReport { pages, ..EventReport::default() })
    }
}
