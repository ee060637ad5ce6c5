//! Per-vCPU dirty rings (KVM's `virt/kvm/dirty_ring.c`): each write fault that makes a page of a
//! logged memslot writable appends `(slot id, page offset)` to the faulting vCPU's ring.
//!
//! A ring holds at most `entries` records. When a push brings it to `soft_limit` the vCPU owes the
//! hypervisor a `KVM_EXIT_DIRTY_RING_FULL`: [`Mmu::dirty_ring_soft_full`](crate::Mmu::dirty_ring_soft_full)
//! says so until the ring is harvested. The entries between the soft limit and `entries` are the
//! reserve for writes the vCPU makes before it exits; a write fault that finds the ring
//! completely full is refused (the page stays read-only and the fault returns
//! [`FaultOutcome::Retry`](crate::FaultOutcome::Retry)) instead of overwriting a record, so no
//! dirty page is ever dropped from a ring.
//!
//! Rings are created on a vCPU's first push and keep their buffer (`entries` records) for the
//! life of the MMU, as KVM's mmap'ed rings do.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use lock_api::RawRwLock;

use crate::config::DirtyRingConfig;
use crate::lock::Mutex;

/// One ring record: (memslot id, page offset in the slot), KVM's `struct kvm_dirty_gfn`.
pub(crate) type DirtyGfn = (u32, u64);

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// Recorded; `reached_soft_limit`: this push brought the ring to its soft limit.
    Recorded {
        /// The ring's length became exactly the soft limit.
        reached_soft_limit: bool,
    },
    /// The ring is full (`entries` records): nothing recorded.
    Full,
}

/// The rings of every vCPU, indexed by vCPU id, created lazily.
pub(crate) struct DirtyRings<R: RawRwLock> {
    config: DirtyRingConfig,
    rings: Vec<spin::Once<Mutex<R, VecDeque<DirtyGfn>>>>,
}

impl<R: RawRwLock> DirtyRings<R> {
    pub(crate) fn new(config: DirtyRingConfig) -> Self {
        DirtyRings { config, rings: (0..config.max_vcpus).map(|_| spin::Once::new()).collect() }
    }

    fn ring(&self, vcpu: u32) -> Option<&Mutex<R, VecDeque<DirtyGfn>>> {
        let cap = self.config.entries as usize;
        self.rings.get(vcpu as usize).map(|o| o.call_once(|| Mutex::new(VecDeque::with_capacity(cap))))
    }

    /// Append a record to `vcpu`'s ring (`None`: no such vCPU).
    pub(crate) fn push(&self, vcpu: u32, gfn: DirtyGfn) -> Option<Push> {
        let mut r = self.ring(vcpu)?.lock();
        if r.len() >= self.config.entries as usize {
            return Some(Push::Full);
        }
        r.push_back(gfn);
        Some(Push::Recorded { reached_soft_limit: r.len() == self.config.soft_limit as usize })
    }

    /// Take every record of `vcpu`'s ring, oldest first (empty for an unknown vCPU).
    pub(crate) fn drain(&self, vcpu: u32) -> Vec<DirtyGfn> {
        match self.rings.get(vcpu as usize).and_then(|o| o.get()) {
            Some(r) => r.lock().drain(..).collect(),
            None => Vec::new(),
        }
    }

    /// Records in `vcpu`'s ring.
    pub(crate) fn len(&self, vcpu: u32) -> usize {
        self.rings.get(vcpu as usize).and_then(|o| o.get()).map_or(0, |r| r.lock().len())
    }

    /// Whether `vcpu`'s ring is at or above its soft limit.
    pub(crate) fn soft_full(&self, vcpu: u32) -> bool {
        self.len(vcpu) >= self.config.soft_limit as usize
    }

    /// Bytes held: the per-vCPU slots plus every created ring's buffer.
    pub(crate) fn bookkeeping_bytes(&self) -> u64 {
        let slots = self.rings.len() * core::mem::size_of::<spin::Once<Mutex<R, VecDeque<DirtyGfn>>>>();
        let buffers: usize = self
            .rings
            .iter()
            .filter_map(|o| o.get())
            .map(|r| r.lock().capacity() * core::mem::size_of::<DirtyGfn>())
            .sum();
        (slots + buffers) as u64
    }
}
