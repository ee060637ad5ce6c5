//! slat-sim's integration tests: scenarios, workloads, the simulated host and the hardware model.
//!
//! One test binary for the crate (one link, one process): each module is one former test
//! file; the shared fixtures are the `*common` modules.

mod host_common;
mod hw_common;

mod engine_library;
mod fuzz_parsers;
mod host_backing;
mod host_buddy;
mod host_events;
mod host_fragmentation;
mod host_hugetlb_exhaustion;
mod host_random;
mod hw_faults;
mod hw_guest;
mod hw_isolation;
mod hw_model;
mod hw_tlb;
mod hw_walk_caches;
mod hw_walk_refs;
mod scenario_errors;
mod scenario_library;
mod scenario_model;
mod scenario_overrides;
mod workload_lackey;
mod workload_patterns;
