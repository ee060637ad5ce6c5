//! # slat-pt: second-level page tables
//!
//! Bit-exact hardware page-table formats for stage-2 translation (Intel EPT 4/5-level, AMD NPT,
//! arm64 stage-2 with a 4 KiB granule, RISC-V G-stage Sv39x4/Sv48x4), tables of atomic entries
//! in frames from an embedder-supplied [`FrameAllocator`], and operations over guest-physical
//! ranges: map, unmap, protect, harvest dirty, age, split, collapse, translate, iterate, count.
//!
//! The crate knows nothing of memslots, hosts or policy (that is `slat-mmu`). It is `no_std`
//! with `alloc`.
//!
//! Layers inside the crate, bottom up: [`size`] and [`attrs`] (vocabulary), [`format`] (entry
//! encodings, pure functions), [`frame`] (where tables live), [`flush`] (TLB obligations as
//! values), `node` (the only raw entry access) and `cursor` (the one restartable walk), and
//! [`table`] (the tree and every operation on it as a loop over the cursor, with the locking
//! protocol written at the top of that module).
//!
//! Feature `sim` adds what simulators and tests need and an embedder does not:
//! [`SimFrameAllocator`] (frames in a simulated physical address space) and
//! `PageTable::hw_walk` (a hardware walk that sets accessed/dirty state).
//!
//! ```
//! use slat_pt::{format::Ept4, FlushBatch, Gpa, LeafAttrs, Mapping, NoTlb, PageSize, PageTable, Perms, SimFrameAllocator};
//!
//! let frames = SimFrameAllocator::new(0x100_0000_0000, 64 << 20);
//! let mut pt = PageTable::<Ept4, _>::new(&frames).unwrap();
//! // Map 4 MiB of guest-physical memory at 1 GiB with 2 MiB leaves.
//! let m = Mapping { pa: 0x8000_0000, size: PageSize::Size2M, attrs: LeafAttrs::ram(Perms::RW) };
//! let mut batch = FlushBatch::new();
//! // The table is not live yet (no CPU walks it), so it needs no TLB: `NoTlb`. On a live table
//! // the embedder's `Tlb` performs break-before-make where the format requires it.
//! pt.map(Gpa(0x4000_0000), 4 << 20, &m, &mut batch, &NoTlb).unwrap();
//! assert!(batch.is_empty()); // nothing was mapped before, so nothing to flush
//! let t = pt.translate(Gpa(0x4012_3456)).unwrap();
//! assert_eq!((t.pa, t.size), (0x8012_3456, PageSize::Size2M));
//! assert_eq!(pt.counts().leaves, [0, 2, 0]);
//!
//! // Unmapping hands back a flush to perform before the tables can be freed.
//! pt.unmap(Gpa(0x4000_0000), 4 << 20, &mut batch, None).unwrap();
//! assert!(batch.covers(Gpa(0x4020_0000)));
//! // SAFETY: no TLB or walker in this example holds the detached tables.
//! unsafe { pt.free_detached(batch.into_detached()) };
//! ```
#![no_std]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod addr;
pub mod attrs;
mod cursor;
pub mod flush;
pub mod format;
pub mod frame;
mod node;
#[cfg(feature = "sim")]
pub mod sim;
pub mod size;
pub mod table;

pub use addr::{Gfn, Gpa, Hva, Pfn};
pub use attrs::{Access, LeafAttrs, MemType, Perms, SwBits};
pub use flush::{apply, CacheMaintenance, Detached, DetachedList, FlushBatch, FlushRange, NoTlb, Tlb};
pub use format::{Format, Pte};
#[cfg(feature = "sim")]
pub use frame::SimFrameAllocator;
pub use frame::{Frame, FrameAllocator};
#[cfg(feature = "sim")]
pub use sim::{HwWalk, WalkFault};
pub use size::{Level, PageSize, PAGE_SIZE};
pub use table::{
    CollapseError, Counts, Installed, Leaf, Mapping, PageTable, PtError, RefaultRule, SplitProgress, Translation,
    WidenOnly,
};
