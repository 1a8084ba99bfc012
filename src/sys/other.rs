//! Any other Unix, with POSIX calls only (see `mod.rs` for the interface). Built on Linux too with
//! `--cfg cbslot_force_unsupported`, which is how it is tested.

use super::{Ctl, Ready, WAIT_BATCH, keeping_errno, timeout_ms};
use crate::error::Error;
use core::ffi::c_int;
use core::sync::atomic::{AtomicU32, Ordering::*};
use parking_lot::{Condvar, Mutex};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// POSIX has no such flag; reservations are plain `PROT_NONE` mappings.
pub(crate) const MAP_NORESERVE: c_int = 0;

/// An id of the calling thread, unique among live threads (never 0).
pub(crate) fn thread_id() -> u64 {
    // SAFETY: no preconditions.
    unsafe { libc::pthread_self() as usize as u64 }
}

/// One lock and condition variable stand in for every futex word: a waiter checks the word under the lock,
/// and a waker (which changed the word first) takes the lock before notifying, so no wake-up is lost.
static FUTEX_LOCK: Mutex<()> = Mutex::new(());
static FUTEX_COND: Condvar = Condvar::new();

/// Sleeps while `word` is still `seen`, at most `timeout` (`None`: no limit); may return early.
pub(crate) fn futex_wait(word: &AtomicU32, seen: u32, timeout: Option<Duration>) {
    let mut guard = FUTEX_LOCK.lock();
    if word.load(Acquire) == seen {
        match timeout {
            Some(t) => drop(FUTEX_COND.wait_for(&mut guard, t)),
            None => FUTEX_COND.wait(&mut guard),
        }
    }
}

/// Wakes the threads sleeping in `futex_wait` (all of them: the words share one condition variable).
pub(crate) fn futex_wake(_word: &AtomicU32, _n: i32) {
    drop(FUTEX_LOCK.lock());
    FUTEX_COND.notify_all();
}

/// No process-wide barrier call: always false (the caller falls back to its own).
pub(crate) fn membarrier_register() -> bool {
    false
}

/// No process-wide barrier call: always false.
pub(crate) fn membarrier() -> bool {
    false
}

/// No memfd: always `ENOSYS`.
pub(crate) fn memfd_sealed(_name: &core::ffi::CStr, _bytes: &[u8]) -> Result<OwnedFd, (&'static str, c_int)> {
    Err(("memfd_create", libc::ENOSYS))
}

/// A self-pipe standing in for an eventfd: readable while a byte is in it. Both ends are non-blocking and
/// close-on-exec.
pub(crate) struct EventFd {
    read: OwnedFd,
    write: OwnedFd,
}

impl EventFd {
    /// `None` when the process is out of descriptors (or memory).
    pub(crate) fn new() -> Option<Self> {
        let mut fds = [0 as c_int; 2];
        // SAFETY: pipe fills two descriptors, which we own from here on.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: as above.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        for fd in [&read, &write] {
            // SAFETY: fcntl on our own descriptors.
            let ok = unsafe {
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) == 0
                    && libc::fcntl(
                        fd.as_raw_fd(),
                        libc::F_SETFL,
                        libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) | libc::O_NONBLOCK,
                    ) == 0
            };
            if !ok {
                return None;
            }
        }
        Some(EventFd { read, write })
    }

    /// Makes the descriptor readable, with the same 8-byte write as an eventfd's. Leaves `errno` as it was (a
    /// full pipe is readable already).
    pub(crate) fn signal(&self) {
        let one = 1u64;
        // SAFETY: writing 8 bytes from a local to our descriptor.
        keeping_errno(|| unsafe { libc::write(self.write.as_raw_fd(), (&one as *const u64).cast(), 8) });
    }

    /// Makes it unreadable again (until the next `signal`). Leaves `errno` as it was.
    pub(crate) fn reset(&self) {
        let mut buf = [0u8; 64];
        // SAFETY: reading into a local from our non-blocking descriptor, until it is empty.
        keeping_errno(|| while unsafe { libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {});
    }

    /// Waits up to `wait` for it to become readable (or for a signal to interrupt the wait).
    pub(crate) fn wait_readable(&self, wait: Option<Duration>) {
        let mut pfd = libc::pollfd { fd: self.raw(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one pollfd on our descriptor.
        keeping_errno(|| unsafe { libc::poll(&mut pfd, 1, timeout_ms(wait)) });
    }

    /// The descriptor to poll (the pipe's read end).
    pub(crate) fn raw(&self) -> RawFd {
        self.read.as_raw_fd()
    }
}

/// No epoll here: an `Epoll` cannot exist (the type is empty), so the built-in loop fails to start.
pub(crate) struct Epoll(Never);

enum Never {}

impl Epoll {
    pub(crate) fn new() -> Result<Self, Error> {
        Err(Error::Unsupported(concat!(
            "the built-in event loop is not available on ",
            env!("CBSLOT_TARGET"),
            ": it is built on epoll (Linux only)"
        )))
    }

    pub(crate) fn ctl(&self, _op: Ctl, _fd: RawFd, _interest: u32, _data: u64) -> Result<(), c_int> {
        match self.0 {}
    }

    pub(crate) fn wait<'a>(&self, _buf: &'a mut [Ready; WAIT_BATCH], _wait: Option<Duration>) -> &'a [Ready] {
        match self.0 {}
    }
}
