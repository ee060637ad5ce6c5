//! Dirty logging with huge pages: enabling (write-protect, eager split, hardware D bits,
//! initially-set), harvesting (get-and-clear, 64-page clear-by-mask) and disabling (which hands
//! over to recovery).

use alloc::vec::Vec;

use lock_api::RawRwLock;
use slat_pt::{FlushBatch, Format, FrameAllocator, PageSize, PageTable, Perms, SwBits, PAGE_SIZE};

use crate::config::{DirtyLogMode, HarvestMode};
use crate::host::HostMemory;
use crate::memslot::{Memslot, MemslotError};
use crate::mmu::{Mmu, MmuError};
use crate::stats::Counters;
use crate::tlb::Tlb;

impl<F: Format, A: FrameAllocator, H: HostMemory, T: Tlb, R: RawRwLock> Mmu<F, A, H, T, R> {
    /// Turn dirty logging on or off for a memslot.
    ///
    /// On: per [`DirtyLogMode`]; with `ManualClear { initially_set: true }` nothing is protected
    /// until the first [`clear_dirty_log`](Self::clear_dirty_log). Off: huge leaves are recovered
    /// per the [`RecoveryPolicy`](crate::RecoveryPolicy) (see [`recover_huge_pages`](Self::recover_huge_pages)).
    /// The flag flips inside an invalidation over the slot, so a fault that decided its leaf
    /// size under the old flag retries.
    pub fn set_dirty_logging(&self, id: u32, on: bool) -> Result<(), MmuError> {
        let slot = self.slot(id)?;
        if slot.is_logging() == on {
            return Ok(());
        }
        let (g0, g1) = (slot.base_gfn, slot.end_gfn());
        {
            let mut pt = self.tables.write();
            self.inval.begin(g0, g1);
            slot.set_logging(on);
            let mut batch = FlushBatch::new();
            if on {
                slot.fill_dirty(self.initially_set());
                if !self.initially_set() {
                    self.protect_for_logging(&mut pt, g0, g1, &mut batch);
                }
            }
            self.finish(&pt, batch);
            drop(pt);
            self.inval.end();
        }
        if on {
            if let (DirtyLogMode::EagerSplit { chunk_tables }, false) = (self.config.dirty_log, self.initially_set()) {
                self.eager_split(g0, g1, chunk_tables)?;
            }
            Ok(())
        } else {
            self.recover_huge_pages(id).map(|_| ())
        }
    }

    /// Split every huge leaf in gfns `g0..g1` down to 4 KiB, at most `chunk` new page-table
    /// pages per lock hold, then write-protect what the split produced.
    fn eager_split(&self, g0: u64, g1: u64, chunk: u64) -> Result<(), MmuError> {
        let mut at = g0;
        loop {
            let mut pt = self.tables.write();
            let p = pt.split_range(at * PAGE_SIZE, (g1 - at) * PAGE_SIZE, PageSize::Size4K, chunk, &mut |r| {
                self.flush_now(r)
            })?;
            Counters::add(&self.counters.eager_splits, p.splits);
            // Split children inherit the write-protection of their parent: no flush needed, the
            // translation is unchanged (x86), or break-before-make already flushed (arm64).
            self.finish(&pt, FlushBatch::new());
            match p.resume_at {
                Some(next) => at = next / PAGE_SIZE,
                None => return Ok(()),
            }
        }
    }

    /// Write-protect (or clear hardware dirty state of) every leaf in `g0..g1` for logging.
    fn protect_for_logging(&self, pt: &mut PageTable<F, A>, g0: u64, g1: u64, batch: &mut FlushBatch) {
        let hw = self.config.dirty_log == DirtyLogMode::HardwareDirty && F::HW_DIRTY;
        let changed = pt
            .update_leaves(g0 * PAGE_SIZE, (g1 - g0) * PAGE_SIZE, batch, |l| {
                let a = l.attrs;
                if hw && l.size == PageSize::Size4K {
                    return a.dirty.then_some(slat_pt::LeafAttrs { dirty: false, ..a });
                }
                a.perms.contains(Perms::WRITE).then(|| {
                    let mut n = a.with_perms(a.perms - Perms::WRITE);
                    n.sw.insert(SwBits::DIRTY_LOG_WP);
                    n.dirty = false;
                    n
                })
            })
            .unwrap_or(0);
        Counters::add(&self.counters.write_protected, changed);
    }

    /// Read the dirty log of a memslot: one bit per page of the slot (bit `i % 64` of word
    /// `i / 64`). With [`HarvestMode::GetAndClear`] the log is cleared and the reported pages
    /// re-protected; with [`HarvestMode::ManualClear`] it is only read.
    pub fn get_dirty_log(&self, id: u32) -> Result<Vec<u64>, MmuError> {
        let slot = self.slot(id)?;
        if !slot.is_logging() {
            return Err(MmuError::NotLogging { id });
        }
        let (g0, g1) = (slot.base_gfn, slot.end_gfn());
        let hw = self.config.dirty_log == DirtyLogMode::HardwareDirty && F::HW_DIRTY;
        let mut pt = self.tables.write();
        let mut batch = FlushBatch::new();
        if hw {
            // Fold hardware dirty bits into the log first.
            let bits = pt.harvest_dirty(g0 * PAGE_SIZE, g1 - g0, &mut batch)?;
            for (w, bits) in bits.iter().enumerate() {
                for b in 0..64 {
                    if bits & (1 << b) != 0 {
                        slot.mark_dirty(g0 + w as u64 * 64 + b);
                    }
                }
            }
        }
        let clear = self.config.harvest == HarvestMode::GetAndClear;
        let log = slot.read_dirty(clear);
        if clear {
            self.reprotect_bitmap(&mut pt, &slot, 0, &log, &mut batch);
        }
        let n: u64 = log.iter().map(|w| w.count_ones() as u64).sum();
        Counters::add(&self.counters.dirty_pages_harvested, n);
        self.finish(&pt, batch);
        Ok(log)
    }

    /// Clear the bits of `mask` from the log, starting at page `first_page` of the slot (a
    /// multiple of 64; the mask length is a multiple of 64 pages unless it reaches the slot's
    /// end), and re-protect exactly the pages whose bits it cleared. Returns how many it cleared.
    pub fn clear_dirty_log(&self, id: u32, first_page: u64, mask: &[u64]) -> Result<u64, MmuError> {
        let slot = self.slot(id)?;
        if !slot.is_logging() {
            return Err(MmuError::NotLogging { id });
        }
        let npages = mask.len() as u64 * 64;
        if first_page % 64 != 0 || first_page >= slot.npages {
            return Err(MemslotError::MisalignedClear { id, first_page, npages }.into());
        }
        let mut pt = self.tables.write();
        let mut batch = FlushBatch::new();
        let mut cleared = Vec::with_capacity(mask.len());
        for (i, m) in mask.iter().enumerate() {
            cleared.push(slot.clear_dirty_word((first_page / 64) as usize + i, *m));
        }
        if let DirtyLogMode::EagerSplit { .. } = self.config.dirty_log {
            // Initially-set mode defers splitting to the clear: split the blocks being re-armed.
            for (i, w) in cleared.iter().enumerate() {
                if *w != 0 {
                    let g = slot.base_gfn + first_page + i as u64 * 64;
                    let b = g & !(PageSize::Size2M.pages() - 1);
                    let p = pt.split_range(
                        b * PAGE_SIZE,
                        PageSize::Size2M.bytes(),
                        PageSize::Size4K,
                        u64::MAX,
                        &mut |r| self.flush_now(r),
                    )?;
                    Counters::add(&self.counters.eager_splits, p.splits);
                }
            }
        }
        self.reprotect_bitmap(&mut pt, &slot, first_page, &cleared, &mut batch);
        self.finish(&pt, batch);
        Ok(cleared.iter().map(|w| w.count_ones() as u64).sum())
    }

    /// Re-protect the pages set in `bits` (page `first_page + i` of the slot for bit `i`).
    fn reprotect_bitmap(
        &self,
        pt: &mut PageTable<F, A>,
        slot: &Memslot,
        first_page: u64,
        bits: &[u64],
        batch: &mut FlushBatch,
    ) {
        let pages = bits.iter().enumerate().flat_map(|(w, &word)| {
            let base = first_page + w as u64 * 64;
            let mut word = word;
            core::iter::from_fn(move || {
                (word != 0).then(|| {
                    let b = word.trailing_zeros() as u64;
                    word &= word - 1;
                    base + b
                })
            })
        });
        self.reprotect_pages(pt, slot, pages, batch);
    }

    /// Re-protect `pages` (offsets in the slot, ascending), one protection pass per run of
    /// consecutive pages; offsets past the slot's end are ignored.
    fn reprotect_pages(
        &self,
        pt: &mut PageTable<F, A>,
        slot: &Memslot,
        pages: impl IntoIterator<Item = u64>,
        batch: &mut FlushBatch,
    ) {
        let mut run: Option<(u64, u64)> = None;
        let flush_run = |pt: &mut PageTable<F, A>, run: (u64, u64), batch: &mut FlushBatch| {
            let g0 = slot.base_gfn + run.0;
            self.protect_for_logging(pt, g0, g0 + run.1, batch);
        };
        for page in pages.into_iter().take_while(|&p| p < slot.npages) {
            run = match run {
                Some((s, n)) if s + n == page => Some((s, n + 1)),
                Some(r) => {
                    flush_run(pt, r, batch);
                    Some((page, 1))
                }
                None => Some((page, 1)),
            };
        }
        if let Some(r) = run {
            flush_run(pt, r, batch);
        }
    }

    // ---- dirty rings --------------------------------------------------------------------

    /// Collect and reset `vcpu`'s dirty ring (`KVM_RESET_DIRTY_RINGS` for one vCPU): returns
    /// every `(slot id, page offset)` recorded since the last harvest, sorted and without
    /// duplicates, and, under the exclusive lock with one flush, re-protects exactly those pages
    /// (the same path as [`clear_dirty_log`](Self::clear_dirty_log)) and clears their bits in
    /// the slots' bitmaps. Records of slots since deleted, no longer logged, or shrunk below the
    /// offset are returned but re-protect nothing.
    ///
    /// The bitmap is kept beside the rings because [`get_dirty_log`](Self::get_dirty_log) and
    /// zaps use it; a page can therefore be reported by both a ring and the bitmap, never by
    /// neither. Empty without a ring or for a vCPU id at or above `max_vcpus`.
    pub fn harvest_dirty_ring(&self, vcpu: u32) -> Vec<(u32, u64)> {
        let Some(rings) = &self.rings else {
            return Vec::new();
        };
        let slots = self.slots.read();
        let mut pt = self.tables.write();
        let mut got = rings.drain(vcpu);
        got.sort_unstable();
        got.dedup();
        let mut batch = FlushBatch::new();
        for group in got.chunk_by(|a, b| a.0 == b.0) {
            let Some(slot) = slots.get(group[0].0).filter(|s| s.is_logging()) else {
                continue;
            };
            let pages: Vec<u64> = group.iter().map(|&(_, p)| p).filter(|&p| p < slot.npages).collect();
            for word in pages.chunk_by(|a, b| a / 64 == b / 64) {
                let mask = word.iter().fold(0u64, |m, p| m | 1 << (p % 64));
                slot.clear_dirty_word((word[0] / 64) as usize, mask);
            }
            self.reprotect_pages(&mut pt, slot, pages, &mut batch);
        }
        Counters::add(&self.counters.dirty_pages_harvested, got.len() as u64);
        self.finish(&pt, batch);
        got
    }

    /// Whether `vcpu`'s dirty ring holds at least its soft limit of records: the vCPU must not
    /// re-enter the guest before [`harvest_dirty_ring`](Self::harvest_dirty_ring) (KVM's
    /// `KVM_REQ_DIRTY_RING_SOFT_FULL` check, which exits with `KVM_EXIT_DIRTY_RING_FULL`).
    /// False without a ring.
    pub fn dirty_ring_soft_full(&self, vcpu: u32) -> bool {
        self.rings.as_ref().is_some_and(|r| r.soft_full(vcpu))
    }

    /// Records waiting in `vcpu`'s dirty ring (0 without a ring).
    pub fn dirty_ring_len(&self, vcpu: u32) -> usize {
        self.rings.as_ref().map_or(0, |r| r.len(vcpu))
    }
}
