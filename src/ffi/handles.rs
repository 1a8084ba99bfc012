//! `cb_handle_*`: the handle registry.

use super::{cb_destroy_fn, cb_handle};
use crate::error::{cb_status, ffi_status, non_null};
use crate::handle::OBJECTS;
use core::ffi::c_void;

/// Registers a host object `ptr` and returns a new handle for it in `*out_handle`, holding one reference.
///
/// `ptr` is opaque to cbslot and may be NULL. `destroy` (may be NULL) runs exactly once, with `ptr`, when the
/// last reference is released (see `cb_handle_release`).
///
/// Errors: `CB_ERR_NULL_ARG` if `out_handle` is NULL; `CB_ERR_CAPACITY` when all 4,294,967,295 slots are in use;
/// `CB_ERR_NO_MEMORY` if the table cannot grow. On error `*out_handle` is not written and nothing is registered.
/// Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn cb_handle_new(ptr: *mut c_void, destroy: cb_destroy_fn, out_handle: *mut cb_handle) -> cb_status {
    ffi_status!("cb_handle_new", {
        let out = non_null(out_handle, "out_handle")?;
        let handle = OBJECTS.insert(ptr, destroy)?;
        // SAFETY: not NULL (checked); the caller promises it points to a writable cb_handle.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Looks up the object registered under `handle` and writes its pointer to `*out_ptr`.
///
/// The pointer is the caller's own object; cbslot does not keep it alive. It stays valid for as long as the
/// caller (or someone it trusts) holds a reference to `handle`: with no reference held, another thread may
/// release the last one and destroy the object right after this call returns.
///
/// Errors: `CB_ERR_NULL_ARG` if `out_ptr` is NULL; `CB_ERR_INVALID_HANDLE` for 0, garbage, stale or released
/// handles and handles of another kind. `*out_ptr` is written only on success.
/// Lock-free, allocation-free and async-signal-safe on success; safe to call concurrently with anything.
#[unsafe(no_mangle)]
pub extern "C" fn cb_handle_get(handle: cb_handle, out_ptr: *mut *mut c_void) -> cb_status {
    ffi_status!("cb_handle_get", {
        let out = non_null(out_ptr, "out_ptr")?;
        let ptr = OBJECTS.get(handle)?;
        // SAFETY: not NULL (checked); the caller promises it points to a writable pointer.
        unsafe { out.write(ptr) };
        Ok(())
    })
}

/// Adds a reference to `handle`. Each reference is given back with one `cb_handle_release`.
///
/// Errors: `CB_ERR_INVALID_HANDLE` as for `cb_handle_get` (a handle whose last reference is gone cannot be
/// revived); `CB_ERR_CAPACITY` if the count would pass 4,294,967,295. Lock-free and allocation-free.
#[unsafe(no_mangle)]
pub extern "C" fn cb_handle_retain(handle: cb_handle) -> cb_status {
    ffi_status!("cb_handle_retain", { OBJECTS.retain(handle) })
}

/// Drops a reference to `handle`. The last release invalidates the handle at once, then runs `destroy(ptr)`
/// exactly once on this thread, outside any cbslot lock, before returning (destroy may call any cbslot
/// function, including releasing other handles or creating new ones).
///
/// Errors: `CB_ERR_INVALID_HANDLE` for 0, garbage, stale, already released (double release) handles and handles
/// of another kind; nothing else is touched. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn cb_handle_release(handle: cb_handle) -> cb_status {
    ffi_status!("cb_handle_release", { OBJECTS.release(handle) })
}
