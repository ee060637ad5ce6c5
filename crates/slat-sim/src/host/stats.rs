//! Host statistics: memory by order, THP allocation and fallback, splits, collapses, migrations,
//! KSM, balloon, hugetlb pools and the size of the VMM's host page tables.

use serde::Serialize;

use super::buddy::ORDERS;
use super::hugetlb::HugetlbPoolStats;

/// A snapshot of the host's counters ([`SimHost::stats`](super::SimHost::stats)). Counters
/// count since the host was built; the memory and pool fields describe the present.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct HostStats {
    /// 4 KiB pages of RAM.
    pub total_pages: u64,
    /// Free 4 KiB pages of RAM.
    pub free_pages: u64,
    /// Free buddy blocks per order (`free_blocks[9]` = free 2 MiB blocks not part of a larger
    /// free block).
    pub free_blocks: [u64; ORDERS],
    /// 2 MiB blocks that could be allocated now.
    pub allocatable_2m: u64,
    /// 1 GiB blocks that could be allocated now.
    pub allocatable_1g: u64,
    /// Pages pinned by the fragmentation knob (unmovable).
    pub pinned_pages: u64,
    /// PMD-sized folios allocated for THP (anonymous faults, shmem and page cache, collapse).
    pub thp_alloc: u64,
    /// PMD-sized allocations that failed, so smaller folios were used (THP fallback).
    pub thp_fallback: u64,
    /// Huge mappings split into PTEs of the same folio.
    pub pmd_splits: u64,
    /// Huge mappings removed whole because an operation covered only part of them (file-backed
    /// memory is not split in place: it refaults).
    pub huge_zaps: u64,
    /// Large folios split into 4 KiB folios.
    pub folio_splits: u64,
    /// 2 MiB blocks collapsed into one PMD mapping (khugepaged or `MADV_COLLAPSE`).
    pub collapses: u64,
    /// Collapses that found no free 2 MiB block.
    pub collapse_alloc_failed: u64,
    /// Folios migrated (migration or compaction).
    pub migrations: u64,
    /// 4 KiB pages those folios held.
    pub pages_migrated: u64,
    /// Folios that could not be migrated (no destination, unmovable).
    pub migrate_failed: u64,
    /// 2 MiB blocks compaction emptied.
    pub compaction_blocks_freed: u64,
    /// Pages merged by KSM into shared pages.
    pub ksm_merged: u64,
    /// Copy-on-write breaks of KSM pages by write faults.
    pub ksm_cow_breaks: u64,
    /// Pages currently in the balloon.
    pub ballooned_pages: u64,
    /// PTE mappings of VMM memory by other processes, now.
    pub foreign_pte_maps: u64,
    /// `invalidate_range_start` / `end` pairs issued.
    pub invalidations: u64,
    /// The 2 MiB hugetlb pool.
    pub hugetlb_2m: HugetlbPoolStats,
    /// The 1 GiB hugetlb pool.
    pub hugetlb_1g: HugetlbPoolStats,
    /// Leaves of the VMM's host page tables: `[4K, 2M, 1G]`.
    pub host_leaves: [u64; 3],
    /// Page-table pages of the VMM's host page tables.
    pub host_table_pages: u64,
}
