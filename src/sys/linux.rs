//! Linux: eventfd, epoll, futex, membarrier and memfd (see `mod.rs` for the interface).

use super::{Ctl, READ, Ready, WAIT_BATCH, WRITE, errno, keeping_errno, timeout_ms};
use crate::error::Error;
use core::ffi::c_int;
use core::sync::atomic::AtomicU32;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// `mmap` flag for address space reserved without committing swap for it.
pub(crate) const MAP_NORESERVE: c_int = libc::MAP_NORESERVE;

/// The calling thread's kernel id (never 0).
pub(crate) fn thread_id() -> u64 {
    // SAFETY: plain system call with no arguments.
    unsafe { libc::syscall(libc::SYS_gettid) as u64 }
}

fn owned(fd: c_int) -> Option<OwnedFd> {
    // SAFETY: a descriptor the kernel just gave us, owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sleeps while `word` is still `seen`, at most `timeout` (`None`: no limit); may return early.
pub(crate) fn futex_wait(word: &AtomicU32, seen: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts.as_ref().map_or(core::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: a private futex wait on a word we borrow, with a local (or no) relative timeout.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG, seen, ts_ptr) };
}

/// Wakes up to `n` threads sleeping in `futex_wait` on `word`.
pub(crate) fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: a private futex wake on a word we borrow.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, n) };
}

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

/// Registers the process for `membarrier`; false when the kernel has no `PRIVATE_EXPEDITED` (before 4.14).
pub(crate) fn membarrier_register() -> bool {
    // SAFETY: plain system call with no pointers.
    unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0 }
}

/// A full memory barrier on every thread of the process that is running now; false if the kernel refused.
pub(crate) fn membarrier() -> bool {
    // SAFETY: plain system call with no pointers.
    unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0 }
}

/// A close-on-exec memfd holding `bytes`, sealed against any change; on failure, what failed and errno.
pub(crate) fn memfd_sealed(name: &core::ffi::CStr, bytes: &[u8]) -> Result<OwnedFd, (&'static str, c_int)> {
    // SAFETY: plain system call; the descriptor is owned (and closed on every error) from here on.
    let fd = owned(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) })
        .ok_or_else(|| ("memfd_create", errno()))?;
    let mut done = 0;
    while done < bytes.len() {
        // SAFETY: writing from a live slice to our descriptor.
        let n = unsafe { libc::write(fd.as_raw_fd(), bytes[done..].as_ptr().cast(), bytes.len() - done) };
        if n <= 0 {
            return Err(("writing the memfd", if n == 0 { libc::EIO } else { errno() }));
        }
        done += n as usize;
    }
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: plain fcntl on our descriptor.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(("sealing the memfd", errno()));
    }
    Ok(fd)
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
    pub(crate) fn new() -> Result<Self, Error> {
        // SAFETY: plain system call.
        owned(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })
            .map(Epoll)
            .ok_or(Error::NoMemory("epoll_create1 failed (out of descriptors?)"))
    }

    /// Adds, changes or deletes `fd`, watched for `interest` (`READ | WRITE`) and tagged `data`; the OS
    /// error on failure. Leaves `errno` as it was (a caller that reports the failure sets it).
    pub(crate) fn ctl(&self, op: Ctl, fd: RawFd, interest: u32, data: u64) -> Result<(), c_int> {
        let op = match op {
            Ctl::Add => libc::EPOLL_CTL_ADD,
            Ctl::Modify => libc::EPOLL_CTL_MOD,
            Ctl::Delete => libc::EPOLL_CTL_DEL,
        };
        let events = (if interest & READ != 0 { libc::EPOLLIN as u32 } else { 0 })
            | (if interest & WRITE != 0 { libc::EPOLLOUT as u32 } else { 0 });
        let mut ev = libc::epoll_event { events, u64: data };
        keeping_errno(|| {
            // SAFETY: our epoll descriptor and a local event (ignored by EPOLL_CTL_DEL).
            if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), op, fd, &mut ev) } == 0 { Ok(()) } else { Err(errno()) }
        })
    }

    /// Waits up to `wait` for events; returns those that are ready (none on EINTR). Leaves `errno` as it
    /// was, so a successful round does not leave a failure behind.
    pub(crate) fn wait<'a>(&self, buf: &'a mut [Ready; WAIT_BATCH], wait: Option<Duration>) -> &'a [Ready] {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; WAIT_BATCH];
        // SAFETY: our epoll descriptor and a local buffer of WAIT_BATCH events.
        let n = keeping_errno(|| unsafe {
            libc::epoll_wait(self.0.as_raw_fd(), evs.as_mut_ptr(), WAIT_BATCH as c_int, timeout_ms(wait))
        });
        let n = n.max(0) as usize;
        for (out, ev) in buf.iter_mut().zip(&evs[..n]) {
            let (readable, writable) =
                (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR, libc::EPOLLOUT | libc::EPOLLERR);
            let data = ev.u64;
            *out = Ready {
                data,
                events: (if ev.events & readable as u32 != 0 { READ } else { 0 })
                    | (if ev.events & writable as u32 != 0 { WRITE } else { 0 }),
            };
        }
        &buf[..n]
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    /// The W^X argument for memfd trampolines rests on these seals: nobody can change the bytes.
    #[test]
    fn the_memfd_is_sealed_against_every_change() {
        let fd = super::memfd_sealed(c"cbslot-test", b"code").unwrap();
        let all = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on our own descriptor.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        assert_eq!(seals & all, all);
        // SAFETY: writing one byte from a static to our own descriptor.
        let wrote = unsafe { libc::pwrite(fd.as_raw_fd(), b"x".as_ptr().cast(), 1, 0) };
        assert_eq!(wrote, -1, "a sealed memfd took a write");
    }
}
