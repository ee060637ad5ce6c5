//! hv-vmx: a bare-metal x86 hypervisor on Intel VMX with EPT, whose stage-2 tables are built
//! and maintained by `slat-mmu`. QEMU's TCG has no VMX, so it runs on Bochs 2.7
//! (`corei7_skylake_x`: 4-level EPT with A/D bits, 2 MiB and 1 GiB pages), booted by GRUB through
//! its multiboot2 header; it prints one line per check on COM1 and ends the simulation by writing
//! "Shutdown" to Bochs' port 0x8900.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

#[path = "../../svm/src/boot.rs"]
mod boot;
#[path = "../../svm/src/rt.rs"]
mod rt;
mod vmx;

use core::arch::asm;
use core::fmt::Write;

use hv_common::heap::BumpHeap;
use hv_common::host::{BareHost, HostLayout};
use hv_common::report::Report;
use hv_common::scenario::{Arenas, Scenario};

/// Name on the verdict line.
pub const ARCH: &str = "vmx-ept";

#[global_allocator]
static HEAP: BumpHeap = BumpHeap::new();

/// Physical memory plan (Bochs megs: 2048; the kernel sits at 1 MiB).
const HEAP_BASE: u64 = 16 << 20;
const HEAP_LEN: u64 = 32 << 20;
const ARENA_BASE: u64 = 48 << 20;
const ARENA_LEN: u64 = 16 << 20;
const POOL_4K: u64 = 64 << 20;
const POOL_4K_LEN: u64 = 16 << 20;
const THP_BASE: u64 = 96 << 20;
const THP_LEN: u64 = 16 << 20;
const GIGA: u64 = 1 << 30;

/// COM1.
pub struct Serial;

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                putc(b'\r');
            }
            putc(b);
        }
        Ok(())
    }
}

/// Wait for the transmitter holding register to be empty (LSR bit 5), then send.
fn putc(b: u8) {
    while inb(0x3fd) & 0x20 == 0 {
        core::hint::spin_loop();
    }
    outb(0x3f8, b);
}

fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: port I/O read of the COM1 line status register; no memory is touched.
    unsafe { asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack)) };
    v
}

fn outb(port: u16, v: u8) {
    // SAFETY: port I/O to COM1 / the debug-exit device; no memory is touched.
    unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack)) };
}

/// Program COM1 for 8N1 (the BIOS and GRUB leave it in a state that garbles output).
fn serial_init() {
    for (port, v) in
        [(0x3f9, 0x00), (0x3fb, 0x80), (0x3f8, 0x01), (0x3f9, 0x00), (0x3fb, 0x03), (0x3fa, 0xc7), (0x3fc, 0x0b)]
    {
        outb(port, v);
    }
}

/// End the Bochs simulation ("Shutdown" to port 0x8900); the verdict is on the console.
pub fn exit(_pass: bool) -> ! {
    for b in b"Shutdown" {
        outb(0x8900, *b);
    }
    loop {
        // SAFETY: halting with interrupts off ends the run if the exit device is missing.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}

#[repr(C, packed)]
#[derive(Clone, Copy)]
struct IdtEntry {
    off_lo: u16,
    sel: u16,
    ist: u8,
    attr: u8,
    off_mid: u16,
    off_hi: u32,
    zero: u32,
}

static mut IDT: [IdtEntry; 32] = [IdtEntry { off_lo: 0, sel: 0, ist: 0, attr: 0, off_mid: 0, off_hi: 0, zero: 0 }; 32];

extern "C" {
    fn exception_entry();
}

/// Any host exception is a hypervisor bug: print the frame and fail.
#[no_mangle]
extern "C" fn hv_exception(frame: *const u64) -> ! {
    // SAFETY: `frame` is the interrupt stack frame the CPU pushed (at least 5 words).
    let w = unsafe { core::slice::from_raw_parts(frame, 6) };
    let _ = writeln!(Serial, "host exception: stack {:#x?}", w);
    let _ = writeln!(Serial, "RESULT vmx-ept: FAIL (host exception)");
    exit(false)
}

fn install_idt() {
    let h = exception_entry as *const () as u64;
    let e = IdtEntry {
        off_lo: h as u16,
        sel: 0x08,
        ist: 0,
        attr: 0x8E,
        off_mid: (h >> 16) as u16,
        off_hi: (h >> 32) as u32,
        zero: 0,
    };
    // SAFETY: single-threaded boot; the IDT is static and lives forever.
    unsafe {
        let idt = &raw mut IDT;
        for v in (*idt).iter_mut() {
            *v = e;
        }
        let ptr: [u64; 2] = [((32 * 16 - 1) as u64) | ((idt as u64) << 16), (idt as u64) >> 48];
        asm!("lidt [{}]", in(reg) ptr.as_ptr(), options(nostack));
    }
}

#[no_mangle]
extern "C" fn hv_main() -> ! {
    serial_init();
    install_idt();
    HEAP.init(HEAP_BASE, HEAP_LEN);
    let mut out = Serial;
    let _ = writeln!(out, "\nhv-vmx: slat-mmu on Intel VMX + EPT (injected bug: {})", hv_common::INJECTED);
    let mut vm = match vmx::VmxVm::new() {
        Ok(vm) => vm,
        Err(why) => {
            let _ = writeln!(out, "RESULT vmx-ept: FAIL ({why})");
            exit(false);
        }
    };
    let host = BareHost::new(HostLayout { pool_4k: (POOL_4K, POOL_4K_LEN), thp: (THP_BASE, THP_LEN), giga: GIGA });
    let mut serial = Serial;
    let mut r = Report::new(&mut serial, "vmx-ept");
    let arenas = Arenas { base: ARENA_BASE, len: ARENA_LEN };
    Scenario::new(&mut vm, &mut r, &host, arenas).run_all();
    hv_common::guest_paging::run(&mut vm, &mut r, &host, (ARENA_BASE, ARENA_LEN / 4));
    vm.report_syndromes(&mut r);
    let pass = r.finish();
    exit(pass)
}
