//! Boot: QEMU enters `pvh_start` in 32-bit protected mode with paging off (PVH), and so does
//! GRUB through the multiboot2 header (Bochs). We zero .bss,
//! identity-map the low 4 GiB with 2 MiB pages, turn on long mode with EFER.NXE (slat's NPT
//! leaves use NX, which is reserved without it), and call `hv_main` on the boot stack.

core::arch::global_asm!(
    r#"
    .section .note.pvh, "a"
    .p2align 2
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .p2align 2
    .quad pvh_start

    .section .multiboot2, "a"
    .p2align 3
mb2_start:
    .long 0xE85250D6
    .long 0
    .long mb2_end - mb2_start
    .long 0x100000000 - (0xE85250D6 + (mb2_end - mb2_start))
    .p2align 3
    .short 3
    .short 0
    .long 12
    .long pvh_start
    .p2align 3
    .short 0
    .short 0
    .long 8
mb2_end:

    .section .text.boot, "ax"
    .code32
    .global pvh_start
pvh_start:
    cli
    mov edi, offset __bss_start
    mov ecx, offset __bss_end
    sub ecx, edi
    xor eax, eax
    cld
    rep stosb
    mov esp, offset boot_stack_top

    mov eax, offset boot_pdpt
    or eax, 3
    mov dword ptr [boot_pml4], eax
    xor ecx, ecx
2:
    mov eax, ecx
    shl eax, 12
    add eax, offset boot_pd
    or eax, 3
    mov dword ptr [boot_pdpt + ecx * 8], eax
    inc ecx
    cmp ecx, 4
    jb 2b
    xor ecx, ecx
3:
    mov eax, ecx
    shl eax, 21
    or eax, 0x83
    mov dword ptr [boot_pd + ecx * 8], eax
    inc ecx
    cmp ecx, 2048
    jb 3b

    mov eax, offset boot_pml4
    mov cr3, eax
    mov eax, cr4
    or eax, 0x620
    mov cr4, eax
    mov ecx, 0xC0000080
    rdmsr
    or eax, 0x900
    wrmsr
    mov eax, cr0
    and eax, 0xFFFFFFFB
    or eax, 0x80000003
    mov cr0, eax
    lgdt [boot_gdt_ptr]
    mov eax, 0x08
    push eax
    mov eax, offset long_entry
    push eax
    retf

    .code64
long_entry:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov fs, ax
    mov gs, ax
    mov rsp, offset boot_stack_top
    xor rbp, rbp
    call hv_main
4:
    hlt
    jmp 4b

    .global exception_entry
exception_entry:
    mov rdi, rsp
    and rsp, -16
    call hv_exception
5:
    hlt
    jmp 5b

    .section .rodata
    .p2align 4
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
boot_gdt_ptr:
    .word 23
    .quad boot_gdt

    .section .bss
    .p2align 12
boot_pml4:
    .space 4096
boot_pdpt:
    .space 4096
boot_pd:
    .space 4 * 4096
boot_stack:
    .space 256 * 1024
boot_stack_top:
"#
);
