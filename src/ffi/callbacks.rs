//! `cb_register` and friends: the callback slot table.

use super::{cb_destroy_fn, cb_fn, cb_handle};
use crate::callback::CALLBACKS;
pub use crate::callback::{
    CB_GRACE_BATCH, CB_QUARANTINE_SLOTS, CB_RECLAIM_DELAY_DEFAULT_MS, CB_RECLAIM_DELAY_MAX_MS, CB_REGISTER_UNTRACKED,
    cb_stats,
};
use crate::error::{cb_status, ffi_status, ffi_value, non_null};
use core::ffi::c_void;

/// Called when an entry is called after its registration is gone (`entry` is the function pointer that was
/// called). See `cb_set_stale_handler`.
pub type cb_stale_fn = Option<unsafe extern "C" fn(entry: cb_fn, arg: *mut c_void)>;

/// Called when the number of live callbacks rises to the threshold set with `cb_set_watermark`.
pub type cb_watermark_fn = Option<unsafe extern "C" fn(live: u64, arg: *mut c_void)>;

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
/// bytes); untracked entries (`cb_register_ex`) take stack-passed arguments. On aarch64 Linux: up to 7
/// integer-class and 8 floating-point arguments, and every AAPCS64 return, structs through memory included.
///
/// `destroy(userdata)` (may be NULL) runs exactly once after `cb_unregister`, when no call of this entry is
/// in flight. cbslot keeps no pointer to caller memory but `userdata`.
///
/// Errors: `CB_ERR_NULL_ARG` (NULL `fn`, `out_handle` or `out_entry`); `CB_ERR_CAPACITY` (past the limit of
/// `cb_set_limit`); `CB_ERR_NO_MEMORY` (cannot map more trampolines: memory, or the process's mapping count
/// `vm.max_map_count`, 2 mappings per 4064 callbacks); `CB_ERR_SYSTEM` (a system call failed, for example
/// no free file descriptor for the first block; `cb_last_error()` has the system's text; a later call tries
/// again, except after a failure that cannot pass, such as neither the library file nor a memfd being
/// usable, which later calls return at once); `CB_ERR_UNSUPPORTED` (no trampolines on this platform).
/// Nothing is written or registered on error. Thread-safe; may be called from inside callbacks.
#[unsafe(no_mangle)]
pub extern "C" fn cb_register(
    r#fn: cb_fn,
    userdata: *mut c_void,
    destroy: cb_destroy_fn,
    out_handle: *mut cb_handle,
    out_entry: *mut cb_fn,
) -> cb_status {
    ffi_status!("cb_register", { register(r#fn, userdata, destroy, 0, out_handle, out_entry) })
}

/// `cb_register` with `flags`: 0 is exactly `cb_register`; `CB_REGISTER_UNTRACKED` makes an *untracked*
/// entry.
///
/// An untracked entry moves the arguments and jumps straight to `fn`: no record of the call, no second
/// call and return, so it costs about as much as calling `fn` through a pointer. In exchange the caller
/// promises never to unregister it while a call may be in flight (typically: unregister only after the C
/// library holding the entry has been shut down). `cb_unregister` then runs `destroy(userdata)` at once,
/// on the calling thread, before it returns; a late call is still caught as a stale call. Because the stack
/// is left as the caller built it, an untracked entry also takes stack-passed arguments: up to 5
/// integer-class arguments (in registers), then any float/double arguments (the 9th and later on the
/// stack) and memory-class arguments (structs over 16 bytes by value, `long double`) on the stack. Not
/// supported: a 6th integer-class argument, struct returns through memory (over 16 bytes).
///
/// Errors: as `cb_register`, and `CB_ERR_INVALID_ARG` for unknown flag bits.
#[unsafe(no_mangle)]
pub extern "C" fn cb_register_ex(
    r#fn: cb_fn,
    userdata: *mut c_void,
    destroy: cb_destroy_fn,
    flags: u32,
    out_handle: *mut cb_handle,
    out_entry: *mut cb_fn,
) -> cb_status {
    ffi_status!("cb_register_ex", { register(r#fn, userdata, destroy, flags, out_handle, out_entry) })
}

fn register(
    func: cb_fn,
    userdata: *mut c_void,
    destroy: cb_destroy_fn,
    flags: u32,
    out_handle: *mut cb_handle,
    out_entry: *mut cb_fn,
) -> Result<(), crate::error::Error> {
    let func = func.ok_or(crate::error::Error::NullArg("fn"))?;
    let out_handle = non_null(out_handle, "out_handle")?;
    let out_entry = non_null(out_entry, "out_entry")?;
    let (handle, entry) = CALLBACKS.register(func, userdata, destroy, flags)?;
    // SAFETY: not NULL (checked) and valid for writes by the C contract; `entry` is a mapped stub, never 0.
    unsafe {
        out_handle.write(handle);
        out_entry.write(core::mem::transmute::<usize, cb_fn>(entry));
    }
    Ok(())
}

/// Sets how soon destroy notifications run without being asked for: about `milliseconds` after the last
/// call in flight of an unregistered callback has returned, on cbslot's reclaimer thread
/// (`cbslot-reclaim`, started by the first `cb_unregister` that needs it; it blocks every signal, and
/// grace periods stay batched: one for all the unregisters of a half delay; when `CB_GRACE_BATCH` are
/// pending, the thread making the last unregister runs one itself, as with no reclaimer). The default is
/// `CB_RECLAIM_DELAY_DEFAULT_MS` (10), or `CBSLOT_RECLAIM_DELAY_MS` from the environment when the first
/// callback is unregistered.
///
/// 0 means no thread: destroys then run only when `CB_GRACE_BATCH` unregisters are pending (on the thread
/// making the last of them) or in `cb_barrier` / `cb_unregister_wait`. Setting 0 stops a running reclaimer
/// (a destroy it is running finishes); setting a delay again starts one when something is pending.
///
/// A fork child has no reclaimer until its first unregister starts one. Destroys still pending when the
/// process exits are not run; after `exit()` starts, no new reclaimer round begins.
///
/// Errors: `CB_ERR_INVALID_ARG` above `CB_RECLAIM_DELAY_MAX_MS` (one hour), with nothing changed.
#[unsafe(no_mangle)]
pub extern "C" fn cb_set_reclaim_delay(milliseconds: u32) -> cb_status {
    ffi_status!("cb_set_reclaim_delay", { CALLBACKS.set_reclaim_delay(milliseconds) })
}

/// Unregisters a callback and returns at once. From the moment it returns, no new call through the entry
/// reaches `fn` (a late call is a stale call: see `cb_set_stale_handler`). Calls already inside `fn` on
/// other threads finish normally. `destroy(userdata)` runs exactly once, after the last of them has
/// returned, outside cbslot's locks, on whichever thread runs the grace period that finds it idle: the
/// reclaimer thread (about the reclaim delay later: see `cb_set_reclaim_delay`), the thread making the
/// `CB_GRACE_BATCH`th pending unregister, or a thread in `cb_barrier` / `cb_unregister_wait`. An untracked
/// entry's destroy runs inside this call.
///
/// A tracked callback may unregister itself from inside its call (destroy runs after it returns). The entry's slot is
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
/// May be called from inside a destroy notification (of another callback).
///
/// Errors: as `cb_unregister`; `CB_ERR_WOULD_DEADLOCK`, with nothing changed, when called from inside this
/// very (tracked) callback (on this thread, at any nesting depth); `CB_ERR_WOULD_DEADLOCK` too if, while
/// waiting, the call is found to wait on a callback running on this thread, or (called from inside a
/// destroy) on a destroy that is running (the unregister has happened then). A destroy must not wait for
/// a lock held by a thread in this call: it may be running on the reclaimer thread.
#[unsafe(no_mangle)]
pub extern "C" fn cb_unregister_wait(handle: cb_handle) -> cb_status {
    ffi_status!("cb_unregister_wait", { CALLBACKS.unregister_wait(handle) })
}

/// Waits until the destroy notification of every callback unregistered before this call has run. Not needed
/// for destroys to run (the reclaimer runs them: see `cb_set_reclaim_delay`); for when they must have run
/// by now.
///
/// Errors: `CB_ERR_WOULD_DEADLOCK` if one of them cannot finish while this thread waits: a callback it
/// waits for is running on this thread (the barrier is called from inside a callback that was
/// unregistered), or the barrier is called from inside a destroy notification, which never waits for a
/// destroy that is running (on any thread: it might be waiting for this one). Every other destroy has run
/// then. A destroy must not wait for a lock held by a thread in this call: it may be running on the
/// reclaimer thread.
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
        // SAFETY: not NULL (checked); by the C contract, the caller's out-pointer is valid for a write.
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
