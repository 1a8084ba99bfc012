//! The error model: status codes, their fixed texts, the per-thread `cb_last_error()` detail, and the panic
//! boundary that every exported function's body runs in.

use core::ffi::c_char;
use core::fmt::{self, Write};
use core::ptr::NonNull;
use std::any::Any;
use std::cell::RefCell;

/// Result of every fallible cbslot function.
///
/// The numbers are part of the ABI: they never change and are never reused. `CB_OK` is 0, so
/// `if (status) { ... }` tests for failure. `cb_status_str()` names a status; `cb_last_error()` says more about
/// this thread's last failure.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum cb_status {
    /// Success.
    CB_OK = 0,
    /// A required pointer argument (an output pointer, a function) was NULL.
    CB_ERR_NULL_ARG = 1,
    /// The handle is 0, garbage, stale (its object is gone), already released, or of the wrong kind.
    CB_ERR_INVALID_HANDLE = 2,
    /// A documented limit was reached (handle slots, a reference count, a configured limit).
    CB_ERR_CAPACITY = 3,
    /// The system refused memory (or a mapping) that cbslot needed.
    CB_ERR_NO_MEMORY = 4,
    /// The operation is not supported on this platform.
    CB_ERR_UNSUPPORTED = 5,
    /// An argument is outside its documented range.
    CB_ERR_INVALID_ARG = 6,
    /// The call would wait for itself (for example, waiting from inside the callback being waited for).
    CB_ERR_WOULD_DEADLOCK = 7,
    /// cbslot hit an internal bug (a Rust panic), caught before it could unwind into C. Please report it.
    CB_ERR_PANIC = 8,
    /// The object (a queue) is closed: no more posts.
    CB_ERR_CLOSED = 9,
    /// A wait timed out.
    CB_ERR_TIMEOUT = 10,
    /// A system call failed for a reason other than memory (no free file descriptor, a mapping refused):
    /// `cb_last_error()` says which call, with the system's error text. A later call may succeed once the
    /// resource is back.
    CB_ERR_SYSTEM = 11,
}

/// A `cb_status` as C passes it in: any integer, since a C enum may hold values outside its list.
/// Written as `cb_status` in the header (see cbindgen.toml).
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct RawStatus(pub u32);

/// The fixed text of a status; `None` for a number that is not (yet) a status.
pub(crate) fn status_text(status: u32) -> Option<&'static str> {
    Some(match status {
        0 => "CB_OK: success\0",
        1 => "CB_ERR_NULL_ARG: a required pointer argument was NULL\0",
        2 => "CB_ERR_INVALID_HANDLE: the handle is 0, garbage, stale, released or of the wrong kind\0",
        3 => "CB_ERR_CAPACITY: a limit was reached\0",
        4 => "CB_ERR_NO_MEMORY: out of memory\0",
        5 => "CB_ERR_UNSUPPORTED: not supported on this platform\0",
        6 => "CB_ERR_INVALID_ARG: an argument is out of range\0",
        7 => "CB_ERR_WOULD_DEADLOCK: the call would wait for itself\0",
        8 => "CB_ERR_PANIC: internal error in cbslot (a bug; please report it)\0",
        9 => "CB_ERR_CLOSED: the queue is closed\0",
        10 => "CB_ERR_TIMEOUT: the wait timed out\0",
        11 => "CB_ERR_SYSTEM: a system call failed (see cb_last_error)\0",
        _ => return None,
    })
}

pub(crate) const UNKNOWN_STATUS: &str = "unknown cb_status value\0";

/// Why an operation failed: a status plus what `cb_last_error()` will say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Error {
    /// The named argument was NULL.
    NullArg(&'static str),
    /// The handle is not valid, and why.
    InvalidHandle(u64, &'static str),
    /// A limit was reached: which one.
    Capacity(&'static str),
    /// An allocation failed: of what.
    NoMemory(&'static str),
    /// An argument is out of range: which, and why.
    InvalidArg(&'static str),
    /// Not available on this platform or system: what.
    Unsupported(&'static str),
    /// The call would wait for itself: why.
    WouldDeadlock(&'static str),
    /// A host function (event loop, system call) failed: which (errno is the host's).
    Host(&'static str),
    /// The queue is closed.
    Closed(&'static str),
    /// A wait timed out.
    Timeout(&'static str),
    /// A system call failed: what was being done, and errno.
    System(&'static str, i32),
}

impl Error {
    pub(crate) fn status(&self) -> cb_status {
        match self {
            Error::NullArg(_) => cb_status::CB_ERR_NULL_ARG,
            Error::InvalidHandle(..) => cb_status::CB_ERR_INVALID_HANDLE,
            Error::Capacity(_) => cb_status::CB_ERR_CAPACITY,
            Error::NoMemory(_) => cb_status::CB_ERR_NO_MEMORY,
            Error::InvalidArg(_) => cb_status::CB_ERR_INVALID_ARG,
            Error::Unsupported(_) => cb_status::CB_ERR_UNSUPPORTED,
            Error::WouldDeadlock(_) => cb_status::CB_ERR_WOULD_DEADLOCK,
            Error::Host(_) => cb_status::CB_ERR_INVALID_ARG,
            Error::Closed(_) => cb_status::CB_ERR_CLOSED,
            Error::Timeout(_) => cb_status::CB_ERR_TIMEOUT,
            Error::System(..) => cb_status::CB_ERR_SYSTEM,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NullArg(arg) => write!(f, "argument `{arg}` is NULL"),
            Error::InvalidHandle(h, why) => write!(f, "handle {h:#018x} {why}"),
            Error::Capacity(what) => write!(f, "{what}"),
            Error::NoMemory(what) => write!(f, "out of memory: {what}"),
            Error::System(what, errno) => write!(f, "{what}: {}", std::io::Error::from_raw_os_error(*errno)),
            Error::InvalidArg(what)
            | Error::Unsupported(what)
            | Error::WouldDeadlock(what)
            | Error::Host(what)
            | Error::Closed(what)
            | Error::Timeout(what) => write!(f, "{what}"),
        }
    }
}

/// `p` as a `NonNull`, or `Err(Error::NullArg(name))` when it is NULL.
pub(crate) fn non_null<T>(p: *mut T, name: &'static str) -> Result<NonNull<T>, Error> {
    NonNull::new(p).ok_or(Error::NullArg(name))
}

const LAST_ERROR_LEN: usize = 256;

thread_local! {
    // A fixed buffer, so recording an error never allocates (it works when memory is what ran out) and the
    // thread-local has no destructor (cb_last_error works even while the thread is being torn down).
    static LAST_ERROR: RefCell<[u8; LAST_ERROR_LEN]> = const { RefCell::new([0; LAST_ERROR_LEN]) };
}

/// Writes into a fixed buffer, cutting what does not fit and keeping room for the final NUL.
struct Truncating<'a> {
    buf: &'a mut [u8; LAST_ERROR_LEN],
    len: usize,
    full: bool,
}

impl Write for Truncating<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // whole characters only, so the cut text stays valid UTF-8
        for ch in s.chars() {
            let n = ch.len_utf8();
            self.full |= self.len + n + 1 > LAST_ERROR_LEN;
            if self.full {
                break;
            }
            ch.encode_utf8(&mut self.buf[self.len..self.len + n]);
            self.len += n;
        }
        Ok(())
    }
}

/// Records `function: detail` as this thread's last error.
pub(crate) fn set_last_error(function: &str, detail: fmt::Arguments<'_>) {
    let _ = LAST_ERROR.try_with(|cell| {
        if let Ok(mut buf) = cell.try_borrow_mut() {
            let mut w = Truncating { buf: &mut buf, len: 0, full: false };
            let _ = write!(w, "{function}: {detail}");
            let end = w.len;
            buf[end] = 0;
        }
    });
}

/// Pointer to this thread's last error text (never NULL; "" before any failure).
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.try_with(|cell| cell.as_ptr() as *const c_char).unwrap_or(c"cb_last_error: thread is exiting".as_ptr())
}

/// Records a failure and converts it to its status.
pub(crate) fn fail(function: &str, err: Error) -> cb_status {
    set_last_error(function, format_args!("{err}"));
    err.status()
}

/// Records a caught panic as this thread's last error.
pub(crate) fn record_panic(function: &str, payload: &(dyn Any + Send)) {
    let msg = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    set_last_error(function, format_args!("internal panic caught at the C boundary: {msg}"));
}

/// Runs the body of an exported function that returns `cb_status` inside the panic boundary.
///
/// The body is a closure-like block returning `Result<(), Error>`; `Err` is recorded for `cb_last_error()` under
/// the function's name and returned as its status; a panic becomes `CB_ERR_PANIC`.
macro_rules! ffi_status {
    ($name:literal, $body:block) => {{
        let run = || -> Result<(), $crate::error::Error> { $body };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
            Ok(Ok(())) => $crate::error::cb_status::CB_OK,
            Ok(Err(e)) => $crate::error::fail($name, e),
            Err(payload) => {
                $crate::error::record_panic($name, &*payload);
                $crate::error::cb_status::CB_ERR_PANIC
            }
        }
    }};
}

/// Runs the body of an exported function that returns a value (not a status) inside the panic boundary;
/// a panic is recorded and turns into `$on_panic`.
macro_rules! ffi_value {
    ($name:expr, $on_panic:expr, $body:block) => {{
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| $body)) {
            Ok(v) => v,
            Err(payload) => {
                $crate::error::record_panic($name, &*payload);
                $on_panic
            }
        }
    }};
}

pub(crate) use {ffi_status, ffi_value};

/// Prints `what` and aborts: for failures on paths that cannot return an error (inside the dispatcher, a
/// host loop's callback).
pub(crate) fn fatal(what: &str) -> ! {
    let msg = format!("cbslot: fatal: {what}\n");
    // SAFETY: writing a buffer we own to stderr.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    std::process::abort()
}

/// Runs `f`, aborting with `what` if it panics: the boundary for functions that C calls with no way to
/// report an error (callbacks cbslot hands to host loops, bare entries, the dispatcher's slow paths).
pub(crate) fn abort_on_panic<R>(what: &str, f: impl FnOnce() -> R) -> R {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| fatal(what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        // SAFETY: never NULL, NUL-terminated, and this thread's text stays put until its next failure.
        unsafe { CStr::from_ptr(last_error_ptr()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn every_status_has_text_and_unknown_does_not() {
        for s in 0..=11 {
            assert!(status_text(s).unwrap().ends_with('\0'));
        }
        assert!(status_text(12).is_none());
        assert!(status_text(u32::MAX).is_none());
    }

    #[test]
    fn panic_in_body_becomes_cb_err_panic_and_is_recorded() {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let status = ffi_status!("test_fn", {
            if last().len() < 100_000 {
                panic!("boom");
            }
            Ok(())
        });
        std::panic::set_hook(prev);
        assert_eq!(status, cb_status::CB_ERR_PANIC);
        assert_eq!(last(), "test_fn: internal panic caught at the C boundary: boom");
    }

    #[test]
    fn errors_are_recorded_with_function_name() {
        let s = ffi_status!("f", { Err(Error::InvalidHandle(0, "is 0, which is never a valid handle")) });
        assert_eq!(s, cb_status::CB_ERR_INVALID_HANDLE);
        assert_eq!(last(), "f: handle 0x0000000000000000 is 0, which is never a valid handle");
    }

    #[test]
    fn long_messages_are_cut_and_nul_terminated() {
        let long = "é".repeat(400);
        set_last_error("f", format_args!("{long}"));
        let text = last();
        assert!(text.len() < LAST_ERROR_LEN);
        assert!(text.starts_with("f: é"));
        assert!(std::str::from_utf8(text.as_bytes()).is_ok());
    }
}
