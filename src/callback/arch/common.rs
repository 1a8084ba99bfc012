//! What every trampoline architecture shares on top of its assembly: the block layout, the data header the dispatchers
//! read, access to the assembled tables and unwind templates (symbols the assembly defines), the tracked
//! dispatcher's personality routine and the TLS word. Included by `mod.rs` for supported targets.

use super::{TABLES, TRACKED, UnwindTemplate};
use crate::inflight::Rec;
use core::ffi::{c_int, c_void};

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
// The C docs name this number (`cb_register`: "2 mappings per 4064 callbacks"; the README's limits).
const _: () = assert!(SLOTS_PER_BLOCK == 4064);

/// Data-region header, read by the dispatchers (at the start of each block's data region).
#[repr(C)]
pub(crate) struct Header {
    /// Offset of `cbslot_tls_rec` from the thread pointer.
    pub(crate) tls_offset: usize,
    pub(crate) stale: extern "C" fn(usize),
    pub(crate) acquire: extern "C" fn() -> *const Rec,
    pub(crate) deep_cell: extern "C" fn() -> *const core::sync::atomic::AtomicUsize,
}
const _: () = assert!(core::mem::size_of::<Header>() <= SLOT_OFFSET);

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
    fn _Unwind_GetRegionStart(context: *mut c_void) -> usize;
}

/// The protection of mapped code: read and execute, and on aarch64 CPUs with BTI also guarded
/// (`PROT_BTI`), so a branch into a stub anywhere but its `bti c` landing pad faults.
pub(crate) fn code_prot() -> core::ffi::c_int {
    #[cfg(target_arch = "aarch64")]
    {
        const PROT_BTI: core::ffi::c_int = 0x10;
        const HWCAP2_BTI: libc::c_ulong = 1 << 17;
        // SAFETY: no preconditions.
        if unsafe { libc::getauxval(libc::AT_HWCAP2) } & HWCAP2_BTI != 0 {
            return libc::PROT_READ | libc::PROT_EXEC | PROT_BTI;
        }
    }
    libc::PROT_READ | libc::PROT_EXEC
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
            eh_frame: between(
                core::ptr::addr_of!(cbslot_tramp_cfi_untracked),
                core::ptr::addr_of!(cbslot_tramp_cfi_untracked_end),
            ),
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
extern "C" fn personality(
    _version: c_int,
    actions: c_int,
    _class: u64,
    _exception: *mut c_void,
    context: *mut c_void,
) -> c_int {
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
