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

use super::arch::{TABLE_BYTES, table, write_header};
use crate::error::Error;
use std::ffi::CString;
use std::io::{BufRead, BufReader};

/// Where block code is mapped from.
pub(crate) struct Source {
    fd: libc::c_int,
    offset: libc::off_t,
}

impl Source {
    /// Picks the source, honouring `CBSLOT_TRAMPOLINES`.
    pub(crate) fn open() -> Result<Source, Error> {
        let want = std::env::var("CBSLOT_TRAMPOLINES").unwrap_or_default();
        let candidates: &[fn() -> Option<Source>] = match want.as_str() {
            "file" => &[from_file],
            "memfd" => &[from_memfd],
            _ => &[from_file, from_memfd],
        };
        candidates
            .iter()
            .filter_map(|open| open())
            .find(|src| src.map_block().is_ok_and(|b| src.verify_and_unmap(b)))
            .ok_or(Error::Unsupported("no way to map trampoline code (neither the library file nor a memfd)"))
    }

    /// Maps one block and returns the address of its code; the data region follows at `+ TABLE_BYTES`,
    /// zeroed except for the header.
    pub(crate) fn map_block(&self) -> Result<usize, Error> {
        let no_mem = Error::NoMemory("mapping a block of callback trampolines");
        // SAFETY: we reserve fresh address space and only ever map over our own reservation.
        unsafe {
            let base = libc::mmap(
                core::ptr::null_mut(),
                2 * TABLE_BYTES,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(no_mem);
            }
            let code = libc::mmap(
                base,
                TABLE_BYTES,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                self.fd,
                self.offset,
            );
            let data = (base as usize + TABLE_BYTES) as *mut libc::c_void;
            if code == libc::MAP_FAILED || libc::mprotect(data, TABLE_BYTES, libc::PROT_READ | libc::PROT_WRITE) != 0 {
                libc::munmap(base, 2 * TABLE_BYTES);
                return Err(no_mem);
            }
            write_header(data as *mut u8);
            Ok(base as usize)
        }
    }
}

impl Source {
    /// True if a trial block's code is byte for byte the table; unmaps the trial block.
    ///
    /// Done once per source: a memfd is sealed against writes, and the file is held open (a replaced file
    /// keeps its old inode for us), so later blocks map the same bytes. Not comparing every block keeps the
    /// code pages of unused stubs from being faulted in.
    fn verify_and_unmap(&self, block: usize) -> bool {
        // SAFETY: a block we just mapped and nobody else knows about.
        unsafe {
            let same = core::slice::from_raw_parts(block as *const u8, TABLE_BYTES) == table();
            libc::munmap(block as *mut libc::c_void, 2 * TABLE_BYTES);
            same
        }
    }
}

/// The file and offset the table was loaded from, per /proc/self/maps.
fn from_file() -> Option<Source> {
    let addr = table().as_ptr() as usize;
    let maps = std::fs::File::open("/proc/self/maps").ok()?;
    for line in BufReader::new(maps).lines() {
        let line = line.ok()?;
        // start-end perms offset dev inode path
        let mut f = line.split_ascii_whitespace();
        let (range, _perms, offset) = (f.next()?, f.next()?, f.next()?);
        let path = f.nth(2).unwrap_or("");
        let (start, end) = range.split_once('-')?;
        let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
        if !(start <= addr && addr + TABLE_BYTES <= end) {
            continue;
        }
        if !path.starts_with('/') || line.ends_with("(deleted)") {
            return None;
        }
        let offset = u64::from_str_radix(offset, 16).ok()? + (addr - start) as u64;
        let cpath = CString::new(path).ok()?;
        // SAFETY: a NUL-terminated path.
        let fd = unsafe { libc::open(cpath.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        return (fd >= 0).then_some(Source { fd, offset: offset as libc::off_t });
    }
    None
}

/// A sealed memfd holding a copy of the table.
fn from_memfd() -> Option<Source> {
    // SAFETY: plain system calls on a descriptor we own.
    unsafe {
        let fd = libc::memfd_create(c"cbslot-trampolines".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING);
        if fd < 0 {
            return None;
        }
        let bytes = table();
        let mut done = 0;
        while done < bytes.len() {
            let n = libc::write(fd, bytes[done..].as_ptr().cast(), bytes.len() - done);
            if n <= 0 {
                libc::close(fd);
                return None;
            }
            done += n as usize;
        }
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        libc::fcntl(fd, libc::F_ADD_SEALS, seals);
        Some(Source { fd, offset: 0 })
    }
}
