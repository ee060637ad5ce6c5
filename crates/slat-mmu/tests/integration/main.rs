//! slat-mmu's integration tests: KVM fidelity, seeds, the differential tester against the oracle, dirty rings, the shuttle models of the races.
//!
//! One test binary for the crate (one link, one process): each module is one former test
//! file; the shared fixtures are the `*common` modules.

mod common;

mod differential;
mod dirty_ring;
mod fault_injection;
mod kvm_fidelity;
mod model;
mod policy;
mod seeds;
mod sharded;
mod threads;
mod zap_logging;
