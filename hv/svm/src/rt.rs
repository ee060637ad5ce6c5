//! What a freestanding kernel built for `x86_64-unknown-linux-gnu` must supply itself: the
//! memory functions (normally libc's), the panic handler, and the unwinding symbols that the
//! target's precompiled `liballoc` references (nothing unwinds: panic = abort).

use core::arch::asm;

/// # Safety
/// C `memcpy`: `n` bytes, non-overlapping.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; `rep movsb` cannot be turned back into a memcpy call.
    unsafe { asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _, options(nostack)) };
    dst
}

/// # Safety
/// C `memmove`.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize + n) {
        // SAFETY: forward copy is safe when dst is below src or the ranges do not overlap.
        unsafe { memcpy(dst, src, n) };
    } else {
        // SAFETY: backward copy with the direction flag set, restored after.
        unsafe {
            asm!("std", "rep movsb", "cld",
                inout("rcx") n => _, inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _, options(nostack))
        };
    }
    dst
}

/// # Safety
/// C `memset`.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract.
    unsafe { asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8, options(nostack)) };
    dst
}

/// # Safety
/// C `memcmp`.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: the caller guarantees `n` readable bytes at both.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return x as i32 - y as i32;
        }
    }
    0
}

/// # Safety
/// C `bcmp`.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: forwarded.
    unsafe { memcmp(a, b, n) }
}

/// Never called: nothing unwinds with panic = abort.
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

/// Never called: nothing unwinds with panic = abort.
#[no_mangle]
pub extern "C" fn _Unwind_Resume() -> ! {
    crate::exit(false)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    use core::fmt::Write;
    let _ = writeln!(crate::Serial, "PANIC: {info}");
    let _ = writeln!(crate::Serial, "RESULT {}: FAIL (panic)", crate::ARCH);
    crate::exit(false)
}
