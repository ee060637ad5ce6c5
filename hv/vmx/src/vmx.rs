//! Intel VMX: VMXON, one VMCS, VM entry and exit, EPT-violation decoding, and the TLB through
//! INVEPT.
//!
//! The guest is flat 32-bit protected mode with paging off under "unrestricted guest", so every
//! guest address is a guest-physical address and every access walks slat's EPT.

use alloc::vec::Vec;
use core::arch::{asm, global_asm};

use hv_common::check;
use hv_common::report::Report;
use hv_common::scenario::{Op, RunError, S2Fault, Vm, CODE_GPA, LOAD_STUB};
use slat_pt::{Access, FlushRange};

/// The stage-2 format: 4-level EPT, or with the `bad-encoding` bug, EPT leaves without the
/// read bit (bit 0).
#[cfg(not(feature = "bad-encoding"))]
pub type Fmt = slat_pt::format::Ept4;
/// See above.
#[cfg(feature = "bad-encoding")]
pub type Fmt = hv_common::mutant::Mutant<slat_pt::format::Ept4, { 1 << 0 }>;

const MAX_FAULTS_PER_OP: usize = 16;

const EXIT_VMCALL: u64 = 18;
const EXIT_EPT_VIOLATION: u64 = 48;

// MSRs.
const IA32_FEATURE_CONTROL: u32 = 0x3A;
const IA32_VMX_BASIC: u32 = 0x480;
const IA32_VMX_PINBASED: u32 = 0x481;
const IA32_VMX_PROCBASED: u32 = 0x482;
const IA32_VMX_EXIT: u32 = 0x483;
const IA32_VMX_ENTRY: u32 = 0x484;
const IA32_VMX_CR0_FIXED0: u32 = 0x486;
const IA32_VMX_CR0_FIXED1: u32 = 0x487;
const IA32_VMX_CR4_FIXED0: u32 = 0x488;
const IA32_VMX_CR4_FIXED1: u32 = 0x489;
const IA32_VMX_PROCBASED2: u32 = 0x48B;
const IA32_VMX_EPT_VPID_CAP: u32 = 0x48C;
const IA32_VMX_TRUE_PINBASED: u32 = 0x48D;
const IA32_EFER: u32 = 0xC000_0080;

// VMCS fields.
const PIN_CONTROLS: u64 = 0x4000;
const PROC_CONTROLS: u64 = 0x4002;
const EXCEPTION_BITMAP: u64 = 0x4004;
const EXIT_CONTROLS: u64 = 0x400C;
const ENTRY_CONTROLS: u64 = 0x4012;
const PROC_CONTROLS2: u64 = 0x401E;
const EPT_POINTER: u64 = 0x201A;
const VMCS_LINK_POINTER: u64 = 0x2800;
const GUEST_IA32_EFER: u64 = 0x2806;
const HOST_IA32_EFER: u64 = 0x2C02;
const GUEST_PHYSICAL_ADDRESS: u64 = 0x2400;
const VM_INSTRUCTION_ERROR: u64 = 0x4400;
const EXIT_REASON: u64 = 0x4402;
const EXIT_QUALIFICATION: u64 = 0x6400;
const CR0_GUEST_HOST_MASK: u64 = 0x6000;
const CR4_GUEST_HOST_MASK: u64 = 0x6002;
const CR0_READ_SHADOW: u64 = 0x6004;
const CR4_READ_SHADOW: u64 = 0x6006;
const GUEST_CR0: u64 = 0x6800;
const GUEST_CR3: u64 = 0x6802;
const GUEST_CR4: u64 = 0x6804;
const GUEST_DR7: u64 = 0x681A;
const GUEST_RSP: u64 = 0x681C;
const GUEST_RIP: u64 = 0x681E;
const GUEST_RFLAGS: u64 = 0x6820;
const GUEST_ACTIVITY: u64 = 0x4826;
const GUEST_INTERRUPTIBILITY: u64 = 0x4824;
const HOST_CR0: u64 = 0x6C00;
const HOST_CR3: u64 = 0x6C02;
const HOST_CR4: u64 = 0x6C04;
const HOST_TR_BASE: u64 = 0x6C0A;
const HOST_GDTR_BASE: u64 = 0x6C0C;
const HOST_IDTR_BASE: u64 = 0x6C0E;

#[repr(C, align(4096))]
struct Page([u8; 4096]);

static mut VMXON_REGION: Page = Page([0; 4096]);
static mut VMCS_REGION: Page = Page([0; 4096]);
/// Host GDT with a TSS: VM entry requires a non-null host TR.
static mut HOST_GDT: [u64; 5] = [0, 0x00AF_9A00_0000_FFFF, 0x00CF_9200_0000_FFFF, 0, 0];
static mut HOST_TSS: [u8; 104] = [0; 104];

/// Guest registers VM entry does not switch (RSP and RIP live in the VMCS).
#[repr(C)]
#[derive(Default, Debug)]
struct Gprs {
    rax: u64,
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
    .global vmx_enter
vmx_enter:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    push rdi
    mov rax, 0x6C14
    vmwrite rax, rsp
    lea rdx, [rip + 2f]
    mov rax, 0x6C16
    vmwrite rax, rdx
    cmp rsi, 0
    mov rax, [rdi + 0]
    mov rbx, [rdi + 8]
    mov rcx, [rdi + 16]
    mov rdx, [rdi + 24]
    mov rsi, [rdi + 32]
    mov rbp, [rdi + 48]
    mov r8, [rdi + 56]
    mov r9, [rdi + 64]
    mov r10, [rdi + 72]
    mov r11, [rdi + 80]
    mov r12, [rdi + 88]
    mov r13, [rdi + 96]
    mov r14, [rdi + 104]
    mov r15, [rdi + 112]
    mov rdi, [rdi + 40]
    je 1f
    vmresume
    jmp 3f
1:
    vmlaunch
3:
    pop rdi
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    mov eax, 1
    ret
2:
    xchg rdi, [rsp]
    mov [rdi + 0], rax
    mov [rdi + 8], rbx
    mov [rdi + 16], rcx
    mov [rdi + 24], rdx
    mov [rdi + 32], rsi
    mov [rdi + 48], rbp
    mov [rdi + 56], r8
    mov [rdi + 64], r9
    mov [rdi + 72], r10
    mov [rdi + 80], r11
    mov [rdi + 88], r12
    mov [rdi + 96], r13
    mov [rdi + 104], r14
    mov [rdi + 112], r15
    pop rax
    mov [rdi + 40], rax
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    xor eax, eax
    ret
"#
);

extern "C" {
    /// VMLAUNCH (`launched` = 0) or VMRESUME with the guest's GPRs; returns 0 at the next VM
    /// exit (GPRs saved back) or 1 if the instruction failed.
    fn vmx_enter(gprs: *mut Gprs, launched: u64) -> u64;
}

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reading an architectural MSR at CPL 0.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (hi as u64) << 32 | lo as u64
}

fn wrmsr(msr: u32, v: u64) {
    // SAFETY: writing IA32_FEATURE_CONTROL as VMXON requires.
    unsafe { asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nomem, nostack)) };
}

fn vmwrite(field: u64, v: u64) {
    // SAFETY: writes a field of the current VMCS (loaded by VMPTRLD in `new`).
    unsafe { asm!("vmwrite {}, {}", in(reg) field, in(reg) v, options(nostack)) };
}

fn vmread(field: u64) -> u64 {
    let v: u64;
    // SAFETY: reads a field of the current VMCS.
    unsafe { asm!("vmread {}, {}", out(reg) v, in(reg) field, options(nostack)) };
    v
}

/// Controls adjusted to what the CPU allows: low word = bits that must be 1, high word = bits
/// that may be 1.
fn adjust(msr: u32, want: u32) -> u64 {
    let caps = rdmsr(msr);
    ((want | caps as u32) & (caps >> 32) as u32) as u64
}

/// The EPT TLB: INVEPT single-context for slat's EPTP after every change slat reports (EPT
/// translations are tagged by EPTP, not by guest-physical page, so a range is flushed whole).
#[derive(Clone, Copy, Debug, Default)]
pub struct EptTlb;

static EPTP: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn invept(kind: u64) {
    let desc: [u64; 2] = [EPTP.load(core::sync::atomic::Ordering::SeqCst), 0];
    // SAFETY: INVEPT (66 0F 38 80 /r, rax = type, [rdx] = descriptor) drops cached EPT
    // translations; it touches no memory besides reading the descriptor.
    unsafe { asm!(".byte 0x66, 0x0f, 0x38, 0x80, 0x02", in("rax") kind, in("rdx") desc.as_ptr(), options(nostack)) };
}

impl slat_mmu::Tlb for EptTlb {
    fn flush_range(&self, _range: &FlushRange) {
        self.flush_all();
    }
    fn flush_all(&self) {
        if hv_common::flush::flush_enabled() {
            invept(1);
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
pub struct VmxVm {
    gprs: Gprs,
    launched: bool,
    violations: u64,
    gpa_matches: u64,
    walks: u64,
    caps: u64,
}

impl VmxVm {
    /// VMXON, then a VMCS for a flat 32-bit unrestricted guest with EPT (A/D on).
    pub fn new() -> Result<Self, &'static str> {
        if core::arch::x86_64::__cpuid(1).ecx & (1 << 5) == 0 {
            return Err("CPU without VMX (Bochs cpu: model=corei7_skylake_x)");
        }
        let basic = rdmsr(IA32_VMX_BASIC);
        let true_msrs = basic & (1 << 55) != 0;
        let caps = rdmsr(IA32_VMX_EPT_VPID_CAP);
        if caps & (1 << 21) == 0 || caps & (1 << 6) == 0 {
            return Err("EPT without 4-level walks or A/D bits");
        }
        let fc = rdmsr(IA32_FEATURE_CONTROL);
        if fc & 1 == 0 {
            wrmsr(IA32_FEATURE_CONTROL, fc | 1 | (1 << 2));
        }
        let rev = (basic & 0x7fff_ffff) as u32;
        // SAFETY: CR0/CR4 adjusted to the VMX fixed bits (NE, VMXE) before VMXON; the regions
        // are page-aligned statics that only this CPU touches, stamped with the revision id.
        unsafe {
            let mut cr0: u64;
            let mut cr4: u64;
            asm!("mov {}, cr0", out(reg) cr0);
            asm!("mov {}, cr4", out(reg) cr4);
            cr0 = (cr0 | rdmsr(IA32_VMX_CR0_FIXED0)) & rdmsr(IA32_VMX_CR0_FIXED1);
            cr4 = (cr4 | rdmsr(IA32_VMX_CR4_FIXED0) | (1 << 13)) & rdmsr(IA32_VMX_CR4_FIXED1);
            asm!("mov cr0, {}", in(reg) cr0);
            asm!("mov cr4, {}", in(reg) cr4);
            let on = &raw mut VMXON_REGION;
            let vmcs = &raw mut VMCS_REGION;
            core::ptr::write_volatile(on.cast::<u32>(), rev);
            core::ptr::write_volatile(vmcs.cast::<u32>(), rev);
            let (on_pa, vmcs_pa) = (on as u64, vmcs as u64);
            let fail: u8;
            asm!("vmxon [{}]", "setna {}", in(reg) &on_pa, out(reg_byte) fail);
            if fail != 0 {
                return Err("VMXON failed");
            }
            asm!("vmclear [{}]", "vmptrld [{}]", in(reg) &vmcs_pa, in(reg) &vmcs_pa);
        }
        let (pin, proc, exit, entry) = if true_msrs {
            (IA32_VMX_TRUE_PINBASED, IA32_VMX_TRUE_PINBASED + 1, IA32_VMX_TRUE_PINBASED + 2, IA32_VMX_TRUE_PINBASED + 3)
        } else {
            (IA32_VMX_PINBASED, IA32_VMX_PROCBASED, IA32_VMX_EXIT, IA32_VMX_ENTRY)
        };
        vmwrite(PIN_CONTROLS, adjust(pin, 0));
        // HLT exiting, unconditional I/O exiting, secondary controls.
        vmwrite(PROC_CONTROLS, adjust(proc, (1 << 7) | (1 << 24) | (1 << 31)));
        // EPT, unrestricted guest.
        vmwrite(PROC_CONTROLS2, adjust(IA32_VMX_PROCBASED2, (1 << 1) | (1 << 7)));
        // Exit: 64-bit host, save and load IA32_EFER. Entry: load IA32_EFER.
        vmwrite(EXIT_CONTROLS, adjust(exit, (1 << 9) | (1 << 20) | (1 << 21)));
        vmwrite(ENTRY_CONTROLS, adjust(entry, 1 << 15));
        vmwrite(EXCEPTION_BITMAP, 0xffff_ffff);
        vmwrite(VMCS_LINK_POINTER, u64::MAX);

        // Guest: flat 32-bit protected mode, paging off.
        let cr0_fixed = rdmsr(IA32_VMX_CR0_FIXED0) & !((1 << 31) | 1); // PG and PE are free (unrestricted)
        vmwrite(GUEST_CR0, cr0_fixed | 0x11);
        vmwrite(CR0_GUEST_HOST_MASK, 0);
        vmwrite(CR0_READ_SHADOW, 0x11);
        vmwrite(GUEST_CR4, rdmsr(IA32_VMX_CR4_FIXED0));
        vmwrite(CR4_GUEST_HOST_MASK, 1 << 13);
        vmwrite(CR4_READ_SHADOW, 0);
        vmwrite(GUEST_CR3, 0);
        vmwrite(GUEST_DR7, 0x400);
        vmwrite(GUEST_RSP, 0);
        vmwrite(GUEST_RFLAGS, 2);
        vmwrite(GUEST_IA32_EFER, 0);
        vmwrite(GUEST_ACTIVITY, 0);
        vmwrite(GUEST_INTERRUPTIBILITY, 0);
        // ES, CS, SS, DS, FS, GS, LDTR, TR: selector 0x08xx, limit 0x48xx, AR 0x48xx, base 0x68xx.
        for i in 0..6u64 {
            let (sel, ar) = if i == 1 { (0x08, 0xC09B) } else { (0x10, 0xC093) };
            vmwrite(0x0800 + 2 * i, sel);
            vmwrite(0x4800 + 2 * i, 0xffff_ffff);
            vmwrite(0x4814 + 2 * i, ar);
            vmwrite(0x6806 + 2 * i, 0);
        }
        vmwrite(0x080C, 0); // LDTR: unusable
        vmwrite(0x480C, 0);
        vmwrite(0x4820, 1 << 16);
        vmwrite(0x6812, 0);
        vmwrite(0x080E, 0); // TR: busy 32-bit TSS
        vmwrite(0x480E, 0xff);
        vmwrite(0x4822, 0x8B);
        vmwrite(0x6814, 0);
        vmwrite(0x4810, 0xffff); // GDTR, IDTR
        vmwrite(0x4812, 0xffff);
        vmwrite(0x6816, 0);
        vmwrite(0x6818, 0);

        // Host: the current CRs and EFER, a GDT with a TSS, the current IDT.
        // SAFETY: reading control registers and descriptor-table registers; loading a GDT that
        // keeps the boot GDT's code (0x08) and data (0x10) descriptors and adds a TSS (0x18).
        unsafe {
            let (cr0, cr3, cr4): (u64, u64, u64);
            asm!("mov {}, cr0", out(reg) cr0);
            asm!("mov {}, cr3", out(reg) cr3);
            asm!("mov {}, cr4", out(reg) cr4);
            vmwrite(HOST_CR0, cr0);
            vmwrite(HOST_CR3, cr3);
            vmwrite(HOST_CR4, cr4);
            vmwrite(HOST_IA32_EFER, rdmsr(IA32_EFER));
            let gdt = &raw mut HOST_GDT;
            let tss = (&raw const HOST_TSS) as u64;
            (*gdt)[3] = 103 | ((tss & 0xff_ffff) << 16) | (0x89 << 40) | (((tss >> 24) & 0xff) << 56);
            (*gdt)[4] = tss >> 32;
            let ptr: [u64; 2] = [(39u64) | ((gdt as u64) << 16), (gdt as u64) >> 48];
            asm!("lgdt [{}]", in(reg) ptr.as_ptr());
            asm!("ltr {0:x}", in(reg) 0x18u64);
            let mut idtr = [0u8; 10];
            asm!("sidt [{}]", in(reg) idtr.as_mut_ptr());
            let idt_base = u64::from_le_bytes(idtr[2..10].try_into().unwrap_or([0; 8]));
            vmwrite(HOST_GDTR_BASE, gdt as u64);
            vmwrite(HOST_IDTR_BASE, idt_base);
            vmwrite(HOST_TR_BASE, tss);
        }
        for (field, sel) in [
            (0x0C00, 0x10),
            (0x0C02, 0x08),
            (0x0C04, 0x10),
            (0x0C06, 0x10),
            (0x0C08, 0x10),
            (0x0C0A, 0x10),
            (0x0C0C, 0x18),
        ] {
            vmwrite(field, sel);
        }
        Ok(VmxVm { gprs: Gprs::default(), launched: false, violations: 0, gpa_matches: 0, walks: 0, caps })
    }

    /// The EPT facts gathered over the run, as checks.
    pub fn report_syndromes(&self, rep: &mut Report) {
        check!(
            rep,
            self.violations > 0 && self.gpa_matches == self.violations,
            "every EPT violation ({}) had a guest-linear address (qualification bit 7; {} in the guest's page walk, bit 8 clear); IA32_VMX_EPT_VPID_CAP = {:#x} (2M {}, 1G {}, A/D {})",
            self.violations,
            self.walks,
            self.caps,
            self.caps & (1 << 16) != 0,
            self.caps & (1 << 17) != 0,
            self.caps & (1 << 21) != 0
        );
    }
}

impl Vm for VmxVm {
    type Fmt = Fmt;
    type Tlb = EptTlb;
    const ARCH: &'static str = "vmx-ept";
    const KEEPS_TLB_ACROSS_EXITS: bool = false;

    fn tlb(&self) -> EptTlb {
        EptTlb
    }

    fn set_root(&mut self, root_pa: u64) {
        // Write-back, 4-level walk, accessed and dirty flags on.
        let eptp = root_pa | 6 | (3 << 3) | (1 << 6);
        EPTP.store(eptp, core::sync::atomic::Ordering::SeqCst);
        vmwrite(EPT_POINTER, eptp);
        invept(1);
    }

    fn code_page(&self) -> Vec<u8> {
        let mut page = alloc::vec![0xF4u8; 0x80]; // HLT filler
        page[..5].copy_from_slice(&[0x89, 0x0B, 0x0F, 0x01, 0xC1]); // mov [ebx], ecx; vmcall
        let l = LOAD_STUB as usize;
        page[l..l + 5].copy_from_slice(&[0x8B, 0x13, 0x0F, 0x01, 0xC1]); // mov edx, [ebx]; vmcall
        page
    }

    fn exec_stub(&self, value: u32) -> Vec<u8> {
        let mut s = alloc::vec![0xBA]; // mov edx, imm32
        s.extend_from_slice(&value.to_le_bytes());
        s.extend_from_slice(&[0x0F, 0x01, 0xC1]); // vmcall
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
        vmwrite(GUEST_RIP, rip);
        let mut faults = 0;
        loop {
            // SAFETY: the VMCS is current and complete; `vmx_enter` restores every callee-saved
            // register, and the host state comes back from the VMCS host area at VM exit.
            let failed = unsafe { vmx_enter(&mut self.gprs, self.launched as u64) };
            if failed != 0 {
                return Err(RunError::Unexpected(0xffff, vmread(VM_INSTRUCTION_ERROR)));
            }
            self.launched = true;
            let reason = vmread(EXIT_REASON);
            match reason & 0xffff {
                EXIT_VMCALL => return Ok(self.gprs.rdx as u32),
                EXIT_EPT_VIOLATION => {
                    let q = vmread(EXIT_QUALIFICATION);
                    let gpa = vmread(GUEST_PHYSICAL_ADDRESS);
                    self.violations += 1;
                    // A guest-linear address (bit 7), for the final access (bit 8) or for the
                    // guest's page-table walk (bit 8 clear, guest paging on).
                    self.gpa_matches += (q & (1 << 7) != 0) as u64;
                    self.walks += (q & (1 << 7) != 0 && q & (1 << 8) == 0) as u64;
                    let access = if q & 4 != 0 {
                        Access::Exec
                    } else if q & 2 != 0 {
                        Access::Write
                    } else {
                        Access::Read
                    };
                    let f = S2Fault { gpa, access, permission: Some(q & 0x38 != 0), syndrome: q };
                    faults += 1;
                    if faults > MAX_FAULTS_PER_OP {
                        return Err(RunError::TooManyFaults);
                    }
                    if !on_fault(&f) {
                        return Err(RunError::FaultRefused);
                    }
                }
                _ => return Err(RunError::Unexpected(reason, vmread(EXIT_QUALIFICATION))),
            }
        }
    }
}

impl hv_common::guest_paging::GuestPaging for VmxVm {
    fn set_guest_paging(&mut self, cr3: Option<u64>) {
        let cr0 = rdmsr(IA32_VMX_CR0_FIXED0) & !((1 << 31) | 1);
        let cr4 = rdmsr(IA32_VMX_CR4_FIXED0);
        match cr3 {
            Some(cr3) => {
                vmwrite(GUEST_CR0, cr0 | 0x8000_0011); // PG | ET | PE
                vmwrite(CR0_READ_SHADOW, 0x8000_0011);
                vmwrite(GUEST_CR4, cr4 | (1 << 4)); // PSE
                vmwrite(CR4_READ_SHADOW, 1 << 4);
                vmwrite(GUEST_CR3, cr3);
            }
            None => {
                vmwrite(GUEST_CR0, cr0 | 0x11);
                vmwrite(CR0_READ_SHADOW, 0x11);
                vmwrite(GUEST_CR4, cr4);
                vmwrite(CR4_READ_SHADOW, 0);
                vmwrite(GUEST_CR3, 0);
            }
        }
    }

    /// Exit qualification bit 8 clear (with bit 7 set): the access was to a guest
    /// paging-structure entry, not the final translation.
    fn in_guest_walk(f: &S2Fault) -> bool {
        f.syndrome & (1 << 7) != 0 && f.syndrome & (1 << 8) == 0
    }
}
