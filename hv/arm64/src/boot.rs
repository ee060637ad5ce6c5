//! Boot at EL2 (`_start` on CPU 0, `_start_secondary` on CPU 1 after PSCI CPU_ON): stack, .bss, no FP traps, exception vectors, and the EL2 stage-1 MMU (identity
//! map with 1 GiB blocks: Device for GiB 0, where the UART lives, Normal write-back for RAM), so
//! that the hypervisor's own accesses are Normal memory (exclusives, unaligned accesses).
//!
//! Guest entry and exit: `guest_enter(ctx)` saves the host's callee-saved registers on the EL2
//! stack, loads the guest's x0..x30, ELR and SPSR from `ctx` and ERETs to EL1. A synchronous
//! exception from the guest lands on the lower-EL vector, which stores the guest registers back
//! into `ctx` (kept in TPIDR_EL2) and returns from `guest_enter`.

core::arch::global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    ldr x0, =boot_stack_top
    mov sp, x0
    ldr x0, =__bss_start
    ldr x1, =__bss_end
1:
    cmp x0, x1
    b.hs 2f
    str xzr, [x0], #8
    b 1b
2:
    mov x0, #0x33ff
    msr cptr_el2, x0
    ldr x0, =el2_vectors
    msr vbar_el2, x0
    mov x0, #(1 << 31)
    msr hcr_el2, x0
    isb

    ldr x0, =el2_l1
    mov x1, #0x401
    str x1, [x0]
    mov x2, #1
3:
    lsl x1, x2, #30
    mov x3, #0x705
    orr x1, x1, x3
    str x1, [x0, x2, lsl #3]
    add x2, x2, #1
    cmp x2, #4
    b.lo 3b
    ldr x1, =0xFF00
    msr mair_el2, x1
    ldr x1, =0x80823519
    msr tcr_el2, x1
    msr ttbr0_el2, x0
    isb
    tlbi alle2
    dsb sy
    isb
    ldr x1, =0x30C51835
    msr sctlr_el2, x1
    isb
    bl hv_main
4:
    wfi
    b 4b

    .global _start_secondary
_start_secondary:
    ldr x0, =sec_stack_top
    mov sp, x0
    mov x0, #0x33ff
    msr cptr_el2, x0
    ldr x0, =el2_vectors
    msr vbar_el2, x0
    mov x0, #(1 << 31)
    msr hcr_el2, x0
    ldr x1, =0xFF00
    msr mair_el2, x1
    ldr x1, =0x80823519
    msr tcr_el2, x1
    ldr x0, =el2_l1
    msr ttbr0_el2, x0
    isb
    tlbi alle2
    dsb sy
    isb
    ldr x1, =0x30C51835
    msr sctlr_el2, x1
    isb
    bl hv_secondary
6:
    wfi
    b 6b

    .text
    .global guest_enter
guest_enter:
    stp x19, x20, [sp, #-16]!
    stp x21, x22, [sp, #-16]!
    stp x23, x24, [sp, #-16]!
    stp x25, x26, [sp, #-16]!
    stp x27, x28, [sp, #-16]!
    stp x29, x30, [sp, #-16]!
    msr tpidr_el2, x0
    ldr x1, [x0, #248]
    msr elr_el2, x1
    ldr x1, [x0, #256]
    msr spsr_el2, x1
    ldp x2, x3, [x0, #16]
    ldp x4, x5, [x0, #32]
    ldp x6, x7, [x0, #48]
    ldp x8, x9, [x0, #64]
    ldp x10, x11, [x0, #80]
    ldp x12, x13, [x0, #96]
    ldp x14, x15, [x0, #112]
    ldp x16, x17, [x0, #128]
    ldp x18, x19, [x0, #144]
    ldp x20, x21, [x0, #160]
    ldp x22, x23, [x0, #176]
    ldp x24, x25, [x0, #192]
    ldp x26, x27, [x0, #208]
    ldp x28, x29, [x0, #224]
    ldr x30, [x0, #240]
    ldp x0, x1, [x0]
    eret

guest_exit:
    stp x0, x1, [sp, #-16]!
    mrs x0, tpidr_el2
    stp x2, x3, [x0, #16]
    stp x4, x5, [x0, #32]
    stp x6, x7, [x0, #48]
    stp x8, x9, [x0, #64]
    stp x10, x11, [x0, #80]
    stp x12, x13, [x0, #96]
    stp x14, x15, [x0, #112]
    stp x16, x17, [x0, #128]
    stp x18, x19, [x0, #144]
    stp x20, x21, [x0, #160]
    stp x22, x23, [x0, #176]
    stp x24, x25, [x0, #192]
    stp x26, x27, [x0, #208]
    stp x28, x29, [x0, #224]
    str x30, [x0, #240]
    ldp x2, x3, [sp], #16
    stp x2, x3, [x0]
    mrs x1, elr_el2
    str x1, [x0, #248]
    mrs x1, spsr_el2
    str x1, [x0, #256]
    ldp x29, x30, [sp], #16
    ldp x27, x28, [sp], #16
    ldp x25, x26, [sp], #16
    ldp x23, x24, [sp], #16
    ldp x21, x22, [sp], #16
    ldp x19, x20, [sp], #16
    ret

host_fault:
    mrs x0, esr_el2
    mrs x1, elr_el2
    mrs x2, far_el2
    bl hv_exception
5:
    wfi
    b 5b

    .balign 2048
el2_vectors:
    .balign 128
    b host_fault
    .balign 128
    b host_fault
    .balign 128
    b host_fault
    .balign 128
    b host_fault
    .balign 128
    b host_fault
    .balign 128
    b host_fault
    .balign 128
    b host_fault
    .balign 128
    b host_fault
    .balign 128
    b guest_exit
    .balign 128
    b host_fault
    .balign 128
    b host_fault
    .balign 128
    b host_fault
    .balign 128
    b host_fault
    .balign 128
    b host_fault
    .balign 128
    b host_fault
    .balign 128
    b host_fault

    .section .bss
    .balign 4096
el2_l1:
    .space 4096
boot_stack:
    .space 256 * 1024
boot_stack_top:
sec_stack:
    .space 256 * 1024
sec_stack_top:
"#
);
