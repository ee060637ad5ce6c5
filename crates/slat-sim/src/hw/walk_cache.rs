//! Walk caches: the guest paging-structure caches and the nested TLB, per vCPU.
//!
//! * A **paging-structure cache** entry for guest level L maps the gva prefix that selects an
//!   entry at level L (bits above `level_shift(L)`) to the next guest table: its gpa and the hpa
//!   of the page holding it (a "combined" entry: guest and stage-2 translation together). A hit
//!   lets the walk start at level L-1 and read that table without a stage-2 walk.
//! * The **nested TLB** caches gpa -> hpa translations of guest page-table pages at the
//!   stage-2 leaf size, so a guest table read whose page hits costs no stage-2 references.
//!
//! Both depend on stage-2 translations, so both are invalidated by stage-2 flushes overlapping
//! the stage-2 leaf they were derived from. Both are fully associative with LRU replacement.

use slat_pt::size::level_shift;
use slat_pt::PageSize;

use super::config::HwConfig;

/// A stage-2 leaf an entry was derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stage2Leaf {
    /// gpa of the leaf.
    pub gpa: u64,
    /// hpa of the leaf.
    pub hpa: u64,
    /// Leaf size.
    pub size: PageSize,
}

impl Stage2Leaf {
    #[inline]
    pub(crate) fn contains(&self, gpa: u64) -> bool {
        gpa >= self.gpa && gpa - self.gpa < self.size.bytes()
    }

    #[inline]
    pub(crate) fn hpa_of(&self, gpa: u64) -> u64 {
        self.hpa + (gpa - self.gpa)
    }

    #[inline]
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.gpa < end && start < self.gpa + self.size.bytes()
    }
}

/// A cached pointer to a guest table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TablePointer {
    /// gpa of the table page.
    pub table_gpa: u64,
    /// The stage-2 leaf translating the table page.
    pub leaf: Stage2Leaf,
}

/// A small fully associative LRU cache.
#[derive(Debug, Clone)]
struct Lru<T> {
    cap: usize,
    items: Vec<(T, u64)>,
}

impl<T: Copy> Lru<T> {
    fn new(cap: usize) -> Self {
        Lru { cap, items: Vec::with_capacity(cap) }
    }

    fn find(&mut self, now: u64, mut hit: impl FnMut(&T) -> bool) -> Option<T> {
        let (t, stamp) = self.items.iter_mut().find(|(t, _)| hit(t))?;
        *stamp = now;
        Some(*t)
    }

    fn insert(&mut self, now: u64, item: T, mut same: impl FnMut(&T) -> bool) {
        if self.cap == 0 {
            return;
        }
        if let Some(slot) = self.items.iter_mut().find(|(t, _)| same(t)) {
            *slot = (item, now);
        } else if self.items.len() < self.cap {
            self.items.push((item, now));
        } else if let Some(slot) = self.items.iter_mut().min_by_key(|(_, s)| *s) {
            *slot = (item, now);
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) -> u64 {
        let before = self.items.len();
        self.items.retain(|(t, _)| keep(t));
        (before - self.items.len()) as u64
    }
}

/// The walk caches of one vCPU.
#[derive(Debug, Clone)]
pub(crate) struct WalkCaches {
    /// Index `level - 1`: entries `(gva prefix, pointer)` for guest levels 1..=4.
    psc: [Lru<(u64, TablePointer)>; 4],
    nested: Lru<Stage2Leaf>,
    now: u64,
}

impl WalkCaches {
    pub(crate) fn new(cfg: &HwConfig) -> Self {
        let p = cfg.psc_entries;
        WalkCaches {
            psc: [Lru::new(p[0]), Lru::new(p[1]), Lru::new(p[2]), Lru::new(p[3])],
            nested: Lru::new(cfg.nested_tlb_entries),
            now: 0,
        }
    }

    /// The cached pointer held by the entry at `level` (1..=4) for `gva`.
    pub(crate) fn psc_lookup(&mut self, level: u8, gva: u64) -> Option<TablePointer> {
        self.now += 1;
        let key = gva >> level_shift(level);
        let cache = self.psc.get_mut(level.checked_sub(1)? as usize)?;
        cache.find(self.now, |(k, _)| *k == key).map(|(_, p)| p)
    }

    /// Remember that the entry at `level` for `gva` points to `ptr`.
    pub(crate) fn psc_insert(&mut self, level: u8, gva: u64, ptr: TablePointer) {
        self.now += 1;
        let key = gva >> level_shift(level);
        if let Some(cache) = level.checked_sub(1).and_then(|i| self.psc.get_mut(i as usize)) {
            cache.insert(self.now, (key, ptr), |(k, _)| *k == key);
        }
    }

    /// The stage-2 leaf translating the guest table page at `gpa`, if cached.
    pub(crate) fn nested_lookup(&mut self, gpa: u64) -> Option<Stage2Leaf> {
        self.now += 1;
        self.nested.find(self.now, |l| l.contains(gpa))
    }

    /// Cache the stage-2 leaf translating a guest table page.
    pub(crate) fn nested_insert(&mut self, leaf: Stage2Leaf) {
        self.now += 1;
        self.nested.insert(self.now, leaf, |l| l.gpa == leaf.gpa && l.size == leaf.size);
    }

    /// Drop entries derived from stage-2 leaves overlapping `start..end`; returns how many.
    pub(crate) fn invalidate(&mut self, start: u64, end: u64) -> u64 {
        let mut n = self.nested.retain(|l| !l.overlaps(start, end));
        for c in &mut self.psc {
            n += c.retain(|(_, p)| !p.leaf.overlaps(start, end));
        }
        n
    }

    /// Drop every entry; returns how many.
    pub(crate) fn clear(&mut self) -> u64 {
        let mut n = self.nested.retain(|_| false);
        for c in &mut self.psc {
            n += c.retain(|_| false);
        }
        n
    }
}
