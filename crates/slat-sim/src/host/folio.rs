//! Folios: allocated blocks of host RAM (order 0, a large page-cache order, 9 or 18), what owns
//! them, and how often they are mapped.
//!
//! Map counts follow Linux's: `pmd_mapped` / `pud_mapped` count mappings of the whole folio by
//! one PMD / PUD leaf, `pte_mapped` counts PTE mappings of its pages (summed over pages). Both
//! include mappings by "another process" (a second mapper of a shared file, which the simulator
//! does not give page tables of its own), which are also counted apart in `foreign_pte_mapped`.
//!
//! Storage is dense, by pfn, in chunks of 512 pages (one 2 MiB block), allocated when a folio
//! first lands in them: a chunk of folios smaller than 2 MiB keeps 18 bytes per page (order,
//! kind and owner in two bytes, object, index and PTE map count in sixteen); a folio of 2 MiB or
//! more is one entry in its first chunk and a pointer back from the others. A KSM page's
//! addresses live beside the table. Every pfn of a folio can find its head: heads are aligned to
//! their order (the buddy allocator's blocks are).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Deref, DerefMut};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Pages `index..index + 2^order` of a memory object.
    Object { object: ObjectId, index: u64 },
    /// A KSM page; the addresses mapping it are in [`Folios::ksm_hvas`].
    Ksm,
    /// The kernel (pinned).
    Kernel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Pages per chunk of the folio table.
const CHUNK: u64 = 512;
/// Folios of this order or more take whole chunks.
const CHUNK_ORDER: u8 = 9;

/// Per-page metadata of a small chunk: bit 15 set when a folio holds the page, bits 0..4 its
/// order, 5..7 its kind, 8..9 its owner's kind.
const PRESENT: u16 = 1 << 15;

const KINDS: [FolioKind; 6] = [
    FolioKind::Anonymous,
    FolioKind::Shmem,
    FolioKind::PageCache,
    FolioKind::Hugetlb,
    FolioKind::Ksm,
    FolioKind::Pinned,
];

fn kind_code(k: FolioKind) -> u16 {
    KINDS.iter().position(|&x| x == k).unwrap_or(0) as u16
}

fn meta(f: &Folio) -> u16 {
    let owner = match f.owner {
        Owner::Object { .. } => 0,
        Owner::Ksm => 1,
        Owner::Kernel => 2,
    };
    PRESENT | u16::from(f.order) | (kind_code(f.kind) << 5) | (owner << 8)
}

/// The per-head record of a small folio.
#[derive(Debug, Clone, Copy, Default)]
struct SmallRecord {
    index: u64,
    object: ObjectId,
    pte_mapped: u32,
}

#[derive(Debug)]
struct SmallChunk {
    meta: [u16; CHUNK as usize],
    records: [SmallRecord; CHUNK as usize],
    /// Pages held by a folio.
    used: u16,
}

impl SmallChunk {
    fn folio(&self, off: usize) -> Folio {
        let (m, r) = (self.meta[off], self.records[off]);
        let owner = match (m >> 8) & 3 {
            0 => Owner::Object { object: r.object, index: r.index },
            1 => Owner::Ksm,
            _ => Owner::Kernel,
        };
        Folio {
            order: (m & 0x1f) as u8,
            kind: KINDS[((m >> 5) & 7) as usize % KINDS.len()],
            owner,
            pte_mapped: r.pte_mapped,
            pmd_mapped: 0,
            pud_mapped: 0,
        }
    }
}

#[derive(Debug)]
enum Chunk {
    Empty,
    /// Folios smaller than the chunk.
    Small(Box<SmallChunk>),
    /// The head of a folio of a chunk or more.
    Huge(Folio),
    /// A later chunk of the huge folio whose head is at this pfn.
    Tail(u64),
}

/// Every folio, by pfn, and the per-page map counts of other processes.
#[derive(Debug, Default)]
pub(crate) struct Folios {
    /// Chunk `first + i` covers pfns `(first + i) * 512..`.
    first: u64,
    chunks: Vec<Chunk>,
    foreign: BTreeMap<u64, u32>,
    ksm: BTreeMap<u64, BTreeSet<u64>>,
}

/// A folio borrowed for change from [`Folios::find_mut`]; written back when dropped.
pub(crate) struct FolioMut<'a> {
    folios: &'a mut Folios,
    head: u64,
    folio: Folio,
}

impl Deref for FolioMut<'_> {
    type Target = Folio;
    fn deref(&self) -> &Folio {
        &self.folio
    }
}

impl DerefMut for FolioMut<'_> {
    fn deref_mut(&mut self) -> &mut Folio {
        &mut self.folio
    }
}

impl Drop for FolioMut<'_> {
    fn drop(&mut self) {
        self.folios.store(self.head, &self.folio);
    }
}

impl Folios {
    fn chunk(&self, pfn: u64) -> Option<&Chunk> {
        self.chunks.get(usize::try_from((pfn / CHUNK).checked_sub(self.first)?).ok()?)
    }

    /// The chunk of `pfn`, growing the table to cover it.
    fn chunk_mut(&mut self, pfn: u64) -> &mut Chunk {
        let c = pfn / CHUNK;
        if self.chunks.is_empty() {
            self.first = c;
        }
        if c < self.first {
            let more = (self.first - c) as usize;
            self.chunks.splice(0..0, (0..more).map(|_| Chunk::Empty));
            self.first = c;
        }
        let i = (c - self.first) as usize;
        if i >= self.chunks.len() {
            self.chunks.resize_with(i + 1, || Chunk::Empty);
        }
        &mut self.chunks[i]
    }

    /// The folio containing `pfn`, with its head pfn.
    pub fn find(&self, pfn: u64) -> Option<(u64, Folio)> {
        match self.chunk(pfn)? {
            Chunk::Empty => None,
            Chunk::Small(s) => {
                let off = (pfn % CHUNK) as usize;
                let m = s.meta[off];
                if m & PRESENT == 0 {
                    return None;
                }
                let head_off = off & !((1usize << (m & 0x1f)) - 1);
                Some((pfn - (off - head_off) as u64, s.folio(head_off)))
            }
            Chunk::Huge(f) => Some((pfn - pfn % CHUNK, *f)),
            Chunk::Tail(head) => match self.chunk(*head)? {
                Chunk::Huge(f) if pfn < head + f.pages() => Some((*head, *f)),
                _ => None,
            },
        }
    }

    /// The folio containing `pfn`, for change, with its head pfn.
    pub fn find_mut(&mut self, pfn: u64) -> Option<(u64, FolioMut<'_>)> {
        let (head, folio) = self.find(pfn)?;
        Some((head, FolioMut { folios: self, head, folio }))
    }

    /// The folio whose head is `head`.
    pub fn get(&self, head: u64) -> Option<Folio> {
        self.find(head).filter(|(h, _)| *h == head).map(|(_, f)| f)
    }

    /// Write back a changed folio (same head and order).
    fn store(&mut self, head: u64, f: &Folio) {
        match self.chunk_mut(head) {
            Chunk::Huge(h) => *h = *f,
            Chunk::Small(s) => {
                let off = (head % CHUNK) as usize;
                let m = meta(f);
                for i in off..off + (1usize << f.order) {
                    s.meta[i] = m;
                }
                let (object, index) = match f.owner {
                    Owner::Object { object, index } => (object, index),
                    _ => (0, 0),
                };
                s.records[off] = SmallRecord { index, object, pte_mapped: f.pte_mapped };
            }
            _ => {}
        }
    }

    /// Enter a folio at `head` (aligned to its order), in place of the one there.
    pub fn insert(&mut self, head: u64, folio: Folio) {
        debug_assert!(head % folio.pages() == 0, "folio at {head:#x} is not aligned to its order {}", folio.order);
        if let Some(old) = self.get(head) {
            self.clear(head, &old);
        }
        if folio.order >= CHUNK_ORDER {
            *self.chunk_mut(head) = Chunk::Huge(folio);
            for c in 1..folio.pages() / CHUNK {
                *self.chunk_mut(head + c * CHUNK) = Chunk::Tail(head);
            }
            return;
        }
        let chunk = self.chunk_mut(head);
        if !matches!(chunk, Chunk::Small(_)) {
            *chunk = Chunk::Small(Box::new(SmallChunk {
                meta: [0; CHUNK as usize],
                records: [SmallRecord::default(); CHUNK as usize],
                used: 0,
            }));
        }
        if let Chunk::Small(s) = chunk {
            let off = (head % CHUNK) as usize;
            for i in off..off + (1usize << folio.order) {
                if s.meta[i] & PRESENT == 0 {
                    s.used += 1;
                }
            }
        }
        self.store(head, &folio);
    }

    /// Forget the pages of the folio `f` at `head`.
    fn clear(&mut self, head: u64, f: &Folio) {
        if f.order >= CHUNK_ORDER {
            for c in 0..f.pages() / CHUNK {
                *self.chunk_mut(head + c * CHUNK) = Chunk::Empty;
            }
            return;
        }
        let chunk = self.chunk_mut(head);
        if let Chunk::Small(s) = chunk {
            let off = (head % CHUNK) as usize;
            for i in off..off + (1usize << f.order) {
                if s.meta[i] & PRESENT != 0 {
                    s.used -= 1;
                }
                s.meta[i] = 0;
            }
            if s.used == 0 {
                *chunk = Chunk::Empty;
            }
        }
    }

    /// Remove a folio; other processes' mappings of it go with it.
    pub fn remove(&mut self, head: u64) -> Option<Folio> {
        let f = self.get(head)?;
        self.clear(head, &f);
        let stale: Vec<u64> = self.foreign.range(head..head + f.pages()).map(|(&p, _)| p).collect();
        for p in stale {
            self.foreign.remove(&p);
        }
        self.ksm.remove(&head);
        Some(f)
    }

    /// Heads of the folios whose head lies in `start..end`.
    pub fn heads_in(&self, start: u64, end: u64) -> Vec<u64> {
        let mut out = Vec::new();
        if start >= end || self.chunks.is_empty() {
            return out;
        }
        let lo = (start / CHUNK).max(self.first);
        let hi = ((end - 1) / CHUNK).min(self.first + self.chunks.len() as u64 - 1);
        for c in lo..=hi {
            let base = c * CHUNK;
            match &self.chunks[(c - self.first) as usize] {
                Chunk::Huge(_) if base >= start && base < end => out.push(base),
                Chunk::Small(s) => {
                    let mut off = start.max(base) - base;
                    let stop = end.min(base + CHUNK) - base;
                    while off < stop {
                        let m = s.meta[off as usize];
                        if m & PRESENT == 0 {
                            off += 1;
                            continue;
                        }
                        let pages = 1u64 << (m & 0x1f);
                        if off % pages == 0 {
                            out.push(base + off);
                        }
                        off = (off & !(pages - 1)) + pages;
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The pfns the table covers, `start..end` (2 MiB aligned); every folio lies inside.
    pub fn span(&self) -> (u64, u64) {
        (self.first * CHUNK, (self.first + self.chunks.len() as u64) * CHUNK)
    }

    /// Every folio, by head (found one chunk at a time).
    pub fn iter(&self) -> impl Iterator<Item = (u64, Folio)> + '_ {
        let (start, end) = self.span();
        (start / CHUNK..end / CHUNK)
            .flat_map(move |c| self.heads_in(c * CHUNK, (c + 1) * CHUNK))
            .filter_map(move |h| self.get(h).map(|f| (h, f)))
    }

    /// The addresses mapping the KSM page at `head`.
    pub fn ksm_hvas(&self, head: u64) -> Option<&BTreeSet<u64>> {
        self.ksm.get(&head)
    }

    /// The addresses mapping the KSM page at `head`, for change.
    pub fn ksm_hvas_mut(&mut self, head: u64) -> &mut BTreeSet<u64> {
        self.ksm.entry(head).or_default()
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
        if let Some((_, mut f)) = self.find_mut(pfn) {
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
            if let Some((_, mut f)) = self.find_mut(p) {
                f.pte_mapped = f.pte_mapped.saturating_sub(n);
            }
            self.foreign.insert(to + (p - from), n);
            if let Some((_, mut f)) = self.find_mut(to + (p - from)) {
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
