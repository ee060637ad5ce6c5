//! Reclaim aging: for each host leaf of a range, was it accessed since the last pass? The host's
//! own accessed flags (host faults, `HostMemory::mark_accessed`) and stage 2's (through the
//! notifier's `clear_young` or `test_young`, called without the host lock) both count, as
//! `folio_referenced` consults the MMU notifier.

use slat_mmu::{Hva, MmuNotifier};

use super::config::PAGE;
use super::error::HostOpError;
use super::events::EventReport;
use super::SimHost;

impl SimHost {
    pub(crate) fn age(&self, n: &dyn MmuNotifier, hva: u64, len: u64, clear: bool) -> Result<EventReport, HostOpError> {
        let leaves: Vec<(u64, u64, bool)> = {
            let mut st = self.lock();
            let end = st.check_covered(hva, len)?;
            st.pt
                .leaves(hva, end)
                .into_iter()
                .map(|l| {
                    let young = st.flags.test_and_clear_accessed(l.pa / PAGE, l.size.pages(), clear);
                    (l.hva, l.hva + l.size.bytes(), young)
                })
                .collect()
        };
        let mut report = EventReport::default();
        for (start, end, host_young) in leaves {
            let mmu_young =
                if clear { n.clear_young(Hva(start), Hva(end)) } else { n.test_young(Hva(start), Hva(end)) };
            let pages = (end - start) / PAGE;
            report.pages += pages;
            if host_young || mmu_young {
                report.young_pages += pages;
            }
        }
        Ok(report)
    }
}
