//! Page migration and compaction: move a folio to new memory (new pfns, same contents and page
//! state), remapping every VMM leaf that mapped it inside an invalidation of those leaves.
//!
//! Compaction restores free 2 MiB blocks: it evacuates partly used blocks that hold only movable
//! folios (anonymous, shmem, page cache; never pinned or KSM pages), fewest used pages first, into
//! the holes of the fullest blocks (blocks with pinned pages first, since they can never be
//! freed), never into a wholly free block.

use std::collections::BTreeSet;

use slat_mmu::MmuNotifier;

use super::buddy::PMD_ORDER;
use super::config::PAGE;
use super::error::HostOpError;
use super::events::{EventReport, HvaRange};
use super::folio::{Folio, FolioKind};
use super::state::{order_size, HostState};
use super::SimHost;

/// Where a migrated folio goes.
enum Dest<'a> {
    /// Any memory (a hugetlb page goes to another page of its pool).
    Anywhere,
    /// Holes in these 2 MiB blocks (first fit, in order), skipping `avoid`; blocks used are
    /// added to `filled`.
    Into { blocks: &'a [u64], avoid: &'a BTreeSet<u64>, filled: &'a mut BTreeSet<u64> },
}

/// A compaction pass's view of the 2 MiB blocks of RAM.
struct CompactionPlan {
    /// Blocks to evacuate, fewest used pages first.
    sources: Vec<u64>,
    /// Blocks to fill, best destinations first.
    dests: Vec<u64>,
}

impl HostState {
    /// Allocate the destination of a folio of `order`.
    fn alloc_destination(&mut self, order: u8, kind: FolioKind, dest: &mut Dest<'_>) -> Option<u64> {
        match dest {
            Dest::Anywhere if kind == FolioKind::Hugetlb => self.pools.take(order_size(order)),
            Dest::Anywhere => self.buddy.alloc(order),
            Dest::Into { blocks, avoid, filled } => {
                for &b in blocks.iter() {
                    if avoid.contains(&b) {
                        continue;
                    }
                    let hole = self
                        .buddy
                        .free_blocks_in(b, b + 512)
                        .into_iter()
                        .find(|&(h, o)| o >= order && o < PMD_ORDER && h >= b && h < b + 512);
                    if let Some((h, _)) = hole {
                        if self.buddy.alloc_at(h, order).is_ok() {
                            filled.insert(b);
                            return Some(h);
                        }
                    }
                }
                None
            }
        }
    }

    /// Move the folio at `head` to `new` (allocated, same order): remap its leaves, carry its
    /// page state and other processes' mappings, update its object, free the old memory.
    fn move_folio(&mut self, head: u64, new: u64, r: &mut EventReport) -> Result<(), HostOpError> {
        let Some(f) = self.folios.get(head) else { return Ok(()) };
        let leaves = self.folio_leaves(head);
        for l in &leaves {
            self.pt.unmap(l.hva, l.hva + l.size.bytes(), &mut self.folios)?;
        }
        self.folios.insert(new, Folio::new(f.order, f.kind, f.owner));
        self.flags.copy(head, new, f.pages());
        self.folios.move_foreign(head, new, f.pages());
        if let super::folio::Owner::Object { object, index } = f.owner {
            if let Some(o) = self.objects.get_mut(&object) {
                o.pages.insert(index, (new, f.order));
            }
        }
        for l in &leaves {
            self.pt.map(l.hva, l.size, new + (l.pa / PAGE - head), l.attrs, &mut self.folios)?;
        }
        self.free_folio(head);
        self.stats.migrations += 1;
        self.stats.pages_migrated += f.pages();
        r.folios_migrated += 1;
        r.pages += f.pages();
        Ok(())
    }

    fn compaction_plan(&self) -> CompactionPlan {
        let (start, end) = (self.buddy.start_pfn().next_multiple_of(512), self.buddy.end_pfn());
        let mut sources = Vec::new();
        let mut dests = Vec::new();
        let mut b = start;
        while b + 512 <= end {
            let used = 512 - self.buddy.free_pages_in(b, b + 512);
            if used > 0 && used < 512 {
                let heads = self.folios.heads_in(b, b + 512);
                let mut movable_pages = 0;
                let mut movable = true;
                for h in &heads {
                    match self.folios.get(*h) {
                        Some(f) if f.movable() && f.order < PMD_ORDER => movable_pages += f.pages(),
                        _ => movable = false,
                    }
                }
                let movable = movable && movable_pages == used;
                if movable {
                    sources.push((used, b));
                }
                dests.push((movable, std::cmp::Reverse(used), b));
            }
            b += 512;
        }
        sources.sort_unstable();
        dests.sort_unstable();
        CompactionPlan {
            sources: sources.into_iter().map(|(_, b)| b).collect(),
            dests: dests.into_iter().map(|(_, _, b)| b).collect(),
        }
    }
}

impl SimHost {
    /// Migrate the folio at `head`. Returns whether it moved.
    fn migrate_folio(
        &self,
        n: &dyn MmuNotifier,
        head: u64,
        mut dest: Dest<'_>,
        r: &mut EventReport,
    ) -> Result<bool, HostOpError> {
        let (new, range) = {
            let mut st = self.lock();
            let Some(f) = st.folios.get(head) else { return Ok(false) };
            let (order, kind) = (f.order, f.kind);
            let movable = f.movable() || (kind == FolioKind::Hugetlb && matches!(dest, Dest::Anywhere));
            let new = if movable { st.alloc_destination(order, kind, &mut dest) } else { None };
            let Some(new) = new else {
                st.stats.migrate_failed += 1;
                r.failed += 1;
                return Ok(false);
            };
            let leaves = st.folio_leaves(head);
            let range = (!leaves.is_empty()).then(|| HvaRange {
                start: leaves.iter().map(|l| l.hva).min().unwrap_or(0),
                end: leaves.iter().map(|l| l.hva + l.size.bytes()).max().unwrap_or(0),
            });
            (new, range)
        };
        match range {
            Some(range) => self.invalidating(n, range, r, |st, r| st.move_folio(head, new, r))?,
            None => self.lock().move_folio(head, new, r)?,
        }
        Ok(true)
    }

    pub(crate) fn migrate(&self, n: &dyn MmuNotifier, hva: u64, len: u64) -> Result<EventReport, HostOpError> {
        let heads = {
            let st = self.lock();
            let end = st.check_covered(hva, len)?;
            let mut seen = BTreeSet::new();
            let mut heads = Vec::new();
            for l in st.pt.leaves(hva, end) {
                if let Some((h, _)) = st.folios.find(l.pa / PAGE) {
                    if seen.insert(h) {
                        heads.push(h);
                    }
                }
            }
            heads
        };
        let mut report = EventReport::default();
        for head in heads {
            self.migrate_folio(n, head, Dest::Anywhere, &mut report)?;
        }
        Ok(report)
    }

    pub(crate) fn compact(&self, n: &dyn MmuNotifier, max_blocks: u64) -> EventReport {
        let mut report = EventReport::default();
        let plan = self.lock().compaction_plan();
        let mut avoid: BTreeSet<u64> = BTreeSet::new();
        let mut filled: BTreeSet<u64> = BTreeSet::new();
        let mut evacuated = 0;
        for &src in &plan.sources {
            if evacuated >= max_blocks {
                break;
            }
            if filled.contains(&src) {
                continue;
            }
            avoid.insert(src);
            let heads = self.lock().folios.heads_in(src, src + 512);
            let mut all_moved = true;
            for h in heads {
                let dest = Dest::Into { blocks: &plan.dests, avoid: &avoid, filled: &mut filled };
                if !matches!(self.migrate_folio(n, h, dest, &mut report), Ok(true)) {
                    all_moved = false;
                    break;
                }
            }
            evacuated += 1;
            let mut st = self.lock();
            if all_moved && st.buddy.free_pages_in(src, src + 512) == 512 {
                st.stats.compaction_blocks_freed += 1;
                report.blocks_freed += 1;
            }
            if !all_moved {
                // No room left for this block's pages: later sources are fuller, stop.
                break;
            }
        }
        report
    }
}
