//! Mapping blocks of trampolines without ever making a page writable and executable.
//!
//! A block is `TABLE_BYTES` of code (dispatcher and stubs) mapped read+exec, followed directly by
//! `TABLE_BYTES` of data mapped read+write (the header, then one `{fn, userdata}` slot per stub). The code is a fresh mapping of the
//! stub table assembled into the library, taken from:
//! 1. **the library's own file** (found through `/proc/self/maps`, the way libffi 3.4 does), or
//! 2. **a sealed memfd** holding a copy of the table, when the file cannot be used (no /proc, the file was
//!    replaced, a static binary on a noexec mount, ...).
//!
//! `CBSLOT_TRAMPOLINES=file` or `=memfd` forces one source (for tests); unset, the file is tried first.
//! The source's code is compared byte for byte with the table once, before its first block is used.

use super::arch::{TABLE_BYTES, TABLES, code_prot, tables, write_header};
use crate::error::Error;
use crate::sys::errno;
use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Where block code is mapped from: the tables start at `offset` in `fd` (kept open for the process's life).
pub(crate) struct Source {
    fd: OwnedFd,
    offset: libc::off_t,
}

impl Source {
    /// Picks the source, honouring `CBSLOT_TRAMPOLINES`. A failure is the system's (no descriptor free, no
    /// /proc, memfd refused): `CB_ERR_SYSTEM` with the errno of a failure that can pass if there was one
    /// (see [`can_pass`]), else the last.
    pub(crate) fn open() -> Result<Source, Error> {
        let want = std::env::var("CBSLOT_TRAMPOLINES").unwrap_or_default();
        let candidates: &[fn() -> Result<Source, Error>] = match want.as_str() {
            "file" => &[from_file],
            "memfd" => &[from_memfd],
            _ => &[from_file, from_memfd],
        };
        // the error to report: one that can pass if any candidate failed that way (so the caller tries again)
        let mut err = Error::System("no way to map trampoline code", 0);
        for open in candidates {
            match open().and_then(|src| src.verify().map(|()| src)) {
                Ok(src) => return Ok(src),
                Err(e) if can_pass(err) && !can_pass(e) => {}
                Err(e) => err = e,
            }
        }
        Err(match err {
            Error::System(_, e) => Error::System("cannot map trampoline code (from the library file or a memfd)", e),
            other => other,
        })
    }

    /// Maps one block of `kind` and returns the address of its code; the data region follows at
    /// `+ TABLE_BYTES`, zeroed except for the header.
    pub(crate) fn map_block(&self, kind: usize) -> Result<usize, Error> {
        let fail = || match errno() {
            libc::ENOMEM => Error::NoMemory("mapping a block of callback trampolines"),
            e => Error::System("mapping a block of callback trampolines", e),
        };
        // SAFETY: we reserve fresh address space and only ever map over our own reservation.
        unsafe {
            let base = libc::mmap(
                core::ptr::null_mut(),
                2 * TABLE_BYTES,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | crate::sys::MAP_NORESERVE,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(fail());
            }
            let code = libc::mmap(
                base,
                TABLE_BYTES,
                code_prot(),
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                self.fd.as_raw_fd(),
                self.offset + (kind * TABLE_BYTES) as libc::off_t,
            );
            let data = (base as usize + TABLE_BYTES) as *mut libc::c_void;
            if code == libc::MAP_FAILED || libc::mprotect(data, TABLE_BYTES, libc::PROT_READ | libc::PROT_WRITE) != 0 {
                let err = fail();
                libc::munmap(base, 2 * TABLE_BYTES);
                return Err(err);
            }
            write_header(data as *mut u8);
            Ok(base as usize)
        }
    }

    /// Checks, once per source, that a trial block of each kind is byte for byte its table.
    ///
    /// A memfd is sealed against writes, and the file is held open (a replaced file keeps its old inode for
    /// us), so later blocks map the same bytes. Not comparing every block keeps the code pages of unused
    /// stubs from being faulted in.
    fn verify(&self) -> Result<(), Error> {
        for kind in 0..TABLES {
            let block = self.map_block(kind)?;
            // SAFETY: a block we just mapped and nobody else knows about; unmapped right after.
            let same = unsafe {
                let same = core::slice::from_raw_parts(block as *const u8, TABLE_BYTES)
                    == &tables()[kind * TABLE_BYTES..][..TABLE_BYTES];
                libc::munmap(block as *mut libc::c_void, 2 * TABLE_BYTES);
                same
            };
            if !same {
                return Err(Error::System("the trampoline source does not hold the library's code", libc::EIO));
            }
        }
        Ok(())
    }
}

/// Whether a failure to open a source can pass by itself: no descriptor or memory free now.
pub(crate) fn can_pass(e: Error) -> bool {
    match e {
        Error::NoMemory(_) => true,
        Error::System(_, errno) => {
            matches!(errno, libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN | libc::EINTR)
        }
        _ => false,
    }
}

/// `Err` with this thread's errno, for `what`.
fn sys_err(what: &'static str) -> Error {
    Error::System(what, errno())
}

fn io_err(what: &'static str, e: std::io::Error) -> Error {
    Error::System(what, e.raw_os_error().unwrap_or(0))
}

/// The file and offset the tables were loaded from, per /proc/self/maps.
fn from_file() -> Result<Source, Error> {
    let addr = tables().as_ptr() as usize;
    let not_found = Error::System("the library file is not mapped from a path", libc::ENOENT);
    let maps = std::fs::File::open("/proc/self/maps").map_err(|e| io_err("opening /proc/self/maps", e))?;
    for line in BufReader::new(maps).lines() {
        let line = line.map_err(|e| io_err("reading /proc/self/maps", e))?;
        let parse = || {
            // start-end perms offset dev inode path
            let mut f = line.split_ascii_whitespace();
            let (range, _perms, offset) = (f.next()?, f.next()?, f.next()?);
            let path = f.nth(2).unwrap_or("");
            let (start, end) = range.split_once('-')?;
            let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
            Some((start, end, u64::from_str_radix(offset, 16).ok()?, path))
        };
        let Some((start, end, offset, path)) = parse() else { continue };
        if !(start <= addr && addr + TABLES * TABLE_BYTES <= end) {
            continue;
        }
        if !path.starts_with('/') || line.ends_with("(deleted)") {
            return Err(not_found);
        }
        let offset = offset + (addr - start) as u64;
        let cpath = CString::new(path).map_err(|_| not_found)?;
        // SAFETY: a NUL-terminated path.
        let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(sys_err("opening the library file"));
        }
        // SAFETY: a descriptor we just opened and own.
        return Ok(Source { fd: unsafe { OwnedFd::from_raw_fd(fd) }, offset: offset as libc::off_t });
    }
    Err(not_found)
}

/// A sealed memfd holding a copy of the tables (the W^X argument relies on the seal: nobody can change these
/// bytes once mapped executable).
fn from_memfd() -> Result<Source, Error> {
    let fd = crate::sys::memfd_sealed(c"cbslot-trampolines", tables()).map_err(|(what, e)| Error::System(what, e))?;
    Ok(Source { fd, offset: 0 })
}
