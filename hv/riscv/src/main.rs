//! hv-riscv: a bare-metal RISC-V hypervisor (H extension) whose G-stage tables are built and
//! maintained by `slat-mmu`. Booted by `qemu-system-riscv64 -M virt -cpu rv64,h=true -bios none
//! -kernel`; runs the scenario with Sv39x4 and Sv48x4, prints one line per check on the 16550
//! UART and exits through the sifive_test device (status 0 = pass, 1 = fail).
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

mod boot;
mod gstage;

use core::fmt::Write;

use hv_common::heap::BumpHeap;
use hv_common::host::{BareHost, HostLayout};
use hv_common::report::Report;
use hv_common::scenario::{Arenas, Scenario};

#[global_allocator]
static HEAP: BumpHeap = BumpHeap::new();

/// Physical memory plan (QEMU virt -m 3G: RAM 0x8000_0000 .. 0x1_4000_0000; kernel at its
/// start).
const HEAP_BASE: u64 = 0x8100_0000;
const HEAP_LEN: u64 = 32 << 20;
const ARENA_BASE: u64 = 0x8300_0000;
const ARENA_LEN: u64 = 16 << 20;
const POOL_4K: u64 = 0x8400_0000;
const POOL_4K_LEN: u64 = 16 << 20;
const THP_BASE: u64 = 0x8600_0000;
const THP_LEN: u64 = 16 << 20;
const GIGA: u64 = 0xC000_0000;

const UART: u64 = 0x1000_0000;
const SIFIVE_TEST: u64 = 0x10_0000;

/// The 16550 UART of QEMU virt.
pub struct Uart;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            // SAFETY: the 16550 registers of QEMU virt (THR at +0, LSR at +5).
            unsafe {
                while core::ptr::read_volatile((UART + 5) as *const u8) & (1 << 5) == 0 {}
                core::ptr::write_volatile(UART as *mut u8, b);
            }
        }
        Ok(())
    }
}

/// Leave QEMU through the sifive_test device (0x5555: exit 0; 0x13333: exit 1).
pub fn exit(pass: bool) -> ! {
    let v: u32 = if pass { 0x5555 } else { (1 << 16) | 0x3333 };
    // SAFETY: the sifive_test MMIO register of QEMU virt; the write ends the emulation.
    unsafe { core::ptr::write_volatile(SIFIVE_TEST as *mut u32, v) };
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let _ = writeln!(Uart, "PANIC: {info}");
    let _ = writeln!(Uart, "RESULT riscv: FAIL (panic)");
    exit(false)
}

/// Any trap taken by the hypervisor itself (M-mode) is a bug.
#[no_mangle]
extern "C" fn hv_exception(mcause: u64, mepc: u64, mtval: u64) -> ! {
    let _ = writeln!(Uart, "host exception: mcause {mcause:#x} mepc {mepc:#x} mtval {mtval:#x}");
    let _ = writeln!(Uart, "RESULT riscv: FAIL (host exception)");
    exit(false)
}

#[no_mangle]
extern "C" fn hv_main() -> ! {
    HEAP.init(HEAP_BASE, HEAP_LEN);
    let _ =
        writeln!(Uart, "hv-riscv: slat-mmu on the RISC-V H extension, G-stage (injected bug: {})", hv_common::INJECTED);
    let host = BareHost::new(HostLayout { pool_4k: (POOL_4K, POOL_4K_LEN), thp: (THP_BASE, THP_LEN), giga: GIGA });
    let mut pass = true;
    pass &= run::<gstage::Fmt39>(&host, "riscv-sv39x4");
    pass &= run::<gstage::Fmt48>(&host, "riscv-sv48x4");
    let _ = writeln!(Uart, "RESULT riscv: {}", if pass { "PASS" } else { "FAIL" });
    exit(pass)
}

fn run<F: slat_pt::Format>(host: &BareHost, name: &'static str) -> bool {
    let mut uart = Uart;
    let mut r = Report::new(&mut uart, name);
    let mut vm = gstage::GVm::<F>::new();
    let arenas = Arenas { base: ARENA_BASE, len: ARENA_LEN };
    Scenario::new(&mut vm, &mut r, host, arenas).run_all();
    vm.report_syndromes(&mut r);
    r.finish()
}
