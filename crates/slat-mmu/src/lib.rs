//! # slat-mmu: a hypervisor stage-2 MMU with huge pages
//!
//! The part of a hypervisor that maps guest-physical memory to host-physical memory, built on
//! `slat-pt`: memslots and their large-page bookkeeping, the fault path, the invalidation
//! protocol, dirty logging with huge pages (bitmap and per-vCPU dirty rings), recovery of huge
//! leaves, the NX huge-page workaround,
//! statistics with KVM's names, an explanation of every leaf-size decision, and an audit of the
//! invariants.
//!
//! It talks to the host only through [`HostMemory`] (and receives the host's changes through
//! [`MmuNotifier`]), and to the CPU only through [`Tlb`]. Locks come from `lock_api`, so a
//! `no_std` embedder brings its own; the default is a spin lock.
//!
//! See [`Mmu`] for an example that embeds the MMU.
//!
//! # Concurrency protocol
//!
//! This is the one place the protocol is written; the modules refer here.
//!
//! **Locks, in order.** `slots_update` (a mutex serializing memslot changes, KVM's
//! `slots_lock`), then `slots` (reader-writer, the memslot set), then `tables` (reader-writer,
//! the page table), then the small inner locks (the invalidation range, the parked-frame list, the
//! NX queue, per-slot tracking maps), which are never held while taking another lock. A fault holds
//! `slots` shared for its whole duration (as under KVM's SRCU) and `tables` shared while it
//! re-checks and installs. No path takes `slots` while holding `tables`.
//!
//! **Shared and exclusive.** Faults, eager split and in-place recovery hold `tables` shared and
//! change entries only by compare-and-swap from the value just read (slat-pt's protocol, at the
//! top of its `table` module). Zaps, protection changes, harvests and memslot changes hold it
//! exclusively through an `Exclusive` section: the write guard plus the flush batch, settled in
//! `Drop` (flush, then free), so no early return skips the flush.
//!
//! **Bounded holds, yield points.** Slot-wide exclusive walks go in chunks of at most 65,536 pages
//! and yield after about 65,536 leaf updates: before releasing the lock they flush everything the
//! hold changed and free what it detached (flush before yield, KVM's
//! `tdp_mmu_iter_cond_resched`), then resume from the next chunk (forward progress: every hold
//! completes at least one chunk).
//!
//! **Sequence and in-progress range.** A fault snapshots the invalidation sequence (acquire)
//! before asking the host, and under the shared lock retries if an invalidation is in progress
//! over any gfn of its candidate block or the sequence moved. `begin` (under the exclusive lock,
//! before zapping) raises the count and widens the range; `end` bumps the sequence (release) and
//! then drops the count, so a fault that sees the count fall also sees the new sequence. The count
//! and range change together under one small lock because `end` runs without the MMU lock.
//! MMU-initiated invalidations (memslot delete and move, write tracking, memory types, logging
//! flag flips) use the same protocol through an `InvalidateGuard` that ends in `Drop`, declared
//! before the `Exclusive` so the flush precedes the end.
//!
//! **Memslot publication.** A slot added or moved while a host invalidation is in flight is
//! published with its gfns added to the in-progress range (`Invalidation::cover`), so faults on
//! it retry until the host has finished; a deleted slot stays published, covered by its own
//! invalidation, until its leaves are zapped chunk by chunk.
//!
//! **Frozen entries and deferred free.** An entry being replaced is frozen (never present to
//! hardware); a shared operation that meets it backs off (`Retry`, or resumes later). Page-table
//! pages detached under the shared lock (a table replaced by a huge leaf) are flushed by their
//! detacher and parked in `pending_free`; the next exclusive section frees them, when no shared
//! walker can still hold a pointer into them; `Drop` frees what is left.
//!
//! **Dirty marking vs harvest.** A write fault in a logged slot marks the bitmap (and the vCPU's
//! ring) under the shared lock right before installing the writable leaf; a harvest holds the lock
//! exclusively, so it sees both or neither. A harvest chunk reads and clears its words,
//! re-protects exactly those pages and flushes before the lock is dropped. The host learns of
//! every writable leaf when it is made (`HostMemory::mark_dirty` over the whole leaf), so
//! clearing W or D for logging never loses a host-side dirty page.
//!
//! **Atomic orderings.** Bitmap words use `AcqRel` read-modify-writes (a fault's mark must be
//! visible to the harvest that clears it, and the clear to the re-protect that follows); the
//! logging flag is `Release`/`Acquire` (the bitmap is allocated before the flag is seen); the
//! large-page disallow counts are `AcqRel` (a write-track increment must be visible to a fault
//! deciding its size under the shared lock before the invalidation that follows it ends);
//! counters are `Relaxed` (statistics only).
#![no_std]
#![warn(missing_docs)]
#![warn(clippy::missing_errors_doc)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod audit;
pub mod config;
mod dirty;
mod exclusive;
pub mod explain;
mod fault;
pub mod host;
mod invalidate;
pub mod lock;
pub mod memslot;
mod mmu;
pub mod notifier;
mod nx;
pub mod platform;
mod policy;
pub mod reason;
mod recover;
mod ring;
#[cfg(feature = "std")]
pub mod sharded;
pub mod stats;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tlb;
mod view;

pub use audit::{AuditError, AuditReport, Invariant, Violation};
pub use config::{DirtyLogMode, DirtyRingConfig, HarvestMode, MmuConfig, NxPolicy, RecoveryPolicy};
pub use explain::WhyReport;
pub use fault::{FaultError, FaultOutcome};
pub use host::{BackingKind, HostError, HostMemory, HostPage};
pub use memslot::{MemslotError, MemslotInfo, MemslotSpec};
pub use mmu::{DefaultRawLock, Mmu, MmuError};
pub use notifier::MmuNotifier;
pub use platform::{Parts, Platform};
pub use reason::{Decision, Explanation, ReasonSet, WhyNotHuge};
pub use recover::RecoveryReport;
pub use slat_pt::{Gfn, Gpa, Hva, Pfn};
pub use stats::Stats;
pub use tlb::{CacheMaintenance, Tlb};
pub use view::TablesView;

/// An [`Mmu`] with a blocking reader-writer lock (`parking_lot`), for hosted hypervisors whose
/// vCPU threads may be descheduled while holding the MMU lock. `no_std` embedders use [`Mmu`]
/// with the default spin lock or their own `lock_api` lock.
///
/// ```
/// use slat_mmu::testing::{FakeHost, RecordingTlb};
/// use slat_mmu::{MmuConfig, StdMmu};
/// use slat_pt::{format::Npt, SimFrameAllocator};
/// let mmu: StdMmu<Npt, _, _, _> = StdMmu::new(
///     MmuConfig::default(),
///     SimFrameAllocator::new(0x100_0000_0000, 1 << 30),
///     FakeHost::new(),
///     RecordingTlb::default(),
/// )
/// .unwrap();
/// assert_eq!(mmu.stats().table_pages, 1);
/// ```
#[cfg(feature = "std")]
pub type StdMmu<F, A, H, T> = Mmu<F, Parts<A, H, T, parking_lot::RawRwLock>>;
