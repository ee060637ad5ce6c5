//! hugetlbfs pools: 2 MiB and 1 GiB pages taken from the buddy allocator up front (like
//! `nr_hugepages`) and handed to hugetlbfs files on fault. An empty pool fails the fault.

use std::collections::BTreeSet;

use serde::Serialize;
use slat_pt::PageSize;

use super::buddy::{BuddyAllocator, PMD_ORDER, PUD_ORDER};

/// Occupancy of one hugetlb pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct HugetlbPoolStats {
    /// Pages in the pool (`nr_hugepages`).
    pub total: u64,
    /// Pages not backing any file (`free_hugepages`).
    pub free: u64,
}

impl HugetlbPoolStats {
    /// Pages in use.
    pub fn used(&self) -> u64 {
        self.total - self.free
    }
}

#[derive(Debug, Default)]
struct Pool {
    total: u64,
    free: BTreeSet<u64>,
}

/// The 2 MiB and 1 GiB pools.
#[derive(Debug, Default)]
pub(crate) struct HugetlbPools {
    pools: [Pool; 2],
}

/// Buddy order of a hugetlb page size (`None` for 4K).
pub(crate) fn hugetlb_order(size: PageSize) -> Option<u8> {
    match size {
        PageSize::Size4K => None,
        PageSize::Size2M => Some(PMD_ORDER),
        PageSize::Size1G => Some(PUD_ORDER),
    }
}

fn slot(size: PageSize) -> usize {
    usize::from(size == PageSize::Size1G)
}

impl HugetlbPools {
    /// Set the pool of `size` pages to `pages` pages: grow from the buddy allocator (stopping
    /// early when it has no block left) or shrink by releasing free pages. Returns the new total.
    pub fn resize(&mut self, size: PageSize, pages: u64, buddy: &mut BuddyAllocator) -> u64 {
        let Some(order) = hugetlb_order(size) else { return 0 };
        let pool = &mut self.pools[slot(size)];
        while pool.total < pages {
            let Some(pfn) = buddy.alloc(order) else { break };
            pool.free.insert(pfn);
            pool.total += 1;
        }
        while pool.total > pages {
            let Some(pfn) = pool.free.pop_last() else { break };
            // The page came from this allocator whole and is unused, so the free cannot fail.
            let _ = buddy.free(pfn, order);
            pool.total -= 1;
        }
        pool.total
    }

    /// Take a free page of `size`, lowest pfn first.
    pub fn take(&mut self, size: PageSize) -> Option<u64> {
        hugetlb_order(size)?;
        self.pools[slot(size)].free.pop_first()
    }

    /// Return a page taken with [`take`](Self::take).
    pub fn give_back(&mut self, size: PageSize, pfn: u64) {
        self.pools[slot(size)].free.insert(pfn);
    }

    pub fn stats(&self, size: PageSize) -> HugetlbPoolStats {
        let p = &self.pools[slot(size)];
        HugetlbPoolStats { total: p.total, free: p.free.len() as u64 }
    }
}
