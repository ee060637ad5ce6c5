//! AMD SVM: the VMCB, VMRUN, #VMEXIT(NPF) decoding, and the TLB through the VMCB's TLB_CONTROL.
//!
//! The guest is flat 32-bit protected mode with paging off, so every guest address is a
//! guest-physical address and every access walks slat's nested table (`N_CR3`).

use alloc::vec::Vec;
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, Ordering};

use hv_common::check;
use hv_common::report::Report;
use hv_common::scenario::{Op, RunError, S2Fault, Vm, CODE_GPA, LOAD_STUB};
use slat_pt::{Access, FlushRange};

/// The stage-2 format: AMD NPT, or with the `bad-encoding` bug, NPT leaves without U/S (nested
/// walks are user accesses, so every access through such a leaf faults).
#[cfg(not(feature = "bad-encoding"))]
pub type Fmt = slat_pt::format::Npt;
/// See above.
#[cfg(feature = "bad-encoding")]
pub type Fmt = hv_common::mutant::Mutant<slat_pt::format::Npt, { 1 << 2 }>;

const EXIT_NPF: u64 = 0x400;
const EXIT_VMMCALL: u64 = 0x81;
const MSR_EFER: u32 = 0xC000_0080;
const MSR_VM_HSAVE_PA: u32 = 0xC001_0117;
const EFER_SVME: u64 = 1 << 12;
/// Faults any one op may take before the run is declared stuck.
const MAX_FAULTS_PER_OP: usize = 16;

#[repr(C, align(4096))]
struct Page([u8; 4096]);

static mut VMCB: Page = Page([0; 4096]);
static mut HSAVE: Page = Page([0; 4096]);

/// A flush is due at the next VMRUN (TLB_CONTROL).
static FLUSH_PENDING: AtomicBool = AtomicBool::new(false);

/// Guest registers VMRUN does not switch (RAX and RSP live in the VMCB).
#[repr(C)]
#[derive(Default, Debug)]
struct Gprs {
    rbx: u64,
    rcx: u64,
    rdx: u64,
    rsi: u64,
    rdi: u64,
    rbp: u64,
    r8: u64,
    r9: u64,
    r10: u64,
    r11: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
}

global_asm!(
    r#"
    .text
    .global svm_enter
svm_enter:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    push rsi
    mov rax, rdi
    mov rbx, [rsi + 0]
    mov rcx, [rsi + 8]
    mov rdx, [rsi + 16]
    mov rdi, [rsi + 32]
    mov rbp, [rsi + 40]
    mov r8, [rsi + 48]
    mov r9, [rsi + 56]
    mov r10, [rsi + 64]
    mov r11, [rsi + 72]
    mov r12, [rsi + 80]
    mov r13, [rsi + 88]
    mov r14, [rsi + 96]
    mov r15, [rsi + 104]
    mov rsi, [rsi + 24]
    .byte 0x0f, 0x01, 0xdd
    .byte 0x0f, 0x01, 0xd8
    xchg rsi, [rsp]
    mov [rsi + 0], rbx
    mov [rsi + 8], rcx
    mov [rsi + 16], rdx
    mov [rsi + 32], rdi
    mov [rsi + 40], rbp
    mov [rsi + 48], r8
    mov [rsi + 56], r9
    mov [rsi + 64], r10
    mov [rsi + 72], r11
    mov [rsi + 80], r12
    mov [rsi + 88], r13
    mov [rsi + 96], r14
    mov [rsi + 104], r15
    pop rax
    mov [rsi + 24], rax
    .byte 0x0f, 0x01, 0xdc
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
"#
);

extern "C" {
    /// CLGI; VMRUN (RAX = VMCB); save the guest's GPRs; STGI.
    fn svm_enter(vmcb_pa: u64, gprs: *mut Gprs);
}

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reading an architectural MSR at CPL 0.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (hi as u64) << 32 | lo as u64
}

fn wrmsr(msr: u32, v: u64) {
    // SAFETY: writing EFER.SVME or VM_HSAVE_PA at CPL 0, as the SVM setup requires.
    unsafe { asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nomem, nostack)) };
}

fn cpuid(leaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid(leaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

fn vmcb() -> *mut u8 {
    (&raw mut VMCB).cast()
}

fn w<T>(off: usize, v: T) {
    // SAFETY: `off` is a field offset inside the 4 KiB VMCB, which only this CPU touches
    // while the guest is not running.
    unsafe { core::ptr::write_volatile(vmcb().add(off).cast::<T>(), v) }
}

fn r<T: Copy>(off: usize) -> T {
    // SAFETY: as for `w`.
    unsafe { core::ptr::read_volatile(vmcb().add(off).cast::<T>()) }
}

/// Segment register in the VMCB save area: selector, attributes, limit, base.
fn seg(off: usize, sel: u16, attrib: u16, limit: u32, base: u64) {
    w(off, sel);
    w(off + 2, attrib);
    w(off + 4, limit);
    w(off + 8, base);
}

/// The SVM TLB: any stage-2 change asks for a TLB flush at the next VMRUN through the VMCB's
/// `TLB_CONTROL` (1 = flush everything). This is the architectural way to drop nested
/// translations: `INVLPGA` addresses guest-*virtual* pages of an ASID, and one guest-physical page
/// may be cached under any number of them.
#[derive(Clone, Copy, Debug, Default)]
pub struct SvmTlb;

impl slat_mmu::Tlb for SvmTlb {
    fn flush_range(&self, _range: &FlushRange) {
        self.flush_all();
    }
    fn flush_all(&self) {
        if hv_common::flush::flush_enabled() {
            FLUSH_PENDING.store(true, Ordering::SeqCst);
        }
    }

    fn cache_maintenance(&self) -> slat_mmu::CacheMaintenance {
        // x86 caches are coherent with the page walker and with instruction fetch.
        slat_mmu::CacheMaintenance::NOT_NEEDED
    }
    fn clean_dcache(&self, _pa: u64, _len: u64) {}
    fn invalidate_icache(&self, _pa: u64, _len: u64) {}
}

/// The hypervisor's one vCPU.
pub struct SvmVm {
    gprs: Gprs,
    npf: u64,
    npf_final_gpa: u64,
    npf_walk: u64,
    npf_user: u64,
    tlb_flushes: u64,
}

impl SvmVm {
    /// Enable SVM and build the VMCB (flat 32-bit guest, NPT on).
    pub fn new() -> Result<Self, &'static str> {
        if cpuid(0x8000_0001)[2] & (1 << 2) == 0 {
            return Err("CPU without SVM (use -cpu max)");
        }
        if cpuid(0x8000_000A)[3] & 1 == 0 {
            return Err("SVM without nested paging (use -cpu max)");
        }
        wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SVME);
        wrmsr(MSR_VM_HSAVE_PA, (&raw const HSAVE) as u64);

        // Control area: intercept every exception, HLT and SHUTDOWN, VMRUN and VMMCALL.
        w::<u32>(0x008, 0xFFFF_FFFF);
        w::<u32>(0x00C, (1 << 24) | (1 << 31));
        w::<u32>(0x010, 0b11);
        w::<u32>(0x058, 1); // guest ASID
        w::<u64>(0x090, 1); // NP_ENABLE
                            // Save area: flat 32-bit protected mode, paging off.
        for off in [0x400, 0x420, 0x430, 0x440, 0x450] {
            seg(off, 0x10, 0xC93, 0xFFFF_FFFF, 0);
        }
        seg(0x410, 0x08, 0xC9B, 0xFFFF_FFFF, 0);
        seg(0x460, 0, 0, 0xFFFF, 0); // GDTR
        seg(0x480, 0, 0, 0xFFFF, 0); // IDTR
        seg(0x470, 0, 0x82, 0xFFFF, 0); // LDTR
        seg(0x490, 0, 0x8B, 0xFFFF, 0); // TR
        w::<u8>(0x4CB, 0); // CPL
        w::<u64>(0x4D0, EFER_SVME);
        w::<u64>(0x548, 0); // CR4
        w::<u64>(0x550, 0); // CR3
        w::<u64>(0x558, 0x11); // CR0: PE | ET
        w::<u64>(0x560, 0x400); // DR7
        w::<u64>(0x568, 0xFFFF_0FF0); // DR6
        w::<u64>(0x570, 0x2); // RFLAGS
        w::<u64>(0x668, 0x0007_0406_0007_0406); // guest PAT
        Ok(SvmVm { gprs: Gprs::default(), npf: 0, npf_final_gpa: 0, npf_walk: 0, npf_user: 0, tlb_flushes: 0 })
    }

    fn vmrun(&mut self) {
        let flush = FLUSH_PENDING.swap(false, Ordering::SeqCst);
        w::<u8>(0x05C, flush as u8);
        self.tlb_flushes += flush as u64;
        // SAFETY: the VMCB is fully initialised and passes VMRUN's consistency checks (ASID 1,
        // VMRUN intercepted, guest EFER.SVME); HSAVE is registered; `svm_enter` restores every
        // callee-saved register and the host state comes back from HSAVE at #VMEXIT.
        unsafe { svm_enter((&raw const VMCB) as u64, &mut self.gprs) };
    }

    /// The NPF syndrome facts gathered over the run, as checks.
    pub fn report_syndromes(&self, rep: &mut Report) {
        check!(
            rep,
            self.npf > 0 && self.npf_final_gpa + self.npf_walk == self.npf && self.npf_user == self.npf,
            "every #VMEXIT(NPF) ({}) had U and exactly one of EXITINFO1 bit 32 (final GPA: {}) or bit 33 (guest page-table walk: {}); TLB_CONTROL flushes at VMRUN: {}",
            self.npf,
            self.npf_final_gpa,
            self.npf_walk,
            self.tlb_flushes
        );
    }
}

impl Vm for SvmVm {
    type Fmt = Fmt;
    type Tlb = SvmTlb;
    const ARCH: &'static str = "svm-npt";
    const KEEPS_TLB_ACROSS_EXITS: bool = false;

    fn tlb(&self) -> SvmTlb {
        SvmTlb
    }

    fn set_root(&mut self, root_pa: u64) {
        w::<u64>(0x0B0, root_pa); // N_CR3
        FLUSH_PENDING.store(true, Ordering::SeqCst);
    }

    fn code_page(&self) -> Vec<u8> {
        let mut page = alloc::vec![0xF4u8; 0x80]; // HLT filler
        page[..5].copy_from_slice(&[0x89, 0x0B, 0x0F, 0x01, 0xD9]); // mov [ebx], ecx; vmmcall
        let l = LOAD_STUB as usize;
        page[l..l + 5].copy_from_slice(&[0x8B, 0x13, 0x0F, 0x01, 0xD9]); // mov edx, [ebx]; vmmcall
        page
    }

    fn exec_stub(&self, value: u32) -> Vec<u8> {
        let mut s = alloc::vec![0xBA]; // mov edx, imm32
        s.extend_from_slice(&value.to_le_bytes());
        s.extend_from_slice(&[0x0F, 0x01, 0xD9]); // vmmcall
        s
    }

    fn run(&mut self, op: Op, on_fault: &mut dyn FnMut(&S2Fault) -> bool) -> Result<u32, RunError> {
        let rip = match op {
            Op::Store { gpa, val } => {
                self.gprs.rbx = gpa;
                self.gprs.rcx = val as u64;
                CODE_GPA
            }
            Op::Load { gpa } => {
                self.gprs.rbx = gpa;
                CODE_GPA + LOAD_STUB
            }
            Op::Exec { gpa } => gpa,
        };
        self.gprs.rdx = 0;
        w::<u64>(0x578, rip);
        let mut faults = 0;
        loop {
            self.vmrun();
            let code: u64 = r(0x070);
            let info1: u64 = r(0x078);
            let info2: u64 = r(0x080);
            match code {
                EXIT_VMMCALL => return Ok(self.gprs.rdx as u32),
                EXIT_NPF => {
                    self.npf += 1;
                    self.npf_final_gpa += ((info1 >> 32) & 3 == 1) as u64;
                    self.npf_walk += ((info1 >> 32) & 3 == 2) as u64;
                    self.npf_user += (info1 >> 2) & 1;
                    let access = if info1 & (1 << 4) != 0 {
                        Access::Exec
                    } else if info1 & (1 << 1) != 0 {
                        Access::Write
                    } else {
                        Access::Read
                    };
                    let f = S2Fault { gpa: info2, access, permission: Some(info1 & 1 != 0), syndrome: info1 };
                    faults += 1;
                    if faults > MAX_FAULTS_PER_OP {
                        return Err(RunError::TooManyFaults);
                    }
                    if !on_fault(&f) {
                        return Err(RunError::FaultRefused);
                    }
                }
                _ => return Err(RunError::Unexpected(code, info1)),
            }
        }
    }
}

impl hv_common::guest_paging::GuestPaging for SvmVm {
    fn set_guest_paging(&mut self, cr3: Option<u64>) {
        match cr3 {
            Some(cr3) => {
                w::<u64>(0x548, 1 << 4); // CR4.PSE
                w::<u64>(0x550, cr3);
                w::<u64>(0x558, 0x8000_0011); // CR0: PG | ET | PE
            }
            None => {
                w::<u64>(0x548, 0);
                w::<u64>(0x550, 0);
                w::<u64>(0x558, 0x11);
            }
        }
    }

    /// EXITINFO1 bit 33: the fault happened during the guest's page-table walk.
    fn in_guest_walk(f: &S2Fault) -> bool {
        f.syndrome & (1 << 33) != 0
    }
}
