//! Dirty logging with huge pages: enabling (write-protect, eager split, hardware D bits,
//! initially-set), harvesting (get-and-clear, 64-page clear-by-mask) and disabling (which hands
//! over to recovery).

use crate::platform::Platform;
use alloc::vec::Vec;

use slat_pt::{FlushBatch, Format, Gpa, PageSize, PageTable, Perms, PAGE_SIZE};

use crate::config::{DirtyLogMode, HarvestMode};
use crate::exclusive::InvalidateGuard;
use crate::memslot::{Memslot, MemslotError};
use crate::mmu::{Mmu, MmuError};
use crate::stats::Counters;

/// Pages handled per exclusive lock hold by slot-wide walks (protect, harvest, clear, zap):
/// 256 MiB of guest memory, at most 65,536 leaf updates, before the walk flushes and yields.
pub(crate) const YIELD_PAGES: u64 = 1 << 16;

impl<F: Format, P: Platform> Mmu<F, P> {
    /// Turn dirty logging on or off for a memslot.
    ///
    /// On: per [`DirtyLogMode`]; with `ManualClear { initially_set: true }` nothing is protected
    /// until the first [`clear_dirty_log`](Self::clear_dirty_log). Off: huge leaves are recovered
    /// per the [`RecoveryPolicy`](crate::RecoveryPolicy) (see [`recover_huge_pages`](Self::recover_huge_pages)).
    /// The flag flips inside an invalidation over the slot, so a fault that decided its leaf
    /// size under the old flag retries.
    ///
    /// # Errors
    /// [`MmuError::Memslot`] when slot `id` does not exist. An eager split that runs out of
    /// frames is not an error: the leaves left huge stay write-protected and split on their first
    /// write, as in KVM.
    pub fn set_dirty_logging(&self, id: u32, on: bool) -> Result<(), MmuError> {
        let slot = self.slot(id)?;
        if slot.is_logging() == on {
            return Ok(());
        }
        let (g0, g1) = (slot.base_gfn, slot.end_gfn());
        {
            // The flag flips inside an invalidation and an exclusive hold: faults that decided
            // under the old flag retry; faults after it obey the new one. Protection follows in
            // bounded chunks, faults running between them.
            let _inval = InvalidateGuard::begin(&self.inval, g0, g1);
            let _x = self.exclusive();
            slot.set_logging(on);
            if on {
                slot.fill_dirty(self.initially_set());
            }
        }
        if !on {
            return self.recover_huge_pages(id).map(|_| ());
        }
        if self.initially_set() {
            return Ok(());
        }
        {
            let mut x = self.exclusive();
            let mut at = g0;
            while at < g1 {
                let stop = (at + YIELD_PAGES).min(g1);
                let (pt, batch) = x.parts();
                let changed = self.protect_for_logging(pt, at, stop, batch);
                at = stop;
                if at < g1 {
                    x.account(changed);
                }
            }
        }
        if let DirtyLogMode::EagerSplit { chunk_tables } = self.config.dirty_log {
            // Best effort, as KVM's eager split: out of frames, the leaves left huge are
            // write-protected and split on their first write.
            let _ = self.eager_split(g0, g1, chunk_tables);
        }
        Ok(())
    }

    /// Split every huge leaf in gfns `g0..g1` down to 4 KiB under the *shared* lock (faults run
    /// beside it; splits are compare-and-swaps), at most `chunk` new page-table pages per lock
    /// hold. Split children inherit their parent's write protection: the translation is
    /// unchanged, so no flush is owed (x86, RISC-V), or break-before-make flushed already (arm64).
    pub(crate) fn eager_split(&self, g0: u64, g1: u64, chunk: u64) -> Result<(), MmuError> {
        let mut at = g0;
        loop {
            let p = {
                let pt = self.tables.read();
                pt.split_range_shared(
                    Gpa(at * PAGE_SIZE),
                    (g1 - at) * PAGE_SIZE,
                    PageSize::Size4K,
                    chunk,
                    &self.bbm_tlb(),
                )?
            };
            Counters::add(&self.counters.eager_splits, p.splits);
            match p.resume_at {
                Some(next) => at = next.gfn().0,
                None => return Ok(()),
            }
        }
    }

    /// Write-protect (or clear hardware dirty state of) every leaf in `g0..g1` for logging. The
    /// host already knows every such page is dirty: it was told when the leaf was made
    /// writable, so clearing W and D here loses nothing for the host.
    fn protect_for_logging(&self, pt: &mut PageTable<F, P::Frames>, g0: u64, g1: u64, batch: &mut FlushBatch) -> u64 {
        let hw = self.config.dirty_log == DirtyLogMode::HardwareDirty && F::HW_DIRTY;
        let changed = pt
            .update_leaves(Gpa(g0 * PAGE_SIZE), (g1 - g0) * PAGE_SIZE, batch, |l| {
                let a = l.attrs;
                if hw && l.size == PageSize::Size4K {
                    return a.dirty.then_some(slat_pt::LeafAttrs { dirty: false, ..a });
                }
                a.perms.contains(Perms::WRITE).then(|| {
                    let mut n = a.with_perms(a.perms - Perms::WRITE);
                    n.sw.insert(crate::policy::DIRTY_LOG_WP);
                    n.dirty = false;
                    n
                })
            })
            .unwrap_or(0);
        Counters::add(&self.counters.write_protected, changed);
        changed
    }

    /// Read the dirty log of a memslot: one bit per page of the slot (bit `i % 64` of word
    /// `i / 64`). With [`HarvestMode::GetAndClear`] the log is cleared and the reported pages
    /// re-protected; with [`HarvestMode::ManualClear`] it is only read.
    ///
    /// Long slots are harvested in bounded chunks: each chunk's words are read and cleared, its
    /// pages re-protected and flushed before the lock is dropped, so a write between chunks is
    /// either already in a word not yet read, or faults and is logged.
    ///
    /// # Errors
    /// [`MmuError::Memslot`] for an unknown slot, [`MmuError::NotLogging`] when it is not logged.
    pub fn get_dirty_log(&self, id: u32) -> Result<Vec<u64>, MmuError> {
        let slot = self.slot(id)?;
        if !slot.is_logging() {
            return Err(MmuError::NotLogging { id });
        }
        let words = slot.npages.div_ceil(64) as usize;
        // With a hardware log (PML) the dirty bits already reached the bitmap through
        // `record_hardware_dirty`; otherwise fold them in by scanning the slot's leaves.
        let hw = self.config.dirty_log == DirtyLogMode::HardwareDirty && F::HW_DIRTY && !self.config.hardware_log;
        let clear = self.config.harvest == HarvestMode::GetAndClear;
        let chunk_words = (YIELD_PAGES / 64) as usize;
        let mut log = Vec::with_capacity(words);
        let mut x = self.exclusive();
        for w0 in (0..words).step_by(chunk_words) {
            let w1 = (w0 + chunk_words).min(words);
            let (pt, batch) = x.parts();
            if hw {
                // Fold hardware dirty bits into the log first.
                let p0 = w0 as u64 * 64;
                let p1 = (w1 as u64 * 64).min(slot.npages);
                let bits = pt.harvest_dirty(Gpa((slot.base_gfn + p0) * PAGE_SIZE), p1 - p0, batch)?;
                for (i, bits) in bits.iter().enumerate() {
                    let mut b = *bits;
                    while b != 0 {
                        let bit = b.trailing_zeros() as u64;
                        b &= b - 1;
                        slot.mark_dirty(slot.base_gfn + p0 + i as u64 * 64 + bit);
                    }
                }
            }
            let part: Vec<u64> = (w0..w1).map(|w| slot.read_dirty_word(w, clear)).collect();
            if clear {
                self.reprotect_bitmap(pt, &slot, w0 as u64 * 64, &part, batch);
            }
            log.extend_from_slice(&part);
            if w1 < words {
                x.account(part.iter().map(|w| w.count_ones() as u64).sum());
            }
        }
        let n: u64 = log.iter().map(|w| w.count_ones() as u64).sum();
        Counters::add(&self.counters.dirty_pages_harvested, n);
        Ok(log)
    }

    /// Record guest-physical addresses the CPU logged as dirtied (Intel PML entries, with
    /// [`MmuConfig::hardware_log`](crate::MmuConfig::hardware_log)): each page of a logged
    /// memslot is marked in its dirty bitmap; addresses outside every logged slot are ignored.
    /// Drain every vCPU's log into this before [`get_dirty_log`](Self::get_dirty_log) or
    /// [`clear_dirty_log`](Self::clear_dirty_log) (KVM's `kvm_arch_sync_dirty_log` kicks the
    /// vCPUs to flush their PML buffers first). Returns how many pages were marked.
    pub fn record_hardware_dirty(&self, gpas: impl IntoIterator<Item = Gpa>) -> u64 {
        let slots = self.slots.read();
        let mut marked = 0;
        for gpa in gpas {
            let gfn = gpa.gfn().0;
            if let Some(slot) = slots.find_gfn(gfn).filter(|s| s.is_logging()) {
                slot.mark_dirty(gfn);
                marked += 1;
            }
        }
        marked
    }

    /// Clear the bits of `mask` from the log, starting at page `first_page` of the slot, and
    /// re-protect exactly the pages whose bits it cleared (KVM's `KVM_CLEAR_DIRTY_LOG`). Returns
    /// how many it cleared.
    ///
    /// With [`DirtyLogMode::EagerSplit`] (the initially-set mode defers splitting to here) the
    /// 2 MiB blocks holding cleared pages are split first, both blocks where a 64-page word
    /// straddles two; the split is best effort, as in KVM: out of page-table frames, a block
    /// stays huge and write-protected and splits on its first write. Re-protection always
    /// happens.
    ///
    /// # Errors
    /// As `KVM_CLEAR_DIRTY_LOG` (EINVAL): [`MemslotError::MisalignedClear`] when `first_page`
    /// is not a multiple of 64 or not inside the slot; [`MemslotError::ClearPastEnd`] when the
    /// mask reaches past the word holding the slot's last page or sets a bit past the slot's
    /// end. [`MmuError::NotLogging`] when the slot is not logged. Nothing is cleared on error.
    pub fn clear_dirty_log(&self, id: u32, first_page: u64, mask: &[u64]) -> Result<u64, MmuError> {
        let slot = self.slot(id)?;
        if !slot.is_logging() {
            return Err(MmuError::NotLogging { id });
        }
        let npages = mask.len() as u64 * 64;
        if first_page % 64 != 0 || first_page >= slot.npages {
            return Err(MemslotError::MisalignedClear { id, first_page, npages }.into());
        }
        let left = slot.npages - first_page;
        let past_end = mask.len() as u64 > left.div_ceil(64)
            || (npages > left && mask.last().is_some_and(|&m| m >> (left % 64) != 0));
        if past_end {
            return Err(MemslotError::ClearPastEnd { id, first_page, npages, slot_pages: slot.npages }.into());
        }
        let eager = matches!(self.config.dirty_log, DirtyLogMode::EagerSplit { .. });
        let chunk_words = (YIELD_PAGES / 64) as usize;
        let mut total = 0;
        for (c, words) in mask.chunks(chunk_words).enumerate() {
            let first = first_page + (c * chunk_words) as u64 * 64;
            let mut cleared = Vec::with_capacity(words.len());
            for (i, m) in words.iter().enumerate() {
                cleared.push(slot.clear_dirty_word((first / 64) as usize + i, *m));
            }
            if eager {
                self.split_cleared(&slot, first, &cleared);
            }
            let mut x = self.exclusive();
            let (pt, batch) = x.parts();
            self.reprotect_bitmap(pt, &slot, first, &cleared, batch);
            total += cleared.iter().map(|w| w.count_ones() as u64).sum::<u64>();
        }
        Ok(total)
    }

    /// Eager split for a clear: every 2 MiB block holding a cleared page (a word of 64 pages
    /// can straddle two blocks when the slot's base is not 64-page aligned to the block).
    fn split_cleared(&self, slot: &Memslot<P::Lock>, first_page: u64, cleared: &[u64]) {
        let block = PageSize::Size2M.pages();
        let mut last = None;
        for (i, &w) in cleared.iter().enumerate() {
            if w == 0 {
                continue;
            }
            let lo = slot.base_gfn + first_page + i as u64 * 64 + w.trailing_zeros() as u64;
            let hi = slot.base_gfn + first_page + i as u64 * 64 + 63 - w.leading_zeros() as u64;
            for b in [lo & !(block - 1), hi & !(block - 1)] {
                if last == Some(b) {
                    continue;
                }
                last = Some(b);
                let chunk = match self.config.dirty_log {
                    DirtyLogMode::EagerSplit { chunk_tables } => chunk_tables,
                    _ => u64::MAX,
                };
                let _ = self.eager_split(b, b + block, chunk);
            }
        }
    }

    /// Re-protect the pages set in `bits` (page `first_page + i` of the slot for bit `i`).
    fn reprotect_bitmap(
        &self,
        pt: &mut PageTable<F, P::Frames>,
        slot: &Memslot<P::Lock>,
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
        pt: &mut PageTable<F, P::Frames>,
        slot: &Memslot<P::Lock>,
        pages: impl IntoIterator<Item = u64>,
        batch: &mut FlushBatch,
    ) {
        let mut run: Option<(u64, u64)> = None;
        let flush_run = |pt: &mut PageTable<F, P::Frames>, run: (u64, u64), batch: &mut FlushBatch| {
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
        let mut x = self.exclusive();
        let mut got = rings.drain(vcpu);
        got.sort_unstable();
        got.dedup();
        for group in got.chunk_by(|a, b| a.0 == b.0) {
            let Some(slot) = slots.get(group[0].0).filter(|s| s.is_logging()) else {
                continue;
            };
            let pages: Vec<u64> = group.iter().map(|&(_, p)| p).filter(|&p| p < slot.npages).collect();
            for word in pages.chunk_by(|a, b| a / 64 == b / 64) {
                let mask = word.iter().fold(0u64, |m, p| m | 1 << (p % 64));
                slot.clear_dirty_word((word[0] / 64) as usize, mask);
            }
            let (pt, batch) = x.parts();
            self.reprotect_pages(pt, slot, pages, batch);
        }
        Counters::add(&self.counters.dirty_pages_harvested, got.len() as u64);
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
