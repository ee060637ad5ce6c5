//! Getting huge leaves back: after dirty logging (zap collapsible runs, or rebuild in place) and
//! after the NX huge-page workaround split them.

use crate::platform::Platform;
use alloc::vec::Vec;

use slat_pt::{FlushBatch, Format, Gpa, Hva, Mapping, MemType, PageSize, PageTable, Perms, Pfn, PAGE_SIZE};

use crate::config::RecoveryPolicy;
use crate::host::{HostMemory, HostPage};
use crate::memslot::Memslot;
use crate::mmu::{Mmu, MmuError};
use crate::policy::LeafUse;
use crate::stats::Counters;

/// What a recovery pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Huge blocks rebuilt in place or zapped for refault.
    pub blocks: u64,
    /// Lock holds (each ends with at most one flush).
    pub steps: u64,
    /// Flush operations sent during the pass.
    pub flushes: u64,
}

impl<F: Format, P: Platform> Mmu<F, P> {
    /// Recover huge leaves in a memslot that is not dirty-logged, per the configured
    /// [`RecoveryPolicy`], in steps of `recovery_batch` blocks per lock hold.
    ///
    /// In place, the pass runs under the *shared* lock (faults run beside it; each huge leaf
    /// replaces its table with a compare-and-swap, as KVM's `recover_huge_pages_range` since
    /// 6.13) and sends one flush for the whole slot at the end (one per block on
    /// break-before-make formats). By zapping, each step is a bounded exclusive hold with one
    /// flush.
    ///
    /// # Errors
    /// [`MmuError::Memslot`] when the slot does not exist.
    pub fn recover_huge_pages(&self, id: u32) -> Result<RecoveryReport, MmuError> {
        let slot = self.slot(id)?;
        let before = self.counters.remote_tlb_flush.load(core::sync::atomic::Ordering::Relaxed);
        let mut report = RecoveryReport::default();
        let mut batch = FlushBatch::new();
        let mut cursor = Some(slot.base_gfn);
        while let Some(at) = cursor {
            let (next, n) = self.recover_chunk(&slot, at, self.config.recovery_batch, &mut batch);
            report.blocks += n;
            report.steps += 1;
            cursor = next;
        }
        self.retire_shared(batch);
        report.flushes = self.counters.remote_tlb_flush.load(core::sync::atomic::Ordering::Relaxed) - before;
        Ok(report)
    }

    /// One step of recovery: from gfn `from`, recover up to `max_blocks` blocks under one lock
    /// hold (shared in place, exclusive by zapping) and one flush. Returns where to continue
    /// (`None`: done) and how many blocks were recovered. Faults may run between steps (and,
    /// in place, during them).
    ///
    /// # Errors
    /// [`MmuError::Memslot`] when the slot does not exist.
    pub fn recover_step(&self, id: u32, from: u64, max_blocks: u64) -> Result<(Option<u64>, u64), MmuError> {
        let slot = self.slot(id)?;
        let mut batch = FlushBatch::new();
        let r = self.recover_chunk(&slot, from, max_blocks, &mut batch);
        self.retire_shared(batch);
        Ok(r)
    }

    /// Flush what shared-lock work changed, then park its detached pages for the next exclusive
    /// section to free (a fault may still hold a pointer into them until then).
    pub(crate) fn retire_shared(&self, batch: FlushBatch) {
        self.flush(&batch);
        if !batch.detached().is_empty() {
            self.pending_free.lock().extend(batch.into_detached());
        }
    }

    /// Recover up to `max_blocks` blocks from `from`; in place, obligations accumulate in `batch`.
    fn recover_chunk(
        &self,
        slot: &Memslot<P::Lock>,
        from: u64,
        max_blocks: u64,
        batch: &mut FlushBatch,
    ) -> (Option<u64>, u64) {
        if slot.is_logging() {
            return (None, 0);
        }
        match self.config.recovery {
            RecoveryPolicy::InPlace => {
                let seq = self.inval.snapshot();
                let pt = self.tables.read();
                self.recover_blocks(&pt, slot, from, max_blocks, &mut |block, size, host| {
                    self.recover_in_place(&pt, slot, block, size, host, seq, batch)
                })
            }
            RecoveryPolicy::Zap => self.recover_by_zap(slot, from, max_blocks),
        }
    }

    /// Zap every block from `from` that could be huge (up to `max_blocks`) in one exclusive hold.
    fn recover_by_zap(&self, slot: &Memslot<P::Lock>, from: u64, max_blocks: u64) -> (Option<u64>, u64) {
        let mut x = self.exclusive();
        let mut todo = Vec::new();
        let r = self.recover_blocks(&x, slot, from, max_blocks, &mut |block, size, _| {
            todo.push((block, size));
            true
        });
        let (pt, batch) = x.parts();
        for (block, size) in todo {
            self.zap(pt, Some(slot), block, block + size.pages(), batch);
        }
        Counters::add(&self.counters.recoveries, r.1);
        r
    }

    /// Walk blocks from `from` and call `recover(pt, block, size, host)` for each 1G region or
    /// 2M block that holds smaller leaves and that the rules now allow at that size; stop after
    /// `max_blocks` recoveries. Returns where to continue and how many were recovered.
    fn recover_blocks(
        &self,
        pt: &PageTable<F, P::Frames>,
        slot: &Memslot<P::Lock>,
        from: u64,
        max_blocks: u64,
        recover: &mut dyn FnMut(u64, PageSize, &HostPage) -> bool,
    ) -> (Option<u64>, u64) {
        let (mut done, g1, gig) = (0, slot.end_gfn(), PageSize::Size1G.pages());
        let mut at = from.max(slot.base_gfn);
        while at < g1 && done < max_blocks {
            let region = at & !(gig - 1);
            let region_end = (region + gig).min(g1);
            // Small leaves in the rest of this 1G region, by 2M block.
            let (mut any_small, mut blocks_4k) = (false, Vec::new());
            pt.for_each_leaf(Gpa(at * PAGE_SIZE), (region_end - at) * PAGE_SIZE, |l| {
                any_small |= l.size < PageSize::Size1G;
                let b = (l.gpa.gfn().0) & !(PageSize::Size2M.pages() - 1);
                if l.size == PageSize::Size4K && blocks_4k.last() != Some(&b) {
                    blocks_4k.push(b);
                }
            });
            // The whole region as one 1G leaf, when starting at its beginning.
            if any_small && at == region {
                if let Some(host) = self.recoverable(slot, region, PageSize::Size1G) {
                    if recover(region, PageSize::Size1G, &host) {
                        done += 1;
                        at = region_end;
                        continue;
                    }
                }
            }
            let mut next = region_end;
            for b in blocks_4k {
                if done >= max_blocks {
                    next = b;
                    break;
                }
                if let Some(host) = self.recoverable(slot, b, PageSize::Size2M) {
                    if recover(b, PageSize::Size2M, &host) {
                        done += 1;
                    }
                }
            }
            at = next;
        }
        ((at < g1).then_some(at), done)
    }

    /// The host page of the `size` block at gfn `block` if the rules allow a leaf of that size
    /// there now (the same [`decide`](Self::decide) faults use).
    fn recoverable(&self, slot: &Memslot<P::Lock>, block: u64, size: PageSize) -> Option<HostPage> {
        if !slot.block_inside(block, size) {
            return None;
        }
        let host = self.host.lookup(Hva(slot.hva_of(block)))?;
        let d = self.decide(slot, block, Some(&host), false);
        (d.size >= size && (host.pfn.0 ^ block) & (size.pages() - 1) == 0).then_some(host)
    }

    /// Replace the table under the `size` block at `block` with one huge leaf, under the shared
    /// lock. Skipped (false) when an invalidation raced since `seq` or another thread is
    /// changing the block.
    #[allow(clippy::too_many_arguments)]
    fn recover_in_place(
        &self,
        pt: &PageTable<F, P::Frames>,
        slot: &Memslot<P::Lock>,
        block: u64,
        size: PageSize,
        host: &HostPage,
        seq: u64,
        batch: &mut FlushBatch,
    ) -> bool {
        if self.inval.must_retry(seq, block, block + size.pages()) {
            return false;
        }
        let mut accessed = false;
        pt.for_each_leaf(Gpa(block * PAGE_SIZE), size.bytes(), |l| accessed |= l.attrs.accessed);
        let attrs = self.leaf_attrs(slot, block, size, host, LeafUse::Recovery { accessed });
        debug_assert!(
            slot.mem_type(block) == slot.mem_type(block + size.pages() - 1) || attrs.mem_type == MemType::WriteBack
        );
        let m = Mapping { pa: (host.pfn.0 & !(size.pages() - 1)) * PAGE_SIZE, size, attrs };
        if pt.install_with(Gpa(block * PAGE_SIZE), &m, &crate::policy::Refault, batch, &self.bbm_tlb()).is_err() {
            return false;
        }
        if attrs.perms.contains(Perms::WRITE) {
            self.host.mark_dirty(Pfn(host.pfn.0 & !(size.pages() - 1)), size.pages());
        }
        Counters::inc(&self.counters.recoveries);
        true
    }
}
