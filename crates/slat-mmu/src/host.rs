//! The host side of the MMU: how guest memory is backed, seen through [`HostMemory`].
//!
//! The MMU never looks at host page metadata (folio flags, compound heads): it asks the host for
//! the size of the *mapping* the host's own page tables use for an address, which is what decides
//! whether a huge stage-2 leaf is safe (the lesson of the 2019-2022 KVM fixes for page-cache THP
//! and DAX).

use slat_pt::{Hva, MemType, PageSize, Pfn};

/// What kind of memory backs a host virtual address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackingKind {
    /// Private anonymous memory (THP may apply).
    Anonymous,
    /// shmem / memfd / tmpfs (shmem THP may apply).
    Shmem,
    /// hugetlbfs pages (2M or 1G).
    Hugetlbfs,
    /// Regular file page cache (large folios may apply).
    PageCache,
    /// DAX device or file: device memory without refcounted pages, PMD/PUD-mappable.
    Dax,
    /// `VM_PFNMAP` memory such as device MMIO.
    PfnMap,
}

impl BackingKind {
    /// Short lowercase name.
    pub const fn name(self) -> &'static str {
        match self {
            BackingKind::Anonymous => "anonymous",
            BackingKind::Shmem => "shmem",
            BackingKind::Hugetlbfs => "hugetlbfs",
            BackingKind::PageCache => "page-cache",
            BackingKind::Dax => "dax",
            BackingKind::PfnMap => "pfnmap",
        }
    }
}

/// The host's answer for one host virtual address.
///
/// Built with [`HostPage::new`] (fields may be added in later versions):
///
/// ```
/// use slat_mmu::{BackingKind, HostPage};
/// use slat_pt::{MemType, PageSize, Pfn};
/// let ram = HostPage::new(Pfn(0x1234), PageSize::Size2M, true, BackingKind::Anonymous);
/// assert_eq!(ram.mem_type, MemType::WriteBack);
/// let bar = HostPage::new(Pfn(0xfe000), PageSize::Size4K, true, BackingKind::PfnMap);
/// assert_eq!(bar.mem_type, MemType::Uncached);
/// let wc = bar.with_mem_type(MemType::WriteCombining);
/// assert_eq!(wc.mem_type, MemType::WriteCombining);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostPage {
    /// Host physical frame number of the 4 KiB page at the address (not the head of the block).
    pub pfn: Pfn,
    /// Size of the host page-table leaf mapping the address (PTE 4K, PMD 2M, PUD 1G). The block
    /// of that size around the address maps physically contiguous, size-aligned memory.
    pub size: PageSize,
    /// The host mapping allows writes (after any copy-on-write the access triggered).
    pub writable: bool,
    /// What backs the address.
    pub kind: BackingKind,
    /// How the host maps the memory: [`MemType::WriteBack`] for RAM; [`MemType::Uncached`] for
    /// device MMIO (x86 UC, arm64 Device); [`MemType::WriteCombining`] for a write-combining
    /// range (arm64 Normal-NC). The MMU never maps memory the host maps uncached as cacheable,
    /// whatever the memslot's attributes say (KVM: `vmx_get_mt_mask` maps host MMIO UC; arm64
    /// maps non-cacheable PFN maps Device or Normal-NC).
    pub mem_type: MemType,
}

impl HostPage {
    /// A page of `kind` backing: write-back, except [`BackingKind::PfnMap`], which is taken to
    /// be device MMIO and uncached (use [`with_mem_type`](Self::with_mem_type) for a cacheable
    /// PFN map or a write-combining BAR).
    pub const fn new(pfn: Pfn, size: PageSize, writable: bool, kind: BackingKind) -> Self {
        let mem_type = match kind {
            BackingKind::PfnMap => MemType::Uncached,
            _ => MemType::WriteBack,
        };
        HostPage { pfn, size, writable, kind, mem_type }
    }

    /// The same page with the host's memory type set to `mem_type`.
    pub const fn with_mem_type(self, mem_type: MemType) -> Self {
        HostPage { mem_type, ..self }
    }

    /// Whether the host maps the page cacheable (write-back or write-through).
    pub const fn is_cacheable(&self) -> bool {
        matches!(self.mem_type, MemType::WriteBack | MemType::WriteThrough)
    }
}

/// Why the host could not provide a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// No mapping covers the address (the VMM unmapped it): the access would raise SIGBUS/SIGSEGV.
    #[error("host address {hva:#x} is not mapped")]
    NotMapped {
        /// The address.
        hva: Hva,
    },
    /// A write to memory the host maps read-only.
    #[error("host address {hva:#x} is read-only")]
    ReadOnly {
        /// The address.
        hva: Hva,
    },
    /// Host memory is exhausted (for example an empty hugetlbfs pool).
    #[error("host is out of memory backing {hva:#x} ({kind:?})")]
    OutOfMemory {
        /// The address.
        hva: Hva,
        /// Backing kind that failed.
        kind: BackingKind,
    },
    /// The page is poisoned (an uncorrectable memory error, `FOLL_HWPOISON`): nothing is
    /// mapped, and the hypervisor must inject a machine check into the guest, as KVM's
    /// `kvm_send_hwpoison_signal` does (`BUS_MCEERR_AR` with the mapping's size as the
    /// address granularity).
    #[error("host page at {hva:#x} is poisoned (memory failure; {size} mapping)")]
    HwPoison {
        /// The address.
        hva: Hva,
        /// Size of the host mapping that covered it (the granularity to report to the guest).
        size: slat_pt::PageSize,
    },
    /// A transient condition; the fault should be retried.
    #[error("host address {hva:#x} is busy, retry")]
    Again {
        /// The address.
        hva: Hva,
    },
}

/// The host memory manager as the MMU sees it.
///
/// Implementations must call the MMU's `invalidate_range_start` before changing or removing any
/// mapping of a host address range that may back guest memory (including splitting or collapsing
/// a huge mapping, migration, KSM merging, mprotect) and `invalidate_range_end` after.
pub trait HostMemory {
    /// Resolve `hva` for an access, faulting the host page in (and breaking copy-on-write for a
    /// write) as `get_user_pages` would. Called without the MMU lock held.
    ///
    /// # Errors
    /// [`HostError`]: the address is not mapped, a write hits read-only memory, the host is
    /// out of memory, the page is hardware-poisoned, or the host is busy (the MMU retries).
    fn fault_in(&self, hva: Hva, write: bool) -> Result<HostPage, HostError>;

    /// Look up the current host mapping of `hva` without faulting anything in (`None` when
    /// nothing is mapped). Used by recovery and audits.
    fn lookup(&self, hva: Hva) -> Option<HostPage>;

    /// The guest wrote to these pages through stage 2 (`pages` 4 KiB pages from `pfn`); the host
    /// must treat them as dirty (writeback, DAX flush).
    fn mark_dirty(&self, pfn: Pfn, pages: u64);

    /// The guest accessed these pages (for host reclaim aging).
    fn mark_accessed(&self, pfn: Pfn, pages: u64);
}

impl<T: HostMemory + ?Sized> HostMemory for &T {
    fn fault_in(&self, hva: Hva, write: bool) -> Result<HostPage, HostError> {
        (**self).fault_in(hva, write)
    }
    fn lookup(&self, hva: Hva) -> Option<HostPage> {
        (**self).lookup(hva)
    }
    fn mark_dirty(&self, pfn: Pfn, pages: u64) {
        (**self).mark_dirty(pfn, pages)
    }
    fn mark_accessed(&self, pfn: Pfn, pages: u64) {
        (**self).mark_accessed(pfn, pages)
    }
}

impl<T: HostMemory + ?Sized> HostMemory for alloc::sync::Arc<T> {
    fn fault_in(&self, hva: Hva, write: bool) -> Result<HostPage, HostError> {
        (**self).fault_in(hva, write)
    }
    fn lookup(&self, hva: Hva) -> Option<HostPage> {
        (**self).lookup(hva)
    }
    fn mark_dirty(&self, pfn: Pfn, pages: u64) {
        (**self).mark_dirty(pfn, pages)
    }
    fn mark_accessed(&self, pfn: Pfn, pages: u64) {
        (**self).mark_accessed(pfn, pages)
    }
}
