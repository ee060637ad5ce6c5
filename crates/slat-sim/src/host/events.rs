//! Host events: the things a Linux host does to the VMM's memory behind the guest's back, each
//! bracketed by `invalidate_range_start` / `invalidate_range_end` of the MMU notifier on the
//! host range it changes, and each returning an [`EventReport`].
//!
//! The host never keeps a reference to the MMU: every event takes the notifier as an argument,
//! and the host's lock is released while the notifier runs (so the MMU may call back into
//! [`HostMemory`](slat_mmu::HostMemory)). Where a change cuts into a huge mapping, the
//! invalidated range covers the whole mapping, as Linux's `split_huge_pmd` does.

use serde::{Deserialize, Serialize};
use slat_mmu::{BackingKind, Hva, MmuNotifier};
use slat_pt::PageSize;

use super::buddy::PMD_ORDER;
use super::config::page_size_serde;
use super::error::HostOpError;
use super::state::HostState;
use super::vma::{Prot, ThpAdvice};
use super::SimHost;

/// The advice of a [`HostEvent::Madvise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Advice {
    /// `MADV_HUGEPAGE`: THP for the range from now on (no mapping changes, except where the VMA
    /// split cuts a huge mapping).
    HugePage,
    /// `MADV_NOHUGEPAGE`: no THP faults, collapses or huge file mappings from now on (existing
    /// mappings stay).
    NoHugePage,
    /// `MADV_DONTNEED`: unmap; anonymous pages are freed, file pages stay in the file.
    DontNeed,
    /// `MADV_COLLAPSE`: collapse every 2 MiB block inside the range now, whatever the THP
    /// policy and `max_ptes_none`.
    Collapse,
}

/// Something the host does to the VMM's memory. Addresses are host virtual addresses; ranges
/// are page aligned and must lie inside VMAs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum HostEvent {
    /// `munmap`, possibly of part of a VMA (hugetlbfs: whole pages only).
    Munmap {
        /// Start.
        hva: u64,
        /// Length in bytes.
        len: u64,
    },
    /// `mprotect`, possibly of part of a VMA (hugetlbfs: whole pages only).
    Mprotect {
        /// Start.
        hva: u64,
        /// Length in bytes.
        len: u64,
        /// New protection.
        prot: Prot,
    },
    /// `madvise`.
    Madvise {
        /// Start.
        hva: u64,
        /// Length in bytes.
        len: u64,
        /// The advice.
        advice: Advice,
    },
    /// One khugepaged pass over `blocks` 2 MiB blocks of THP-eligible VMAs, collapsing blocks
    /// whose empty PTEs do not exceed `khugepaged_max_ptes_none`. Without `range` the pass
    /// resumes where the previous one stopped and wraps around; with `range` it scans the blocks
    /// inside the range from its start.
    Khugepaged {
        /// 2 MiB blocks to scan (`pages_to_scan / 512`; Linux's default scans 8).
        #[serde(default = "default_scan_blocks")]
        blocks: u64,
        /// Scan only blocks inside this range.
        #[serde(default)]
        range: Option<HvaRange>,
    },
    /// Memory compaction: migrate movable 4 KiB pages out of partly used 2 MiB blocks into the
    /// holes of fuller ones, emptying up to `max_blocks` blocks.
    Compact {
        /// Source blocks to evacuate at most.
        #[serde(default = "unlimited")]
        max_blocks: u64,
    },
    /// Migrate the folios mapped in the range to new memory (NUMA balancing, `move_pages`).
    Migrate {
        /// Start.
        hva: u64,
        /// Length in bytes.
        len: u64,
    },
    /// KSM finds `ratio` of the present pages of the range (anonymous memory; chosen with the
    /// host's seeded generator) identical to the host's KSM page and merges them into it: they
    /// become read-only mappings of that one page, and their own pages are freed. With no KSM
    /// page yet, the first chosen page becomes it (once a second page is chosen to merge with).
    /// Merging a page of a THP first splits its PMD mapping and the folio.
    KsmMerge {
        /// Start.
        hva: u64,
        /// Length in bytes.
        len: u64,
        /// Fraction in `0..=1` of the present pages that merge (default 1: all).
        #[serde(default = "one")]
        ratio: f64,
    },
    /// The balloon takes these 4 KiB pages: anonymous memory is discarded (`MADV_DONTNEED`),
    /// shmem and page cache are punched out of the file, and a hugetlb page is discarded once all
    /// of its 4 KiB pages are in the balloon (QEMU's partially-ballooned-page handling).
    BalloonInflate {
        /// Start.
        hva: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The balloon gives these 4 KiB pages back; they fault in again (as 4 KiB pages where
    /// their neighbours are PTE-mapped) when the guest touches them.
    BalloonDeflate {
        /// Start.
        hva: u64,
        /// Length in bytes.
        len: u64,
    },
    /// Another process maps the pages of the range (shmem or page cache) with PTEs: their
    /// folios' PTE map counts rise; the VMM's own mappings and stage 2 are untouched.
    ForeignMap {
        /// Start.
        hva: u64,
        /// Length in bytes.
        len: u64,
    },
    /// Another process unmaps what [`HostEvent::ForeignMap`] mapped.
    ForeignUnmap {
        /// Start.
        hva: u64,
        /// Length in bytes.
        len: u64,
    },
    /// Reclaim aging over the range: for each host leaf, whether the host or stage 2 (through
    /// `clear_young`, or `test_young` when `clear` is false) saw an access.
    Age {
        /// Start.
        hva: u64,
        /// Length in bytes.
        len: u64,
        /// Clear the accessed state (`clear_young`) or only test it (`test_young`).
        #[serde(default = "yes")]
        clear: bool,
    },
    /// Set the hugetlb pool of `page_size` to `pages` pages (`nr_hugepages`); growing takes
    /// blocks from the buddy allocator and may stop short.
    HugetlbResize {
        /// 2M or 1G.
        #[serde(with = "page_size_serde")]
        page_size: PageSize,
        /// New pool size in pages.
        pages: u64,
    },
    /// Other kernel activity pins one page in `fraction` of the currently free 2 MiB blocks.
    Fragment {
        /// Fraction in `0..=1`.
        fraction: f64,
    },
}

fn default_scan_blocks() -> u64 {
    8
}

fn unlimited() -> u64 {
    u64::MAX
}

fn one() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

impl HostEvent {
    /// Short name of the event.
    pub const fn name(&self) -> &'static str {
        match self {
            HostEvent::Munmap { .. } => "munmap",
            HostEvent::Mprotect { .. } => "mprotect",
            HostEvent::Madvise { .. } => "madvise",
            HostEvent::Khugepaged { .. } => "khugepaged",
            HostEvent::Compact { .. } => "compact",
            HostEvent::Migrate { .. } => "migrate",
            HostEvent::KsmMerge { .. } => "ksm_merge",
            HostEvent::BalloonInflate { .. } => "balloon_inflate",
            HostEvent::BalloonDeflate { .. } => "balloon_deflate",
            HostEvent::ForeignMap { .. } => "foreign_map",
            HostEvent::ForeignUnmap { .. } => "foreign_unmap",
            HostEvent::Age { .. } => "age",
            HostEvent::HugetlbResize { .. } => "hugetlb_resize",
            HostEvent::Fragment { .. } => "fragment",
        }
    }
}

/// A host virtual address range `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HvaRange {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
}

impl HvaRange {
    /// Bytes in the range.
    pub const fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the range is empty.
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether `hva` lies in the range.
    pub const fn contains(&self, hva: u64) -> bool {
        hva >= self.start && hva < self.end
    }
}

/// What an event did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EventReport {
    /// Ranges passed to `invalidate_range_start` / `_end`, in order.
    pub invalidated: Vec<HvaRange>,
    /// 4 KiB pages affected (unmapped, re-protected, discarded, merged, migrated, collapsed,
    /// mapped by the other process, aged, pinned, added to or removed from a pool or balloon).
    pub pages: u64,
    /// Huge mappings split into PTEs of the same folio.
    pub huge_split: u64,
    /// Huge mappings removed whole because the event covered only part of them.
    pub huge_zapped: u64,
    /// 2 MiB blocks collapsed into PMD mappings.
    pub huge_collapsed: u64,
    /// Folios moved to new memory.
    pub folios_migrated: u64,
    /// 2 MiB blocks compaction emptied.
    pub blocks_freed: u64,
    /// 4 KiB pages under young leaves (aging).
    pub young_pages: u64,
    /// Items the event could not handle: ineligible or failed collapses, unmovable folios or
    /// missing destinations, pages another process could not fault.
    pub failed: u64,
}

impl SimHost {
    /// Apply a host event, calling `notifier` around every mapping change. On error nothing has
    /// changed (except after [`HostOpError::PageTable`]).
    ///
    /// ```
    /// use slat_mmu::{HostMemory, Hva, MmuNotifier};
    /// use slat_sim::host::{Backing, HostConfig, HostEvent, MmapRequest, SimHost, ThpMode};
    /// use slat_pt::PageSize;
    ///
    /// struct NoMmu;
    /// impl MmuNotifier for NoMmu {
    ///     fn invalidate_range_start(&self, _: Hva, _: Hva) {}
    ///     fn invalidate_range_end(&self, _: Hva, _: Hva) {}
    ///     fn clear_young(&self, _: Hva, _: Hva) -> bool { false }
    ///     fn test_young(&self, _: Hva, _: Hva) -> bool { false }
    /// }
    ///
    /// let host = SimHost::new(HostConfig { memory: 1 << 30, ..HostConfig::default() }).unwrap();
    /// let hva = host.mmap(&MmapRequest::new(4 << 20, Backing::Anonymous { thp: ThpMode::Always })).unwrap();
    /// assert_eq!(host.fault_in(Hva(hva), true).unwrap().size, PageSize::Size2M);
    /// // Unmapping the first 4 KiB splits the PMD; the rest stays mapped, by PTEs.
    /// let r = host.apply(&HostEvent::Munmap { hva, len: 4096 }, &NoMmu).unwrap();
    /// assert_eq!(r.huge_split, 1);
    /// assert_eq!(r.invalidated[0].len(), 2 << 20);
    /// assert_eq!(host.lookup(Hva(hva + 4096)).unwrap().size, PageSize::Size4K);
    /// ```
    pub fn apply(&self, event: &HostEvent, notifier: &dyn MmuNotifier) -> Result<EventReport, HostOpError> {
        match *event {
            HostEvent::Munmap { hva, len } => self.munmap(notifier, hva, len),
            HostEvent::Mprotect { hva, len, prot } => self.mprotect(notifier, hva, len, prot),
            HostEvent::Madvise { hva, len, advice } => match advice {
                Advice::HugePage => self.set_advice(notifier, hva, len, ThpAdvice::HugePage),
                Advice::NoHugePage => self.set_advice(notifier, hva, len, ThpAdvice::NoHugePage),
                Advice::DontNeed => self.dontneed(notifier, hva, len),
                Advice::Collapse => self.madvise_collapse(notifier, hva, len),
            },
            HostEvent::Khugepaged { blocks, range } => Ok(self.khugepaged(notifier, blocks, range)),
            HostEvent::Compact { max_blocks } => Ok(self.compact(notifier, max_blocks)),
            HostEvent::Migrate { hva, len } => self.migrate(notifier, hva, len),
            HostEvent::KsmMerge { hva, len, ratio } => self.ksm_merge(notifier, hva, len, ratio),
            HostEvent::BalloonInflate { hva, len } => self.balloon_inflate(notifier, hva, len),
            HostEvent::BalloonDeflate { hva, len } => self.balloon_deflate(hva, len),
            HostEvent::ForeignMap { hva, len } => self.foreign_map(hva, len, true),
            HostEvent::ForeignUnmap { hva, len } => self.foreign_map(hva, len, false),
            HostEvent::Age { hva, len, clear } => self.age(notifier, hva, len, clear),
            HostEvent::HugetlbResize { page_size, pages } => self.hugetlb_resize(page_size, pages),
            HostEvent::Fragment { fraction } => self.fragment(fraction),
        }
    }

    /// Run `change` on the host state between `invalidate_range_start` and
    /// `invalidate_range_end` of `range`, without holding the host lock while the notifier runs.
    pub(crate) fn invalidating<R>(
        &self,
        notifier: &dyn MmuNotifier,
        range: HvaRange,
        report: &mut EventReport,
        change: impl FnOnce(&mut HostState, &mut EventReport) -> R,
    ) -> R {
        notifier.invalidate_range_start(Hva(range.start), Hva(range.end));
        let r = {
            let mut st = self.lock();
            st.stats.invalidations += 1;
            change(&mut st, report)
        };
        notifier.invalidate_range_end(Hva(range.start), Hva(range.end));
        report.invalidated.push(range);
        r
    }

    fn hugetlb_resize(&self, page_size: PageSize, pages: u64) -> Result<EventReport, HostOpError> {
        let mut st = self.lock();
        let kind = BackingKind::Hugetlbfs;
        if page_size == PageSize::Size4K {
            return Err(HostOpError::PageSize { size: page_size, kind });
        }
        let before = st.pools.stats(page_size).total;
        let st = &mut *st;
        let after = st.pools.resize(page_size, pages, &mut st.buddy);
        Ok(EventReport { pages: before.abs_diff(after) * page_size.pages(), ..EventReport::default() })
    }

    fn fragment(&self, fraction: f64) -> Result<EventReport, HostOpError> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(HostOpError::Fraction { value: fraction });
        }
        let pinned = self.lock().pin(PMD_ORDER, fraction);
        Ok(EventReport { pages: pinned, ..EventReport::default() })
    }
}
