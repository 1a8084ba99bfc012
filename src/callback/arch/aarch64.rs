//! aarch64 (AAPCS64) trampolines and dispatchers, the same design as `x86_64.rs`.
//!
//! * A stub (16 bytes) is `bti c; adr x17, slot; b dispatch; brk`: `x17` (IP1, free to clobber between a
//!   call and its callee) points at `{fn, userdata}` 64 KiB further on, and the dispatcher is in the same copy.
//! * Arguments: `x0..x6` move up to `x1..x7` and `userdata` goes in `x0`, so a callback takes 7
//!   integer-class arguments (8 with userdata) and 8 floating-point ones (`v0..v7` pass through). `x8`, the
//!   indirect result register, passes through untouched, so structs returned through memory work.
//! * The tracked dispatcher builds a frame record (`x29`, `x30`) and keeps the in-flight record in `x19`
//!   (callee-saved); the record is found through `tpidr_el0` plus the TLS offset in the data header. The
//!   first-call and deep-nesting slow paths save every argument register (`x0..x8`, `x17`, the full 128-bit
//!   `q0..q7`) around a Rust call. The untracked dispatcher moves the arguments and branches to `fn` with
//!   `br x16`, which `bti c` landing pads accept, so it is correct under BTI too.
//! * Every copy is a fresh mapping of a file or sealed memfd's pages, so the kernel makes the instruction
//!   cache coherent when it maps them; cbslot never writes code, so no cache maintenance is needed.
//! * Tables are aligned to 64 KiB, so they can be mapped from the library file with 4, 16 or 64 KiB pages.
//! * Unwind information: `.eh_frame`-format templates as on x86_64 (DWARF: x19 = 19, x29 = 29, x30 = 30 is
//!   the return address column, sp = 31).

use super::{TABLES, TRACKED, UnwindTemplate};
use crate::inflight::{DEPTH_MAX, Rec};
use core::ffi::{c_int, c_void};
use core::mem::offset_of;

/// Bytes of code (and of data) in one block.
pub(crate) const TABLE_BYTES: usize = 65536;
/// Bytes per stub; slot `k`'s entry is at `code + SLOT_OFFSET + k * STUB_BYTES`.
pub(crate) const STUB_BYTES: usize = 16;
/// Bytes per data slot (`{fn, userdata}`).
pub(crate) const SLOT_BYTES: usize = 16;
/// Where stub 0 starts in the code (the dispatchers sit before it) and slot 0 in the data region.
pub(crate) const SLOT_OFFSET: usize = 512;
/// Callback slots per block.
pub(crate) const SLOTS_PER_BLOCK: usize = (TABLE_BYTES - SLOT_OFFSET) / STUB_BYTES;
const _: () = assert!(STUB_BYTES == SLOT_BYTES);

/// Data-region header, read by the dispatchers.
#[repr(C)]
struct Header {
    /// Offset of `cbslot_tls_rec` from the thread pointer (`tpidr_el0`).
    tls_offset: usize,
    stale: extern "C" fn(usize),
    acquire: extern "C" fn() -> *const Rec,
    deep_cell: extern "C" fn() -> *const core::sync::atomic::AtomicUsize,
}
const _: () = assert!(core::mem::size_of::<Header>() <= SLOT_OFFSET);

core::arch::global_asm!(
    // the integer argument registers move up by one (x0..x6 -> x1..x7), userdata (slot + 8) goes first
    ".macro cbslot_userdata_first",
    "    mov x7, x6",
    "    mov x6, x5",
    "    mov x5, x4",
    "    mov x4, x3",
    "    mov x3, x2",
    "    mov x2, x1",
    "    mov x1, x0",
    "    ldr x0, [x17, #8]",
    ".endm",
    // returns 0 in every return register (the stale path)
    ".macro cbslot_zero_results",
    "    mov x0, #0",
    "    mov x1, #0",
    "    movi v0.2d, #0",
    "    movi v1.2d, #0",
    "    movi v2.2d, #0",
    "    movi v3.2d, #0",
    ".endm",
    ".pushsection .text.cbslot_tramp,\"ax\",%progbits",
    ".balign 65536",
    ".globl cbslot_tramp_table",
    ".hidden cbslot_tramp_table",
    "cbslot_tramp_table:",
    // ======== tracked ========
    ".Lt0:",
    ".Lt_dispatch:", // x17 = &slot
    "    stp x29, x30, [sp, #-32]!",
    ".Lt_pushed:",
    "    mov x29, sp",
    "    str x19, [sp, #16]",
    ".Lt_saved19:",
    "    adr x16, .Lt0 + {table}",
    "    ldr x16, [x16, #{h_tls}]",
    "    mrs x9, tpidr_el0",
    "    ldr x19, [x9, x16]",
    "    cbz x19, 5f",
    // push the slot: depth first, then the entry
    "1:",
    "    ldr x9, [x19, #{depth}]",
    "    add x9, x9, #1",
    "    str x9, [x19, #{depth}]",
    "    cmp x9, #{depth_max}",
    "    b.hi 3f",
    "    add x10, x19, #{stack_less_8}",
    "    str x17, [x10, x9, lsl #3]",
    "2:",
    "    ldr x16, [x17]",
    "    cbz x16, 6f",
    "    cbslot_userdata_first",
    "    blr x16",
    ".Lt_ret_fn:",
    "7:",
    "    ldr x9, [x19, #{depth}]",
    "    sub x9, x9, #1",
    "    str x9, [x19, #{depth}]",
    "    ldr x19, [sp, #16]",
    "    ldp x29, x30, [sp], #32",
    ".Lt_popped:",
    "    ret",
    ".Lt_after_ret:",
    // deeper than the record's own stack: the cell comes from the record's pages
    "3:",
    "    adr x16, .Lt0 + {table}",
    "    ldr x16, [x16, #{h_deep}]",
    "    bl .Lt_saving",
    "    str x17, [x9]",
    "    b 2b",
    // stale: the entry that was called is 64 KiB before its slot
    "6:",
    "    sub x0, x17, #{table_pages}, lsl #12",
    "    adr x16, .Lt0 + {table}",
    "    ldr x16, [x16, #{h_stale}]",
    "    blr x16",
    ".Lt_ret_stale:",
    "    cbslot_zero_results",
    "    b 7b",
    // first call on this thread: get a record
    "5:",
    "    adr x16, .Lt0 + {table}",
    "    ldr x16, [x16, #{h_acquire}]",
    "    bl .Lt_saving",
    "    mov x19, x9",
    "    b 1b",
    ".Lt_dispatch_end:",
    // calls *x16 (no arguments), keeping x0..x8, x17 and q0..q7; returns its result in x9
    ".Lt_saving:",
    "    stp x29, x30, [sp, #-224]!",
    ".Lt_saving_pushed:",
    "    mov x29, sp",
    "    stp x0, x1, [sp, #16]",
    "    stp x2, x3, [sp, #32]",
    "    stp x4, x5, [sp, #48]",
    "    stp x6, x7, [sp, #64]",
    "    stp x8, x17, [sp, #80]",
    "    stp q0, q1, [sp, #96]",
    "    stp q2, q3, [sp, #128]",
    "    stp q4, q5, [sp, #160]",
    "    stp q6, q7, [sp, #192]",
    "    blr x16",
    "    mov x9, x0",
    "    ldp x0, x1, [sp, #16]",
    "    ldp x2, x3, [sp, #32]",
    "    ldp x4, x5, [sp, #48]",
    "    ldp x6, x7, [sp, #64]",
    "    ldp x8, x17, [sp, #80]",
    "    ldp q0, q1, [sp, #96]",
    "    ldp q2, q3, [sp, #128]",
    "    ldp q4, q5, [sp, #160]",
    "    ldp q6, q7, [sp, #192]",
    "    ldp x29, x30, [sp], #224",
    ".Lt_saving_popped:",
    "    ret",
    ".Lt_saving_end:",
    ".fill {slot_offset} - (. - .Lt0), 1, 0",
    ".Lt_stubs:",
    ".rept {slots}",
    "0:  hint #34", // bti c
    "    adr x17, 0b + {table}",
    "    b .Lt_dispatch",
    "    brk #0",
    ".endr",
    ".Lt_end:",
    // ======== untracked ========
    ".Lu0:",
    ".Lu_dispatch:",
    "    ldr x16, [x17]",
    "    cbz x16, 6f",
    "    cbslot_userdata_first",
    "    br x16",
    "6:",
    "    stp x29, x30, [sp, #-16]!",
    ".Lu_pushed:",
    "    mov x29, sp",
    "    sub x0, x17, #{table_pages}, lsl #12",
    "    adr x16, .Lu0 + {table}",
    "    ldr x16, [x16, #{h_stale}]",
    "    blr x16",
    "    cbslot_zero_results",
    "    ldp x29, x30, [sp], #16",
    ".Lu_popped:",
    "    ret",
    ".Lu_dispatch_end:",
    ".fill {slot_offset} - (. - .Lu0), 1, 0",
    ".Lu_stubs:",
    ".rept {slots}",
    "0:  hint #34",
    "    adr x17, 0b + {table}",
    "    b .Lu_dispatch",
    "    brk #0",
    ".endr",
    ".Lu_end:",
    ".popsection",

    // ---- unwind information templates (code alignment 1, data alignment -8, return address x30) ----
    ".pushsection .rodata.cbslot_tramp_cfi,\"a\",%progbits",
    ".balign 8",
    ".globl cbslot_tramp_cfi",
    ".hidden cbslot_tramp_cfi",
    "cbslot_tramp_cfi:",
    ".Lt_cie:",
    "    .4byte .Lt_cie_end - .Lt_cie - 4",
    "    .4byte 0",
    "    .byte 1",
    "    .asciz \"zPR\"",
    "    .byte 1, 0x78, 30, 10, 0",
    "    .8byte 0",
    "    .byte 0",
    "    .byte 0x0c, 31, 0",
    "    .balign 8, 0",
    ".Lt_cie_end:",
    // the dispatcher: frame record and x19 saved, CFA = sp + 32 until the final pop
    ".Lt_fde1:",
    "    .4byte .Lt_fde1_end - .Lt_fde1 - 4",
    "    .4byte . - .Lt_cie",
    "    .8byte .Lt_dispatch - .Lt0",
    "    .8byte .Lt_dispatch_end - .Lt_dispatch",
    "    .byte 0",
    "    .byte 0x04",
    "    .4byte .Lt_pushed - .Lt_dispatch",
    "    .byte 0x0e, 32, 0x9d, 4, 0x9e, 3",
    "    .byte 0x04",
    "    .4byte .Lt_saved19 - .Lt_pushed",
    "    .byte 0x93, 2",
    "    .byte 0x04",
    "    .4byte .Lt_popped - .Lt_saved19",
    "    .byte 0x0a, 0x0e, 0, 0xdd, 0xde, 0xd3",
    "    .byte 0x04",
    "    .4byte .Lt_after_ret - .Lt_popped",
    "    .byte 0x0b",
    "    .balign 8, 0",
    ".Lt_fde1_end:",
    ".Lt_cie2:",
    "    .4byte .Lt_cie2_end - .Lt_cie2 - 4",
    "    .4byte 0",
    "    .byte 1",
    "    .asciz \"zR\"",
    "    .byte 1, 0x78, 30, 1, 0",
    "    .byte 0x0c, 31, 0",
    "    .balign 8, 0",
    ".Lt_cie2_end:",
    // the register-saving helper: CFA = sp + 224 between its push and pop
    ".Lt_fde2:",
    "    .4byte .Lt_fde2_end - .Lt_fde2 - 4",
    "    .4byte . - .Lt_cie2",
    "    .8byte .Lt_saving - .Lt0",
    "    .8byte .Lt_saving_end - .Lt_saving",
    "    .byte 0",
    "    .byte 0x04",
    "    .4byte .Lt_saving_pushed - .Lt_saving",
    "    .byte 0x0e, 0xe0, 0x01, 0x9d, 28, 0x9e, 27",
    "    .byte 0x04",
    "    .4byte .Lt_saving_popped - .Lt_saving_pushed",
    "    .byte 0x0e, 0, 0xdd, 0xde",
    "    .balign 8, 0",
    ".Lt_fde2_end:",
    ".Lt_fde3:",
    "    .4byte .Lt_fde3_end - .Lt_fde3 - 4",
    "    .4byte . - .Lt_cie2",
    "    .8byte .Lt_stubs - .Lt0",
    "    .8byte .Lt_end - .Lt_stubs",
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
    "    .byte 1, 0x78, 30, 1, 0",
    "    .byte 0x0c, 31, 0",
    "    .balign 8, 0",
    ".Lu_cie_end:",
    ".Lu_fde1:",
    "    .4byte .Lu_fde1_end - .Lu_fde1 - 4",
    "    .4byte . - .Lu_cie",
    "    .8byte .Lu_dispatch - .Lu0",
    "    .8byte .Lu_dispatch_end - .Lu_dispatch",
    "    .byte 0",
    "    .byte 0x04",
    "    .4byte .Lu_pushed - .Lu_dispatch",
    "    .byte 0x0e, 16, 0x9d, 2, 0x9e, 1",
    "    .byte 0x04",
    "    .4byte .Lu_popped - .Lu_pushed",
    "    .byte 0x0e, 0, 0xdd, 0xde",
    "    .balign 8, 0",
    ".Lu_fde1_end:",
    ".Lu_fde2:",
    "    .4byte .Lu_fde2_end - .Lu_fde2 - 4",
    "    .4byte . - .Lu_cie",
    "    .8byte .Lu_stubs - .Lu0",
    "    .8byte .Lu_end - .Lu_stubs",
    "    .byte 0",
    "    .balign 8, 0",
    ".Lu_fde2_end:",
    "    .4byte 0",
    ".globl cbslot_tramp_cfi_untracked_end",
    ".hidden cbslot_tramp_cfi_untracked_end",
    "cbslot_tramp_cfi_untracked_end:",
    ".balign 8",
    ".globl cbslot_tramp_points",
    ".hidden cbslot_tramp_points",
    "cbslot_tramp_points:",
    "    .8byte .Lt_ret_fn - .Lt0, .Lt_ret_stale - .Lt0",
    "    .8byte .Lt_dispatch_end - .Lt0, .Lt_saving_end - .Lt0, .Lu_dispatch_end - .Lu0",
    ".popsection",

    // ---- this thread's in-flight record pointer ----
    ".text",
    ".balign 4",
    ".globl cbslot_tls_rec_slot",
    ".hidden cbslot_tls_rec_slot",
    "cbslot_tls_rec_slot:",
    "    hint #34",
    "    mrs x1, tpidr_el0",
    "    adrp x0, :gottprel:cbslot_tls_rec",
    "    ldr x0, [x0, #:gottprel_lo12:cbslot_tls_rec]",
    "    add x0, x0, x1",
    "    ret",
    ".globl cbslot_tls_rec_offset",
    ".hidden cbslot_tls_rec_offset",
    "cbslot_tls_rec_offset:",
    "    hint #34",
    "    adrp x0, :gottprel:cbslot_tls_rec",
    "    ldr x0, [x0, #:gottprel_lo12:cbslot_tls_rec]",
    "    ret",
    ".section .tbss,\"awT\",%nobits",
    ".balign 8",
    ".globl cbslot_tls_rec",
    ".hidden cbslot_tls_rec",
    "cbslot_tls_rec:",
    ".zero 8",
    ".text",
    slots = const SLOTS_PER_BLOCK,
    table = const TABLE_BYTES,
    table_pages = const TABLE_BYTES >> 12,
    slot_offset = const SLOT_OFFSET,
    h_tls = const offset_of!(Header, tls_offset),
    h_stale = const offset_of!(Header, stale),
    h_acquire = const offset_of!(Header, acquire),
    h_deep = const offset_of!(Header, deep_cell),
    depth = const offset_of!(Rec, depth),
    stack_less_8 = const offset_of!(Rec, stack) - 8,
    depth_max = const DEPTH_MAX,
);

unsafe extern "C" {
    static cbslot_tramp_table: [u8; TABLES * TABLE_BYTES];
    static cbslot_tramp_cfi: u8;
    static cbslot_tramp_cfi_end: u8;
    static cbslot_tramp_cfi_untracked: u8;
    static cbslot_tramp_cfi_untracked_end: u8;
    static cbslot_tramp_points: [usize; 5];
    fn cbslot_tls_rec_slot() -> *mut *mut Rec;
    fn cbslot_tls_rec_offset() -> usize;
    /// libgcc's unwinder.
    fn _Unwind_GetIP(context: *mut c_void) -> usize;
    /// libgcc's unwinder.
    /// libgcc's unwinder.
    fn _Unwind_GetRegionStart(context: *mut c_void) -> usize;
}

/// The code tables as assembled into the library, tracked then untracked (never executed in place).
pub(crate) fn tables() -> &'static [u8; TABLES * TABLE_BYTES] {
    // SAFETY: defined above; read-only code bytes.
    unsafe { &*core::ptr::addr_of!(cbslot_tramp_table) }
}

fn between(start: *const u8, end: *const u8) -> &'static [u8] {
    // SAFETY: two labels of the same read-only section, `start` first.
    unsafe { core::slice::from_raw_parts(start, end.offset_from(start) as usize) }
}

/// The unwind template of `kind`'s table.
pub(crate) fn unwind_template(kind: usize) -> UnwindTemplate {
    // SAFETY: link-time constants defined above.
    let p = unsafe { cbslot_tramp_points };
    let entries = SLOT_OFFSET..TABLE_BYTES;
    if kind == TRACKED {
        UnwindTemplate {
            eh_frame: between(core::ptr::addr_of!(cbslot_tramp_cfi), core::ptr::addr_of!(cbslot_tramp_cfi_end)),
            personality: personality as *const () as usize,
            symbols: [
                ("cbslot_dispatch", 0, p[2]),
                ("cbslot_dispatch_saving_registers", p[2], p[3] - p[2]),
                ("cbslot_entry", entries.start, entries.len()),
            ],
        }
    } else {
        UnwindTemplate {
            eh_frame: between(core::ptr::addr_of!(cbslot_tramp_cfi_untracked), core::ptr::addr_of!(cbslot_tramp_cfi_untracked_end)),
            personality: 0,
            symbols: [
                ("cbslot_untracked_dispatch", 0, p[4]),
                ("cbslot_untracked_entry", entries.start, entries.len()),
                ("", 0, 0),
            ],
        }
    }
}

const URC_CONTINUE_UNWIND: c_int = 8;
const UA_CLEANUP_PHASE: c_int = 2;

/// The tracked dispatcher's personality routine: when an exception or a forced unwind (`pthread_exit`,
/// `pthread_cancel`) leaves a callback through the dispatcher, the dispatcher's epilogue never runs, so this
/// pops the thread's record in its place. (Frames are cleaned up innermost first, each once, so popping
/// one level per dispatcher frame puts the depth back where the outermost one found it.) It catches
/// nothing.
extern "C" fn personality(_version: c_int, actions: c_int, _class: u64, _exception: *mut c_void, context: *mut c_void) -> c_int {
    if actions & UA_CLEANUP_PHASE != 0 {
        // SAFETY: the unwinder's context for this frame; link-time constants.
        let (at, points) = unsafe { (_Unwind_GetIP(context) - _Unwind_GetRegionStart(context), cbslot_tramp_points) };
        // only the two calls made after the depth was pushed (fn and the stale handler) can be unwound
        if at == points[0] || at == points[1] {
            crate::inflight::unwound_one();
        }
    }
    URC_CONTINUE_UNWIND
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
        deep_cell: crate::inflight::deep_cell_for_dispatcher,
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
