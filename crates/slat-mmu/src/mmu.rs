//! The [`Mmu`]: one guest's stage-2 tables with their memslots, host and TLB.
//!
//! # Locks
//! Two reader-writer locks from the embedder's `lock_api` implementation, always taken in this
//! order: `slots` (the memslot set), then `tables` (the page table). Faults hold `tables` shared
//! and install with compare-and-swap; zaps, protection changes, harvests, recovery and memslot
//! changes hold it exclusively. Page-table pages a fault detaches (a table replaced by a huge
//! leaf) are flushed by that fault and parked in `pending_free`; they are freed by the next
//! exclusive section, when no shared walker can still hold them. Every exclusive section ends
//! with [`Mmu::finish`]: one flush for everything it changed, then frees.

use alloc::vec::Vec;

use lock_api::RwLock;
use slat_pt::{
    Detached, FlushBatch, FlushRange, Format, Gfn, Gpa, Hva, Leaf, MemType, PageSize, PageTable, Pfn, PtError,
    PAGE_SIZE,
};

use crate::config::MmuConfig;
use crate::dirty::YIELD_PAGES;
use crate::exclusive::{Exclusive, InvalidateGuard};
use crate::host::HostMemory;
use crate::invalidate::Invalidation;
use crate::lock::Mutex;
use crate::memslot::{Memslot, MemslotError, MemslotInfo, MemslotSpec, Memslots};
use crate::notifier::MmuNotifier;
use crate::nx::NxTracker;
use crate::platform::Platform;
use crate::ring::DirtyRings;
use crate::stats::{Counters, Stats};
use crate::tlb::{self, CacheMaintenance, Tlb};
use crate::view::TablesView;

/// Errors of MMU operations other than faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MmuError {
    /// A memslot request was invalid.
    #[error(transparent)]
    Memslot(#[from] MemslotError),
    /// The page table refused an operation (out of frames, misaligned).
    #[error(transparent)]
    Table(#[from] PtError),
    /// The memslot is not dirty-logged.
    #[error("memslot {id} is not dirty-logged")]
    NotLogging {
        /// Slot id.
        id: u32,
    },
    /// The configuration is inconsistent.
    #[error("invalid MMU configuration: {what}")]
    Config {
        /// What is wrong.
        what: &'static str,
    },
    /// A gfn outside every memslot.
    #[error("gfn {gfn:#x} is in no memslot")]
    NoMemslot {
        /// The gfn.
        gfn: Gfn,
    },
}

/// The raw lock used when the embedder does not choose one: a spin lock, usable without `std`.
pub type DefaultRawLock = spin::RwLock<()>;

/// A hypervisor stage-2 MMU.
///
/// * `F`: the hardware format of the tables (`slat_pt::format::Ept4`, `Npt`, `Arm64S2L1`, ...);
/// * `P`: the embedder's [`Platform`]: where page-table frames come from, the host memory
///   manager, the TLB, and the raw reader-writer lock.
///
/// ```
/// use slat_mmu::testing::{FakeHost, RecordingTlb};
/// use slat_mmu::{FaultOutcome, Gfn, Gpa, Hva, MemslotSpec, Mmu, MmuConfig, Parts};
/// use slat_pt::{format::Ept4, Access, PageSize, SimFrameAllocator};
///
/// type MyMmu = Mmu<Ept4, Parts<SimFrameAllocator, FakeHost, RecordingTlb>>;
///
/// // A host that backs 64 MiB at hva 0x7f00_0000_0000 with 2 MiB THPs.
/// let host = FakeHost::new();
/// host.map_range(0x7f00_0000_0000, 64 << 20, 0x1_0000_0000, PageSize::Size2M, true);
/// let mmu = MyMmu::new(
///     MmuConfig::default(),
///     SimFrameAllocator::new(0x100_0000_0000, 1 << 30),
///     host,
///     RecordingTlb::default(),
/// ).unwrap();
/// mmu.add_memslot(MemslotSpec {
///     id: 0, base_gfn: Gfn(0x40000), npages: (64 << 20) >> 12, hva: Hva(0x7f00_0000_0000),
///     readonly: false, log_dirty: false,
/// }).unwrap();
///
/// // A guest write at 1 GiB + 4 KiB faults; the MMU maps the whole 2 MiB block.
/// let out = mmu.handle_fault(Gpa(0x4000_1000), Access::Write).unwrap();
/// assert!(matches!(out, FaultOutcome::Mapped { size: PageSize::Size2M, .. }));
/// assert_eq!(mmu.stats().pages_2m, 1);
/// // ...and explains why not 1 GiB: the host leaf is only 2 MiB.
/// assert_eq!(
///     mmu.explain(Gfn(0x40001)).to_string(),
///     "gfn 0x40001 (slot 0): mapped 2M, allowed 2M (host anonymous 2M leaf); \
///      not 1G: block crosses the memslot boundary, host leaf is 2M (1G wanted)"
/// );
/// mmu.audit().unwrap();
/// ```
pub struct Mmu<F: Format, P: Platform> {
    pub(crate) tables: RwLock<P::Lock, PageTable<F, P::Frames>>,
    pub(crate) slots: RwLock<P::Lock, Memslots<P::Lock>>,
    pub(crate) host: P::Host,
    pub(crate) tlb: P::Tlb,
    pub(crate) config: MmuConfig,
    pub(crate) inval: Invalidation<P::Lock>,
    pub(crate) counters: Counters,
    pub(crate) pending_free: Mutex<P::Lock, Vec<Detached>>,
    /// Serializes memslot changes (KVM's `slots_lock`): a delete zaps in chunks without holding
    /// `slots`, so another change must not slip in between.
    pub(crate) slots_update: Mutex<P::Lock, ()>,
    pub(crate) nx: Mutex<P::Lock, NxTracker>,
    /// Per-vCPU dirty rings (`None` unless [`MmuConfig::dirty_ring`] is set).
    pub(crate) rings: Option<DirtyRings<P::Lock>>,
}

impl<F: Format, P: Platform> Mmu<F, P> {
    /// A new MMU with an empty table.
    ///
    /// # Errors
    /// [`MmuError::Config`] naming the inconsistent setting; [`MmuError::Table`] when the
    /// allocator has no frame for the root table.
    pub fn new(config: MmuConfig, alloc: P::Frames, host: P::Host, tlb: P::Tlb) -> Result<Self, MmuError> {
        if config.max_leaf.level() > F::MAX_LEAF_LEVEL {
            return Err(MmuError::Config { what: "max_leaf is larger than the format allows" });
        }
        if config.recovery_batch == 0 {
            return Err(MmuError::Config { what: "recovery_batch must be at least 1" });
        }
        if let crate::config::DirtyLogMode::EagerSplit { chunk_tables: 0 } = config.dirty_log {
            return Err(MmuError::Config { what: "eager split chunk_tables must be at least 1" });
        }
        if config.hardware_log && config.dirty_log != crate::config::DirtyLogMode::HardwareDirty {
            return Err(MmuError::Config { what: "hardware_log (PML) needs the hardware-dirty logging mode" });
        }
        if config.nx.is_some_and(|n| n.recovery_ratio == 0) {
            return Err(MmuError::Config { what: "nx recovery_ratio must be at least 1" });
        }
        if let Some(r) = config.dirty_ring {
            if !r.entries.is_power_of_two() {
                return Err(MmuError::Config { what: "dirty ring entries must be a power of two" });
            }
            if r.soft_limit == 0 || r.soft_limit > r.entries {
                return Err(MmuError::Config { what: "dirty ring soft_limit must be in 1..=entries" });
            }
            if r.max_vcpus == 0 {
                return Err(MmuError::Config { what: "dirty ring max_vcpus must be at least 1" });
            }
            if config.dirty_log == crate::config::DirtyLogMode::HardwareDirty {
                return Err(MmuError::Config { what: "dirty ring needs write faults: not with hardware dirty bits" });
            }
            if matches!(config.harvest, crate::config::HarvestMode::ManualClear { initially_set: true }) {
                return Err(MmuError::Config { what: "dirty ring needs write faults: not with an initially-set log" });
            }
        }
        Ok(Mmu {
            tables: RwLock::new(PageTable::new(alloc)?),
            slots: RwLock::new(Memslots::default()),
            host,
            tlb,
            config,
            inval: Invalidation::default(),
            counters: Counters::default(),
            pending_free: Mutex::new(Vec::new()),
            slots_update: Mutex::new(()),
            nx: Mutex::new(NxTracker::default()),
            rings: config.dirty_ring.map(DirtyRings::new),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MmuConfig {
        &self.config
    }

    /// The host.
    pub fn host(&self) -> &P::Host {
        &self.host
    }

    /// The TLB.
    pub fn tlb(&self) -> &P::Tlb {
        &self.tlb
    }

    /// Run `f` with a read-only view of the page table (for hardware walkers and inspection),
    /// holding the table lock shared.
    pub fn with_tables<X>(&self, f: impl FnOnce(&TablesView<'_, F, P::Frames>) -> X) -> X {
        let pt = self.tables.read();
        f(&TablesView::new(&pt))
    }

    /// Root physical address of the stage-2 table.
    pub fn root_pa(&self) -> u64 {
        self.tables.read().root_pa()
    }

    /// Every memslot.
    pub fn memslots(&self) -> Vec<MemslotInfo> {
        self.slots.read().iter().map(|s| MemslotInfo::from(&**s)).collect()
    }

    /// Bytes of MMU bookkeeping beyond the page tables (bitmaps, per-block words, dirty rings).
    pub fn bookkeeping_bytes(&self) -> u64 {
        let slots: u64 = self.slots.read().iter().map(|s| s.bookkeeping_bytes()).sum();
        slots + self.rings.as_ref().map_or(0, DirtyRings::bookkeeping_bytes)
    }

    /// A snapshot of every statistic.
    pub fn stats(&self) -> Stats {
        use core::sync::atomic::Ordering::Relaxed;
        let c = &self.counters;
        let counts = self.tables.read().counts();
        let mut why = [0; crate::reason::WhyNotHuge::COUNT];
        for (i, w) in why.iter_mut().enumerate() {
            *w = c.sum(|h| &h.why[i]);
        }
        Stats {
            pages_4k: counts.leaves[0],
            pages_2m: counts.leaves[1],
            pages_1g: counts.leaves[2],
            remote_tlb_flush: c.remote_tlb_flush.load(Relaxed),
            remote_tlb_flush_requests: c.remote_tlb_flush_requests.load(Relaxed),
            remote_tlb_flush_ranges: c.remote_tlb_flush_ranges.load(Relaxed),
            nx_lpage_splits: self.nx.lock().queue.len() as u64,
            faults: c.sum(|h| &h.faults),
            retries: c.sum(|h| &h.retries),
            spurious: c.sum(|h| &h.spurious),
            mmio: c.mmio.load(Relaxed),
            splits: c.sum(|h| &h.splits),
            eager_splits: c.eager_splits.load(Relaxed),
            huge_on_fault: c.sum(|h| &h.huge_on_fault),
            recoveries: c.recoveries.load(Relaxed),
            zapped_leaves: c.zapped_leaves.load(Relaxed),
            invalidations: c.invalidations.load(Relaxed),
            write_protected: c.write_protected.load(Relaxed),
            dirty_pages_harvested: c.dirty_pages_harvested.load(Relaxed),
            nx_recovered: c.nx_recovered.load(Relaxed),
            dirty_ring_full: c.dirty_ring_full.load(Relaxed),
            table_pages: counts.table_pages,
            why_not_huge: why,
        }
    }

    // ---- flushing -----------------------------------------------------------------------

    /// Send a batch to the TLB, counting it as KVM counts `kvm_flush_remote_tlbs`: one request,
    /// and one flush if anything was flushed (so flushes never exceed requests); the range
    /// invalidations it took go to `remote_tlb_flush_ranges`.
    pub(crate) fn flush(&self, batch: &FlushBatch) {
        if batch.is_empty() {
            return;
        }
        Counters::inc(&self.counters.remote_tlb_flush_requests);
        if tlb::apply(&self.tlb, batch) {
            Counters::inc(&self.counters.remote_tlb_flush);
            let calls = if batch.is_all() { 1 } else { batch.ranges().len() as u64 };
            Counters::add(&self.counters.remote_tlb_flush_ranges, calls);
        }
    }

    /// The TLB handed to slat-pt for break-before-make: each range it invalidates now counts as
    /// one request, one flush and one range.
    pub(crate) fn bbm_tlb(&self) -> BbmTlb<'_, P::Tlb> {
        BbmTlb { tlb: &self.tlb, counters: &self.counters }
    }

    /// Start an exclusive section (see [`Exclusive`]).
    pub(crate) fn exclusive(&self) -> Exclusive<'_, F, P> {
        Exclusive::new(self)
    }

    /// End of an exclusive section: flush everything the section changed, then free the pages it
    /// detached and the pages faults parked earlier.
    pub(crate) fn finish(&self, pt: &PageTable<F, P::Frames>, batch: FlushBatch) {
        self.flush(&batch);
        let parked: Vec<Detached> = core::mem::take(&mut *self.pending_free.lock());
        // SAFETY: the caller holds the tables lock exclusively, so no shared operation walks the
        // tree; the flush above retired every translation cached from `batch`'s pages, and the
        // parked pages were flushed by the faults that detached them before they were parked.
        unsafe {
            pt.free_detached(batch.into_detached());
            pt.free_detached(parked);
        }
    }

    // ---- zapping ------------------------------------------------------------------------

    /// Remove every leaf overlapping gfns `g0..g1` of `slot`, carrying dirty/accessed state to
    /// the host (and to the dirty log when the slot is logged: a zapped writable leaf may have
    /// been written through the TLB without a fault). Obligations go into `batch`.
    pub(crate) fn zap(
        &self,
        pt: &mut PageTable<F, P::Frames>,
        slot: Option<&Memslot<P::Lock>>,
        g0: u64,
        g1: u64,
        batch: &mut FlushBatch,
    ) -> u64 {
        let mut zapped = 0;
        let host = &self.host;
        let logged = slot.filter(|s| s.is_logging());
        let mut visit = |l: &Leaf| {
            zapped += 1;
            let pfn = l.pa / PAGE_SIZE;
            let written = l.attrs.dirty || l.attrs.perms.contains(slat_pt::Perms::WRITE);
            if written {
                host.mark_dirty(Pfn(pfn), l.size.pages());
                if let Some(s) = logged {
                    let gfn = l.gpa.gfn().0;
                    for g in gfn.max(s.base_gfn)..(gfn + l.size.pages()).min(s.end_gfn()) {
                        s.mark_dirty(g);
                    }
                }
            }
            if l.attrs.accessed {
                host.mark_accessed(Pfn(pfn), l.size.pages());
            }
        };
        let r = pt.unmap(Gpa(g0 * PAGE_SIZE), (g1 - g0) * PAGE_SIZE, batch, Some(&mut visit));
        debug_assert!(r.is_ok(), "zap range is page aligned and inside the space");
        Counters::add(&self.counters.zapped_leaves, zapped);
        // NX-split blocks wholly zapped are no longer split.
        self.nx.lock().queue.retain(|&(g, s)| !(g >= g0 && g + s.pages() <= g1));
        zapped
    }

    /// An MMU-initiated invalidation of gfns `g0..g1`: racing faults retry, leaves are zapped,
    /// one flush, then `change` runs (still under the exclusive lock, before faults may proceed).
    pub(crate) fn invalidate_gfns(&self, slot: Option<&Memslot<P::Lock>>, g0: u64, g1: u64, change: impl FnOnce()) {
        self.invalidate_gfns_within(slot, (g0, g1), g0, g1, change);
    }

    /// [`invalidate_gfns`](Self::invalidate_gfns) whose in-progress range `window` is wider
    /// than the zapped gfns (faults next to an attribute change retry too).
    pub(crate) fn invalidate_gfns_within(
        &self,
        slot: Option<&Memslot<P::Lock>>,
        window: (u64, u64),
        g0: u64,
        g1: u64,
        change: impl FnOnce(),
    ) {
        let _inval = InvalidateGuard::begin(&self.inval, window.0, window.1);
        let mut x = self.exclusive();
        self.zap_chunked(&mut x, slot, g0, g1);
        change();
        Counters::inc(&self.counters.invalidations);
    }

    /// [`zap`](Self::zap) gfns `g0..g1` in chunks of [`YIELD_PAGES`], flushing and yielding the
    /// exclusive lock between chunks (the caller's invalidation keeps faults off the range).
    pub(crate) fn zap_chunked(&self, x: &mut Exclusive<'_, F, P>, slot: Option<&Memslot<P::Lock>>, g0: u64, g1: u64) {
        let mut at = g0;
        while at < g1 {
            let stop = (at + YIELD_PAGES).min(g1);
            let (pt, batch) = x.parts();
            let zapped = self.zap(pt, slot, at, stop, batch);
            at = stop;
            if at < g1 {
                x.account(zapped);
            }
        }
    }

    // ---- memslots -----------------------------------------------------------------------

    /// Add a memslot after validating it (size, alignment, overlap, address width).
    ///
    /// A slot added while the host is in the middle of an invalidation (between
    /// [`invalidate_range_start`](MmuNotifier::invalidate_range_start) and its end) is published
    /// with its gfns covered by that invalidation: faults on it retry until the host has
    /// finished changing its memory, so no fault installs a page the host is replacing.
    ///
    /// # Errors
    /// [`MmuError::Memslot`] when the spec is invalid or overlaps a slot; nothing changes.
    pub fn add_memslot(&self, spec: MemslotSpec) -> Result<(), MmuError> {
        let _update = self.slots_update.lock();
        let mut slots = self.slots.write();
        slots.validate(&spec, F::INPUT_BITS)?;
        let slot = Memslot::new(&spec);
        if spec.log_dirty {
            slot.fill_dirty(self.initially_set());
        }
        self.inval.cover(slot.base_gfn, slot.end_gfn());
        slots.insert(alloc::sync::Arc::new(slot));
        Ok(())
    }

    /// Delete a memslot: its leaves are zapped through the invalidation protocol, in bounded
    /// chunks. Faults on the slot retry while it is being deleted (KVM's `KVM_MEMSLOT_INVALID`);
    /// faults elsewhere run between the chunks.
    ///
    /// # Errors
    /// [`MmuError::Memslot`] when the slot does not exist.
    pub fn delete_memslot(&self, id: u32) -> Result<(), MmuError> {
        let _update = self.slots_update.lock();
        let slot = self.slot(id)?;
        let _inval = InvalidateGuard::begin(&self.inval, slot.base_gfn, slot.end_gfn());
        let mut x = self.exclusive();
        self.zap_chunked(&mut x, Some(&slot), slot.base_gfn, slot.end_gfn());
        // Faults on the slot have retried since the invalidation began, so nothing was
        // installed in it between the chunks; removal completes the delete. (Flush first and
        // release the table lock: `slots` comes before `tables` in the lock order.)
        drop(x);
        self.slots.write().remove(id);
        Counters::inc(&self.counters.invalidations);
        Ok(())
    }

    /// Move a memslot to a new base gfn (same host range, `KVM_MR_MOVE`): the old gfns are
    /// zapped through an invalidation, and the slot is published at its new gfns.
    ///
    /// What moves with the slot, as in KVM: its logging flag and its dirty bitmap (bit `i` still
    /// means page `i` of the slot, so no dirty page is lost; zapping the old gfns adds any page
    /// whose writable leaf goes away). What is reset: write tracking and memory types, which
    /// are keyed by gfn (KVM rebuilds `lpage_info` and the write-track array for the new gfns;
    /// a hypervisor re-applies them after the move).
    ///
    /// # Errors
    /// [`MmuError::Memslot`] when the slot does not exist or the new range is invalid or
    /// overlaps another slot. A failed move changes nothing: the slot keeps its gfns, leaves,
    /// dirty log, write tracking and memory types.
    pub fn move_memslot(&self, id: u32, new_base_gfn: Gfn) -> Result<(), MmuError> {
        let new_base_gfn = new_base_gfn.0;
        let _update = self.slots_update.lock();
        let old = self.slot(id)?;
        let spec = MemslotSpec {
            id,
            base_gfn: Gfn(new_base_gfn),
            npages: old.npages,
            hva: Hva(old.hva),
            readonly: old.readonly,
            log_dirty: old.is_logging(),
        };
        self.slots.read().validate_move(&spec, F::INPUT_BITS)?;
        // As for a delete: the old gfns are zapped in bounded chunks under an invalidation (faults
        // on them retry, faults elsewhere run between chunks); memslot changes are serialized by
        // `slots_update`, so the validation above still holds when the slot is republished.
        let _inval = InvalidateGuard::begin(&self.inval, old.base_gfn, old.end_gfn());
        let mut x = self.exclusive();
        self.zap_chunked(&mut x, Some(&old), old.base_gfn, old.end_gfn());
        Counters::inc(&self.counters.invalidations);
        drop(x);
        // The bitmap is copied after the zap, which logged every writable leaf it removed.
        let moved = old.moved_to(new_base_gfn);
        let mut slots = self.slots.write();
        slots.remove(id);
        self.inval.cover(moved.base_gfn, moved.end_gfn());
        slots.insert(alloc::sync::Arc::new(moved));
        Ok(())
    }

    pub(crate) fn slot(&self, id: u32) -> Result<alloc::sync::Arc<Memslot<P::Lock>>, MmuError> {
        Ok(self.slots.read().get(id).ok_or(MemslotError::NotFound { id })?.clone())
    }

    pub(crate) fn initially_set(&self) -> bool {
        matches!(self.config.harvest, crate::config::HarvestMode::ManualClear { initially_set: true })
    }

    // ---- write tracking and attributes ----------------------------------------------------

    /// Write-track `gfn`: no huge leaf may cover it and guest writes to it fault
    /// ([`FaultOutcome::WriteTracked`](crate::FaultOutcome::WriteTracked)). Counts nest.
    ///
    /// # Errors
    /// [`MmuError::NoMemslot`] when `gfn` is in no memslot.
    pub fn write_track(&self, gfn: Gfn) -> Result<(), MmuError> {
        let gfn = gfn.0;
        let slot = self.slot_of(gfn)?;
        self.invalidate_gfns(Some(&slot), gfn, gfn + 1, || {
            slot.track(gfn, true);
        });
        Ok(())
    }

    /// Drop one write-tracking reference to `gfn`.
    ///
    /// # Errors
    /// [`MmuError::NoMemslot`] when `gfn` is in no memslot.
    pub fn write_untrack(&self, gfn: Gfn) -> Result<(), MmuError> {
        let gfn = gfn.0;
        let slot = self.slot_of(gfn)?;
        slot.track(gfn, false);
        Ok(())
    }

    /// Set the memory type of `npages` gfns from `gfn` (all in one slot). The invalidation covers
    /// the huge blocks straddling the range's edges, so faults next to it retry too.
    ///
    /// # Errors
    /// [`MmuError::NoMemslot`] when `gfn` is in no memslot; [`MmuError::Memslot`] when the
    /// range leaves the slot or overflows.
    pub fn set_memory_type(&self, gfn: Gfn, npages: u64, mem_type: MemType) -> Result<(), MmuError> {
        let gfn = gfn.0;
        let slot = self.slot_of(gfn)?;
        if npages == 0 || gfn.checked_add(npages).is_none_or(|end| end > slot.end_gfn()) {
            return Err(MemslotError::OutOfSlot { id: slot.id, gfn: Gfn(gfn), npages }.into());
        }
        let g = PageSize::Size1G.pages();
        let (w0, w1) = ((gfn & !(g - 1)).max(slot.base_gfn), ((gfn + npages).div_ceil(g) * g).min(slot.end_gfn()));
        self.invalidate_gfns_within(Some(&slot), (w0, w1), gfn, gfn + npages, || {
            slot.set_mem_type(gfn, npages, mem_type);
        });
        Ok(())
    }

    pub(crate) fn slot_of(&self, gfn: u64) -> Result<alloc::sync::Arc<Memslot<P::Lock>>, MmuError> {
        self.slots.read().find_gfn(gfn).cloned().ok_or(MmuError::NoMemslot { gfn: Gfn(gfn) })
    }
}

impl<F: Format, P: Platform> MmuNotifier for Mmu<F, P> {
    fn invalidate_range_start(&self, start: Hva, end: Hva) {
        let slots = self.slots.read();
        let hits = slots.hva_to_gfns(start.0, end.0);
        if hits.is_empty() {
            // Nothing of the guest is affected: count it (begin/end stay balanced) with an
            // empty range, without the MMU lock.
            self.inval.begin(u64::MAX, 0);
            return;
        }
        // The host pairs this with `invalidate_range_end`, which ends the invalidation; the
        // exclusive section (and its flush) ends here.
        let mut x = self.exclusive();
        self.inval.begin(u64::MAX, 0);
        for (_, g0, g1) in &hits {
            self.inval.add_range(*g0, *g1);
        }
        for (slot, g0, g1) in &hits {
            self.zap_chunked(&mut x, Some(slot), *g0, *g1);
        }
        Counters::inc(&self.counters.invalidations);
    }

    fn invalidate_range_end(&self, _start: Hva, _end: Hva) {
        self.inval.end();
    }

    fn clear_young(&self, start: Hva, end: Hva) -> bool {
        let (start, end) = (start.0, end.0);
        let slots = self.slots.read();
        let pt = self.tables.read();
        let mut young = false;
        for (_, g0, g1) in slots.hva_to_gfns(start, end) {
            young |= pt.clear_young(Gpa(g0 * PAGE_SIZE), (g1 - g0) * PAGE_SIZE);
        }
        young
    }

    fn test_young(&self, start: Hva, end: Hva) -> bool {
        let (start, end) = (start.0, end.0);
        let slots = self.slots.read();
        let pt = self.tables.read();
        slots
            .hva_to_gfns(start, end)
            .iter()
            .any(|(_, g0, g1)| pt.test_young(Gpa(g0 * PAGE_SIZE), (g1 - g0) * PAGE_SIZE))
    }
}

impl<F: Format, P: Platform> Drop for Mmu<F, P> {
    /// Teardown: the page-table pages faults parked for deferred freeing go back to the
    /// allocator (the table frees its own tree when it drops, after this).
    fn drop(&mut self) {
        let parked: Vec<Detached> = core::mem::take(self.pending_free.get_mut());
        // SAFETY: `&mut self`: no operation of this MMU runs or can start, and every parked page
        // was flushed by the fault that detached it before it was parked.
        unsafe { self.tables.get_mut().free_detached(parked) };
    }
}

impl<F: Format, P: Platform> core::fmt::Debug for Mmu<F, P> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Mmu")
            .field("format", &F::NAME)
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// The MMU's [`Tlb`] as slat-pt sees it during an operation: flushes go to the embedder's TLB
/// and are counted as KVM counts `kvm_flush_remote_tlbs` for a break-before-make.
pub(crate) struct BbmTlb<'a, T> {
    tlb: &'a T,
    counters: &'a Counters,
}

impl<T: Tlb> Tlb for BbmTlb<'_, T> {
    fn flush_range(&self, range: &FlushRange) {
        Counters::inc(&self.counters.remote_tlb_flush_requests);
        Counters::inc(&self.counters.remote_tlb_flush);
        Counters::inc(&self.counters.remote_tlb_flush_ranges);
        self.tlb.flush_range(range);
    }
    fn flush_all(&self) {
        Counters::inc(&self.counters.remote_tlb_flush_requests);
        Counters::inc(&self.counters.remote_tlb_flush);
        Counters::inc(&self.counters.remote_tlb_flush_ranges);
        self.tlb.flush_all();
    }
    fn cache_maintenance(&self) -> CacheMaintenance {
        self.tlb.cache_maintenance()
    }
    fn clean_dcache(&self, pa: u64, len: u64) {
        self.tlb.clean_dcache(pa, len)
    }
    fn invalidate_icache(&self, pa: u64, len: u64) {
        self.tlb.invalidate_icache(pa, len)
    }
}
