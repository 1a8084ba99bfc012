//! Platforms without trampolines yet: the crate builds, handles work, and `cb_register` returns
//! `CB_ERR_UNSUPPORTED`. Nothing here is ever called while `SUPPORTED` is false.

use super::{TABLES, UnwindTemplate};
use crate::inflight::Rec;

pub(crate) const SUPPORTED: bool = false;
pub(crate) const TABLE_BYTES: usize = 4096;
pub(crate) const STUB_BYTES: usize = 16;
pub(crate) const SLOT_OFFSET: usize = 512;
pub(crate) const SLOT_BYTES: usize = 16;
pub(crate) const SLOTS_PER_BLOCK: usize = (TABLE_BYTES - SLOT_OFFSET) / SLOT_BYTES;

static EMPTY: [u8; TABLES * TABLE_BYTES] = [0; TABLES * TABLE_BYTES];

thread_local! {
    // the in-flight record pointer (the queue's post path uses records on every platform)
    static REC: core::cell::Cell<*mut Rec> = const { core::cell::Cell::new(core::ptr::null_mut()) };
}

pub(crate) fn code_prot() -> core::ffi::c_int {
    libc::PROT_READ | libc::PROT_EXEC
}

pub(crate) fn tables() -> &'static [u8; TABLES * TABLE_BYTES] {
    &EMPTY
}

pub(crate) fn unwind_template(_kind: usize) -> UnwindTemplate {
    UnwindTemplate { eh_frame: &[0; 4], personality: 0, symbols: [("", 0, 0); 3] }
}

pub(crate) unsafe fn write_header(_data: *mut u8) {}

pub(crate) fn tls_rec_slot() -> *mut *mut Rec {
    REC.with(|c| c.as_ptr())
}
