//! Another process maps the VMM's shared file memory (a vhost-user backend or virtiofsd mapping
//! a memfd, say) with PTEs. It has no page tables in the simulator: only the folios' PTE map
//! counts change. The VMM's own mappings (a PMD stays a PMD) and stage 2 are untouched, so no
//! invalidation is issued; the pages affected are reported and counted in the stats.

use slat_mmu::BackingKind;

use super::config::PAGE;
use super::error::HostOpError;
use super::events::EventReport;
use super::SimHost;

impl SimHost {
    pub(crate) fn foreign_map(&self, hva: u64, len: u64, map: bool) -> Result<EventReport, HostOpError> {
        let mut st = self.lock();
        let end = st.check_covered(hva, len)?;
        let others = [BackingKind::Anonymous, BackingKind::Hugetlbfs, BackingKind::Dax, BackingKind::PfnMap];
        st.refuse_kinds(hva, end, "mapping by another process", &others)?;
        let mut report = EventReport::default();
        for page in (hva..end).step_by(PAGE as usize) {
            let Some(vma) = st.vmas.find(page).cloned() else { continue };
            let pfn = if map {
                // The other process faults the page in if the file does not hold it yet.
                match st.find_or_alloc_folio(&vma, page) {
                    Ok((hi, head, _)) => Some(head + (vma.index_of(page) - hi)),
                    Err(_) => None,
                }
            } else {
                let index = vma.index_of(page);
                vma.object.and_then(|o| st.objects.get(&o)).and_then(|o| o.pfn_of(index))
            };
            match pfn {
                Some(pfn) if st.folios.add_foreign(pfn, if map { 1 } else { -1 }) => report.pages += 1,
                Some(_) => {}
                None => report.failed += u64::from(map),
            }
        }
        Ok(report)
    }
}
