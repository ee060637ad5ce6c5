//! hv-arm64: a bare-metal arm64 hypervisor at EL2 whose stage-2 tables are built and
//! maintained by `slat-mmu`. Booted by `qemu-system-aarch64 -M virt,virtualization=on -cpu max
//! -kernel`; prints one line per check on the PL011 UART and exits through semihosting with
//! status 0 (pass) or 1 (fail). Runs the scenario with both stage-2 start levels: `Arm64S2L1`
//! (40-bit IPA, two concatenated level-1 root tables) and `Arm64S2L0` (48-bit IPA).
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

mod boot;
mod s2;
mod smp;

use core::arch::asm;
use core::fmt::Write;

use hv_common::heap::BumpHeap;
use hv_common::host::{BareHost, HostLayout};
use hv_common::report::Report;
use hv_common::scenario::{Arenas, Scenario};

#[global_allocator]
static HEAP: BumpHeap = BumpHeap::new();

/// Physical memory plan (QEMU virt -m 3G: RAM 0x4000_0000 .. 0x1_0000_0000; kernel at
/// 0x4020_0000).
const HEAP_BASE: u64 = 0x4100_0000;
const HEAP_LEN: u64 = 32 << 20;
const ARENA_BASE: u64 = 0x4300_0000;
const ARENA_LEN: u64 = 16 << 20;
const POOL_4K: u64 = 0x4400_0000;
const POOL_4K_LEN: u64 = 16 << 20;
const THP_BASE: u64 = 0x4600_0000;
const THP_LEN: u64 = 16 << 20;
const GIGA: u64 = 0x8000_0000;

const UART: u64 = 0x0900_0000;

/// The PL011 UART of QEMU virt.
pub struct Uart;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            // SAFETY: the PL011 registers of QEMU virt (DR at +0, FR at +0x18), mapped Device.
            unsafe {
                while core::ptr::read_volatile((UART + 0x18) as *const u32) & (1 << 5) != 0 {}
                core::ptr::write_volatile(UART as *mut u32, b as u32);
            }
        }
        Ok(())
    }
}

/// Leave QEMU through semihosting SYS_EXIT (status 0 = pass, 1 = fail).
pub fn exit(pass: bool) -> ! {
    let block: [u64; 2] = [0x20026, if pass { 0 } else { 1 }];
    loop {
        // SAFETY: the semihosting call reads the two-word block and ends the emulation.
        unsafe { asm!("hlt #0xf000", in("x0") 0x18u64, in("x1") block.as_ptr(), options(nostack)) };
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let _ = writeln!(Uart, "PANIC: {info}");
    let _ = writeln!(Uart, "RESULT arm64: FAIL (panic)");
    exit(false)
}

/// Any synchronous exception taken at EL2 itself is a hypervisor bug.
#[no_mangle]
extern "C" fn hv_exception(esr: u64, elr: u64, far: u64) -> ! {
    let _ = writeln!(Uart, "host exception: ESR_EL2 {esr:#x} ELR_EL2 {elr:#x} FAR_EL2 {far:#x}");
    let _ = writeln!(Uart, "RESULT arm64: FAIL (host exception)");
    exit(false)
}

#[no_mangle]
extern "C" fn hv_main() -> ! {
    HEAP.init(HEAP_BASE, HEAP_LEN);
    let _ = writeln!(Uart, "hv-arm64: slat-mmu on arm64 EL2 stage 2 (injected bug: {})", hv_common::INJECTED);
    let host = BareHost::new(HostLayout { pool_4k: (POOL_4K, POOL_4K_LEN), thp: (THP_BASE, THP_LEN), giga: GIGA });
    let mut pass = true;
    pass &= run::<s2::Fmt1>(&host, "arm64-s2l1");
    pass &= run::<s2::Fmt0>(&host, "arm64-s2l0");
    let host: &'static BareHost = alloc::boxed::Box::leak(alloc::boxed::Box::new(host));
    let mut uart = Uart;
    let mut r = Report::new(&mut uart, "arm64-smp");
    let third = (ARENA_LEN / 3) & !0xfff;
    smp::run(&mut r, host, [(ARENA_BASE, third), (ARENA_BASE + third, third), (ARENA_BASE + 2 * third, third)]);
    pass &= r.finish();
    let _ = writeln!(Uart, "RESULT arm64: {}", if pass { "PASS" } else { "FAIL" });
    exit(pass)
}

fn run<F: slat_pt::Format>(host: &BareHost, name: &'static str) -> bool {
    let mut uart = Uart;
    let mut r = Report::new(&mut uart, name);
    let mut vm = s2::S2Vm::<F>::new();
    vm.report_features(&mut r);
    let arenas = Arenas { base: ARENA_BASE, len: ARENA_LEN };
    Scenario::new(&mut vm, &mut r, host, arenas).run_all();
    vm.report_syndromes(&mut r);
    r.finish()
}
