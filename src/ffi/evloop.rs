//! `cb_loop_*`: cbslot's built-in epoll event loop, the embedded default host for a `vde_context`.

use super::vde::vde_event_handler;
use crate::error::{Error, cb_status, ffi_status, non_null};
use crate::evloop;
use core::ffi::c_int;
use core::ptr::NonNull;
use std::time::Duration;

/// An opaque built-in event loop. Like contexts, its pointers are not addresses: a freed or garbage loop is
/// detected (`CB_ERR_INVALID_ARG`), never dereferenced.
pub struct cb_loop {
    _private: [u8; 0],
}

fn handle_of(lp: *mut cb_loop) -> u64 {
    lp as usize as u64
}

/// Creates an epoll-based event loop (fd events, one-shot and persistent timeouts) and stores it in
/// `*out_loop`. It registers four cbslot callbacks (its `vde_event_handler` functions, bound to this loop).
///
/// Errors: `CB_ERR_NULL_ARG`; `CB_ERR_NO_MEMORY` (no descriptors or memory); `CB_ERR_UNSUPPORTED` where
/// cbslot has no trampolines. Threading: run a loop on one thread at a time; see `cb_loop_run`.
#[unsafe(no_mangle)]
pub extern "C" fn cb_loop_new(out_loop: *mut *mut cb_loop) -> cb_status {
    ffi_status!("cb_loop_new", {
        let out = non_null(out_loop, "out_loop")?;
        let h = evloop::new_loop()?;
        // SAFETY: not NULL (checked); by the C contract, the caller's out-pointer is valid for a write.
        unsafe { out.write(h as usize as *mut cb_loop) };
        Ok(())
    })
}

/// Fills `*out_handler` with this loop's four functions, ready for `vde_context_init`. They are bare
/// function pointers (cbslot entries) bound to this loop; they stay valid until `cb_loop_free`. They may be
/// called from any thread; a timeout added while the loop sleeps wakes it. Timeouts are read as VDE3
/// timevals: negative parts count as 0, `tv_usec` is clamped to 0..999999, and anything longer than 100
/// years (up to `{LONG_MAX, 999999}`) is clamped to 100 years. Deleting a token whose one-shot event has
/// already fired succeeds and does nothing; a token the loop never issued sets errno EINVAL.
///
/// Errors: `CB_ERR_NULL_ARG`; `CB_ERR_INVALID_ARG` for a NULL, freed or garbage loop.
#[unsafe(no_mangle)]
pub extern "C" fn cb_loop_handler(lp: *mut cb_loop, out_handler: *mut vde_event_handler) -> cb_status {
    ffi_status!("cb_loop_handler", {
        let out = non_null(out_handler, "out_handler")?;
        let handler = evloop::handler(handle_of(lp))?;
        // SAFETY: not NULL (checked); by the C contract, the caller's out-pointer is valid for a write.
        unsafe { out.write(handler) };
        Ok(())
    })
}

/// Runs the loop on the calling thread until `cb_loop_stop` is called or no event or timeout is left.
/// Callbacks run on this thread with no loop lock held: they may add and delete events (their own too),
/// and stop the loop. A non-persistent event is removed just before its callback runs.
///
/// Errors: `CB_ERR_INVALID_ARG` for a bad loop, or if the loop is already running (on another thread, or
/// this is one of its own callbacks).
#[unsafe(no_mangle)]
pub extern "C" fn cb_loop_run(lp: *mut cb_loop) -> cb_status {
    ffi_status!("cb_loop_run", { evloop::get(handle_of(lp))?.run().map(drop) })
}

/// Runs one round: waits up to `timeout_ms` (-1: until the next event or timeout is due; 0: just polls)
/// for events, then runs the callbacks of everything ready and of every timeout due. Returns at once when
/// nothing is registered. The number of callbacks run goes to `*out_dispatched` (may be NULL).
///
/// Errors: `CB_ERR_INVALID_ARG` for a bad loop, `timeout_ms` < -1, or if the loop is already running (in
/// `cb_loop_run` or `cb_loop_run_once` on another thread, or this is one of its own callbacks: a re-entrant
/// round would dispatch the same level-triggered event again and again).
#[unsafe(no_mangle)]
pub extern "C" fn cb_loop_run_once(lp: *mut cb_loop, timeout_ms: c_int, out_dispatched: *mut usize) -> cb_status {
    ffi_status!("cb_loop_run_once", {
        if timeout_ms < -1 {
            return Err(Error::InvalidArg("timeout_ms must be -1, 0 or positive"));
        }
        let n = evloop::get(handle_of(lp))?
            .run_once((timeout_ms >= 0).then(|| Duration::from_millis(timeout_ms as u64)))?;
        if let Some(out) = NonNull::new(out_dispatched) {
            // SAFETY: not NULL (checked); by the C contract, the caller's out-pointer is valid for a write.
            unsafe { out.write(n) };
        }
        Ok(())
    })
}

/// Makes `cb_loop_run` return after the callbacks of the current round (or at once if it is sleeping), and
/// a `cb_loop_run_once` that is waiting stop waiting. Callable from any thread and from callbacks; if the
/// loop is not running, the next `cb_loop_run` returns at once (the next `cb_loop_run_once` does not wait).
/// Each stop ends one run. Errors: `CB_ERR_INVALID_ARG` for a bad loop.
#[unsafe(no_mangle)]
pub extern "C" fn cb_loop_stop(lp: *mut cb_loop) -> cb_status {
    ffi_status!("cb_loop_stop", {
        evloop::get(handle_of(lp))?.stop();
        Ok(())
    })
}

/// Number of events and timeouts registered on the loop, in `*out_count`.
/// Errors: `CB_ERR_NULL_ARG`; `CB_ERR_INVALID_ARG` for a bad loop.
#[unsafe(no_mangle)]
pub extern "C" fn cb_loop_pending(lp: *mut cb_loop, out_count: *mut usize) -> cb_status {
    ffi_status!("cb_loop_pending", {
        let out = non_null(out_count, "out_count")?;
        let n = evloop::get(handle_of(lp))?.pending();
        // SAFETY: not NULL (checked); by the C contract, the caller's out-pointer is valid for a write.
        unsafe { out.write(n) };
        Ok(())
    })
}

/// Frees the loop: its handle is invalid at once (calls through its four functions fail with errno
/// EINVAL); once no call is using it any more, its functions are unregistered (calls through them are then
/// stale calls) and its descriptors closed. Registrations still in it are dropped without being called:
/// `vde_context_fini` the contexts using it first. NULL is a no-op (`CB_OK`).
///
/// Errors: `CB_ERR_INVALID_ARG` for a freed or garbage loop, or while it runs.
#[unsafe(no_mangle)]
pub extern "C" fn cb_loop_free(lp: *mut cb_loop) -> cb_status {
    ffi_status!("cb_loop_free", {
        if lp.is_null() {
            return Ok(());
        }
        evloop::free(handle_of(lp))
    })
}
