//! `cb_queue_*`: the cross-thread delivery queue (producers on any thread, the consumer on the thread it
//! chooses, an eventfd for event loops).

use super::{cb_destroy_fn, cb_fn, cb_handle};
use crate::error::{Error, cb_status, ffi_status, non_null};
use crate::queue;
use core::ffi::{c_int, c_void};
use core::ptr::NonNull;
use std::time::Duration;

/// An opaque delivery queue. Like contexts, its pointers are not addresses: a freed or garbage queue is
/// detected (`CB_ERR_INVALID_ARG`), never dereferenced.
pub struct cb_queue {
    _private: [u8; 0],
}

/// A sink: receives each event posted to it, on the consumer's thread. `data` points to a copy of the
/// posted bytes that is valid only during the call.
pub type cb_sink_fn = Option<unsafe extern "C" fn(userdata: *mut c_void, data: *const c_void, len: usize)>;

pub use crate::queue::{CB_QUEUE_INLINE_BYTES, CB_QUEUE_MAX_CAPACITY, cb_queue_stats};

/// `cb_queue_sink_entry` length type: the entry is `int entry(const void *data, int len)`.
pub const CB_QUEUE_LEN_INT: c_int = 0;
/// `cb_queue_sink_entry` length type: the entry is `int entry(const void *data, size_t len)`.
pub const CB_QUEUE_LEN_SIZE_T: c_int = 1;

fn handle_of(q: *mut cb_queue) -> u64 {
    q as usize as u64
}

fn timeout(ms: c_int) -> Result<Option<Duration>, Error> {
    match ms {
        -1 => Ok(Some(Duration::from_secs(100 * 365 * 24 * 3600))), // "forever"
        ms if ms < 0 => Err(Error::InvalidArg("timeout_ms must be -1 (forever), 0 or positive")),
        ms => Ok(Some(Duration::from_millis(ms as u64))),
    }
}

/// Creates a bounded queue of `capacity` events (rounded up to a power of two, at least 2; 1 to
/// `CB_QUEUE_MAX_CAPACITY`) in `*out_queue`. Many producers on any threads; one consumer at a time. The
/// cells (64 bytes per event) are allocated here, so a large capacity costs its memory up front.
///
/// Errors: `CB_ERR_NULL_ARG`; `CB_ERR_INVALID_ARG` (capacity 0 or above the maximum); `CB_ERR_NO_MEMORY`
/// (the cells or the eventfd could not be had; nothing is left behind).
#[unsafe(no_mangle)]
pub extern "C" fn cb_queue_new(capacity: usize, out_queue: *mut *mut cb_queue) -> cb_status {
    ffi_status!("cb_queue_new", {
        let out = non_null(out_queue, "out_queue")?;
        let h = queue::new_queue(capacity)?;
        // SAFETY: not NULL (checked); by the C contract, the caller's out-pointer is valid for a write.
        unsafe { out.write(h as usize as *mut cb_queue) };
        Ok(())
    })
}

/// Registers a sink on `queue`: events posted to the sink's handle are delivered as `fn(userdata, data,
/// len)` by `cb_queue_drain`. `destroy(userdata)` (may be NULL) runs exactly once: after
/// `cb_queue_sink_unregister` or when the queue is closed, once no delivery to the sink is running. A
/// register racing `cb_queue_close` either fails with `CB_ERR_CLOSED` (and never runs `destroy`) or
/// succeeds and is ended by that close.
///
/// Errors: `CB_ERR_NULL_ARG` (`fn`, `out_sink`); `CB_ERR_INVALID_ARG` (bad queue); `CB_ERR_CLOSED`;
/// `CB_ERR_NO_MEMORY`.
#[unsafe(no_mangle)]
pub extern "C" fn cb_queue_sink_register(
    queue: *mut cb_queue,
    r#fn: cb_sink_fn,
    userdata: *mut c_void,
    destroy: cb_destroy_fn,
    out_sink: *mut cb_handle,
) -> cb_status {
    ffi_status!("cb_queue_sink_register", {
        let func = r#fn.ok_or(Error::NullArg("fn"))?;
        let out = non_null(out_sink, "out_sink")?;
        let h = queue::sink_register(handle_of(queue), func, userdata, destroy)?;
        // SAFETY: not NULL (checked); by the C contract, the caller's out-pointer is valid for a write.
        unsafe { out.write(h) };
        Ok(())
    })
}

/// Unregisters a sink. Its handle is invalid as soon as this returns (posts to it fail with
/// `CB_ERR_INVALID_HANDLE`, and so does a second unregister). Its events still in the queue are dropped (and
/// counted) when reached, never delivered; its bare entries become stale; its destroy runs exactly once:
/// right away, or, while a drain on another thread is using the sink, when that drain's current delivery
/// returns (so never while the sink's function runs). Callable from any thread, also from inside the sink.
///
/// Errors: `CB_ERR_INVALID_HANDLE` for 0, garbage, stale or already-unregistered sinks, and sinks of a
/// closed queue.
#[unsafe(no_mangle)]
pub extern "C" fn cb_queue_sink_unregister(sink: cb_handle) -> cb_status {
    ffi_status!("cb_queue_sink_unregister", { queue::sink_unregister(sink) })
}

/// Posts a copy of `len` bytes at `data` to `sink` (`data` may be NULL when `len` is 0); the buffer is the
/// caller's again as soon as this returns. Never blocks: lock-free, and allocation-free for payloads of up
/// to `CB_QUEUE_INLINE_BYTES` (a larger payload is copied to the heap first, so running out of memory
/// loses nothing). Events from one thread are delivered in the order posted.
///
/// Errors: `CB_ERR_CAPACITY` (full), `CB_ERR_CLOSED` (a post racing `cb_queue_close`; once close has
/// returned, the queue's sinks are unregistered, so posts get `CB_ERR_INVALID_HANDLE`),
/// `CB_ERR_INVALID_HANDLE` (0, garbage, stale or unregistered sink), `CB_ERR_NULL_ARG` (`data` NULL with `len` > 0), `CB_ERR_INVALID_ARG` (`len` above
/// `PTRDIFF_MAX`), `CB_ERR_NO_MEMORY` (no memory for the copy).
#[unsafe(no_mangle)]
pub extern "C" fn cb_queue_post(sink: cb_handle, data: *const c_void, len: usize) -> cb_status {
    ffi_status!("cb_queue_post", {
        // SAFETY: by the C contract, `data` holds `len` readable bytes; they are copied before the post returns.
        let bytes = unsafe { queue::payload(NonNull::new(data.cast_mut()), len) }?;
        queue::post(sink, bytes, None)
    })
}

/// Like `cb_queue_post`, but waits up to `timeout_ms` (-1: forever) for room when the queue is full.
/// `cb_queue_close` (from any thread) ends the wait with `CB_ERR_CLOSED`.
///
/// Errors: as `cb_queue_post`, plus `CB_ERR_TIMEOUT`, and `CB_ERR_WOULD_DEADLOCK` when called (with the
/// queue full) from the thread that is draining it.
#[unsafe(no_mangle)]
pub extern "C" fn cb_queue_post_wait(sink: cb_handle, data: *const c_void, len: usize, timeout_ms: c_int) -> cb_status {
    ffi_status!("cb_queue_post_wait", {
        // SAFETY: as in `cb_queue_post`.
        let bytes = unsafe { queue::payload(NonNull::new(data.cast_mut()), len) }?;
        queue::post(sink, bytes, timeout(timeout_ms)?)
    })
}

/// Makes a bare C function pointer that posts to `sink`, for C libraries that only take a callback like
/// `void cb(char *data, int len)` and call it from their own threads: `entry(data, len)` posts a copy and
/// returns 1, or 0 if nothing was posted (full, closed, sink gone, negative length: `cb_last_error()` says
/// which; and a stale call after the sink was unregistered, which returns 0 through the stale path).
/// `len_type` is `CB_QUEUE_LEN_INT` (`int`) or `CB_QUEUE_LEN_SIZE_T` (`size_t`); the return value may be
/// ignored (an entry cast to a `void` signature is fine). The entry is a cbslot callback: it lives until
/// the sink is unregistered, and calls after that are stale calls.
///
/// Errors: `CB_ERR_NULL_ARG`; `CB_ERR_INVALID_ARG` (unknown `len_type`); `CB_ERR_INVALID_HANDLE`;
/// `CB_ERR_UNSUPPORTED` where cbslot has no trampolines.
#[unsafe(no_mangle)]
pub extern "C" fn cb_queue_sink_entry(sink: cb_handle, len_type: c_int, out_entry: *mut cb_fn) -> cb_status {
    ffi_status!("cb_queue_sink_entry", {
        let out = non_null(out_entry, "out_entry")?;
        let is_int = match len_type {
            CB_QUEUE_LEN_INT => true,
            CB_QUEUE_LEN_SIZE_T => false,
            _ => return Err(Error::InvalidArg("len_type must be CB_QUEUE_LEN_INT or CB_QUEUE_LEN_SIZE_T")),
        };
        let entry = queue::entry(sink, is_int)?;
        // SAFETY: not NULL (checked) and valid for a write by the C contract; `entry` is a mapped stub, never 0.
        unsafe { out.write(core::mem::transmute::<usize, cb_fn>(entry)) };
        Ok(())
    })
}

/// Delivers up to `max` pending events on the calling thread, in order, each to its sink. If none is
/// pending it waits up to `timeout_ms` (0: no wait; -1: until one arrives or the queue is closed) for the
/// first. The number delivered goes to `*out_delivered` (may be NULL); events of unregistered sinks are
/// dropped, counted in the stats and not in `*out_delivered`.
///
/// One consumer at a time: a drain on another thread waits for this one. A sink may post, unregister
/// sinks, and drain re-entrantly: a re-entrant drain continues from the head of the queue (so the outer
/// drain later sees only what is left), with its own `max`.
///
/// `cb_queue_close` on another thread wakes a waiting drain, which then returns what it delivered.
///
/// Errors: `CB_ERR_INVALID_ARG` (bad queue or timeout).
#[unsafe(no_mangle)]
pub extern "C" fn cb_queue_drain(
    queue: *mut cb_queue,
    max: usize,
    timeout_ms: c_int,
    out_delivered: *mut usize,
) -> cb_status {
    ffi_status!("cb_queue_drain", {
        let wait = if timeout_ms == 0 { None } else { timeout(timeout_ms)? };
        let n = queue::get(handle_of(queue))?.drain(max, wait)?;
        if let Some(out) = NonNull::new(out_delivered) {
            // SAFETY: not NULL (checked); by the C contract, the caller's out-pointer is valid for a write.
            unsafe { out.write(n) };
        }
        Ok(())
    })
}

/// A descriptor (an eventfd on Linux, a pipe's read end elsewhere) that is readable exactly when events
/// are pending (and, once the queue is closed, readable for good), for epoll, libevent or Go's poller. Do not read or close it: `cb_queue_drain` resets it.
/// Valid until `cb_queue_free`.
///
/// Errors: `CB_ERR_NULL_ARG`; `CB_ERR_INVALID_ARG` (bad queue).
#[unsafe(no_mangle)]
pub extern "C" fn cb_queue_fd(queue: *mut cb_queue, out_fd: *mut c_int) -> cb_status {
    ffi_status!("cb_queue_fd", {
        let out = non_null(out_fd, "out_fd")?;
        let fd = queue::get(handle_of(queue))?.fd();
        // SAFETY: not NULL (checked); by the C contract, the caller's out-pointer is valid for a write.
        unsafe { out.write(fd) };
        Ok(())
    })
}

/// Closes the queue: posts are refused from now on (`CB_ERR_CLOSED`), and every call blocked in the queue
/// wakes (`cb_queue_post_wait` returns `CB_ERR_CLOSED`, `cb_queue_drain` returns what it delivered); pending
/// events are delivered on the calling thread if `deliver_pending` is non-zero, else dropped (and counted);
/// then every sink is unregistered (each destroy runs exactly once, as soon as no call is using the sink:
/// before this returns, unless `cb_queue_sink_unregister` or `cb_queue_sink_entry` on another thread is
/// using it right then, in which case when that call returns). Closing takes the consumer side: a drain
/// running on another thread is waited for.
///
/// Errors: `CB_ERR_INVALID_ARG` (bad queue); `CB_ERR_CLOSED` (closed already).
#[unsafe(no_mangle)]
pub extern "C" fn cb_queue_close(queue: *mut cb_queue, deliver_pending: c_int) -> cb_status {
    ffi_status!("cb_queue_close", { queue::get(handle_of(queue))?.close(deliver_pending != 0) })
}

/// Closes the queue if needed (dropping pending events), makes it invalid, and waits for posts still
/// inside it to leave (close has woken any that were waiting for room). Closing takes the consumer side, so
/// a delivery running on another thread is waited for too: a sink must not wait for the thread that frees
/// its queue. NULL is a no-op. It may be called
/// from inside one of its sinks: the running drain finishes on the closed queue, and the memory goes when it
/// returns.
///
/// Errors: `CB_ERR_INVALID_ARG` (freed twice, garbage).
#[unsafe(no_mangle)]
pub extern "C" fn cb_queue_free(queue: *mut cb_queue) -> cb_status {
    ffi_status!("cb_queue_free", {
        if queue.is_null() {
            return Ok(());
        }
        queue::free(handle_of(queue))
    })
}

/// Writes the queue's counters to `*out_stats`.
/// Errors: `CB_ERR_NULL_ARG`; `CB_ERR_INVALID_ARG` (bad queue).
#[unsafe(no_mangle)]
pub extern "C" fn cb_queue_get_stats(queue: *mut cb_queue, out_stats: *mut cb_queue_stats) -> cb_status {
    ffi_status!("cb_queue_get_stats", {
        let out = non_null(out_stats, "out_stats")?;
        let stats = queue::get(handle_of(queue))?.stats();
        // SAFETY: not NULL (checked); by the C contract, the caller's out-pointer is valid for a write.
        unsafe { out.write(stats) };
        Ok(())
    })
}
