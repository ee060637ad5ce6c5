//! Folios: allocated blocks of host RAM (order 0, a large page-cache order, 9 or 18), what owns
//! them, and how often they are mapped.
//!
//! Map counts follow Linux's: `pmd_mapped` / `pud_mapped` count mappings of the whole folio by
//! one PMD / PUD leaf, `pte_mapped` counts PTE mappings of its pages (summed over pages). Both
//! include mappings by "another process" (a second mapper of a shared file, which the simulator
//! does not give page tables of its own), which are also counted apart in `foreign_pte_mapped`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::object::ObjectId;

/// What a folio is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FolioKind {
    /// Private anonymous memory.
    Anonymous,
    /// shmem / memfd / tmpfs page cache.
    Shmem,
    /// Regular-file page cache.
    PageCache,
    /// A hugetlbfs page taken from a pool.
    Hugetlb,
    /// A KSM page shared (read-only) by several addresses.
    Ksm,
    /// An unmovable kernel allocation (placed by the fragmentation knob).
    Pinned,
}

/// A folio as reported by [`SimHost::folio`](super::SimHost::folio).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FolioInfo {
    /// Pfn of the first page.
    pub head_pfn: u64,
    /// Order: the folio spans `2^order` pages.
    pub order: u8,
    /// What it is.
    pub kind: FolioKind,
    /// PTE mappings of its pages (VMM and other processes).
    pub pte_mapped: u32,
    /// PMD mappings of the whole folio.
    pub pmd_mapped: u32,
    /// PUD mappings of the whole folio.
    pub pud_mapped: u32,
    /// The part of `pte_mapped` that belongs to other processes.
    pub foreign_pte_mapped: u32,
}

/// Who owns a folio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Pages `index..index + 2^order` of a memory object.
    Object { object: ObjectId, index: u64 },
    /// A KSM page and the addresses mapping it.
    Ksm { hvas: BTreeSet<u64> },
    /// The kernel (pinned).
    Kernel,
}

#[derive(Debug, Clone)]
pub(crate) struct Folio {
    pub order: u8,
    pub kind: FolioKind,
    pub owner: Owner,
    pub pte_mapped: u32,
    pub pmd_mapped: u32,
    pub pud_mapped: u32,
}

impl Folio {
    pub fn new(order: u8, kind: FolioKind, owner: Owner) -> Self {
        Folio { order, kind, owner, pte_mapped: 0, pmd_mapped: 0, pud_mapped: 0 }
    }

    pub fn pages(&self) -> u64 {
        1 << self.order
    }

    /// Whether compaction or migration may move it.
    pub fn movable(&self) -> bool {
        matches!(self.kind, FolioKind::Anonymous | FolioKind::Shmem | FolioKind::PageCache)
    }
}

/// Every folio, by head pfn, and the per-page map counts of other processes.
#[derive(Debug, Default)]
pub(crate) struct Folios {
    by_head: BTreeMap<u64, Folio>,
    foreign: BTreeMap<u64, u32>,
}

impl Folios {
    /// The folio containing `pfn`, with its head pfn.
    pub fn find(&self, pfn: u64) -> Option<(u64, &Folio)> {
        let (&head, f) = self.by_head.range(..=pfn).next_back()?;
        (pfn < head + f.pages()).then_some((head, f))
    }

    /// The folio containing `pfn`, mutably, with its head pfn.
    pub fn find_mut(&mut self, pfn: u64) -> Option<(u64, &mut Folio)> {
        let (&head, f) = self.by_head.range_mut(..=pfn).next_back()?;
        (pfn < head + f.pages()).then_some((head, f))
    }

    pub fn get(&self, head: u64) -> Option<&Folio> {
        self.by_head.get(&head)
    }

    pub fn insert(&mut self, head: u64, folio: Folio) {
        self.by_head.insert(head, folio);
    }

    /// Remove a folio; other processes' mappings of it go with it.
    pub fn remove(&mut self, head: u64) -> Option<Folio> {
        let f = self.by_head.remove(&head)?;
        let stale: Vec<u64> = self.foreign.range(head..head + f.pages()).map(|(&p, _)| p).collect();
        for p in stale {
            self.foreign.remove(&p);
        }
        Some(f)
    }

    /// Heads of the folios whose head lies in `start..end`.
    pub fn heads_in(&self, start: u64, end: u64) -> Vec<u64> {
        self.by_head.range(start..end).map(|(&h, _)| h).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, &Folio)> {
        self.by_head.iter().map(|(&h, f)| (h, f))
    }

    /// PTE mappings of `pfn` by other processes.
    pub fn foreign(&self, pfn: u64) -> u32 {
        self.foreign.get(&pfn).copied().unwrap_or(0)
    }

    /// PTE mappings of pages of `start..end` by other processes.
    pub fn foreign_in(&self, start: u64, end: u64) -> u32 {
        self.foreign.range(start..end).map(|(_, &n)| n).sum()
    }

    /// Total PTE mappings by other processes.
    pub fn foreign_total(&self) -> u64 {
        self.foreign.values().map(|&n| u64::from(n)).sum()
    }

    /// Another process maps (`delta > 0`) or unmaps (`delta < 0`) page `pfn` with a PTE.
    /// Returns whether anything changed.
    pub fn add_foreign(&mut self, pfn: u64, delta: i32) -> bool {
        let cur = self.foreign(pfn);
        let new = cur.saturating_add_signed(delta);
        if new == cur {
            return false;
        }
        if new == 0 {
            self.foreign.remove(&pfn);
        } else {
            self.foreign.insert(pfn, new);
        }
        if let Some((_, f)) = self.find_mut(pfn) {
            f.pte_mapped = (f.pte_mapped + new).saturating_sub(cur);
        }
        true
    }

    /// Move other processes' mappings of `pages` pages from `from..` to `to..` (migration).
    /// The folio at `to` must exist; its `pte_mapped` grows by what moved.
    pub fn move_foreign(&mut self, from: u64, to: u64, pages: u64) {
        let moved: Vec<(u64, u32)> = self.foreign.range(from..from + pages).map(|(&p, &n)| (p, n)).collect();
        for (p, n) in moved {
            self.foreign.remove(&p);
            if let Some((_, f)) = self.find_mut(p) {
                f.pte_mapped = f.pte_mapped.saturating_sub(n);
            }
            self.foreign.insert(to + (p - from), n);
            if let Some((_, f)) = self.find_mut(to + (p - from)) {
                f.pte_mapped += n;
            }
        }
    }

    /// The public view of the folio containing `pfn`.
    pub fn info(&self, pfn: u64) -> Option<FolioInfo> {
        let (head, f) = self.find(pfn)?;
        Some(FolioInfo {
            head_pfn: head,
            order: f.order,
            kind: f.kind,
            pte_mapped: f.pte_mapped,
            pmd_mapped: f.pmd_mapped,
            pud_mapped: f.pud_mapped,
            foreign_pte_mapped: self.foreign_in(head, head + f.pages()),
        })
    }
}
