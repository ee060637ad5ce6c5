//! Getting huge leaves back: after dirty logging (zap collapsible runs, or rebuild in place) and
//! after the NX huge-page workaround split them.

use alloc::vec::Vec;

use lock_api::RawRwLock;
use slat_pt::{
    FlushBatch, Format, FrameAllocator, LeafAttrs, Mapping, MemType, PageSize, PageTable, Perms, SwBits, PAGE_SIZE,
};

use crate::config::RecoveryPolicy;
use crate::host::HostMemory;
use crate::memslot::Memslot;
use crate::mmu::{Mmu, MmuError};
use crate::stats::Counters;
use crate::tlb::Tlb;

/// What a recovery pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    /// Huge blocks rebuilt in place or zapped for refault.
    pub blocks: u64,
    /// Lock holds (each ends with at most one flush).
    pub steps: u64,
    /// Flush operations sent during the pass.
    pub flushes: u64,
}

impl<F: Format, A: FrameAllocator, H: HostMemory, T: Tlb, R: RawRwLock> Mmu<F, A, H, T, R> {
    /// Recover huge leaves in a memslot that is not dirty-logged, per the configured
    /// [`RecoveryPolicy`], in steps of `recovery_batch` blocks per lock hold.
    pub fn recover_huge_pages(&self, id: u32) -> Result<RecoveryReport, MmuError> {
        let slot = self.slot(id)?;
        let before = self.counters.remote_tlb_flush.load(core::sync::atomic::Ordering::Relaxed);
        let mut report = RecoveryReport::default();
        let mut cursor = Some(slot.base_gfn);
        while let Some(at) = cursor {
            let (next, n) = self.recover_step(id, at, self.config.recovery_batch)?;
            report.blocks += n;
            report.steps += 1;
            cursor = next;
        }
        report.flushes = self.counters.remote_tlb_flush.load(core::sync::atomic::Ordering::Relaxed) - before;
        Ok(report)
    }

    /// One step of recovery: from gfn `from`, recover up to `max_blocks` blocks under one
    /// exclusive lock hold and one flush. Returns where to continue (`None`: done) and how many
    /// blocks were recovered. Faults may run between steps.
    pub fn recover_step(&self, id: u32, from: u64, max_blocks: u64) -> Result<(Option<u64>, u64), MmuError> {
        let slot = self.slot(id)?;
        if slot.is_logging() {
            return Ok((None, 0));
        }
        let mut pt = self.tables.write();
        let mut batch = FlushBatch::new();
        let (mut done, g1, gig) = (0, slot.end_gfn(), PageSize::Size1G.pages());
        let mut at = from.max(slot.base_gfn);
        while at < g1 && done < max_blocks {
            let region = at & !(gig - 1);
            let region_end = (region + gig).min(g1);
            // Small leaves in the rest of this 1G region, by 2M block.
            let (mut any_small, mut blocks_4k) = (false, Vec::new());
            pt.for_each_leaf(at * PAGE_SIZE, (region_end - at) * PAGE_SIZE, |l| {
                any_small |= l.size < PageSize::Size1G;
                let b = (l.gpa / PAGE_SIZE) & !(PageSize::Size2M.pages() - 1);
                if l.size == PageSize::Size4K && blocks_4k.last() != Some(&b) {
                    blocks_4k.push(b);
                }
            });
            // The whole region as one 1G leaf, when starting at its beginning.
            if any_small && at == region && self.try_recover(&mut pt, &slot, region, PageSize::Size1G, &mut batch) {
                done += 1;
                at = region_end;
                continue;
            }
            let mut next = region_end;
            for b in blocks_4k {
                if done >= max_blocks {
                    next = b;
                    break;
                }
                if self.try_recover(&mut pt, &slot, b, PageSize::Size2M, &mut batch) {
                    done += 1;
                }
            }
            at = next;
        }
        Counters::add(&self.counters.recoveries, done);
        self.finish(&pt, batch);
        Ok(((at < g1).then_some(at), done))
    }

    /// Recover the `size` block at gfn `block` if the rules allow a leaf of that size there now.
    fn try_recover(
        &self,
        pt: &mut PageTable<F, A>,
        slot: &Memslot,
        block: u64,
        size: PageSize,
        batch: &mut FlushBatch,
    ) -> bool {
        if !slot.block_inside(block, size) {
            return false;
        }
        let host = self.host.lookup(slot.hva_of(block));
        let d = self.decide(slot, block, host.as_ref(), false);
        if d.size < size {
            return false;
        }
        let Some(host) = host else { return false };
        if (host.pfn ^ block) & (size.pages() - 1) != 0 {
            return false;
        }
        match self.config.recovery {
            RecoveryPolicy::Zap => {
                self.zap(pt, Some(slot), block, block + size.pages(), batch);
            }
            RecoveryPolicy::InPlace => {
                // Carry dirty state of the small leaves to the host before they go.
                let mut accessed = false;
                pt.for_each_leaf(block * PAGE_SIZE, size.bytes(), |l| {
                    accessed |= l.attrs.accessed;
                    if l.attrs.dirty || l.attrs.perms.contains(Perms::WRITE) {
                        self.host.mark_dirty(l.pa / PAGE_SIZE, l.size.pages());
                    }
                });
                let writable = host.writable && !slot.readonly;
                let mut perms = Perms::READ | Perms::EXEC;
                if self.config.nx.is_some() {
                    perms.remove(Perms::EXEC);
                }
                if writable {
                    perms.insert(Perms::WRITE);
                }
                let sw = if writable { SwBits::HOST_WRITABLE } else { SwBits::empty() };
                let mem_type = slot.mem_type(block);
                debug_assert!(mem_type == slot.mem_type(block + size.pages() - 1) || mem_type == MemType::WriteBack);
                let attrs = LeafAttrs { perms, mem_type, accessed, dirty: false, sw };
                let m = Mapping { pa: (host.pfn & !(size.pages() - 1)) * PAGE_SIZE, size, attrs };
                if pt.map(block * PAGE_SIZE, size.bytes(), &m, batch, &mut |r| self.flush_now(r)).is_err() {
                    return false;
                }
            }
        }
        true
    }

    /// One NX recovery pass: zap `ceil(tracked / recovery_ratio)` of the oldest NX-split blocks
    /// (skipping dirty-logged slots) so that faults rebuild them as non-executable huge leaves.
    /// Returns how many were zapped.
    pub fn recover_nx_huge_pages(&self) -> u64 {
        let Some(nx) = self.config.nx else { return 0 };
        let todo: Vec<(u64, PageSize)> = {
            let mut t = self.nx.lock();
            let n = t.queue.len().div_ceil(nx.recovery_ratio as usize);
            (0..n).filter_map(|_| t.queue.pop_front()).collect()
        };
        let mut zapped = 0;
        for (gfn, size) in todo {
            match self.slot_of(gfn) {
                Ok(slot) if slot.is_logging() => self.nx.lock().queue.push_back((gfn, size)),
                Ok(slot) => {
                    self.invalidate_gfns(Some(&slot), gfn, gfn + size.pages(), || {});
                    zapped += 1;
                }
                Err(_) => {}
            }
        }
        Counters::add(&self.counters.nx_recovered, zapped);
        zapped
    }
}
