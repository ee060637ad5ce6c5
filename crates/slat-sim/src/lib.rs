//! # slat-sim: a deterministic simulator around `slat-mmu`
//!
//! A simulated host memory manager ([`host`]), simulated hardware ([`hw`]: guest page tables,
//! TLBs, 2D walks over the real stage-2 tables), guest [`workload`]s and TOML [`scenario`]s, so
//! whole VM lifecycles run deterministically in one process.
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod engine;
pub mod host;
pub mod hw;
pub mod report;
pub mod scenario;
pub mod workload;
