//! Shared test harness: an MMU over a FakeHost and a RecordingTlb, audited after every step.
#![allow(dead_code)]

use slat_mmu::testing::{FakeHost, RecordingTlb};
use slat_mmu::{FaultOutcome, Gfn, Gpa, Hva, MemslotSpec, Mmu, MmuConfig, Parts};
use slat_pt::format::Ept4;
use slat_pt::{Access, PageSize, SimFrameAllocator};

pub type TestMmu = Mmu<Ept4, Parts<SimFrameAllocator, FakeHost, RecordingTlb>>;

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
/// Host virtual base for test mappings (1 GiB aligned).
pub const HVA: u64 = 0x7f00_0000_0000;
/// Host physical base for test mappings (1 GiB aligned).
pub const HPA: u64 = 0x20_0000_0000;

pub fn mmu(config: MmuConfig) -> TestMmu {
    Mmu::new(config, SimFrameAllocator::new(0x100_0000_0000, 8 * GIB), FakeHost::new(), RecordingTlb::default())
        .unwrap()
}

pub fn slot(id: u32, gpa: u64, len: u64, hva: u64) -> MemslotSpec {
    MemslotSpec { id, base_gfn: Gfn(gpa >> 12), npages: len >> 12, hva: Hva(hva), readonly: false, log_dirty: false }
}

/// Audit, panicking with every violation.
#[track_caller]
pub fn audit(m: &TestMmu) {
    if let Err(e) = m.audit() {
        panic!("audit failed: {:#?}", e.violations);
    }
}

/// Fault until mapped (retrying like a vCPU would), auditing afterwards.
#[track_caller]
pub fn touch(m: &TestMmu, gpa: u64, access: Access) -> PageSize {
    for _ in 0..16 {
        match m.handle_fault(Gpa(gpa), access).unwrap() {
            FaultOutcome::Mapped { size, .. } => {
                audit(m);
                return size;
            }
            FaultOutcome::Retry => continue,
            FaultOutcome::WriteTracked => return PageSize::Size4K,
        }
    }
    panic!("fault at {gpa:#x} kept retrying");
}

/// Leaves by size `[4K, 2M, 1G]`.
pub fn leaves(m: &TestMmu) -> [u64; 3] {
    let s = m.stats();
    [s.pages_4k, s.pages_2m, s.pages_1g]
}
