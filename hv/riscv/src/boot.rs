//! Boot in M-mode: park every hart but 0, stack, .bss, FP on (mstatus.FS), a PMP entry that
//! grants everything (without one, VS-mode accesses fail PMP checks), and the host trap vector.
//!
//! The hypervisor stays in M-mode and runs the guest in VS-mode: `guest_enter(ctx)` saves the
//! host's callee-saved registers, sets mstatus.MPP = S and MPV = 1, points mtvec at `guest_trap`
//! and MRETs; `guest_trap` stores the guest registers into `ctx` (found through mscratch) and
//! returns from `guest_enter`.

core::arch::global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    csrr t0, mhartid
    bnez t0, 9f
    la sp, boot_stack_top
    la t0, __bss_start
    la t1, __bss_end
1:
    bgeu t0, t1, 2f
    sd zero, 0(t0)
    addi t0, t0, 8
    j 1b
2:
    li t0, 0x6000
    csrs mstatus, t0
    li t0, -1
    csrw pmpaddr0, t0
    li t0, 0x1f
    csrw pmpcfg0, t0
    la t0, host_trap
    csrw mtvec, t0
    call hv_main
9:
    wfi
    j 9b

    .text
    .global guest_enter
guest_enter:
    addi sp, sp, -112
    sd ra, 0(sp)
    sd s0, 8(sp)
    sd s1, 16(sp)
    sd s2, 24(sp)
    sd s3, 32(sp)
    sd s4, 40(sp)
    sd s5, 48(sp)
    sd s6, 56(sp)
    sd s7, 64(sp)
    sd s8, 72(sp)
    sd s9, 80(sp)
    sd s10, 88(sp)
    sd s11, 96(sp)
    sd sp, 256(a0)
    csrw mscratch, a0
    la t0, guest_trap
    csrw mtvec, t0
    ld t0, 248(a0)
    csrw mepc, t0
    li t0, 0x1800
    csrc mstatus, t0
    li t0, 0x8000000800
    csrs mstatus, t0
    ld x1, 0(a0)
    ld x2, 8(a0)
    ld x3, 16(a0)
    ld x4, 24(a0)
    ld x5, 32(a0)
    ld x6, 40(a0)
    ld x7, 48(a0)
    ld x8, 56(a0)
    ld x9, 64(a0)
    ld x11, 80(a0)
    ld x12, 88(a0)
    ld x13, 96(a0)
    ld x14, 104(a0)
    ld x15, 112(a0)
    ld x16, 120(a0)
    ld x17, 128(a0)
    ld x18, 136(a0)
    ld x19, 144(a0)
    ld x20, 152(a0)
    ld x21, 160(a0)
    ld x22, 168(a0)
    ld x23, 176(a0)
    ld x24, 184(a0)
    ld x25, 192(a0)
    ld x26, 200(a0)
    ld x27, 208(a0)
    ld x28, 216(a0)
    ld x29, 224(a0)
    ld x30, 232(a0)
    ld x31, 240(a0)
    ld x10, 72(a0)
    mret

    .balign 4
guest_trap:
    csrrw a0, mscratch, a0
    sd x1, 0(a0)
    sd x2, 8(a0)
    sd x3, 16(a0)
    sd x4, 24(a0)
    sd x5, 32(a0)
    sd x6, 40(a0)
    sd x7, 48(a0)
    sd x8, 56(a0)
    sd x9, 64(a0)
    sd x11, 80(a0)
    sd x12, 88(a0)
    sd x13, 96(a0)
    sd x14, 104(a0)
    sd x15, 112(a0)
    sd x16, 120(a0)
    sd x17, 128(a0)
    sd x18, 136(a0)
    sd x19, 144(a0)
    sd x20, 152(a0)
    sd x21, 160(a0)
    sd x22, 168(a0)
    sd x23, 176(a0)
    sd x24, 184(a0)
    sd x25, 192(a0)
    sd x26, 200(a0)
    sd x27, 208(a0)
    sd x28, 216(a0)
    sd x29, 224(a0)
    sd x30, 232(a0)
    sd x31, 240(a0)
    csrr t0, mscratch
    sd t0, 72(a0)
    csrr t0, mepc
    sd t0, 248(a0)
    ld sp, 256(a0)
    la t0, host_trap
    csrw mtvec, t0
    ld ra, 0(sp)
    ld s0, 8(sp)
    ld s1, 16(sp)
    ld s2, 24(sp)
    ld s3, 32(sp)
    ld s4, 40(sp)
    ld s5, 48(sp)
    ld s6, 56(sp)
    ld s7, 64(sp)
    ld s8, 72(sp)
    ld s9, 80(sp)
    ld s10, 88(sp)
    ld s11, 96(sp)
    addi sp, sp, 112
    ret

    .balign 4
host_trap:
    csrr a0, mcause
    csrr a1, mepc
    csrr a2, mtval
    call hv_exception
8:
    wfi
    j 8b

    .section .bss
    .balign 4096
boot_stack:
    .space 256 * 1024
boot_stack_top:
"#
);
