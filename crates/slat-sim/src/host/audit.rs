//! A recount of the host's state against its invariants, for tests and debugging.

use std::collections::BTreeMap;

use slat_pt::PageSize;

use super::config::PAGE;
use super::folio::{FolioKind, Owner};
use super::state::HostState;
use super::vma::Backing;

/// The first inconsistency [`SimHost::audit`](super::SimHost::audit) found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("host state inconsistent: {problem}")]
pub struct HostAuditError {
    /// What is wrong, with the addresses involved.
    pub problem: String,
}

/// Bytes of address space whose leaves the audit holds at once.
const AUDIT_WINDOW: u64 = 64 << 20;

fn fail<T>(problem: String) -> Result<T, HostAuditError> {
    Err(HostAuditError { problem })
}

impl HostState {
    /// Check: every leaf lies in a VMA and maps what the VMA's object or device holds there;
    /// folio map counts equal the leaves plus other processes' PTEs; RAM pages are free, in one
    /// folio, or in a hugetlb pool.
    pub fn audit(&self) -> Result<(), HostAuditError> {
        // Map counts recounted from the leaves: PTE mappings per folio head in 2 MiB chunks of
        // counters made when a chunk has any (a few bytes per page for the audit's duration),
        // PMD and PUD mappings per head (few).
        let (span_lo, span_hi) = self.folios.span();
        let mut pte: Vec<Option<Box<[u32; 512]>>> = Vec::new();
        pte.resize_with(((span_hi - span_lo) / 512) as usize, || None);
        let mut huge: BTreeMap<u64, (u32, u32)> = BTreeMap::new();
        let mut leaves_seen = [0u64; 3];
        // The leaves of each VMA, 64 MiB at a time, so the audit never holds the leaves of the
        // whole VM; a leaf reaching into a window from the one before was seen there.
        let windows = self.vmas.iter().flat_map(|v| {
            let mut at = v.start;
            std::iter::from_fn(move || {
                (at < v.end).then(|| {
                    let end = ((at / AUDIT_WINDOW) + 1).saturating_mul(AUDIT_WINDOW).min(v.end);
                    let w = (v, at, end);
                    at = end;
                    w
                })
            })
        });
        for (v, ws, we) in windows {
            for l in self.pt.leaves(ws, we) {
                if l.hva < ws && ws != v.start {
                    continue;
                }
                let end = l.hva + l.size.bytes();
                if l.hva < v.start || end > v.end {
                    return fail(format!(
                        "{} leaf at hva {:#x} crosses VMA {:#x}..{:#x}",
                        l.size, l.hva, v.start, v.end
                    ));
                }
                leaves_seen[l.size.level() as usize] += 1;
                let pfn = l.pa / PAGE;
                let index = v.index_of(l.hva);
                let expected = match v.backing {
                    Backing::Dax { .. } => Some(v.device_pfn + index),
                    Backing::PfnMap { .. } => Some(index),
                    _ if self.is_ksm_pfn(pfn) => Some(pfn),
                    _ => v.object.and_then(|o| self.objects.get(&o)).and_then(|o| o.pfn_of(index)),
                };
                if expected != Some(pfn) {
                    return fail(format!("leaf at hva {:#x} maps pfn {pfn:#x}, expected {expected:?}", l.hva));
                }
                if let Some((head, f)) = self.folios.find(pfn) {
                    if l.size != PageSize::Size4K && (head != pfn || f.pages() < l.size.pages()) {
                        return fail(format!("{} leaf at hva {:#x} does not map a whole folio", l.size, l.hva));
                    }
                    if f.owner == Owner::Ksm && !self.folios.ksm_hvas(head).is_some_and(|h| h.contains(&l.hva)) {
                        return fail(format!("KSM page {pfn:#x} does not know hva {:#x}", l.hva));
                    }
                    match l.size {
                        PageSize::Size4K => {
                            let i = head - span_lo;
                            pte[(i / 512) as usize].get_or_insert_with(|| Box::new([0; 512]))[(i % 512) as usize] += 1;
                        }
                        PageSize::Size2M => huge.entry(head).or_default().0 += 1,
                        PageSize::Size1G => huge.entry(head).or_default().1 += 1,
                    }
                }
            }
        }
        let counts = self.pt.counts();
        if counts.leaves != leaves_seen {
            return fail(format!("host page tables hold {:?} leaves, VMAs cover {leaves_seen:?}", counts.leaves));
        }
        let mut folio_pages = 0;
        for (head, f) in self.folios.iter() {
            let i = head - span_lo;
            let pte = pte[(i / 512) as usize].as_ref().map_or(0, |c| c[(i % 512) as usize]);
            let (pmd, pud) = huge.get(&head).copied().unwrap_or_default();
            let foreign = self.folios.foreign_in(head, head + f.pages());
            if (f.pte_mapped, f.pmd_mapped, f.pud_mapped) != (pte + foreign, pmd, pud) {
                return fail(format!(
                    "folio {head:#x} counts pte/pmd/pud {}/{}/{}, recount {}/{pmd}/{pud}",
                    f.pte_mapped,
                    f.pmd_mapped,
                    f.pud_mapped,
                    pte + foreign
                ));
            }
            if let Owner::Object { object, index } = f.owner {
                let held = self.objects.get(&object).and_then(|o| o.pages.get(index));
                if held != Some((head, f.order)) {
                    return fail(format!("folio {head:#x} is not at index {index} of its object"));
                }
            }
            if f.kind != FolioKind::Hugetlb {
                folio_pages += f.pages();
            }
        }
        let pool_pages =
            self.pools.stats(PageSize::Size2M).total * 512 + self.pools.stats(PageSize::Size1G).total * 512 * 512;
        let accounted = self.buddy.free_pages() + folio_pages + pool_pages;
        if accounted != self.buddy.total_pages() {
            return fail(format!(
                "free {} + folios {folio_pages} + pools {pool_pages} pages != {} pages of RAM",
                self.buddy.free_pages(),
                self.buddy.total_pages()
            ));
        }
        Ok(())
    }
}
