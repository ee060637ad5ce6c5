//! Per-page physical state: the dirty and accessed flags of RAM and DAX pages, and the
//! fragmentation knob's choice of which pages to pin.

use std::collections::BTreeMap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::buddy::BuddyAllocator;

const DIRTY: u8 = 1 << 0;
const ACCESSED: u8 = 1 << 1;

/// The host's flags of one physical page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct PageState {
    /// Written since allocation (by a host write fault, or a guest write reported with
    /// `HostMemory::mark_dirty`).
    pub dirty: bool,
    /// Accessed since the last aging pass (host fault or `HostMemory::mark_accessed`).
    pub accessed: bool,
}

/// Pages per lazily allocated chunk of flags (one 2 MiB block).
const CHUNK: u64 = 512;

/// Flag bytes for regions of physical pages (RAM, the DAX device), allocated one 2 MiB chunk at
/// a time when first touched, so a large host costs only what it uses. Pages outside every
/// region (PFN maps) have no state.
#[derive(Debug, Default)]
pub(crate) struct PageFlags {
    /// Tracked pfn ranges `start..end`.
    regions: Vec<(u64, u64)>,
    chunks: BTreeMap<u64, Box<[u8; CHUNK as usize]>>,
}

impl PageFlags {
    /// Track `pages` pages from `start_pfn`.
    pub fn add_region(&mut self, start_pfn: u64, pages: u64) {
        self.regions.push((start_pfn, start_pfn.saturating_add(pages)));
    }

    /// Apply `f` to the flag byte of every tracked page of `pfn..pfn + pages`. `touch: false`
    /// skips chunks never allocated (for changes that only clear flags).
    fn update(&mut self, pfn: u64, pages: u64, touch: bool, mut f: impl FnMut(&mut u8)) {
        let end = pfn.saturating_add(pages);
        for &(rs, re) in &self.regions {
            let (mut at, stop) = (pfn.max(rs), end.min(re));
            while at < stop {
                let chunk = at / CHUNK;
                let upto = stop.min((chunk + 1) * CHUNK);
                let bytes = if touch {
                    Some(self.chunks.entry(chunk).or_insert_with(|| Box::new([0; CHUNK as usize])))
                } else {
                    self.chunks.get_mut(&chunk)
                };
                if let Some(bytes) = bytes {
                    for b in &mut bytes[(at % CHUNK) as usize..(at % CHUNK + (upto - at)) as usize] {
                        f(b);
                    }
                }
                at = upto;
            }
        }
    }

    fn get(&self, pfn: u64) -> u8 {
        self.chunks.get(&(pfn / CHUNK)).map_or(0, |c| c[(pfn % CHUNK) as usize])
    }

    pub fn mark_dirty(&mut self, pfn: u64, pages: u64) {
        self.update(pfn, pages, true, |b| *b |= DIRTY | ACCESSED);
    }

    pub fn mark_accessed(&mut self, pfn: u64, pages: u64) {
        self.update(pfn, pages, true, |b| *b |= ACCESSED);
    }

    /// Whether any page of `pfn..pfn + pages` is accessed; clears the flags when `clear`.
    pub fn test_and_clear_accessed(&mut self, pfn: u64, pages: u64, clear: bool) -> bool {
        let mut young = false;
        self.update(pfn, pages, false, |b| {
            young |= *b & ACCESSED != 0;
            if clear {
                *b &= !ACCESSED;
            }
        });
        young
    }

    /// Forget the state of `pfn..pfn + pages` (the pages were freed or newly allocated).
    pub fn reset(&mut self, pfn: u64, pages: u64) {
        self.update(pfn, pages, false, |b| *b = 0);
    }

    /// Copy the state of `pages` pages from `from..` to `to..` (migration, collapse).
    pub fn copy(&mut self, from: u64, to: u64, pages: u64) {
        for i in 0..pages {
            let v = self.get(from + i);
            self.update(to + i, 1, v != 0, |b| *b = v);
        }
    }

    pub fn state(&self, pfn: u64) -> PageState {
        let b = self.get(pfn);
        PageState { dirty: b & DIRTY != 0, accessed: b & ACCESSED != 0 }
    }
}

/// Choose pages to pin so that `fraction` of the currently free blocks of `2^order` pages each
/// get one pinned page: the blocks are picked without replacement and the page inside each block
/// uniformly, all from `rng`. Returns the pfns, lowest first.
pub(crate) fn choose_pins(buddy: &BuddyAllocator, order: u8, fraction: f64, rng: &mut ChaCha8Rng) -> Vec<u64> {
    let block = 1u64 << order;
    let mut candidates: Vec<u64> = Vec::new();
    for (head, o) in buddy.free_blocks_in(buddy.start_pfn(), buddy.end_pfn()) {
        if o >= order {
            candidates.extend((0..1u64 << (o - order)).map(|k| head + k * block));
        }
    }
    candidates.sort_unstable();
    let k = ((fraction.clamp(0.0, 1.0) * candidates.len() as f64).round() as usize).min(candidates.len());
    for i in 0..k {
        let j = rng.gen_range(i..candidates.len());
        candidates.swap(i, j);
    }
    let mut pins: Vec<u64> = candidates[..k].iter().map(|&head| head + rng.gen_range(0..block)).collect();
    pins.sort_unstable();
    pins
}
