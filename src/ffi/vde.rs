//! The VDE3 context API (`vde_context_*`). VDE3 conventions: `int` functions return 0 or -1 with `errno`
//! set, pointer functions return NULL with `errno` set; `cb_last_error()` says more in both cases.

use crate::error::{Error, ffi_value, non_null, set_last_error};
use crate::sys::{errno, set_errno};
use crate::vde::{self, EventCb, Handler};
use core::ffi::{c_char, c_int, c_short, c_void};

pub use crate::vde::{VDE_EV_PERSIST, VDE_EV_READ, VDE_EV_TIMEOUT, VDE_EV_WRITE, vde_event_cb, vde_event_handler};

/// An opaque VDE3 context. cbslot's pointers to it are not addresses: a deleted or garbage context is
/// detected (EINVAL), never dereferenced.
pub struct vde_context {
    _private: [u8; 0],
}

/// Records `err` for `cb_last_error()`, sets errno (the host's own errno is kept for host failures).
fn fail(function: &str, err: Error) {
    let host_errno = errno();
    set_last_error(function, format_args!("{err}"));
    set_errno(match err {
        Error::NoMemory(_) | Error::Capacity(_) => libc::ENOMEM,
        Error::Host(_) if host_errno != 0 => host_errno,
        Error::Host(_) => libc::EIO,
        _ => libc::EINVAL,
    });
}

fn handle_of(ctx: *mut vde_context) -> u64 {
    ctx as usize as u64
}

/// Runs a VDE function's body. On success `errno` is left as the caller had it (a contended lock or a
/// system call inside may have changed it); on failure `errno` and `cb_last_error()` say why.
fn vde_run<T>(name: &str, body: impl FnOnce() -> Result<T, Error>) -> Option<T> {
    let saved = errno();
    match body() {
        Ok(v) => {
            set_errno(saved);
            Some(v)
        }
        Err(e) => {
            fail(name, e);
            None
        }
    }
}

/// What a VDE function returns when its body panicked: `value`, with errno EIO.
fn eio<T>(value: T) -> T {
    set_errno(libc::EIO);
    value
}

/// Runs an `int`-returning VDE function body: `Ok` -> 0, `Err` -> -1 with errno and `cb_last_error()`.
macro_rules! vde_int {
    ($name:literal, $body:block) => {
        ffi_value!($name, eio(-1), { vde_run($name, || -> Result<(), Error> { $body }).map_or(-1, |()| 0) })
    };
}

/// Like `vde_int!` for functions returning nothing (errors only set errno and `cb_last_error()`).
macro_rules! vde_void {
    ($name:literal, $body:block) => {
        ffi_value!($name, eio(()), {
            vde_run($name, || -> Result<(), Error> { $body });
        })
    };
}

/// Creates a context and stores it in `*ctx`. Returns 0, or -1 with errno EINVAL (`ctx` NULL) or ENOMEM.
#[unsafe(no_mangle)]
pub extern "C" fn vde_context_new(ctx: *mut *mut vde_context) -> c_int {
    vde_int!("vde_context_new", {
        let out = non_null(ctx, "ctx")?;
        let h = vde::new_context()?;
        // SAFETY: not NULL (checked); by the C contract, the caller's out-pointer is valid for a write.
        unsafe { out.write(h as usize as *mut vde_context) };
        Ok(())
    })
}

/// Initialises `ctx` with a *copy* of `*handler` and a deep copy of `modules_path` (a NULL-terminated
/// array of strings, may be NULL). Nothing the caller passed is referenced after this returns, and
/// `*handler` is only read (the parameter is not `const` only because VDE3 declares it so). The paths
/// are kept for `vde_context_module_path`; no module is loaded. A context may be initialised again after
/// `vde_context_fini` (as in VDE3).
///
/// Returns 0, or -1 with errno EINVAL: `ctx` NULL, deleted or garbage; `handler` NULL or any of its four
/// functions NULL; `ctx` initialised already and not finished since (VDE3 returns 0 there and leaks).
#[unsafe(no_mangle)]
pub extern "C" fn vde_context_init(
    ctx: *mut vde_context,
    handler: *mut vde_event_handler,
    modules_path: *mut *mut c_char,
) -> c_int {
    vde_int!("vde_context_init", {
        // SAFETY: not NULL; the caller's handler, copied by value right here.
        let copy = Handler::new(unsafe { non_null(handler, "handler")?.read() })?;
        // SAFETY: the caller passes a NULL-terminated array of strings, or NULL.
        unsafe { vde::init(handle_of(ctx), copy, modules_path as *const *const c_char) }
    })
}

/// The `index`-th module path copied by `vde_context_init`, or NULL past the end (errno untouched) or on
/// error (errno EINVAL). The string belongs to the context: valid until `vde_context_fini`, `_delete` or a re-init.
#[unsafe(no_mangle)]
pub extern "C" fn vde_context_module_path(ctx: *mut vde_context, index: usize) -> *const c_char {
    ffi_value!("vde_context_module_path", core::ptr::null(), {
        vde::module_path(handle_of(ctx), index).unwrap_or_else(|e| {
            fail("vde_context_module_path", e);
            core::ptr::null()
        })
    })
}

/// Ends every event and timeout still registered, through the host's `event_del`/`timeout_del` (each host
/// token exactly once); nothing registered through `ctx` fires afterwards, even if the host loop fires late.
/// A callback of `ctx` running on another thread is waited for, so none is running when this returns
/// (unless this is called from inside an event callback: then one that another thread is starting at that
/// moment may still run once — waiting there could deadlock two loops deleting each other's events).
/// Errors (errno EINVAL, nothing done): `ctx` NULL, deleted or garbage, already finished, or never
/// initialised (as in VDE3, a later init still works).
#[unsafe(no_mangle)]
pub extern "C" fn vde_context_fini(ctx: *mut vde_context) {
    vde_void!("vde_context_fini", { vde::fini(handle_of(ctx)) })
}

/// Frees `ctx`, running `vde_context_fini` first if it is initialised (VDE3 refuses to delete an
/// initialised context and leaks it). NULL is a no-op. A deleted or garbage `ctx` sets errno EINVAL and
/// does nothing. The memory goes once no other call on `ctx` is running.
#[unsafe(no_mangle)]
pub extern "C" fn vde_context_delete(ctx: *mut vde_context) {
    vde_void!("vde_context_delete", {
        if ctx.is_null() {
            return Ok(());
        }
        vde::delete(handle_of(ctx))
    })
}

/// Registers `cb(fd, what, arg)` for `events` (`VDE_EV_READ`, `VDE_EV_WRITE`, `VDE_EV_PERSIST`) on `fd`,
/// with an optional `timeout` (fires with `VDE_EV_TIMEOUT`). The host loop gets a cbslot callback and
/// argument; `cb` runs with the caller's own `arg`. Without `VDE_EV_PERSIST` the event ends after it fires
/// once. Returns cbslot's token for the event (not the host's), or NULL with errno: EINVAL (bad `ctx`, not
/// initialised, `cb` NULL, `fd` < 0, unknown bits in `events`), or the host's errno (EIO if it set none)
/// when the host's `event_add` fails.
#[unsafe(no_mangle)]
pub extern "C" fn vde_context_event_add(
    ctx: *mut vde_context,
    fd: c_int,
    events: c_short,
    timeout: *const libc::timeval,
    cb: vde_event_cb,
    arg: *mut c_void,
) -> *mut c_void {
    add("vde_context_event_add", ctx, Some(fd), events, timeout, cb, arg)
}

/// Registers `cb(-1, VDE_EV_TIMEOUT, arg)` to run after `timeout` (repeatedly with `VDE_EV_PERSIST` in
/// `events`). Returns cbslot's token, or NULL with errno as for `vde_context_event_add` (`timeout` NULL is
/// EINVAL). The arguments are in VDE3's order, `events` before `timeout` (the handler struct's own
/// `timeout_add` member takes `timeout` first, as in VDE3).
#[unsafe(no_mangle)]
pub extern "C" fn vde_context_timeout_add(
    ctx: *mut vde_context,
    events: c_short,
    timeout: *const libc::timeval,
    cb: vde_event_cb,
    arg: *mut c_void,
) -> *mut c_void {
    add("vde_context_timeout_add", ctx, None, events, timeout, cb, arg)
}

fn add(
    name: &'static str,
    ctx: *mut vde_context,
    fd: Option<c_int>,
    events: c_short,
    timeout: *const libc::timeval,
    cb: vde_event_cb,
    arg: *mut c_void,
) -> *mut c_void {
    ffi_value!(name, core::ptr::null_mut(), {
        let run = || -> Result<u64, Error> {
            let cb: EventCb = cb.ok_or(Error::NullArg("cb"))?;
            if fd.is_some_and(|fd| fd < 0) {
                return Err(Error::InvalidArg("fd is negative"));
            }
            if fd.is_none() && timeout.is_null() {
                return Err(Error::NullArg("timeout"));
            }
            vde::add(handle_of(ctx), fd, events, timeout, cb, arg)
        };
        vde_run(name, run).map_or(core::ptr::null_mut(), |ev| ev as usize as *mut c_void)
    })
}

/// Deletes an event registered with `vde_context_event_add` on `ctx`: its callback never runs again, and
/// the host's `event_del` gets the host's token (once). Safe from inside the event's own callback. If the
/// callback is running on another thread, this waits for it to return (as libevent's `event_del` does), so
/// once this returns the callback is neither running nor starting; called from inside another event's
/// callback it does not wait (see `vde_context_fini`).
/// Deleting twice, a finished one-shot event, a timeout's token, another context's token or garbage is a
/// no-op with errno EINVAL and `cb_last_error()` set.
#[unsafe(no_mangle)]
pub extern "C" fn vde_context_event_del(ctx: *mut vde_context, ev: *mut c_void) {
    vde_void!("vde_context_event_del", { vde::del(handle_of(ctx), ev as usize as u64, false) })
}

/// Deletes a timeout registered with `vde_context_timeout_add`; as `vde_context_event_del`.
#[unsafe(no_mangle)]
pub extern "C" fn vde_context_timeout_del(ctx: *mut vde_context, tout: *mut c_void) {
    vde_void!("vde_context_timeout_del", { vde::del(handle_of(ctx), tout as usize as u64, true) })
}
