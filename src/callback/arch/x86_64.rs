//! x86_64 System V trampolines and dispatchers.
//!
//! ## The code tables
//! `cbslot_tramp_table` is two 64 KiB, page-aligned tables of code assembled into the library, one per kind
//! of entry (tracked, untracked). Each holds its dispatcher in its first [`SLOT_OFFSET`] bytes, then 4064
//! stubs of 16 bytes. They are never run where they are: cbslot maps *copies* of one (read+exec) with a
//! read-write data region of the same size right after each copy. Stub `k` (at `SLOT_OFFSET + 16k`) is
//! ```text
//! endbr64
//! lea  TABLE_BYTES(%rip of the stub), %r11   ; r11 = &slot[k] = {fn, userdata}, 64 KiB further on
//! jmp  dispatch                              ; a direct jump inside the same copy
//! ```
//! The dispatchers reach everything else through the data region's header (also PC-relative): the TLS
//! offset of this thread's in-flight record pointer, and the addresses of three Rust functions. So every
//! copy works wherever it is mapped.
//!
//! ## The tracked dispatcher
//! Runs with `r11 = &slot` and the caller's arguments untouched:
//! 1. Pushes the slot on this thread's in-flight record (depth first, then the entry, so a signal handler
//!    that calls an entry in between cannot lose it). The record stays in `rbx` (callee-saved) for the way
//!    out. Past the record's own [`DEPTH_MAX`] cells, a Rust function gives the cell (the record grows page
//!    by page).
//! 2. Loads `fn`; NULL means the slot is not registered: the stale path.
//! 3. Shifts the integer argument registers up by one (`rdi..r8 -> rsi..r9`), puts `userdata` in `rdi`, and
//!    calls `fn`. `rax` (the vector-register count of a variadic call) and `xmm0..7` pass through.
//! 4. Pops the record and returns `fn`'s result as is (`rax:rdx`, `xmm0:xmm1`).
//!
//! Stack-passed arguments are not supported: the dispatcher's call moves them. If `fn` is left by an
//! exception or a forced unwind, the dispatcher's personality routine puts the depth back.
//!
//! ## The untracked dispatcher
//! Steps 2 and 3 only, ending in a jump to `fn` instead of a call: no record, no second return, and the
//! stack is the caller's, so stack-passed arguments reach `fn` where it expects them.
//!
//! ## Unwind information
//! `cbslot_tramp_cfi*` are `.eh_frame` records for each table, with code addresses relative to the table;
//! `callback::unwind` makes them absolute for each mapped copy and registers them.
//!
//! ## How another architecture slots in
//! It provides the same items: a code table whose stubs find their data slot PC-relatively and branch to a
//! dispatcher in the same table, which reads what it needs from the data header (on aarch64: `adr x17,
//! slot; b dispatch`, `ldr` from the header, shift `x0..x6` up, `mrs tpidr_el0` for the TLS word), the
//! header layout, and the constants below. Nothing outside `arch/` depends on x86_64.

use super::{Header, SLOT_OFFSET, SLOTS_PER_BLOCK, STUB_BYTES, TABLE_BYTES};
use crate::inflight::{DEPTH_MAX, Rec};
use core::mem::offset_of;

// The two code tables (tracked, then untracked), one after the other in their own section, and the unwind
// information for each: `.eh_frame`-format templates whose code addresses are offsets from the table's
// start, made absolute for each mapped copy (`callback::unwind`). DWARF register numbers: rbx 3, rsp 7,
// return address 16.
core::arch::global_asm!(
    // the integer argument registers move up by one (rdi..r8 -> rsi..r9), userdata (slot + 8) goes first
    ".macro cbslot_userdata_first",
    "    mov %r8, %r9",
    "    mov %rcx, %r8",
    "    mov %rdx, %rcx",
    "    mov %rsi, %rdx",
    "    mov %rdi, %rsi",
    "    movq 8(%r11), %rdi",
    ".endm",
    ".pushsection .text.cbslot_tramp,\"ax\",@progbits",
    ".balign 4096",
    ".globl cbslot_tramp_table",
    ".hidden cbslot_tramp_table",
    "cbslot_tramp_table:",
    // ======== tracked: the in-flight record knows when the call returns ========
    ".Lt0:",
    ".Lt_dispatch:", // r11 = &slot
    "    push %rbx",
    ".Lt_pushed:",
    "    movq .Lt0 + {table} + {h_tls}(%rip), %r10",
    "    movq %fs:(%r10), %rbx",
    "    test %rbx, %rbx",
    "    jz 5f",
    // push the slot on the record (kept in rbx, callee-saved, for the way out): depth first, then the
    // entry, so a signal handler that calls an entry in between cannot lose it
    "1:",
    "    movq {depth}(%rbx), %r10",
    "    incq %r10",
    "    movq %r10, {depth}(%rbx)",
    "    cmp ${depth_max}, %r10",
    "    ja 3f",
    "    movq %r11, {stack} - 8(%rbx,%r10,8)",
    "2:",
    "    movq (%r11), %r10",
    "    test %r10, %r10",
    "    jz 6f",
    "    cbslot_userdata_first",
    "    call *%r10",
    ".Lt_ret_fn:",
    // leave: pop the record
    "7:",
    "    decq {depth}(%rbx)",
    "    pop %rbx",
    ".Lt_popped:",
    "    ret",
    ".Lt_after_ret:",
    // nested deeper than the record's own stack: its cell is in the record's overflow pages
    "3:",
    "    movq .Lt0 + {table} + {h_deep}(%rip), %r10",
    "    call .Lt_saving",
    "    movq %r11, (%r10)",
    "    jmp 2b",
    // stale: the slot has no fn; the entry that was called is 64 KiB before its slot. Returns 0 in every
    // return register.
    "6:",
    "    lea -{table}(%r11), %rdi",
    "    call *.Lt0 + {table} + {h_stale}(%rip)",
    ".Lt_ret_stale:",
    "    xor %eax, %eax",
    "    xor %edx, %edx",
    "    pxor %xmm0, %xmm0",
    "    pxor %xmm1, %xmm1",
    "    jmp 7b",
    // first call on this thread: get a record
    "5:",
    "    movq .Lt0 + {table} + {h_acquire}(%rip), %r10",
    "    call .Lt_saving",
    "    mov %r10, %rbx",
    "    jmp 1b",
    ".Lt_dispatch_end:",
    // calls *r10 (no arguments), keeping every argument register (and rax, r11); returns its result in r10
    ".Lt_saving:",
    "    sub $200, %rsp",
    ".Lt_saving_sub:",
    "    movq %rdi, 0(%rsp)",
    "    movq %rsi, 8(%rsp)",
    "    movq %rdx, 16(%rsp)",
    "    movq %rcx, 24(%rsp)",
    "    movq %r8, 32(%rsp)",
    "    movq %r9, 40(%rsp)",
    "    movq %rax, 48(%rsp)",
    "    movq %r11, 56(%rsp)",
    "    movaps %xmm0, 64(%rsp)",
    "    movaps %xmm1, 80(%rsp)",
    "    movaps %xmm2, 96(%rsp)",
    "    movaps %xmm3, 112(%rsp)",
    "    movaps %xmm4, 128(%rsp)",
    "    movaps %xmm5, 144(%rsp)",
    "    movaps %xmm6, 160(%rsp)",
    "    movaps %xmm7, 176(%rsp)",
    "    call *%r10",
    "    mov %rax, %r10",
    "    movq 0(%rsp), %rdi",
    "    movq 8(%rsp), %rsi",
    "    movq 16(%rsp), %rdx",
    "    movq 24(%rsp), %rcx",
    "    movq 32(%rsp), %r8",
    "    movq 40(%rsp), %r9",
    "    movq 48(%rsp), %rax",
    "    movq 56(%rsp), %r11",
    "    movaps 64(%rsp), %xmm0",
    "    movaps 80(%rsp), %xmm1",
    "    movaps 96(%rsp), %xmm2",
    "    movaps 112(%rsp), %xmm3",
    "    movaps 128(%rsp), %xmm4",
    "    movaps 144(%rsp), %xmm5",
    "    movaps 160(%rsp), %xmm6",
    "    movaps 176(%rsp), %xmm7",
    "    add $200, %rsp",
    ".Lt_saving_add:",
    "    ret",
    ".Lt_saving_end:",
    ".fill {slot_offset} - (. - .Lt0), 1, 0xcc",
    // stub k and its slot are exactly TABLE_BYTES apart
    ".Lt_stubs:",
    ".rept {slots}",
    "0:  endbr64",
    "    lea 0b + {table}(%rip), %r11",
    "    jmp .Lt_dispatch",
    "    .balign {stub}, 0xcc",
    ".endr",
    ".Lt_end:",
    // ======== untracked: move the arguments and jump to fn ========
    ".Lu0:",
    ".Lu_dispatch:",
    "    movq (%r11), %r10",
    "    test %r10, %r10",
    "    jz 6f",
    "    cbslot_userdata_first",
    "    jmp *%r10",
    "6:",
    "    sub $8, %rsp",
    ".Lu_sub:",
    "    lea -{table}(%r11), %rdi",
    "    call *.Lu0 + {table} + {h_stale}(%rip)",
    "    xor %eax, %eax",
    "    xor %edx, %edx",
    "    pxor %xmm0, %xmm0",
    "    pxor %xmm1, %xmm1",
    "    add $8, %rsp",
    ".Lu_add:",
    "    ret",
    ".Lu_dispatch_end:",
    ".fill {slot_offset} - (. - .Lu0), 1, 0xcc",
    ".Lu_stubs:",
    ".rept {slots}",
    "0:  endbr64",
    "    lea 0b + {table}(%rip), %r11",
    "    jmp .Lu_dispatch",
    "    .balign {stub}, 0xcc",
    ".endr",
    ".Lu_end:",
    ".popsection",

    // ---- unwind information templates ----
    ".pushsection .rodata.cbslot_tramp_cfi,\"a\",@progbits",
    ".balign 8",
    ".globl cbslot_tramp_cfi",
    ".hidden cbslot_tramp_cfi",
    "cbslot_tramp_cfi:",
    // CIE: code alignment 1, data alignment -8, return address column 16, a personality (patched to an
    // absolute address), absolute FDE addresses; CFA = rsp + 8, return address at CFA - 8
    ".Lt_cie:",
    "    .4byte .Lt_cie_end - .Lt_cie - 4",
    "    .4byte 0",
    "    .byte 1",
    "    .asciz \"zPR\"",
    "    .byte 1, 0x78, 16, 10, 0",
    "    .quad 0",
    "    .byte 0",
    "    .byte 0x0c, 7, 8, 0x90, 1",
    "    .balign 8, 0",
    ".Lt_cie_end:",
    // the dispatcher: rbx pushed, CFA = rsp + 16 until the final pop
    ".Lt_fde1:",
    "    .4byte .Lt_fde1_end - .Lt_fde1 - 4",
    "    .4byte . - .Lt_cie",
    "    .quad .Lt_dispatch - .Lt0",
    "    .quad .Lt_dispatch_end - .Lt_dispatch",
    "    .byte 0",
    "    .byte 0x04",
    "    .4byte .Lt_pushed - .Lt_dispatch",
    "    .byte 0x0e, 16, 0x83, 2",
    "    .byte 0x04",
    "    .4byte .Lt_popped - .Lt_pushed",
    "    .byte 0x0a, 0x0e, 8, 0xc3",
    "    .byte 0x04",
    "    .4byte .Lt_after_ret - .Lt_popped",
    "    .byte 0x0b",
    "    .balign 8, 0",
    ".Lt_fde1_end:",
    // the same without a personality, for the rest
    ".Lt_cie2:",
    "    .4byte .Lt_cie2_end - .Lt_cie2 - 4",
    "    .4byte 0",
    "    .byte 1",
    "    .asciz \"zR\"",
    "    .byte 1, 0x78, 16, 1, 0",
    "    .byte 0x0c, 7, 8, 0x90, 1",
    "    .balign 8, 0",
    ".Lt_cie2_end:",
    // the register-saving helper: CFA = rsp + 208 between its sub and add
    ".Lt_fde2:",
    "    .4byte .Lt_fde2_end - .Lt_fde2 - 4",
    "    .4byte . - .Lt_cie2",
    "    .quad .Lt_saving - .Lt0",
    "    .quad .Lt_saving_end - .Lt_saving",
    "    .byte 0",
    "    .byte 0x04",
    "    .4byte .Lt_saving_sub - .Lt_saving",
    "    .byte 0x0e, 0xd0, 0x01",
    "    .byte 0x04",
    "    .4byte .Lt_saving_add - .Lt_saving_sub",
    "    .byte 0x0e, 8",
    "    .balign 8, 0",
    ".Lt_fde2_end:",
    // the stubs: nothing pushed
    ".Lt_fde3:",
    "    .4byte .Lt_fde3_end - .Lt_fde3 - 4",
    "    .4byte . - .Lt_cie2",
    "    .quad .Lt_stubs - .Lt0",
    "    .quad .Lt_end - .Lt_stubs",
    "    .byte 0",
    "    .balign 8, 0",
    ".Lt_fde3_end:",
    "    .4byte 0",
    ".globl cbslot_tramp_cfi_end",
    ".hidden cbslot_tramp_cfi_end",
    "cbslot_tramp_cfi_end:",
    ".balign 8",
    ".globl cbslot_tramp_cfi_untracked",
    ".hidden cbslot_tramp_cfi_untracked",
    "cbslot_tramp_cfi_untracked:",
    ".Lu_cie:",
    "    .4byte .Lu_cie_end - .Lu_cie - 4",
    "    .4byte 0",
    "    .byte 1",
    "    .asciz \"zR\"",
    "    .byte 1, 0x78, 16, 1, 0",
    "    .byte 0x0c, 7, 8, 0x90, 1",
    "    .balign 8, 0",
    ".Lu_cie_end:",
    ".Lu_fde1:",
    "    .4byte .Lu_fde1_end - .Lu_fde1 - 4",
    "    .4byte . - .Lu_cie",
    "    .quad .Lu_dispatch - .Lu0",
    "    .quad .Lu_dispatch_end - .Lu_dispatch",
    "    .byte 0",
    "    .byte 0x04",
    "    .4byte .Lu_sub - .Lu_dispatch",
    "    .byte 0x0e, 16",
    "    .byte 0x04",
    "    .4byte .Lu_add - .Lu_sub",
    "    .byte 0x0e, 8",
    "    .balign 8, 0",
    ".Lu_fde1_end:",
    ".Lu_fde2:",
    "    .4byte .Lu_fde2_end - .Lu_fde2 - 4",
    "    .4byte . - .Lu_cie",
    "    .quad .Lu_stubs - .Lu0",
    "    .quad .Lu_end - .Lu_stubs",
    "    .byte 0",
    "    .balign 8, 0",
    ".Lu_fde2_end:",
    "    .4byte 0",
    ".globl cbslot_tramp_cfi_untracked_end",
    ".hidden cbslot_tramp_cfi_untracked_end",
    "cbslot_tramp_cfi_untracked_end:",
    // where, in the tracked table, the dispatcher's calls return to: a frame unwound there was inside
    // the call, with rbx = the depth it pushed; and where the code parts end (for debugger symbols)
    ".balign 8",
    ".globl cbslot_tramp_points",
    ".hidden cbslot_tramp_points",
    "cbslot_tramp_points:",
    "    .quad .Lt_ret_fn - .Lt0, .Lt_ret_stale - .Lt0",
    "    .quad .Lt_dispatch_end - .Lt0, .Lt_saving_end - .Lt0, .Lu_dispatch_end - .Lu0",
    ".popsection",

    // ---- this thread's in-flight record pointer ----
    ".text",
    ".globl cbslot_tls_rec_slot",
    ".hidden cbslot_tls_rec_slot",
    "cbslot_tls_rec_slot:",
    "    movq cbslot_tls_rec@GOTTPOFF(%rip), %rax",
    "    addq %fs:0, %rax",
    "    ret",
    ".globl cbslot_tls_rec_offset",
    ".hidden cbslot_tls_rec_offset",
    "cbslot_tls_rec_offset:",
    "    movq cbslot_tls_rec@GOTTPOFF(%rip), %rax",
    "    ret",
    ".section .tbss,\"awT\",@nobits",
    ".balign 8",
    ".globl cbslot_tls_rec",
    ".hidden cbslot_tls_rec",
    "cbslot_tls_rec:",
    ".zero 8",
    ".text",
    slots = const SLOTS_PER_BLOCK,
    table = const TABLE_BYTES,
    stub = const STUB_BYTES,
    slot_offset = const SLOT_OFFSET,
    h_tls = const offset_of!(Header, tls_offset),
    h_stale = const offset_of!(Header, stale),
    h_acquire = const offset_of!(Header, acquire),
    h_deep = const offset_of!(Header, deep_cell),
    depth = const offset_of!(Rec, depth),
    stack = const offset_of!(Rec, stack),
    depth_max = const DEPTH_MAX,
    options(att_syntax)
);
