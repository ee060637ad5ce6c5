//! The simulated host memory manager: what a Linux host does with the memory a VMM maps as
//! guest RAM, as far as the size and stability of its host mappings are concerned.
//!
//! [`SimHost`] holds physical memory under a buddy allocator (with a fragmentation knob, so huge
//! allocations can fail), hugetlb pools, folios with map counts, the VMAs of one VMM process and
//! that process's host page tables: real x86-64 tables (slat-pt's `Npt` format) with PTE, PMD and
//! PUD leaves, so [`HostMemory::lookup`] reports the host leaf size exactly as KVM's host
//! page-table walk would. It implements [`HostMemory`] for the MMU, and applies
//! [`HostEvent`]s (partial munmap / mprotect / madvise, khugepaged and `MADV_COLLAPSE`, migration
//! and compaction, KSM, balloon, another process mapping shared memory, reclaim aging), calling
//! the MMU's [`MmuNotifier`](slat_mmu::MmuNotifier) around every mapping change.
//!
//! Everything is deterministic: ordered maps only, and one ChaCha generator seeded from
//! [`HostConfig::seed`] (used for fragmentation placement).
//!
//! ```
//! use slat_mmu::{BackingKind, HostMemory, Hva};
//! use slat_pt::PageSize;
//! use slat_sim::host::{Backing, HostConfig, MmapRequest, SimHost};
//!
//! let host = SimHost::new(HostConfig { memory: 4 << 30, hugetlb_1g_pages: 2, ..HostConfig::default() }).unwrap();
//! let hva = host.mmap(&MmapRequest::new(2 << 30, Backing::Hugetlbfs { page_size: PageSize::Size1G, file_offset: 0 })).unwrap();
//! let page = host.fault_in(Hva(hva + 12345), true).unwrap();
//! assert_eq!((page.size, page.kind), (PageSize::Size1G, BackingKind::Hugetlbfs));
//! assert_eq!(host.stats().hugetlb_1g.free, 1);
//! ```
//!
//! Model notes (where the simulation simplifies Linux, on purpose):
//! * Anonymous THP splits in place (PMD to PTEs of the same folio); a partial operation on any
//!   other huge mapping (shmem, page cache, DAX, PFN map) zaps it whole and lets it refault, as
//!   `split_huge_pmd` does for file mappings; hugetlb pages are never split (cuts must be
//!   aligned, the balloon waits for the whole page).
//! * A partly unmapped anonymous THP is split and its unmapped pages freed at once (no deferred
//!   split queue). Empty PTE tables are reclaimed at once, so a 2 MiB block with no PTEs left can
//!   take a THP again on the next fault (Linux 6.14+ does this for `MADV_DONTNEED`).
//! * No zero page, no swap, no direct compaction in the fault path (THP allocation failure falls
//!   back at once; compaction is an explicit event), no page-cache reclaim.
//! * Each `mmap` of a file kind creates a fresh file, shared only by the VMA pieces it splits into
//!   and by "another process" ([`HostEvent::ForeignMap`]); the file goes when its last VMA does.
//! * A write fault on a KSM page breaks copy-on-write inside [`HostMemory::fault_in`], which has
//!   no notifier: the MMU's own install of the returned page replaces its read-only leaf.
//!
//! Modules, bottom up: `buddy` (physical blocks), `phys` (page flags, fragmentation pins),
//! `hugetlb` (pools), `folio` and `object` (what owns memory), `vma` (mmap requests and VMAs),
//! `pgtable` (the VMM's host page tables), `state` (the whole and its invariants), `mmap`,
//! `fault`, then one module per family of events (`unmap`, `collapse`, `migrate`, `ksm`,
//! `sharing`, `aging`) dispatched from `events`, plus `stats` and `audit`.

mod aging;
mod audit;
mod buddy;
mod collapse;
mod config;
mod error;
mod events;
mod fault;
mod folio;
mod hugetlb;
mod ksm;
mod migrate;
mod mmap;
mod object;
mod pgtable;
mod phys;
mod sharing;
mod state;
mod stats;
mod unmap;
mod vma;

use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use slat_mmu::{HostError, HostMemory, HostPage, Hva, Pfn};
use slat_pt::PageSize;

pub use audit::HostAuditError;
pub use buddy::{BuddyAllocator, BuddyError, MAX_ORDER, ORDERS, PMD_ORDER, PUD_ORDER};
pub use config::{HostConfig, HostConfigError};
pub use error::HostOpError;
pub use events::{Advice, EventReport, HostEvent, HvaRange};
pub use folio::{FolioInfo, FolioKind};
pub use hugetlb::HugetlbPoolStats;
pub use phys::PageState;
pub use stats::HostStats;
pub use vma::{Backing, MmapRequest, Placement, Prot, ShmemHuge, ThpAdvice, ThpMode, VmaInfo};

use config::{page_size_serde, PAGE};
use state::HostState;

/// One leaf of the VMM's host page tables ([`SimHost::host_leaves`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HostLeaf {
    /// First host virtual address the leaf maps.
    pub hva: u64,
    /// Leaf size: PTE 4K, PMD 2M, PUD 1G.
    #[serde(with = "page_size_serde")]
    pub size: PageSize,
    /// First pfn it maps.
    pub pfn: u64,
    /// Whether the host mapping allows writes.
    pub writable: bool,
}

/// The simulated host memory manager of one VMM process. See the [module docs](self).
///
/// All methods take `&self` (the state sits behind a mutex, released while notifiers run), so
/// one host can be shared between the scenario engine and the MMU.
pub struct SimHost {
    state: Mutex<HostState>,
}

impl SimHost {
    /// Build a host: RAM under the buddy allocator, hugetlb pools reserved (1 GiB first), then
    /// the fragmentation knobs applied.
    pub fn new(config: HostConfig) -> Result<Self, HostConfigError> {
        Ok(SimHost { state: Mutex::new(HostState::new(config)?) })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, HostState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The configuration the host was built from.
    pub fn config(&self) -> HostConfig {
        self.lock().config.clone()
    }

    /// Map memory into the VMM process; returns the start address. Nothing is faulted in.
    pub fn mmap(&self, req: &MmapRequest) -> Result<u64, HostOpError> {
        self.lock().mmap(req)
    }

    /// Counters and the present state of memory, pools and host page tables.
    pub fn stats(&self) -> HostStats {
        self.lock().snapshot()
    }

    /// The VMAs, in address order.
    pub fn vmas(&self) -> Vec<VmaInfo> {
        self.lock().vmas.iter().map(|v| v.info()).collect()
    }

    /// The folio containing `pfn`, if the page is allocated as one (not for DAX, PFN maps,
    /// free pages or free hugetlb pool pages).
    pub fn folio(&self, pfn: u64) -> Option<FolioInfo> {
        self.lock().folios.info(pfn)
    }

    /// The dirty / accessed state of a RAM or DAX page.
    pub fn page_state(&self, pfn: u64) -> PageState {
        self.lock().flags.state(pfn)
    }

    /// The leaves of the VMM's host page tables overlapping `hva..hva + len`.
    pub fn host_leaves(&self, hva: u64, len: u64) -> Vec<HostLeaf> {
        let st = self.lock();
        st.pt
            .leaves(hva, hva.saturating_add(len))
            .into_iter()
            .map(|l| HostLeaf {
                hva: l.hva,
                size: l.size,
                pfn: l.pa / PAGE,
                writable: l.attrs.perms.contains(slat_pt::Perms::WRITE),
            })
            .collect()
    }

    /// Recount the state and check its invariants (leaves match VMAs and objects, folio map
    /// counts match the leaves, every RAM page is accounted for).
    pub fn audit(&self) -> Result<(), HostAuditError> {
        self.lock().audit()
    }
}

impl HostMemory for SimHost {
    fn fault_in(&self, hva: Hva, write: bool) -> Result<HostPage, HostError> {
        let hva = hva.0;
        self.lock().fault_in(hva, write)
    }

    fn lookup(&self, hva: Hva) -> Option<HostPage> {
        let hva = hva.0;
        self.lock().lookup(Hva(hva))
    }

    fn mark_dirty(&self, pfn: Pfn, pages: u64) {
        let pfn = pfn.0;
        self.lock().flags.mark_dirty(pfn, pages);
    }

    fn mark_accessed(&self, pfn: Pfn, pages: u64) {
        let pfn = pfn.0;
        self.lock().flags.mark_accessed(pfn, pages);
    }
}

impl core::fmt::Debug for SimHost {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let st = self.lock();
        f.debug_struct("SimHost")
            .field("vmas", &st.vmas.iter().count())
            .field("free_pages", &st.buddy.free_pages())
            .field("host_leaves", &st.pt.counts().leaves)
            .finish()
    }
}
