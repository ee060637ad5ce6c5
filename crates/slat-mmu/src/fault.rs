//! The fault path: find the memslot, ask the host, decide the leaf size (recording why it is not
//! larger), re-check against invalidations under the shared lock, install with compare-and-swap.

use crate::platform::Platform;
use slat_pt::{
    Access, FlushBatch, Format, Gpa, Hva, Mapping, MemType, PageSize, PageTable, Perms, Pfn, PtError, PAGE_SIZE,
};

use crate::config::DirtyLogMode;
use crate::host::{HostError, HostMemory};
use crate::mmu::Mmu;
use crate::policy::LeafUse;
use crate::reason::WhyNotHuge;
use crate::ring::Push;
use crate::stats::Counters;
use crate::tlb::Tlb;

/// What a fault did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOutcome {
    /// A leaf of `size` now translates the address.
    Mapped {
        /// Leaf size installed (or found).
        size: PageSize,
        /// A new leaf was installed (false: the translation was already there, or only its
        /// permissions changed).
        new_leaf: bool,
        /// Huge leaves split on the way.
        splits: u32,
    },
    /// The fault raced an invalidation (or met an entry being changed), or it is a write that
    /// would make a page writable while the vCPU's dirty ring is completely full: resume the
    /// guest, which faults again (after the hypervisor honoured
    /// [`Mmu::dirty_ring_soft_full`](crate::Mmu::dirty_ring_soft_full) and harvested the ring).
    Retry,
    /// A write to a write-tracked gfn: the page is mapped read-only; the hypervisor must emulate
    /// the write.
    WriteTracked,
}

/// Faults the MMU cannot resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FaultError {
    /// No memslot covers the address: an MMIO exit for the hypervisor.
    #[error("no memslot covers gpa {gpa:#x} (MMIO)")]
    NoMemslot {
        /// The address.
        gpa: Gpa,
    },
    /// A write to a read-only memslot.
    #[error("write to read-only memslot {slot} at gpa {gpa:#x}")]
    ReadOnly {
        /// The address.
        gpa: Gpa,
        /// The slot.
        slot: u32,
    },
    /// The host could not provide the page.
    #[error("host: {0}")]
    Host(HostError),
    /// The page table refused (for example out of frames).
    #[error("page table: {0}")]
    Table(PtError),
    /// A vCPU id at or above [`DirtyRingConfig::max_vcpus`](crate::DirtyRingConfig::max_vcpus).
    #[error("vCPU {vcpu} has no dirty ring (max_vcpus is {max_vcpus})")]
    NoVcpu {
        /// The vCPU id.
        vcpu: u32,
        /// The configured limit.
        max_vcpus: u32,
    },
}

impl<F: Format, P: Platform> Mmu<F, P> {
    /// Handle a stage-2 fault at `gpa` for `access` on vCPU 0 (see
    /// [`handle_fault_on`](Self::handle_fault_on)).
    ///
    /// # Errors
    /// As for [`handle_fault_on`](Self::handle_fault_on).
    pub fn handle_fault(&self, gpa: Gpa, access: Access) -> Result<FaultOutcome, FaultError> {
        self.handle_fault_on(0, gpa, access)
    }

    /// Handle a stage-2 fault at `gpa` for `access` taken by vCPU `vcpu`.
    ///
    /// With [`MmuConfig::dirty_ring`](crate::MmuConfig::dirty_ring) set, a write that makes a
    /// page of a logged memslot writable is recorded in `vcpu`'s dirty ring as well as in the
    /// slot's bitmap. The fault still completes normally when that record reaches the ring's
    /// soft limit; as with KVM's `KVM_REQ_DIRTY_RING_SOFT_FULL`, the hypervisor checks
    /// [`dirty_ring_soft_full`](Self::dirty_ring_soft_full) before re-entering the vCPU
    /// (`KVM_EXIT_DIRTY_RING_FULL`) and harvests. Only if the ring is completely full is the
    /// write refused with [`FaultOutcome::Retry`]. Without a ring `vcpu` is ignored.
    ///
    /// # Errors
    /// [`FaultError::NoMemslot`] for a gpa outside every memslot (an MMIO exit);
    /// [`FaultError::ReadOnly`] for a write to a read-only slot; [`FaultError::Host`] when the host
    /// cannot back the page (unmapped, read-only, out of memory, hardware-poisoned: inject a machine
    /// check); [`FaultError::Table`] when the page table has no frame for a new table;
    /// [`FaultError::NoVcpu`] when `vcpu` has no dirty ring. Nothing is installed on any error.
    pub fn handle_fault_on(&self, vcpu: u32, gpa: Gpa, access: Access) -> Result<FaultOutcome, FaultError> {
        let gpa = gpa.0;
        if let Some(r) = self.config.dirty_ring {
            if vcpu >= r.max_vcpus {
                return Err(FaultError::NoVcpu { vcpu, max_vcpus: r.max_vcpus });
            }
        }
        let gfn = gpa / PAGE_SIZE;
        let hot = self.counters.hot(gfn);
        Counters::inc(&hot.faults);
        // (2) Snapshot the invalidation sequence before asking the host.
        let seq = self.inval.snapshot();
        // The memslot set stays read-locked for the whole fault (as under KVM's SRCU): memslot
        // changes wait for faults in flight, and no per-fault reference count is touched.
        let slots = self.slots.read();
        let Some(slot) = slots.find_gfn(gfn) else {
            Counters::inc(&self.counters.mmio);
            return Err(FaultError::NoMemslot { gpa: Gpa(gpa) });
        };
        let write = access == Access::Write;
        if write && slot.readonly {
            return Err(FaultError::ReadOnly { gpa: Gpa(gpa), slot: slot.id });
        }
        let tracked = slot.disallow_count(gfn, PageSize::Size2M) > 0 && slot.is_write_tracked(gfn);
        let host = match self.host.fault_in(Hva(slot.hva_of(gfn)), write && !tracked) {
            Ok(h) => h,
            Err(HostError::Again { .. }) => {
                Counters::inc(&hot.retries);
                return Ok(FaultOutcome::Retry);
            }
            Err(e) => return Err(FaultError::Host(e)),
        };

        // (3) Leaf size and why not larger.
        let exec = access == Access::Exec;
        let decision = self.decide(slot, gfn, Some(&host), exec);
        let mut size = decision.size;
        if (host.pfn.0 ^ gfn) & (size.pages() - 1) != 0 {
            // The host broke its own contract (a huge leaf must map a size-aligned block);
            // never install a leaf that would translate the wrong pages.
            size = PageSize::Size4K;
        }
        if let Some(r) = decision.primary() {
            Counters::inc(&hot.why[r as usize]);
        }
        let logging = slot.is_logging();
        let attrs = self.leaf_attrs(slot, gfn, size, &host, LeafUse::Fault { write, tracked });
        let grant_write = attrs.perms.contains(Perms::WRITE);
        let mask = size.pages() - 1;
        let block = gfn & !mask;
        let m = Mapping { pa: (host.pfn.0 & !mask) * PAGE_SIZE, size, attrs };
        // The NX workaround: the largest leaf the rules would allow without it. Tables an exec
        // fault creates below that size are tracked (KVM's `nx_huge_page_disallowed`).
        let nx_req =
            if self.config.nx.is_some() && exec { decision.size_without(WhyNotHuge::NxHugePage) } else { size };
        self.cache_maintenance(&m);

        // A write while logging is recorded in the log (and the vCPU's dirty ring) right before
        // the leaf that makes it writable is installed, under the same lock hold: a harvest
        // (which holds the lock exclusively) either runs before both or after both, never in
        // between. `false`: the ring is full, nothing may be made writable.
        let mark = || -> bool {
            if !(logging && write && grant_write) {
                return true;
            }
            if let Some(rings) = &self.rings {
                match rings.push(vcpu, (slot.id, gfn - slot.base_gfn)) {
                    Some(Push::Recorded { reached_soft_limit }) => {
                        if reached_soft_limit {
                            Counters::inc(&self.counters.dirty_ring_full);
                        }
                    }
                    Some(Push::Full) | None => return false,
                }
            }
            slot.mark_dirty(gfn);
            true
        };

        // (4) Under the shared lock: retry on a racing invalidation over the whole block.
        let pt = self.tables.read();
        if self.inval.must_retry(seq, block, block + size.pages()) {
            Counters::inc(&hot.retries);
            return Ok(FaultOutcome::Retry);
        }
        // The size of a leaf already covering the block matters only to the lazily-drop path;
        // other faults skip this extra walk.
        let wp_write = logging && write && self.config.dirty_log == DirtyLogMode::WriteProtect;
        let existing = if wp_write { pt.translate_pa(Gpa(block * PAGE_SIZE)).map(|(_, s)| s) } else { None };
        let result = if wp_write && existing > Some(size) {
            // Lazily drop the large leaf: zap it and map only the written page.
            drop(pt);
            let mut x = self.exclusive();
            if self.inval.must_retry(seq, block, block + size.pages()) || !mark() {
                Counters::inc(&hot.retries);
                return Ok(FaultOutcome::Retry);
            }
            let big = existing.unwrap_or(PageSize::Size4K);
            let b = gfn & !(big.pages() - 1);
            let (pt, batch) = x.parts();
            self.zap(pt, Some(slot), b, b + big.pages(), batch);
            self.install(pt, block, &m, batch)
        } else {
            if !mark() {
                Counters::inc(&hot.retries);
                return Ok(FaultOutcome::Retry);
            }
            let mut batch = FlushBatch::new();
            let r = self.install(&pt, block, &m, &mut batch);
            self.retire_shared(batch);
            r
        };
        let installed = match result {
            Ok(i) => i,
            Err(PtError::Busy) => {
                Counters::inc(&hot.retries);
                return Ok(FaultOutcome::Retry);
            }
            Err(e) => return Err(FaultError::Table(e)),
        };

        // (5) Accounting.
        if !installed.new_leaf {
            Counters::inc(&hot.spurious);
        }
        Counters::add(&hot.splits, installed.splits as u64);
        if installed.replaced_table {
            Counters::inc(&hot.huge_on_fault);
        }
        if nx_req > size {
            self.track_nx(gfn, size, nx_req, installed.new_table_levels);
        }
        self.host.mark_accessed(host.pfn, 1);
        if grant_write {
            // The host learns of every writable leaf when it is made (KVM since 6.13, commit
            // aa85986e7150): every page of a huge leaf, for a read fault too, since the guest may
            // write through it without another fault.
            self.host.mark_dirty(Pfn(host.pfn.0 & !mask), size.pages());
        }
        if tracked && write {
            return Ok(FaultOutcome::WriteTracked);
        }
        Ok(FaultOutcome::Mapped { size, new_leaf: installed.new_leaf, splits: installed.splits })
    }

    /// Cache maintenance before a leaf is installed (arm64 without FWB / DIC): clean the whole
    /// block to PoC when it is cacheable, invalidate the instruction cache when it is executable.
    fn cache_maintenance(&self, m: &Mapping) {
        let need = self.tlb.cache_maintenance();
        let cacheable = matches!(m.attrs.mem_type, MemType::WriteBack | MemType::WriteThrough);
        if need.clean_dcache && cacheable {
            self.tlb.clean_dcache(m.pa, m.size.bytes());
        }
        if need.invalidate_icache && m.attrs.perms.contains(Perms::EXEC) {
            self.tlb.invalidate_icache(m.pa, m.size.bytes());
        }
    }

    fn install(
        &self,
        pt: &PageTable<F, P::Frames>,
        block: u64,
        m: &Mapping,
        batch: &mut FlushBatch,
    ) -> Result<slat_pt::Installed, PtError> {
        pt.install_with(Gpa(block * PAGE_SIZE), m, &crate::policy::Refault, batch, &self.bbm_tlb())
    }
}
