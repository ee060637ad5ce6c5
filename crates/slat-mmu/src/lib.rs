//! # slat-mmu: a hypervisor stage-2 MMU with huge pages
//!
//! The part of a hypervisor that maps guest-physical memory to host-physical memory, built on
//! `slat-pt`: memslots and their large-page bookkeeping, the fault path, the invalidation
//! protocol, dirty logging with huge pages (bitmap and per-vCPU dirty rings), recovery of huge leaves, the NX huge-page workaround,
//! statistics with KVM's names, an explanation of every leaf-size decision, and an audit of the
//! invariants.
//!
//! It talks to the host only through [`HostMemory`] (and receives the host's changes through
//! [`MmuNotifier`]), and to the CPU only through [`Tlb`]. Locks come from `lock_api`, so a
//! `no_std` embedder brings its own; the default is a spin lock.
//!
//! See [`Mmu`] for an example that embeds the MMU.
#![no_std]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod audit;
pub mod config;
mod dirty;
mod exclusive;
mod fault;
pub mod host;
mod invalidate;
pub mod memslot;
mod mmu;
pub mod notifier;
mod policy;
pub mod reason;
mod recover;
mod ring;
#[cfg(feature = "std")]
pub mod sharded;
pub mod stats;
pub mod testing;
pub mod tlb;

pub use audit::{AuditError, AuditReport, Invariant, Violation, WhyReport};
pub use config::{DirtyLogMode, DirtyRingConfig, HarvestMode, MmuConfig, NxPolicy, RecoveryPolicy};
pub use fault::{FaultError, FaultOutcome};
pub use host::{BackingKind, HostError, HostMemory, HostPage};
pub use memslot::{MemslotError, MemslotInfo, MemslotSpec};
pub use mmu::{DefaultRawLock, Mmu, MmuError};
pub use notifier::MmuNotifier;
pub use reason::{Decision, Explanation, ReasonSet, WhyNotHuge};
pub use recover::RecoveryReport;
pub use stats::Stats;
pub use tlb::{CacheMaintenance, Tlb};

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
pub type StdMmu<F, A, H, T> = Mmu<F, A, H, T, parking_lot::RawRwLock>;
