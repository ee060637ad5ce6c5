//! What every hypervisor in `hv/` shares: the frame arena and heap over its own memory, the
//! bare host memory with 4 KiB / 2 MiB / 1 GiB chunks, the guest scenario with its checks, and
//! the switches for deliberately injected bugs.
#![no_std]
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod arena;
pub mod flush;
pub mod guest_paging;
pub mod heap;
pub mod host;
pub mod mutant;
pub mod report;
pub mod scenario;

/// Which injected bug this build carries (printed at boot).
pub const INJECTED: &str = if cfg!(feature = "bad-encoding") {
    "bad-encoding"
} else if cfg!(feature = "drop-flush") {
    "drop-flush"
} else if cfg!(feature = "shift-flush") {
    "shift-flush"
} else {
    "none"
};
