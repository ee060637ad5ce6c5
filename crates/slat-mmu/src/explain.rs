//! Explaining leaf sizes: why one gfn is mapped at the size it is ([`Mmu::explain`]), and the
//! why-not-huge picture of all mapped memory ([`Mmu::why_not_huge`]). Both ask the same rules
//! as the fault path (`policy.rs`).

use crate::platform::Platform;
use alloc::vec::Vec;

use slat_pt::{Format, Gfn, Gpa, Hva, PageSize, PAGE_SIZE};

use crate::host::HostMemory;
use crate::mmu::Mmu;
use crate::reason::{Explanation, WhyNotHuge};

/// The current why-not-huge picture: guest pages mapped below 1 GiB, by reason.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WhyReport {
    /// 4 KiB pages mapped by any leaf.
    pub mapped_pages: u64,
    /// Pages mapped by leaves below 1 GiB, by the primary reason (index = `WhyNotHuge as usize`).
    pub pages: [u64; WhyNotHuge::COUNT],
    /// The same per memslot: `(slot id, pages by reason)`.
    pub by_slot: Vec<(u32, [u64; WhyNotHuge::COUNT])>,
}

impl WhyReport {
    /// Pages held below 1 GiB by `r`.
    pub fn pages(&self, r: WhyNotHuge) -> u64 {
        self.pages[r as usize]
    }
}

impl<F: Format, P: Platform> Mmu<F, P> {
    /// Why is `gfn` mapped at the size it is? Recomputes the decision against the current host
    /// mapping and slot state.
    pub fn explain(&self, gfn: Gfn) -> Explanation {
        let gfn = gfn.0;
        let slot = self.slots.read().find_gfn(gfn).cloned();
        let mapped = self.tables.read().translate(Gpa(gfn * PAGE_SIZE)).map(|t| t.size);
        let Some(slot) = slot else {
            let d = self.decide_none();
            return Explanation { gfn: Gfn(gfn), slot: None, mapped, decision: d, host: None };
        };
        let host = self.host.lookup(Hva(slot.hva_of(gfn)));
        let decision = self.decide(&slot, gfn, host.as_ref(), false);
        Explanation { gfn: Gfn(gfn), slot: Some(slot.id), mapped, decision, host }
    }

    fn decide_none(&self) -> crate::reason::Decision {
        crate::reason::Decision {
            size: PageSize::Size4K,
            not_1g: crate::reason::ReasonSet::EMPTY,
            not_2m: crate::reason::ReasonSet::EMPTY,
        }
    }

    /// The leaf-size decision for `gfn` if the host mapped its address as `host` (`None`: not
    /// mapped), with the reasons for every step below 1 GiB: the same rules the fault path
    /// applies, for callers that know the host mapping without a [`HostMemory`] lookup (an
    /// inspector reading another process's page tables). `None` when no memslot holds `gfn`.
    pub fn decide_with(&self, gfn: Gfn, host: Option<&crate::HostPage>) -> Option<crate::reason::Decision> {
        let gfn = gfn.0;
        let slot = self.slots.read().find_gfn(gfn).cloned()?;
        Some(self.decide(&slot, gfn, host, false))
    }

    /// Pages mapped below 1 GiB right now, by primary reason (per slot and overall). A leaf
    /// smaller than what the rules allow now counts as [`WhyNotHuge::Unrecovered`].
    pub fn why_not_huge(&self) -> WhyReport {
        let slots = self.slots.read();
        let pt = self.tables.read();
        let mut report = WhyReport::default();
        for slot in slots.iter() {
            let mut per = [0u64; WhyNotHuge::COUNT];
            let mut last_block: Option<(u64, crate::reason::Decision)> = None;
            pt.for_each_leaf(Gpa(slot.base_gfn * PAGE_SIZE), slot.npages * PAGE_SIZE, |l| {
                report.mapped_pages += l.size.pages();
                if l.size == PageSize::Size1G {
                    return;
                }
                let gfn = l.gpa.gfn().0;
                // One decision per 2M block is enough: everything in it shares the answer
                // except the host mapping, which is looked up at the block's first leaf.
                let b = gfn & !(PageSize::Size2M.pages() - 1);
                let d = match last_block {
                    Some((lb, d)) if lb == b => d,
                    _ => {
                        let d = self.decide(slot, gfn, self.host.lookup(Hva(slot.hva_of(gfn))).as_ref(), false);
                        last_block = Some((b, d));
                        d
                    }
                };
                let reason = if d.size > l.size {
                    Some(WhyNotHuge::Unrecovered)
                } else if l.size == PageSize::Size4K {
                    d.not_2m.primary()
                } else {
                    d.not_1g.primary()
                };
                if let Some(r) = reason {
                    per[r as usize] += l.size.pages();
                }
            });
            for (t, p) in report.pages.iter_mut().zip(per) {
                *t += p;
            }
            report.by_slot.push((slot.id, per));
        }
        report
    }
}
