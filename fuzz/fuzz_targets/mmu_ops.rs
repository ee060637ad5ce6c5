//! Any bytes as an MMU operation sequence, checked after every step by the differential tester
//! (crates/slat-mmu/tests/integration/differential.rs, shared verbatim).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports)]
#[path = "../../crates/slat-mmu/tests/integration/differential.rs"]
mod differential;

fuzz_target!(|data: &[u8]| {
    differential::run_bytes(data);
});
