//! arm64 stage 2 at EL2: VTCR_EL2 from slat's format constants, VTTBR_EL2, HCR_EL2, guest entry
//! by ERET to EL1 with its stage 1 off, abort decoding (ESR_EL2, HPFAR_EL2, FAR_EL2), and the
//! TLB through TLBI.

use alloc::vec::Vec;
use core::arch::asm;
use core::marker::PhantomData;

use hv_common::check;
use hv_common::report::Report;
use hv_common::scenario::{Op, RunError, S2Fault, Vm, CODE_GPA, LOAD_STUB};
use slat_pt::{Access, FlushRange, Format};

/// Stage 2 with a level-1 start (40-bit IPA), or with the `bad-encoding` bug, its leaves without
/// S2AP[0] (not readable: every read faults). (Dropping S2AP[1] would go unnoticed: slat's
/// writable leaves carry DBM, and with VTCR_EL2.HD the walker sets S2AP[1] on the first write.)
#[cfg(not(feature = "bad-encoding"))]
pub type Fmt1 = slat_pt::format::Arm64S2L1;
/// See above.
#[cfg(feature = "bad-encoding")]
pub type Fmt1 = hv_common::mutant::Mutant<slat_pt::format::Arm64S2L1, { 1 << 6 }>;
/// Stage 2 with a level-0 start (48-bit IPA).
#[cfg(not(feature = "bad-encoding"))]
pub type Fmt0 = slat_pt::format::Arm64S2L0;
/// See above.
#[cfg(feature = "bad-encoding")]
pub type Fmt0 = hv_common::mutant::Mutant<slat_pt::format::Arm64S2L0, { 1 << 6 }>;

const VMID: u64 = 1;

/// Bytes cleaned to the point of coherency for new leaves.
pub static CLEANED_BYTES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// Instruction-cache invalidations for new executable leaves.
pub static ICACHE_INVALIDATIONS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// Faults any one op may take before the run is declared stuck.
const MAX_FAULTS_PER_OP: usize = 16;
/// Ranges of up to this many leaves are invalidated leaf by leaf, larger ones with one
/// `TLBI VMALLS12E1IS`.
const MAX_TLBI_BY_ADDRESS: u64 = 16;

const EC_HVC64: u64 = 0x16;
const EC_IABT_LOW: u64 = 0x20;
const EC_DABT_LOW: u64 = 0x24;

/// Guest registers, ELR and SPSR (layout shared with `guest_enter` / `guest_exit`).
#[repr(C)]
struct Ctx {
    x: [u64; 31],
    elr: u64,
    spsr: u64,
}

extern "C" {
    fn guest_enter(ctx: *mut Ctx);
}

macro_rules! sysreg {
    (read $name:literal) => {{
        let v: u64;
        // SAFETY: reading an EL2 system register has no side effect.
        unsafe { asm!(concat!("mrs {}, ", $name), out(reg) v, options(nomem, nostack)) };
        v
    }};
    (write $name:literal, $v:expr) => {{
        // SAFETY: the hypervisor owns EL2 configuration; callers keep it consistent.
        unsafe { asm!(concat!("msr ", $name, ", {}"), "isb", in(reg) $v, options(nostack)) };
    }};
}

/// The arm64 TLB, invalidating exactly the ranges slat reports: for each leaf of a range (one
/// address per `range.size`, since a TLBI by address drops any entry covering it),
/// `TLBI IPAS2E1IS` for the stage-2 entry and `TLBI VAE1IS` for the combined stage-1+2 entry
/// (the guest runs with stage 1 off, so its virtual address is the IPA; a guest with stage 1 on
/// needs `TLBI VMALLE1IS` there instead). More than [`MAX_TLBI_BY_ADDRESS`] addresses, or a full
/// flush, is one `TLBI VMALLS12E1IS`. Each starts with `DSB ISHST` so the walker sees the table
/// writes, and ends with `DSB ISH; ISB`.
#[derive(Clone, Copy, Debug, Default)]
pub struct S2Tlb;

impl slat_mmu::Tlb for S2Tlb {
    fn flush_range(&self, range: &FlushRange) {
        let step = range.size.bytes();
        let first = (range.gpa.0 & !(step - 1)) + hv_common::flush::SHIFT_LEAVES * step;
        let count = (range.gpa.0 + range.len - first).div_ceil(step);
        if count > MAX_TLBI_BY_ADDRESS {
            return self.flush_all();
        }
        if !hv_common::flush::flush_enabled() {
            return;
        }
        // SAFETY: TLB maintenance for the current VMID; no memory is accessed.
        unsafe {
            asm!("dsb ishst", options(nostack));
            for i in 0..count {
                asm!("tlbi ipas2e1is, {}", in(reg) (first + i * step) >> 12, options(nostack));
            }
            asm!("dsb ish", options(nostack));
            for i in 0..count {
                asm!("tlbi vae1is, {}", in(reg) (first + i * step) >> 12, options(nostack));
            }
            asm!("dsb ish", "isb", options(nostack));
        }
    }

    fn flush_all(&self) {
        if !hv_common::flush::flush_enabled() {
            return;
        }
        // SAFETY: TLB maintenance for the current VMID; no memory is accessed.
        unsafe { asm!("dsb ishst", "tlbi vmalls12e1is", "dsb ish", "isb", options(nostack)) };
    }

    /// The guest runs with its stage 1 off, so it accesses memory non-cacheable while the
    /// hypervisor wrote it through a write-back mapping: every new leaf needs its block cleaned
    /// to the point of coherency (HCR_EL2.FWB, which would make stage 2 force write-back, is not
    /// used), and the instruction cache invalidated unless CTR_EL0.DIC says fetches are coherent.
    fn cache_maintenance(&self) -> slat_mmu::CacheMaintenance {
        let ctr = sysreg!(read "ctr_el0");
        slat_mmu::CacheMaintenance { clean_dcache: true, invalidate_icache: ctr & (1 << 29) == 0 }
    }

    /// `DC CVAC` for every data-cache line of the block (identity map: pa = va), then `DSB ISH`.
    fn clean_dcache(&self, pa: u64, len: u64) {
        let line = 4u64 << ((sysreg!(read "ctr_el0") >> 16) & 0xf);
        CLEANED_BYTES.fetch_add(len, core::sync::atomic::Ordering::Relaxed);
        let mut a = pa & !(line - 1);
        while a < pa + len {
            // SAFETY: cache maintenance by address on identity-mapped RAM the host owns; it
            // changes no memory contents.
            unsafe { asm!("dc cvac, {}", in(reg) a, options(nostack)) };
            a += line;
        }
        // SAFETY: a barrier.
        unsafe { asm!("dsb ish", options(nostack)) };
    }

    /// `IC IALLUIS` (the whole instruction cache, inner shareable: cheaper than a huge block
    /// line by line), then `DSB ISH; ISB`.
    fn invalidate_icache(&self, _pa: u64, _len: u64) {
        ICACHE_INVALIDATIONS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        // SAFETY: instruction-cache maintenance; no memory contents change.
        unsafe { asm!("ic ialluis", "dsb ish", "isb", options(nostack)) };
    }
}

/// Point this CPU's VTTBR_EL2 at `root_pa` (VMID 1) and drop what the TLB holds for the VMID.
pub fn set_root_on_this_cpu(root_pa: u64) {
    sysreg!(write "vttbr_el2", root_pa | (VMID << 48));
    // A new table for the same VMID: nothing cached from the previous one may survive.
    // SAFETY: TLB maintenance only.
    unsafe { asm!("dsb ishst", "tlbi vmalls12e1is", "dsb ish", "isb", options(nostack)) };
}

/// A vCPU with stage-2 format `F` (one per physical CPU).
pub struct S2Vm<F> {
    ctx: Ctx,
    aborts: u64,
    hpfar_agrees: u64,
    _f: PhantomData<F>,
}

impl<F: Format> S2Vm<F> {
    /// Configure stage 2 for `F`: VTCR_EL2 from the format's input size and root level, with
    /// hardware access-flag and dirty-state management (HA, HD: slat's arm64 leaves assume
    /// FEAT_HAFDBS), and HCR_EL2.VM.
    pub fn new() -> Self {
        let t0sz = 64 - F::INPUT_BITS as u64;
        let sl0 = F::ROOT_LEVEL as u64 - 1;
        let vtcr = (1 << 31) | (1 << 22) | (1 << 21) | (5 << 16) | (3 << 12) | (1 << 10) | (1 << 8) | (sl0 << 6) | t0sz;
        sysreg!(write "vtcr_el2", vtcr);
        sysreg!(write "hcr_el2", (1u64 << 31) | 1);
        // The guest's EL1 state: stage 1 off.
        sysreg!(write "sctlr_el1", 0x30D0_0800u64);
        S2Vm { ctx: Ctx { x: [0; 31], elr: 0, spsr: 0 }, aborts: 0, hpfar_agrees: 0, _f: PhantomData }
    }

    /// What the CPU offers, as checks.
    pub fn report_features(&self, r: &mut Report) {
        let mmfr1 = sysreg!(read "id_aa64mmfr1_el1");
        let hafdbs = mmfr1 & 0xf;
        check!(r, hafdbs >= 2, "ID_AA64MMFR1_EL1.HAFDBS = {hafdbs} (2: hardware access flag and dirty state)");
        r.note(format_args!("format {}: VTCR_EL2 = {:#x}", F::NAME, sysreg!(read "vtcr_el2")));
    }

    fn decode(&mut self, esr: u64) -> Option<S2Fault> {
        let ec = esr >> 26;
        let fsc = esr & 0x3f;
        let access = match ec {
            EC_IABT_LOW => Access::Exec,
            EC_DABT_LOW if esr & (1 << 6) != 0 => Access::Write,
            EC_DABT_LOW => Access::Read,
            _ => return None,
        };
        let permission = match fsc & 0x3c {
            0x04 => false, // translation fault, level fsc & 3
            0x0c => true,  // permission fault
            _ => return None,
        };
        let far = sysreg!(read "far_el2");
        let hpfar = sysreg!(read "hpfar_el2");
        let ipa = ((hpfar & 0x0000_0FFF_FFFF_FFF0) << 8) | (far & 0xfff);
        self.aborts += 1;
        // Stage 1 is off, so FAR_EL2 (the virtual address) equals the IPA.
        self.hpfar_agrees += (ipa == far) as u64;
        Some(S2Fault { gpa: ipa, access, permission: Some(permission), syndrome: esr })
    }
}

impl<F: Format> S2Vm<F> {
    /// The abort syndrome facts gathered over the run, as a check.
    pub fn report_syndromes(&self, r: &mut Report) {
        use core::sync::atomic::Ordering::Relaxed;
        r.note(format_args!(
            "cache maintenance before new leaves (slat's Tlb hook): {} MiB cleaned to PoC, {} instruction-cache invalidations so far (CTR_EL0 {:#x})",
            CLEANED_BYTES.load(Relaxed) >> 20,
            ICACHE_INVALIDATIONS.load(Relaxed),
            sysreg!(read "ctr_el0")
        ));
        check!(
            r,
            self.aborts > 0 && self.hpfar_agrees == self.aborts,
            "every stage-2 abort ({}) reported its IPA in HPFAR_EL2, equal to FAR_EL2",
            self.aborts
        );
    }
}

impl<F: Format> Vm for S2Vm<F> {
    type Fmt = F;
    type Tlb = S2Tlb;
    const ARCH: &'static str = "arm64";
    const KEEPS_TLB_ACROSS_EXITS: bool = true;

    fn tlb(&self) -> S2Tlb {
        S2Tlb
    }

    fn set_root(&mut self, root_pa: u64) {
        set_root_on_this_cpu(root_pa);
    }

    fn code_page(&self) -> Vec<u8> {
        let mut words = alloc::vec![0xD420_0000u32; 0x20]; // BRK filler
        words[0] = 0xB900_0022; // str w2, [x1]
        words[1] = 0xD400_0002; // hvc #0
        let l = LOAD_STUB as usize / 4;
        words[l] = 0xB940_0023; // ldr w3, [x1]
        words[l + 1] = 0xD400_0002; // hvc #0
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn exec_stub(&self, value: u32) -> Vec<u8> {
        let lo = value & 0xffff;
        let hi = value >> 16;
        let words = [0x5280_0003 | (lo << 5), 0x72A0_0003 | (hi << 5), 0xD400_0002]; // movz, movk, hvc
        words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn run(&mut self, op: Op, on_fault: &mut dyn FnMut(&S2Fault) -> bool) -> Result<u32, RunError> {
        let (pc, regs) = match op {
            Op::Store { gpa, val } => (CODE_GPA, [(1, gpa), (2, val as u64)]),
            Op::Load { gpa } => (CODE_GPA + LOAD_STUB, [(1, gpa), (2, 0)]),
            Op::Exec { gpa } => (gpa, [(1, 0), (2, 0)]),
        };
        self.enter(pc, &regs, MAX_FAULTS_PER_OP, on_fault)
    }
}

impl<F: Format> S2Vm<F> {
    /// Enter the guest at `pc` with registers `regs` (index, value) set and x3 = 0, resolve its
    /// stage-2 aborts through `on_fault` (at most `max_faults`), and return x3 at its HVC.
    pub fn enter(
        &mut self,
        pc: u64,
        regs: &[(usize, u64)],
        max_faults: usize,
        on_fault: &mut dyn FnMut(&S2Fault) -> bool,
    ) -> Result<u32, RunError> {
        self.ctx.elr = pc;
        for &(i, v) in regs {
            self.ctx.x[i] = v;
        }
        self.ctx.x[3] = 0;
        self.ctx.spsr = 0x3C5; // EL1h, DAIF masked
        let mut faults = 0;
        loop {
            // SAFETY: `ctx` holds a valid EL1 context; HCR_EL2, VTCR_EL2 and VTTBR_EL2 describe
            // slat's table; `guest_enter` returns at the guest's next synchronous exception with
            // every callee-saved register restored.
            unsafe { guest_enter(&mut self.ctx) };
            let esr = sysreg!(read "esr_el2");
            if esr >> 26 == EC_HVC64 {
                return Ok(self.ctx.x[3] as u32);
            }
            let Some(f) = self.decode(esr) else {
                return Err(RunError::Unexpected(esr, self.ctx.elr));
            };
            faults += 1;
            if faults > max_faults {
                return Err(RunError::TooManyFaults);
            }
            if !on_fault(&f) {
                return Err(RunError::FaultRefused);
            }
        }
    }
}
