//! The exported C API, one file per component. This layer only checks arguments, converts types and runs
//! each body inside the panic boundary; the logic lives in the component modules.
//!
//! This file: the shared types and the error-model functions.

use crate::error::{RawStatus, ffi_value, status_text};
use core::ffi::{c_char, c_void};

mod callbacks;
mod evloop;
mod handles;
mod queue;
mod vde;

pub use callbacks::*;
pub use evloop::*;
pub use handles::*;
pub use queue::*;
pub use vde::*;

/// A 64-bit handle issued by cbslot. 0 is never a valid handle.
///
/// Handles pack a kind, a generation and a slot index; a stale handle (its object is gone) never names a
/// newer object. Any 64-bit value may be passed back safely: an invalid one gives `CB_ERR_INVALID_HANDLE`.
pub type cb_handle = u64;

/// A generic C function pointer; cast to and from the real signature.
pub type cb_fn = Option<unsafe extern "C" fn()>;

/// Destroy notification: called exactly once with the registered `userdata`/`ptr` when its lifetime ends.
/// It runs on the thread that ended the lifetime, outside cbslot's internal locks, so it may call cbslot.
/// It must not unwind (no C++ exception or longjmp out of it).
pub type cb_destroy_fn = Option<unsafe extern "C" fn(userdata: *mut c_void)>;

/// Static text naming `status` (for example `"CB_ERR_NULL_ARG: a required pointer argument was NULL"`).
///
/// Never NULL, also for values that are not a `cb_status`. The string is owned by cbslot and lives forever.
#[unsafe(no_mangle)]
pub extern "C" fn cb_status_str(status: RawStatus) -> *const c_char {
    ffi_value!("cb_status_str", c"CB_ERR_PANIC".as_ptr(), {
        status_text(status.0).unwrap_or(crate::error::UNKNOWN_STATUS).as_ptr() as *const c_char
    })
}

/// Detail of this thread's last failure, for example
/// `"cb_handle_get: handle 0xc100000200000007 is stale: its object was released ..."`.
///
/// Never NULL: `""` if no cbslot call has failed on this thread yet. Each thread has its own text; a
/// successful call does not clear it (like `errno`). The pointer is owned by cbslot and stays valid until this
/// thread's next failing cbslot call or its exit; copy the text to keep it.
#[unsafe(no_mangle)]
pub extern "C" fn cb_last_error() -> *const c_char {
    ffi_value!("cb_last_error", c"".as_ptr(), { crate::error::last_error_ptr() })
}

/// The library's version, `"MAJOR.MINOR.PATCH"` (compare with `CBSLOT_VERSION` from the header you compiled
/// against). Static, never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn cb_version() -> *const c_char {
    ffi_value!("cb_version", c"?".as_ptr(), { concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char })
}

/// `cb_features()` bit: callback entries work here (`cb_register`, `cb_register_ex`, queue sinks).
pub const CB_FEATURE_ENTRIES: u32 = 1;
/// `cb_features()` bit: the built-in event loop works here (`cb_loop_new`).
pub const CB_FEATURE_LOOP: u32 = 2;

/// The parts of cbslot this build supports on this platform, as `CB_FEATURE_*` bits.
///
/// Handles, VDE contexts (driven by a host of your own) and the queue without sinks work on every platform
/// the library builds for. Callback entries need trampolines for the platform (x86_64 and aarch64 Linux);
/// the built-in loop needs them and epoll. A function of a part that is missing returns
/// `CB_ERR_UNSUPPORTED`, and `cb_last_error()` names the platform.
#[unsafe(no_mangle)]
pub extern "C" fn cb_features() -> u32 {
    ffi_value!("cb_features", 0, {
        (if crate::callback::SUPPORTED { CB_FEATURE_ENTRIES } else { 0 })
            | (if crate::evloop::SUPPORTED { CB_FEATURE_LOOP } else { 0 })
    })
}
