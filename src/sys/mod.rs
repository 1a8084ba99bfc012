//! The system calls cbslot makes, as owning types (a descriptor is closed by `Drop`, never by hand) and small
//! functions. What differs between systems sits behind one interface with two implementations:
//!
//! * `linux.rs`: eventfd, epoll, futex, membarrier, memfd.
//! * `other.rs`: any other Unix, with POSIX calls only: a pipe for the wake-up descriptor, a condition
//!   variable for the futex, no epoll (the built-in loop is `CB_ERR_UNSUPPORTED`), no membarrier and no memfd
//!   (only used by callback entries, which have no trampolines there). `--cfg cbslot_force_unsupported`
//!   builds it on Linux too, so CTest runs it.
//!
//! Both provide: `EventFd`, `Epoll` (with `READ`, `WRITE`, `Ctl`, `Ready`), `thread_id`, `futex_wait`,
//! `futex_wake`, `membarrier_register`, `membarrier`, `memfd_sealed` and `MAP_NORESERVE`.

use core::ffi::c_int;
use core::sync::atomic::{AtomicU32, Ordering::*};
use std::time::Duration;

#[cfg_attr(cbslot_linux, path = "linux.rs")]
#[cfg_attr(not(cbslot_linux), path = "other.rs")]
mod os;
pub(crate) use os::*;

/// This thread's `errno`.
pub(crate) fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Sets this thread's `errno`.
pub(crate) fn set_errno(e: c_int) {
    // SAFETY: errno is thread-local; the location is valid for the thread's life.
    unsafe { *errno_location() = e };
}

#[cfg(any(target_os = "netbsd", target_os = "openbsd"))]
use libc::__errno as errno_location;
#[cfg(any(target_os = "linux", target_os = "android", target_os = "emscripten"))]
use libc::__errno_location as errno_location;
#[cfg(any(target_vendor = "apple", target_os = "freebsd", target_os = "dragonfly"))]
use libc::__error as errno_location;

/// Runs `f` (system calls whose failure is not the caller's) and leaves `errno` as it was before.
fn keeping_errno<R>(f: impl FnOnce() -> R) -> R {
    let saved = errno();
    let out = f();
    set_errno(saved);
    out
}

/// Milliseconds for poll/epoll_wait: `None` waits forever; rounded up, capped at `c_int::MAX`.
pub(crate) fn timeout_ms(wait: Option<Duration>) -> c_int {
    wait.map_or(-1, |d| d.as_nanos().div_ceil(1_000_000).min(c_int::MAX as u128) as c_int)
}

/// Interest and readiness bits of [`Epoll`]: readable (a hang-up or error counts too) and writable.
pub(crate) const READ: u32 = 1;
pub(crate) const WRITE: u32 = 2;
/// Most events one [`Epoll::wait`] returns.
pub(crate) const WAIT_BATCH: usize = 64;

/// An [`Epoll::ctl`] operation.
#[derive(Clone, Copy)]
pub(crate) enum Ctl {
    Add,
    Modify,
    Delete,
}

/// One ready descriptor: its tag and what it is ready for (`READ | WRITE`).
#[derive(Clone, Copy, Default)]
pub(crate) struct Ready {
    pub(crate) data: u64,
    pub(crate) events: u32,
}

/// A futex word: threads sleep until it changes, and `bump` changes it and wakes them. Fork-safe: a plain
/// integer with no list of waiters.
pub(crate) struct Futex(AtomicU32);

impl Futex {
    pub(crate) const fn new() -> Self {
        Futex(AtomicU32::new(0))
    }

    /// The current value, to pass to `wait`.
    pub(crate) fn value(&self) -> u32 {
        self.0.load(Acquire)
    }

    /// Sleeps while the word is still `seen`, at most `timeout` (`None`: no limit); may return early.
    pub(crate) fn wait(&self, seen: u32, timeout: Option<Duration>) {
        keeping_errno(|| futex_wait(&self.0, seen, timeout));
    }

    /// Changes the word and wakes every sleeper.
    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, Release);
        keeping_errno(|| futex_wake(&self.0, i32::MAX));
    }
}

/// Starts a detached thread named `name` running `start(arg)`, with every signal blocked from its first
/// instruction on. Returns false if the system refused the thread.
///
/// Plain pthreads rather than `std::thread`: such a thread owns no heap memory of its own while it sleeps,
/// so in a fork child (where it does not exist) nothing it held shows up as leaked.
pub(crate) fn spawn_detached(
    name: &core::ffi::CStr,
    start: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void,
    arg: usize,
) -> bool {
    // SAFETY: local attribute and signal-set objects, initialised before use and destroyed after; the new
    // thread inherits the blocked mask, then this thread's own mask is put back.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_attr_init(&mut attr) != 0 {
            return false;
        }
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let (mut all, mut old): (libc::sigset_t, libc::sigset_t) = (core::mem::zeroed(), core::mem::zeroed());
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut thread: libc::pthread_t = core::mem::zeroed();
        let ok = libc::pthread_create(&mut thread, &attr, start, arg as *mut libc::c_void) == 0;
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        libc::pthread_attr_destroy(&mut attr);
        #[cfg(target_os = "linux")]
        if ok {
            libc::pthread_setname_np(thread, name.as_ptr());
        }
        #[cfg(not(target_os = "linux"))]
        let _ = name; // naming another thread is not portable
        ok
    }
}

/// A mutex that can be held across `fork()` and released in both processes (`force_unlock`): a futex word
/// (0 free, 1 locked, 2 locked with sleepers) and no queue of waiters. (A lock that queues its waiters, such
/// as parking_lot's, can hand itself in the child to a waiter that only existed in the parent, and is then
/// never free again.)
pub(crate) type ForkLock<T> = parking_lot::lock_api::Mutex<FutexMutex, T>;

/// The raw lock of [`ForkLock`].
pub(crate) struct FutexMutex(AtomicU32);

// SAFETY: mutual exclusion: the word goes from 0 to non-zero only by one thread's CAS or swap, and back to 0
// only in `unlock`; Acquire on taking and Release on giving back order the protected data.
unsafe impl parking_lot::lock_api::RawMutex for FutexMutex {
    const INIT: Self = FutexMutex(AtomicU32::new(0));
    type GuardMarker = parking_lot::lock_api::GuardNoSend;

    fn lock(&self) {
        if self.0.compare_exchange(0, 1, Acquire, Relaxed).is_ok() {
            return;
        }
        while self.0.swap(2, Acquire) != 0 {
            keeping_errno(|| futex_wait(&self.0, 2, None));
        }
    }

    fn try_lock(&self) -> bool {
        self.0.compare_exchange(0, 1, Acquire, Relaxed).is_ok()
    }

    unsafe fn unlock(&self) {
        if self.0.swap(0, Release) == 2 {
            keeping_errno(|| futex_wake(&self.0, 1));
        }
    }
}
