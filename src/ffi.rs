//! The exported C API. This layer only checks arguments, converts types and runs each body inside the panic
//! boundary; the logic lives in the component modules.

use crate::error::{RawStatus, cb_status, ffi_status, ffi_value, non_null, status_text};
use crate::callback::CALLBACKS;
use crate::handle::OBJECTS;
use core::ffi::{c_char, c_void};

/// A 64-bit handle issued by cbslot. 0 is never a valid handle.
///
/// Handles pack a kind, a generation and a slot index; a stale handle (its object is gone) never names a
/// newer object. Any 64-bit value may be passed back safely: an invalid one gives `CB_ERR_INVALID_HANDLE`.
#[allow(non_camel_case_types)]
pub type cb_handle = u64;

/// A generic C function pointer; cast to and from the real signature.
#[allow(non_camel_case_types)]
pub type cb_fn = Option<unsafe extern "C" fn()>;

/// Destroy notification: called exactly once with the registered `userdata`/`ptr` when its lifetime ends.
/// It runs on the thread that ended the lifetime, outside cbslot's internal locks, so it may call cbslot.
/// It must not unwind (no C++ exception or longjmp out of it).
#[allow(non_camel_case_types)]
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
        // SAFETY: checked non-NULL; the caller promises it points to a writable cb_handle.
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
        // SAFETY: checked non-NULL; the caller promises it points to a writable pointer.
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

/// Freed callback slots wait in a FIFO quarantine until this many later freed slots have queued behind
/// them; only then is an entry reused for a new registration, so a late call is caught as stale meanwhile.
pub const CB_QUARANTINE_SLOTS: u32 = 4096;

/// A grace period (which runs the due destroy notifications) starts after this many unregisters, and
/// whenever `cb_barrier` or `cb_unregister_wait` needs one.
pub const CB_GRACE_BATCH: u32 = 256;

/// Called when an entry is called after its registration is gone (`entry` is the function pointer that was
/// called). See `cb_set_stale_handler`.
#[allow(non_camel_case_types)]
pub type cb_stale_fn = Option<unsafe extern "C" fn(entry: cb_fn, arg: *mut c_void)>;

/// Called when the number of live callbacks rises to the threshold set with `cb_set_watermark`.
#[allow(non_camel_case_types)]
pub type cb_watermark_fn = Option<unsafe extern "C" fn(live: u64, arg: *mut c_void)>;

/// Callback-table counters, filled by `cb_get_stats`. Fields may be added at the end in later versions.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct cb_stats {
    /// Registered callbacks that have not been unregistered.
    pub live: u64,
    /// Highest `live` seen.
    pub peak: u64,
    /// Slots mapped so far (live + pending + quarantined + never used); grows on demand.
    pub capacity: u64,
    /// Successful `cb_register` calls.
    pub registered_total: u64,
    /// Successful `cb_unregister` / `cb_unregister_wait` calls.
    pub unregistered_total: u64,
    /// destroy notifications run (or due with a NULL destroy) for unregistered callbacks.
    pub destroyed_total: u64,
    /// Unregistered callbacks whose destroy has not run yet (`unregistered_total - destroyed_total`).
    pub pending_destroy: u64,
    /// Calls through entries whose registration was gone.
    pub stale_calls: u64,
}

/// Registers `fn` with `userdata` and returns a new, unique bare C function pointer in `*out_entry` and the
/// registration's handle in `*out_handle`.
///
/// Calling `entry(a1, ..., an)` runs `fn(userdata, a1, ..., an)` and returns its result. Cast `entry` to the
/// real signature without the leading `void *`, and `fn` from the signature with it. Supported on x86_64
/// Linux: up to 5 integer/pointer arguments (small structs passed in integer registers count as 1 or 2) and
/// up to 8 float/double arguments, in any order; returns of void, integer/pointer, float, double and
/// structs of up to 16 bytes returned in registers. Variadic callees work when the call passes at most 5
/// integer-class arguments. Not supported: arguments passed on the stack (a 6th integer argument, a 9th
/// floating-point one, long double, structs over 16 bytes) and struct returns through memory (over 16
/// bytes).
///
/// `destroy(userdata)` (may be NULL) runs exactly once after `cb_unregister`, when no call of this entry is
/// in flight. cbslot keeps no pointer to caller memory but `userdata`.
///
/// Errors: `CB_ERR_NULL_ARG` (NULL `fn`, `out_handle` or `out_entry`); `CB_ERR_CAPACITY` (past the limit of
/// `cb_set_limit`); `CB_ERR_NO_MEMORY` (cannot map more trampolines: memory, or the process's mapping count
/// `vm.max_map_count`, 2 mappings per 4095 callbacks); `CB_ERR_UNSUPPORTED` (no trampolines on this
/// platform). Nothing is written or registered on error. Thread-safe; may be called from inside callbacks.
#[unsafe(no_mangle)]
pub extern "C" fn cb_register(
    r#fn: cb_fn,
    userdata: *mut c_void,
    destroy: cb_destroy_fn,
    out_handle: *mut cb_handle,
    out_entry: *mut cb_fn,
) -> cb_status {
    ffi_status!("cb_register", {
        let func = r#fn.ok_or(crate::error::Error::NullArg("fn"))?;
        let out_handle = non_null(out_handle, "out_handle")?;
        let out_entry = non_null(out_entry, "out_entry")?;
        let (handle, entry) = CALLBACKS.register(func, userdata, destroy)?;
        // SAFETY: checked non-NULL; `entry` is the address of a mapped stub, never 0.
        unsafe {
            out_handle.write(handle);
            out_entry.write(core::mem::transmute::<usize, cb_fn>(entry));
        }
        Ok(())
    })
}

/// Unregisters a callback and returns at once. From the moment it returns, no new call through the entry
/// reaches `fn` (a late call is a stale call: see `cb_set_stale_handler`). Calls already inside `fn` on
/// other threads finish normally. `destroy(userdata)` runs exactly once, after the last of them has
/// returned, outside cbslot's locks, on whichever thread runs the next grace period: one starts after every
/// `CB_GRACE_BATCH` unregisters, and in `cb_barrier` and `cb_unregister_wait`.
///
/// May be called from inside the callback itself (destroy runs after it returns). The entry's slot is
/// reused only after `CB_QUARANTINE_SLOTS` later freed slots, so stale calls are caught meanwhile.
///
/// Errors: `CB_ERR_INVALID_HANDLE` for 0, garbage, stale and already-unregistered handles, and for object
/// handles (`cb_handle_new`), with nothing changed. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn cb_unregister(handle: cb_handle) -> cb_status {
    ffi_status!("cb_unregister", { CALLBACKS.unregister(handle).map(drop) })
}

/// Like `cb_unregister`, then waits until `destroy(userdata)` has run (on this thread or another) before
/// returning.
///
/// Errors: as `cb_unregister`; `CB_ERR_WOULD_DEADLOCK`, with nothing changed, when called from inside this
/// very callback (on this thread, at any nesting depth); `CB_ERR_WOULD_DEADLOCK` too if, while waiting, the
/// call is found to wait on a callback running on this thread (the unregister has happened then).
#[unsafe(no_mangle)]
pub extern "C" fn cb_unregister_wait(handle: cb_handle) -> cb_status {
    ffi_status!("cb_unregister_wait", { CALLBACKS.unregister_wait(handle) })
}

/// Waits until the destroy notification of every callback unregistered before this call has run.
///
/// Errors: `CB_ERR_WOULD_DEADLOCK` if one of them is running on this thread (for example, the barrier is
/// called from inside a callback that was unregistered); the others have been destroyed then.
#[unsafe(no_mangle)]
pub extern "C" fn cb_barrier() -> cb_status {
    ffi_status!("cb_barrier", { CALLBACKS.barrier() })
}

/// Installs the handler for stale calls (calls through an entry whose registration is gone, caught while
/// its slot is quarantined). The handler gets the entry that was called and `arg`; the stale call then
/// returns 0 (0 in integer and floating-point return registers). NULL restores the default: print a message
/// naming the entry to stderr, then `abort()`. Every stale call counts in `cb_stats.stale_calls`.
#[unsafe(no_mangle)]
pub extern "C" fn cb_set_stale_handler(handler: cb_stale_fn, arg: *mut c_void) {
    ffi_value!("cb_set_stale_handler", (), { CALLBACKS.set_stale_handler(handler, arg) })
}

/// Writes the callback-table counters to `*out_stats`.
///
/// Errors: `CB_ERR_NULL_ARG` if `out_stats` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn cb_get_stats(out_stats: *mut cb_stats) -> cb_status {
    ffi_status!("cb_get_stats", {
        let out = non_null(out_stats, "out_stats")?;
        // SAFETY: checked non-NULL.
        unsafe { out.write(CALLBACKS.stats()) };
        Ok(())
    })
}

/// Caps the number of live callbacks: once `max_live` are live, `cb_register` returns `CB_ERR_CAPACITY`.
/// 0 means unlimited (the default). Lowering it below the current count unregisters nothing.
#[unsafe(no_mangle)]
pub extern "C" fn cb_set_limit(max_live: u64) -> cb_status {
    ffi_status!("cb_set_limit", {
        CALLBACKS.set_limit(max_live);
        Ok(())
    })
}

/// Calls `fn(live, arg)` each time the number of live callbacks rises to `threshold` (once per upward
/// crossing: it fires again only after `live` has dropped below `threshold`). If `live` is already at or above
/// `threshold` when this is set, it first fires after a drop and a new rise. It runs on the registering
/// thread, after `cb_register` has registered, outside cbslot's locks. `fn` NULL removes the watermark.
///
/// Errors: `CB_ERR_INVALID_ARG` if `threshold` is 0 with a non-NULL `fn`.
#[unsafe(no_mangle)]
pub extern "C" fn cb_set_watermark(threshold: u64, r#fn: cb_watermark_fn, arg: *mut c_void) -> cb_status {
    ffi_status!("cb_set_watermark", { CALLBACKS.set_watermark(threshold, r#fn, arg) })
}
