//! The NX huge-page workaround (iTLB multihit, KVM's `nx_huge_pages`): executable memory is
//! mapped with 4 KiB leaves, the tables an exec fault builds where a huge leaf would otherwise
//! go are tracked (`nx_huge_page_disallowed`; counted as `nx_lpage_splits`), faults keep them
//! (`disallowed_hugepage_adjust`), and recovery zaps a share of them now and then so that
//! blocks no longer executed can become huge again.

use crate::platform::Platform;
use alloc::collections::VecDeque;
use alloc::vec::Vec;

use slat_pt::{Format, PageSize};

use crate::mmu::Mmu;
use crate::stats::Counters;

/// NX huge-page splits awaiting recovery: (block gfn, size of the huge leaf that was split).
#[derive(Debug, Default)]
pub(crate) struct NxTracker {
    pub(crate) queue: VecDeque<(u64, PageSize)>,
}

impl NxTracker {
    pub(crate) fn contains(&self, gfn: u64, size: PageSize) -> bool {
        let b = gfn & !(size.pages() - 1);
        self.queue.iter().any(|&(g, s)| s == size && g == b)
    }
}

impl<F: Format, P: Platform> Mmu<F, P> {
    /// Record the tables an exec fault created between the leaf it installed (`size`) and the
    /// size the rules would allow without the NX workaround (`req`), as KVM's `kvm_tdp_mmu_map`
    /// marks them `nx_huge_page_disallowed`: later faults keep them (no huge leaf replaces them)
    /// until NX recovery zaps them. `new_levels`: the levels whose entry got a new table.
    pub(crate) fn track_nx(&self, gfn: u64, size: PageSize, req: PageSize, new_levels: u8) {
        let mut nx = self.nx.lock();
        for s in [PageSize::Size2M, PageSize::Size1G] {
            if s > size && s <= req && new_levels & (1 << s.level()) != 0 {
                let b = gfn & !(s.pages() - 1);
                if !nx.contains(b, s) {
                    nx.queue.push_back((b, s));
                }
            }
        }
    }

    /// One NX recovery pass: zap `ceil(tracked / recovery_ratio)` of the oldest NX-split blocks
    /// (skipping dirty-logged slots) so that faults rebuild them as non-executable huge leaves.
    /// Returns how many were zapped.
    pub fn recover_nx_huge_pages(&self) -> u64 {
        let Some(nx) = self.config.nx else { return 0 };
        let todo: Vec<(u64, PageSize)> = {
            let mut t = self.nx.lock();
            let n = t.queue.len().div_ceil(nx.recovery_ratio as usize);
            (0..n).filter_map(|_| t.queue.pop_front()).collect()
        };
        let mut zapped = 0;
        for (gfn, size) in todo {
            match self.slot_of(gfn) {
                Ok(slot) if slot.is_logging() => self.nx.lock().queue.push_back((gfn, size)),
                Ok(slot) => {
                    self.invalidate_gfns(Some(&slot), gfn, gfn + size.pages(), || {});
                    zapped += 1;
                }
                Err(_) => {}
            }
        }
        Counters::add(&self.counters.nx_recovered, zapped);
        zapped
    }
}
