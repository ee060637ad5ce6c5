//! slat beside the peer page-table crates and a raw-store floor. See `BENCHMARKS.md` at the
//! repository root for what is measured and how.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod contender;
pub mod counting;
pub mod floor;
pub mod peers;
pub mod pool;
pub mod report;
pub mod run;

/// Every heap allocation in the process is counted (see [`counting`]).
#[global_allocator]
static ALLOC: counting::CountingAlloc = counting::CountingAlloc;
