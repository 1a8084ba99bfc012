//! x86_64 System V trampolines and dispatcher.
//!
//! ## The code table
//! `cbslot_tramp_table` is a 64 KiB, page-aligned block of code assembled into the library: the dispatcher
//! in its first [`SLOT_OFFSET`] bytes, then 4064 stubs of 16 bytes. It is never run where it is: cbslot maps
//! *copies* of it (read+exec) with a read-write data region of the same size right after each copy. Stub `k`
//! (at `SLOT_OFFSET + 16k`) is
//! ```text
//! endbr64
//! lea  TABLE_BYTES(%rip of the stub), %r11   ; r11 = &slot[k] = {fn, userdata}, 64 KiB further on
//! jmp  dispatch                              ; a direct jump inside the same copy
//! ```
//! The dispatcher reaches everything else through the data region's header (also PC-relative): the TLS
//! offset of this thread's in-flight record pointer, and the addresses of two Rust functions. So every
//! copy works wherever it is mapped, and a call costs one indirect call (`fn`) beyond the caller's own.
//!
//! ## The dispatcher
//! Runs with `r11 = &slot` and the caller's arguments untouched:
//! 1. Pushes the slot on this thread's in-flight record (depth first, then the entry, so a signal handler
//!    that calls an entry in between cannot lose it). The depth on entry stays in `rbx` (callee-saved) and
//!    is stored back on exit, so no load-modify-store of the depth sits on the call path.
//! 2. Loads `fn`; NULL means the slot is not registered: the stale path.
//! 3. Shifts the integer argument registers up by one (`rdi..r8 -> rsi..r9`), puts `userdata` in `rdi`, and
//!    calls `fn`. `rax` (the vector-register count of a variadic call) and `xmm0..7` pass through.
//! 4. Pops the record and returns `fn`'s result as is (`rax:rdx`, `xmm0:xmm1`).
//!
//! Stack-passed arguments are not supported: the dispatcher's call moves them.
//!
//! ## How another architecture slots in
//! It provides the same items: a code table whose stubs find their data slot PC-relatively and branch to a
//! dispatcher in the same table, which reads what it needs from the data header (on aarch64: `adr x17,
//! slot; b dispatch`, `ldr` from the header, shift `x0..x6` up, `mrs tpidr_el0` for the TLS word), the
//! header layout, and the constants below. Nothing outside `arch/` depends on x86_64.

use crate::inflight::{DEPTH_MAX, Rec};
use core::mem::offset_of;

/// Bytes of code (and of data) in one block.
pub(crate) const TABLE_BYTES: usize = 65536;
/// Bytes per stub; slot `k`'s entry is at `code + SLOT_OFFSET + k * STUB_BYTES`.
pub(crate) const STUB_BYTES: usize = 16;
/// Bytes per data slot (`{fn, userdata}`); slot `k`'s data is at `code + TABLE_BYTES + SLOT_OFFSET + k * 16`.
pub(crate) const SLOT_BYTES: usize = 16;
/// Where stub 0 starts in the code (the dispatcher sits before it) and slot 0 in the data region (the
/// header sits before it).
pub(crate) const SLOT_OFFSET: usize = 512;
/// Callback slots per block.
pub(crate) const SLOTS_PER_BLOCK: usize = (TABLE_BYTES - SLOT_OFFSET) / STUB_BYTES;
const _: () = assert!(STUB_BYTES == SLOT_BYTES);

/// Data-region header, read by the dispatcher.
#[repr(C)]
struct Header {
    /// Offset of `cbslot_tls_rec` from the thread pointer (`%fs:0`).
    tls_offset: usize,
    stale: extern "C" fn(usize),
    acquire: extern "C" fn() -> *const Rec,
}
const _: () = assert!(core::mem::size_of::<Header>() <= SLOT_OFFSET);

core::arch::global_asm!(
    ".pushsection .text.cbslot_tramp,\"ax\",@progbits",
    ".balign 4096",
    ".globl cbslot_tramp_table",
    ".hidden cbslot_tramp_table",
    "cbslot_tramp_table:",
    ".Lcbslot_table:",
    // ---- the dispatcher (r11 = &slot) ----
    ".Lcbslot_dispatch:",
    "    push %rbx",
    "    movq .Lcbslot_table + {table} + {h_tls}(%rip), %r10",
    "    movq %fs:(%r10), %r10",
    "    test %r10, %r10",
    "    jz 5f",
    "1:",
    "    movq {depth}(%r10), %rbx",
    "    cmp ${depth_max}, %rbx",
    "    jae 3f",
    "    incq %rbx",
    "    movq %rbx, {depth}(%r10)",
    "    movq %r11, {stack} - 8(%r10,%rbx,8)",
    "2:",
    "    movq (%r11), %r10",
    "    test %r10, %r10",
    "    jz 6f",
    "    mov %r8, %r9",
    "    mov %rcx, %r8",
    "    mov %rdx, %rcx",
    "    mov %rsi, %rdx",
    "    mov %rdi, %rsi",
    "    movq 8(%r11), %rdi",
    "    call *%r10",
    // leave: depth back to its value on entry (kept in rbx: no load of it on the way out)
    "7:",
    "    movq .Lcbslot_table + {table} + {h_tls}(%rip), %r10",
    "    movq %fs:(%r10), %r10",
    "    cmp ${deep}, %rbx",
    "    je 8f",
    "    decq %rbx",
    "    movq %rbx, {depth}(%r10)",
    "    pop %rbx",
    "    ret",
    "8:",
    "    decq {overflow}(%r10)",
    "    pop %rbx",
    "    ret",
    // nested deeper than the record holds: count it in `overflow` (scanners then treat every slot as in
    // flight) and mark this frame with rbx = DEPTH_MAX + 1, so the way out decrements it again
    "3:",
    "    incq {overflow}(%r10)",
    "    mov ${deep}, %rbx",
    "    jmp 2b",
    // stale: the slot has no fn; the entry that was called is 64 KiB before its slot. Returns 0 in every
    // return register.
    "6:",
    "    lea -{table}(%r11), %rdi",
    "    call *.Lcbslot_table + {table} + {h_stale}(%rip)",
    "    xor %eax, %eax",
    "    xor %edx, %edx",
    "    pxor %xmm0, %xmm0",
    "    pxor %xmm1, %xmm1",
    "    jmp 7b",
    // first call on this thread: get a record, keeping every argument register
    "5:",
    "    sub $192, %rsp",
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
    "    call *.Lcbslot_table + {table} + {h_acquire}(%rip)",
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
    "    add $192, %rsp",
    "    jmp 1b",
    ".fill {slot_offset} - (. - .Lcbslot_table), 1, 0xcc",
    // ---- the stubs: stub k and its slot are exactly TABLE_BYTES apart ----
    ".rept {slots}",
    "0:  endbr64",
    "    lea 0b + {table}(%rip), %r11",
    "    jmp .Lcbslot_dispatch",
    "    .balign {stub}, 0xcc",
    ".endr",
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
    depth = const offset_of!(Rec, depth),
    overflow = const offset_of!(Rec, overflow),
    stack = const offset_of!(Rec, stack),
    depth_max = const DEPTH_MAX,
    deep = const DEPTH_MAX + 1,
    options(att_syntax)
);

unsafe extern "C" {
    static cbslot_tramp_table: [u8; TABLE_BYTES];
    fn cbslot_tls_rec_slot() -> *mut *mut Rec;
    fn cbslot_tls_rec_offset() -> usize;
}

/// The code table as assembled into the library (never executed in place).
pub(crate) fn table() -> &'static [u8; TABLE_BYTES] {
    // SAFETY: defined above; read-only code bytes.
    unsafe { &*core::ptr::addr_of!(cbslot_tramp_table) }
}

/// Fills the header at the start of a block's data region.
///
/// # Safety
/// `data` must point to a writable, suitably aligned data region of a block.
pub(crate) unsafe fn write_header(data: *mut u8) {
    let header = Header {
        // SAFETY: a leaf function that returns a link-time constant.
        tls_offset: unsafe { cbslot_tls_rec_offset() },
        stale: crate::callback::stale_call,
        acquire: crate::inflight::acquire_for_dispatcher,
    };
    // SAFETY: the caller passes a writable data region.
    unsafe { (data as *mut Header).write(header) };
}

/// This thread's in-flight record pointer (the word the dispatcher reads).
pub(crate) fn tls_rec_slot() -> *mut *mut Rec {
    // SAFETY: a leaf function that only computes an address.
    unsafe { cbslot_tls_rec_slot() }
}

pub(crate) const SUPPORTED: bool = true;
