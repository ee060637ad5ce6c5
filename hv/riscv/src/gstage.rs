//! RISC-V G-stage: hgatp from slat's format, guest entry to VS-mode with vsatp Bare, guest-page
//! fault decoding (mcause 20/21/23, mtval2 = GPA >> 2), and the TLB through HFENCE.GVMA.

use alloc::vec::Vec;
use core::arch::asm;
use core::marker::PhantomData;

use hv_common::check;
use hv_common::report::Report;
use hv_common::scenario::{Op, RunError, S2Fault, Vm, CODE_GPA, LOAD_STUB};
use slat_pt::{Access, FlushRange, Format};

/// G-stage Sv39x4, or with the `bad-encoding` bug, its leaves without U (G-stage accesses are
/// user accesses, so every access through such a leaf faults).
#[cfg(not(feature = "bad-encoding"))]
pub type Fmt39 = slat_pt::format::Sv39x4;
/// See above.
#[cfg(feature = "bad-encoding")]
pub type Fmt39 = hv_common::mutant::Mutant<slat_pt::format::Sv39x4, { 1 << 4 }>;
/// G-stage Sv48x4.
#[cfg(not(feature = "bad-encoding"))]
pub type Fmt48 = slat_pt::format::Sv48x4;
/// See above.
#[cfg(feature = "bad-encoding")]
pub type Fmt48 = hv_common::mutant::Mutant<slat_pt::format::Sv48x4, { 1 << 4 }>;

const VMID: u64 = 1;
const MAX_FAULTS_PER_OP: usize = 16;
/// Ranges of up to this many leaves are fenced leaf by leaf.
const MAX_FENCES_BY_ADDRESS: u64 = 16;

const CAUSE_ECALL_VS: u64 = 10;
const CAUSE_FETCH_GUEST_PAGE: u64 = 20;
const CAUSE_LOAD_GUEST_PAGE: u64 = 21;
const CAUSE_STORE_GUEST_PAGE: u64 = 23;

/// Guest x1..x31, mepc, and the host stack pointer (layout shared with `boot.rs`).
#[repr(C)]
struct Ctx {
    x: [u64; 31],
    mepc: u64,
    host_sp: u64,
}

extern "C" {
    fn guest_enter(ctx: *mut Ctx);
}

fn hfence_gvma_all() {
    // SAFETY: HFENCE.GVMA x0, x0 (encoded, as the target does not enable the H extension in the
    // assembler): invalidates every G-stage translation; no memory is accessed.
    unsafe { asm!("fence rw, rw", ".insn r 0x73, 0, 0x31, x0, x0, x0", options(nostack)) };
}

/// The RISC-V TLB: `HFENCE.GVMA gpa >> 2` once per leaf of a range (one address per
/// `range.size`: the fence drops any translation covering the address), `HFENCE.GVMA` of
/// everything for more than [`MAX_FENCES_BY_ADDRESS`] leaves, each after a `FENCE` that orders the
/// table writes before it.
#[derive(Clone, Copy, Debug, Default)]
pub struct GTlb;

impl slat_mmu::Tlb for GTlb {
    fn flush_range(&self, range: &FlushRange) {
        let step = range.size.bytes();
        let first = range.gpa.0 & !(step - 1);
        let count = (range.gpa.0 + range.len - first).div_ceil(step);
        if count > MAX_FENCES_BY_ADDRESS {
            return self.flush_all();
        }
        if !hv_common::flush::flush_enabled() {
            return;
        }
        // SAFETY: as in `hfence_gvma_all`, for one guest-physical address (rs1 = gpa >> 2).
        unsafe {
            asm!("fence rw, rw", options(nostack));
            for i in 0..count {
                let g = (first + i * step) >> 2;
                asm!(".insn r 0x73, 0, 0x31, x0, {0}, x0", in(reg) g, options(nostack));
            }
        }
    }

    fn flush_all(&self) {
        if hv_common::flush::flush_enabled() {
            hfence_gvma_all();
        }
    }

    fn cache_maintenance(&self) -> slat_mmu::CacheMaintenance {
        // RISC-V caches are coherent (the privileged spec gives no stage-2 cache maintenance).
        slat_mmu::CacheMaintenance::NOT_NEEDED
    }
    fn clean_dcache(&self, _pa: u64, _len: u64) {}
    fn invalidate_icache(&self, _pa: u64, _len: u64) {}
}

/// The hypervisor's one vCPU, with G-stage format `F`.
pub struct GVm<F> {
    ctx: Ctx,
    faults: u64,
    mtval_agrees: u64,
    _f: PhantomData<F>,
}

impl<F: Format> GVm<F> {
    /// A vCPU with VS-mode translation off (vsatp Bare).
    pub fn new() -> Self {
        // SAFETY: vsatp (0x280) = Bare; the guest runs with its own translation off.
        unsafe { asm!("csrw 0x280, zero", options(nostack)) };
        GVm { ctx: Ctx { x: [0; 31], mepc: 0, host_sp: 0 }, faults: 0, mtval_agrees: 0, _f: PhantomData }
    }

    /// The guest-page-fault syndrome facts gathered over the run, as a check.
    pub fn report_syndromes(&self, r: &mut Report) {
        check!(
            r,
            self.faults > 0 && self.mtval_agrees == self.faults,
            "every guest-page fault ({}) gave the GPA in mtval2 (<< 2), equal to mtval (vsatp Bare)",
            self.faults
        );
    }
}

fn csr_mcause() -> u64 {
    let v: u64;
    // SAFETY: reading a CSR.
    unsafe { asm!("csrr {}, mcause", out(reg) v, options(nomem, nostack)) };
    v
}

impl<F: Format> Vm for GVm<F> {
    type Fmt = F;
    type Tlb = GTlb;
    const ARCH: &'static str = "riscv";
    const KEEPS_TLB_ACROSS_EXITS: bool = false;

    fn tlb(&self) -> GTlb {
        GTlb
    }

    fn set_root(&mut self, root_pa: u64) {
        // Sv39x4 = 8, Sv48x4 = 9: the root level says which.
        let mode = 8 + (F::ROOT_LEVEL as u64 - 2);
        let hgatp = (mode << 60) | (VMID << 44) | (root_pa >> 12);
        // SAFETY: hgatp (0x680) names slat's 16 KiB-aligned root; the fence drops whatever was
        // cached from the previous table.
        unsafe { asm!("csrw 0x680, {}", in(reg) hgatp, options(nostack)) };
        hfence_gvma_all();
    }

    fn code_page(&self) -> Vec<u8> {
        let mut words = alloc::vec![0u32; 0x20]; // illegal-instruction filler
        words[0] = 0x00C5_A023; // sw a2, 0(a1)
        words[1] = 0x0000_0073; // ecall
        let l = LOAD_STUB as usize / 4;
        words[l] = 0x0005_A683; // lw a3, 0(a1)
        words[l + 1] = 0x0000_0073; // ecall
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn exec_stub(&self, value: u32) -> Vec<u8> {
        let lo = value & 0xfff;
        let hi = (value >> 12).wrapping_add((lo >> 11) & 1) & 0xf_ffff;
        let words = [(hi << 12) | 0x6B7, (lo << 20) | 0x6_8693, 0x73]; // lui a3; addi a3, a3; ecall
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn run(&mut self, op: Op, on_fault: &mut dyn FnMut(&S2Fault) -> bool) -> Result<u32, RunError> {
        self.ctx.mepc = match op {
            Op::Store { gpa, val } => {
                self.ctx.x[10] = gpa;
                self.ctx.x[11] = val as u64;
                CODE_GPA
            }
            Op::Load { gpa } => {
                self.ctx.x[10] = gpa;
                CODE_GPA + LOAD_STUB
            }
            Op::Exec { gpa } => gpa,
        };
        self.ctx.x[12] = 0;
        let mut faults = 0;
        loop {
            // SAFETY: `ctx` holds a valid VS-mode context, hgatp names slat's table, and
            // `guest_enter` returns at the guest's next trap with the callee-saved registers
            // restored.
            unsafe { guest_enter(&mut self.ctx) };
            let cause = csr_mcause();
            let access = match cause {
                CAUSE_ECALL_VS => return Ok(self.ctx.x[12] as u32),
                CAUSE_FETCH_GUEST_PAGE => Access::Exec,
                CAUSE_LOAD_GUEST_PAGE => Access::Read,
                CAUSE_STORE_GUEST_PAGE => Access::Write,
                _ => return Err(RunError::Unexpected(cause, self.ctx.mepc)),
            };
            let (mtval, mtval2): (u64, u64);
            // SAFETY: reading mtval and mtval2 (0x34b).
            unsafe {
                asm!("csrr {}, mtval", "csrr {}, 0x34b", out(reg) mtval, out(reg) mtval2, options(nomem, nostack))
            };
            let gpa = (mtval2 << 2) | (mtval & 3);
            self.faults += 1;
            self.mtval_agrees += (gpa == mtval) as u64;
            let f = S2Fault { gpa, access, permission: None, syndrome: cause };
            faults += 1;
            if faults > MAX_FAULTS_PER_OP {
                return Err(RunError::TooManyFaults);
            }
            if !on_fault(&f) {
                return Err(RunError::FaultRefused);
            }
        }
    }
}
