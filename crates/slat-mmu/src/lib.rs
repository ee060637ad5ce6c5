//! # slat-mmu: a hypervisor stage-2 MMU with huge pages
#![no_std]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod host;
pub mod tlb;

pub use host::{BackingKind, HostError, HostMemory, HostPage};
pub use tlb::Tlb;
