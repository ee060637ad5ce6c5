//! [`Platform`]: everything an embedder supplies besides the page-table format, bundled in one
//! type parameter.
//!
//! An embedder names its parts once:
//!
//! ```
//! use slat_mmu::testing::{FakeHost, RecordingTlb};
//! use slat_mmu::{DefaultRawLock, Mmu, MmuConfig, Platform};
//! use slat_pt::{format::Ept4, SimFrameAllocator};
//!
//! /// My hypervisor: where its page-table frames come from, its host memory manager, its TLB
//! /// and its lock.
//! struct MyHv;
//! impl Platform for MyHv {
//!     type Frames = SimFrameAllocator;
//!     type Host = FakeHost;
//!     type Tlb = RecordingTlb;
//!     type Lock = DefaultRawLock;
//! }
//!
//! let mmu = Mmu::<Ept4, MyHv>::new(
//!     MmuConfig::default(),
//!     SimFrameAllocator::new(0x100_0000_0000, 1 << 30),
//!     FakeHost::new(),
//!     RecordingTlb::default(),
//! )
//! .unwrap();
//! assert_eq!(mmu.stats().table_pages, 1);
//! ```
//!
//! [`Parts`] is the same bundle as a generic type, for code that is itself generic over the parts
//! (tests, simulators): `Mmu<Ept4, Parts<A, H, T>>`.

use core::marker::PhantomData;

use lock_api::RawRwLock;
use slat_pt::FrameAllocator;

use crate::host::HostMemory;
use crate::tlb::Tlb;

/// The embedder's side of an [`Mmu`](crate::Mmu): where page-table frames come from, the host
/// memory manager, the TLB (and cache maintenance), and the raw reader-writer lock.
///
/// The type implementing it is only a name; the values are passed to
/// [`Mmu::new`](crate::Mmu::new).
pub trait Platform {
    /// Where page-table frames come from (and are returned to).
    type Frames: FrameAllocator;
    /// The host memory manager: host virtual address to host page.
    type Host: HostMemory;
    /// TLB invalidation and cache maintenance.
    type Tlb: Tlb;
    /// The raw reader-writer lock every MMU lock is built from (any `lock_api::RawRwLock`:
    /// [`DefaultRawLock`](crate::DefaultRawLock) spins and needs no `std`; `parking_lot`'s blocks).
    type Lock: RawRwLock;
}

/// A [`Platform`] assembled from its four parts as type parameters (the lock defaults to
/// [`DefaultRawLock`](crate::DefaultRawLock)).
pub struct Parts<A, H, T, R = crate::DefaultRawLock>(PhantomData<Marker<A, H, T, R>>);

/// `Parts` owns nothing: it is `Send`, `Sync` and `'static`-agnostic whatever its parts are.
type Marker<A, H, T, R> = fn() -> (A, H, T, R);

impl<A: FrameAllocator, H: HostMemory, T: Tlb, R: RawRwLock> Platform for Parts<A, H, T, R> {
    type Frames = A;
    type Host = H;
    type Tlb = T;
    type Lock = R;
}
