//! The few system calls the queue and the built-in loop make, as owning types: a descriptor is closed by
//! `Drop`, never by hand. Linux only (eventfd, epoll).

use core::ffi::c_int;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// This thread's `errno`.
pub(crate) fn errno() -> c_int {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Sets this thread's `errno`.
pub(crate) fn set_errno(e: c_int) {
    // SAFETY: errno is thread-local; the location is valid for the thread's life.
    unsafe { *libc::__errno_location() = e };
}

/// Runs `f` (system calls whose failure is not the caller's) and leaves `errno` as it was before.
fn keeping_errno<R>(f: impl FnOnce() -> R) -> R {
    let saved = errno();
    let out = f();
    set_errno(saved);
    out
}

/// The calling thread's kernel id (never 0).
pub(crate) fn thread_id() -> u64 {
    // SAFETY: plain system call with no arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as u64 }
}

/// Milliseconds for poll/epoll_wait: `None` waits forever; rounded up, capped at `c_int::MAX`.
pub(crate) fn timeout_ms(wait: Option<Duration>) -> c_int {
    wait.map_or(-1, |d| d.as_nanos().div_ceil(1_000_000).min(c_int::MAX as u128) as c_int)
}

fn owned(fd: c_int) -> Option<OwnedFd> {
    // SAFETY: a descriptor the kernel just gave us, owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A non-blocking, close-on-exec eventfd.
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    /// `None` when the process is out of descriptors (or memory).
    pub(crate) fn new() -> Option<Self> {
        // SAFETY: plain system call.
        owned(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) }).map(EventFd)
    }

    /// Makes the descriptor readable. Leaves `errno` as it was.
    pub(crate) fn signal(&self) {
        let one = 1u64;
        // SAFETY: writing 8 bytes from a local to our descriptor.
        keeping_errno(|| unsafe { libc::write(self.raw(), (&one as *const u64).cast(), 8) });
    }

    /// Makes it unreadable again (until the next `signal`). Leaves `errno` as it was (EAGAIN when it
    /// was not readable is no failure).
    pub(crate) fn reset(&self) {
        let mut buf = 0u64;
        // SAFETY: reading 8 bytes into a local from our non-blocking descriptor.
        keeping_errno(|| unsafe { libc::read(self.raw(), (&mut buf as *mut u64).cast(), 8) });
    }

    /// Waits up to `wait` for it to become readable (or for a signal to interrupt the wait).
    pub(crate) fn wait_readable(&self, wait: Option<Duration>) {
        let mut pfd = libc::pollfd { fd: self.raw(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one pollfd on our descriptor.
        keeping_errno(|| unsafe { libc::poll(&mut pfd, 1, timeout_ms(wait)) });
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A close-on-exec epoll instance.
pub(crate) struct Epoll(OwnedFd);

impl Epoll {
    /// `None` when the process is out of descriptors (or memory).
    pub(crate) fn new() -> Option<Self> {
        // SAFETY: plain system call.
        owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) }).map(Epoll)
    }

    /// `EPOLL_CTL_ADD` / `_MOD` / `_DEL` of `fd` with `events`, tagged `data`; the OS error on failure.
    /// Leaves `errno` as it was (a caller that reports the failure sets it).
    pub(crate) fn ctl(&self, op: c_int, fd: RawFd, events: u32, data: u64) -> Result<(), c_int> {
        let mut ev = libc::epoll_event { events, u64: data };
        // SAFETY: our epoll descriptor and a local event (ignored by EPOLL_CTL_DEL).
        keeping_errno(|| if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut ev) } == 0 { Ok(()) } else { Err(errno()) })
    }

    /// Waits up to `wait` for events; returns those that are ready (none on EINTR). Leaves `errno` as it
    /// was, so a successful round does not leave a failure behind.
    pub(crate) fn wait<'a>(&self, buf: &'a mut [libc::epoll_event], wait: Option<Duration>) -> &'a [libc::epoll_event] {
        let len = buf.len().min(c_int::MAX as usize) as c_int;
        // SAFETY: our epoll descriptor and a buffer of `buf.len()` events.
        let n = keeping_errno(|| unsafe { libc::epoll_wait(self.0.as_raw_fd(), buf.as_mut_ptr(), len, timeout_ms(wait)) });
        &buf[..n.max(0) as usize]
    }
}

/// A futex word: threads sleep until it changes, and `bump` changes it and wakes them. Fork-safe: a plain
/// integer with no list of waiters.
pub(crate) struct Futex(core::sync::atomic::AtomicU32);

impl Futex {
    pub(crate) const fn new() -> Self {
        Futex(core::sync::atomic::AtomicU32::new(0))
    }

    /// The current value, to pass to `wait`.
    pub(crate) fn value(&self) -> u32 {
        self.0.load(core::sync::atomic::Ordering::Acquire)
    }

    /// Sleeps while the word is still `seen`, at most `timeout` (`None`: no limit); may return early.
    pub(crate) fn wait(&self, seen: u32, timeout: Option<Duration>) {
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        let ts_ptr = ts.as_ref().map_or(core::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: a private futex wait on our own word, with a local (or no) relative timeout.
        keeping_errno(|| unsafe { libc::syscall(libc::SYS_futex, self.0.as_ptr(), libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, seen, ts_ptr) });
    }

    /// Changes the word and wakes every sleeper.
    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, core::sync::atomic::Ordering::Release);
        // SAFETY: a private futex wake on our own word.
        keeping_errno(|| unsafe { libc::syscall(libc::SYS_futex, self.0.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, i32::MAX) });
    }
}

/// Starts a detached thread named `name` running `start(arg)`, with every signal blocked from its first
/// instruction on. Returns false if the system refused the thread.
///
/// Plain pthreads rather than `std::thread`: such a thread owns no heap memory of its own while it sleeps,
/// so in a fork child (where it does not exist) nothing it held shows up as leaked.
pub(crate) fn spawn_detached(name: &core::ffi::CStr, start: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void, arg: usize) -> bool {
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
        let mut thread: libc::pthread_t = 0;
        let ok = libc::pthread_create(&mut thread, &attr, start, arg as *mut libc::c_void) == 0;
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        libc::pthread_attr_destroy(&mut attr);
        if ok {
            libc::pthread_setname_np(thread, name.as_ptr());
        }
        ok
    }
}

/// A mutex that can be held across `fork()` and released in both processes (`force_unlock`): a futex word
/// (0 free, 1 locked, 2 locked with sleepers) and no queue of waiters. (A lock that queues its waiters, such
/// as parking_lot's, can hand itself in the child to a waiter that only existed in the parent, and is then
/// never free again.)
pub(crate) type ForkLock<T> = parking_lot::lock_api::Mutex<FutexMutex, T>;

/// The raw lock of [`ForkLock`].
pub(crate) struct FutexMutex(core::sync::atomic::AtomicU32);

impl FutexMutex {
    fn futex(&self, op: c_int, val: u32) {
        // SAFETY: a private futex operation on our own word, no timeout.
        keeping_errno(|| unsafe { libc::syscall(libc::SYS_futex, self.0.as_ptr(), op | libc::FUTEX_PRIVATE_FLAG, val, 0usize) });
    }
}

// SAFETY: mutual exclusion: the word goes from 0 to non-zero only by one thread's CAS or swap, and back to 0
// only in `unlock`; Acquire on taking and Release on giving back order the protected data.
unsafe impl parking_lot::lock_api::RawMutex for FutexMutex {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = FutexMutex(core::sync::atomic::AtomicU32::new(0));
    type GuardMarker = parking_lot::lock_api::GuardNoSend;

    fn lock(&self) {
        use core::sync::atomic::Ordering::*;
        if self.0.compare_exchange(0, 1, Acquire, Relaxed).is_ok() {
            return;
        }
        while self.0.swap(2, Acquire) != 0 {
            self.futex(libc::FUTEX_WAIT, 2);
        }
    }

    fn try_lock(&self) -> bool {
        use core::sync::atomic::Ordering::*;
        self.0.compare_exchange(0, 1, Acquire, Relaxed).is_ok()
    }

    unsafe fn unlock(&self) {
        if self.0.swap(0, core::sync::atomic::Ordering::Release) == 2 {
            self.futex(libc::FUTEX_WAKE, 1);
        }
    }
}
