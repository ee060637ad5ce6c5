//! The CPU side of the MMU: TLB invalidation and cache maintenance through [`Tlb`].
//!
//! The trait lives next to [`FlushBatch`](slat_pt::FlushBatch) in slat-pt, whose
//! break-before-make calls it; it is re-exported here so an embedder needs only slat-mmu.

pub use slat_pt::{apply, CacheMaintenance, Tlb};
