//! The GDB JIT interface: tells gdb about mapped trampoline blocks, with their symbols and unwind tables
//! (gdb does not read what `__register_frame` registers). Each block is described by a small in-memory ELF
//! object that gdb reads with BFD from the process memory; see "JIT Compilation Interface" in the gdb manual.
//!
//! What gdb 13 needs of the object (checked with it): `e_machine` EM_X86_64 (otherwise it warns and ignores
//! the object); `.text` SHF_ALLOC with `sh_addr` at the code (only ALLOC sections are placed), and symbol
//! values relative to `.text`, as always in ET_REL. With absolute (`DW_EH_PE_absptr`) FDE addresses,
//! neither `sh_addr` nor SHF_ALLOC of `.eh_frame` matters to it; both are set truthfully anyway.

use core::ptr::null_mut;
use parking_lot::Mutex;

/// `e_machine` of this target: gdb ignores an object of another architecture.
const EM_THIS: u16 = if cfg!(target_arch = "aarch64") { 183 } else { 62 };

/// One announced object file, a node in the list gdb walks.
#[repr(C)]
struct JitCodeEntry {
    /// Next entry, or NULL.
    next: *mut JitCodeEntry,
    /// Previous entry, or NULL.
    prev: *mut JitCodeEntry,
    /// The in-memory ELF image.
    symfile_addr: *const u8,
    /// Its size in bytes.
    symfile_size: u64,
}

/// The root gdb reads: `struct jit_descriptor` of the gdb manual.
#[repr(C)]
struct JitDescriptor {
    /// Interface version: 1.
    version: u32,
    /// What the current `__jit_debug_register_code` call means: 0 none, 1 register, 2 unregister.
    action_flag: u32,
    /// The entry the action applies to.
    relevant_entry: *mut JitCodeEntry,
    /// Head of the list of announced objects.
    first_entry: *mut JitCodeEntry,
}

/// The descriptor gdb looks up by name; written only under [`LOCK`]. Not part of the C header:
/// cbindgen:ignore
#[unsafe(export_name = "__jit_debug_descriptor")]
static mut JIT_DEBUG_DESCRIPTOR: JitDescriptor =
    JitDescriptor { version: 1, action_flag: 0, relevant_entry: null_mut(), first_entry: null_mut() };

/// gdb keeps a breakpoint here and reads [`JIT_DEBUG_DESCRIPTOR`] (`__jit_debug_descriptor`) each time it is hit. Not part of the
/// C header:
/// cbindgen:ignore
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn __jit_debug_register_code() {
    // SAFETY: an empty instruction string; without `options` it counts as touching memory, so neither the
    // call nor the descriptor writes before it can be optimised away.
    unsafe { core::arch::asm!("") };
}

/// Serialises changes to the descriptor and its list.
static LOCK: Mutex<()> = Mutex::new(());

/// `.shstrtab`: section names at offsets 1 (.text), 7 (.eh_frame), 17 (.symtab), 25 (.strtab), 33 (.shstrtab).
const SHSTRTAB: &[u8] = b"\0.text\0.eh_frame\0.symtab\0.strtab\0.shstrtab\0";
/// Size of the ELF64 header.
const EHDR: usize = 64;
/// Size of an ELF64 section header.
const SHDR: usize = 64;
/// Size of an ELF64 symbol.
const SYM: usize = 24;

/// Rounds `n` up to a multiple of 8.
const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// Builds the ELF image described at [`announce`]. Its `.eh_frame` gets `sh_addr` of where its bytes end
/// up, so the returned vector must not be reallocated. None if allocation fails.
fn image(code: usize, code_len: usize, eh_frame: &[u8], symbols: &[(&str, usize, usize)]) -> Option<Vec<u8>> {
    let strtab_len = symbols.iter().fold(1, |n, s| n + s.0.len() + 1);
    let symtab = align8(EHDR + eh_frame.len());
    let strtab = symtab + SYM * (symbols.len() + 1);
    let shdrs = align8(strtab + strtab_len + SHSTRTAB.len());
    let total = shdrs + 6 * SHDR;
    let mut b = Vec::new();
    b.try_reserve_exact(total).ok()?;
    let base = b.as_ptr() as usize;
    let (w16, w32, w64) = (
        |b: &mut Vec<u8>, v: u16| b.extend_from_slice(&v.to_le_bytes()),
        |b: &mut Vec<u8>, v: u32| b.extend_from_slice(&v.to_le_bytes()),
        |b: &mut Vec<u8>, v: usize| b.extend_from_slice(&(v as u64).to_le_bytes()),
    );
    // ELF header: ELFCLASS64, little endian, version 1, System V ABI; ET_REL, this machine, no program
    // headers.
    b.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    w16(&mut b, 1);
    w16(&mut b, EM_THIS);
    w32(&mut b, 1);
    w64(&mut b, 0); // e_entry
    w64(&mut b, 0); // e_phoff
    w64(&mut b, shdrs);
    w32(&mut b, 0); // e_flags
    for v in [EHDR, 0, 0, SHDR, 6, 5] {
        w16(&mut b, v as u16); // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
    }
    b.extend_from_slice(eh_frame);
    b.resize(symtab + SYM, 0); // padding, then symbol 0: the null symbol
    let mut name = 1;
    for &(sym, offset, size) in symbols {
        w32(&mut b, name as u32);
        name += sym.len() + 1;
        b.extend_from_slice(&[0x12, 0]); // STB_GLOBAL, STT_FUNC; STV_DEFAULT
        w16(&mut b, 1); // .text
        w64(&mut b, offset); // ET_REL: relative to the section
        w64(&mut b, size);
    }
    b.push(0);
    for &(sym, _, _) in symbols {
        b.extend_from_slice(sym.as_bytes());
        b.push(0);
    }
    b.extend_from_slice(SHSTRTAB);
    b.resize(shdrs, 0);
    // name, type, flags, addr, offset, size, link, info, addralign, entsize; in bytes:
    let widths = [4, 4, 8, 8, 8, 8, 4, 4, 8, 8];
    let sections: [[usize; 10]; 6] = [
        [0; 10],
        [1, 8, 6, code, 0, code_len, 0, 0, 16, 0], // SHT_NOBITS, SHF_ALLOC | SHF_EXECINSTR
        [7, 1, 2, base + EHDR, EHDR, eh_frame.len(), 0, 0, 8, 0], // SHT_PROGBITS, SHF_ALLOC
        [17, 2, 0, 0, symtab, strtab - symtab, 4, 1, 8, SYM], // SHT_SYMTAB: first global 1, names in 4
        [25, 3, 0, 0, strtab, strtab_len, 0, 0, 1, 0], // SHT_STRTAB
        [33, 3, 0, 0, strtab + strtab_len, SHSTRTAB.len(), 0, 0, 1, 0],
    ];
    for (v, w) in sections.iter().flatten().zip(widths.iter().cycle()) {
        b.extend_from_slice(&(*v as u64).to_le_bytes()[..*w]);
    }
    Some(b)
}

/// Announces one mapped block of code to gdb: builds an in-memory ELF64 (x86_64, ET_REL like V8's and LLVM's
/// JIT objects) with `.text` as SHT_NOBITS at sh_addr = `code`, size `code_len` (ALLOC|EXECINSTR), an
/// `.eh_frame` section (SHT_PROGBITS, ALLOC) holding `eh_frame` (bytes already patched with absolute
/// addresses; ends with a zero terminator), `.symtab`/`.strtab` with global FUNC symbols (name, offset from
/// `code`, size) in .text, and `.shstrtab`; leaks it (blocks are never unmapped) and registers it. Does
/// nothing if allocating the image fails.
pub(crate) fn announce(code: usize, code_len: usize, eh_frame: &[u8], symbols: &[(&str, usize, usize)]) {
    let Some(image) = image(code, code_len, eh_frame, symbols) else { return };
    let image = image.leak();
    let entry = Box::into_raw(Box::new(JitCodeEntry {
        next: null_mut(),
        prev: null_mut(),
        symfile_addr: image.as_ptr(),
        symfile_size: image.len() as u64,
    }));
    let _guard = LOCK.lock();
    let d = &raw mut JIT_DEBUG_DESCRIPTOR;
    // SAFETY: the descriptor and the entries in its list (all leaked boxes, never freed) are only written
    // here, under `LOCK`; gdb reads them while the process is stopped in `__jit_debug_register_code`.
    unsafe {
        (*entry).next = (*d).first_entry;
        if let Some(first) = (*entry).next.as_mut() {
            first.prev = entry;
        }
        (*d).first_entry = entry;
        (*d).relevant_entry = entry;
        (*d).action_flag = 1; // JIT_REGISTER_FN
        __jit_debug_register_code();
        (*d).action_flag = 0; // JIT_NOACTION
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CIE (code align 1, data align -8, RA column 16, "zR" with absptr FDEs, CFA rsp+8, RA at CFA-8)
    /// and one FDE for `code..code + 5` (push %rbx; call *%rdi; pop %rbx; ret), then the terminator.
    fn eh_frame(code: usize) -> Vec<u8> {
        let mut e = vec![20, 0, 0, 0, 0, 0, 0, 0, 1, b'z', b'R', 0, 1, 0x78, 16, 1, 0];
        e.extend_from_slice(&[0x0c, 7, 8, 0x90, 1, 0, 0]);
        e.extend_from_slice(&[36, 0, 0, 0, 28, 0, 0, 0]);
        e.extend_from_slice(&(code as u64).to_le_bytes());
        e.extend_from_slice(&5u64.to_le_bytes());
        e.extend_from_slice(&[0, 0x41, 0x0e, 16, 0x83, 2, 0x43, 0x0e, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        e
    }

    #[test]
    fn image_reads_back_with_readelf() {
        let code = 0x7f12_3456_0000;
        let eh = eh_frame(code + 0x40);
        let img = image(code, 0x10000, &eh, &[("cbslot_stub_a", 0x40, 5), ("cbslot_stub_b", 0x80, 16)]).unwrap();
        let path = std::env::temp_dir().join(format!("cbslot-gdbjit-{}.o", std::process::id()));
        std::fs::write(&path, &img).unwrap();
        let args = ["-W", "-S", "-s", "--debug-dump=frames"];
        let out = std::process::Command::new("readelf").args(args).arg(&path).output();
        let _ = std::fs::remove_file(&path);
        let Ok(out) = out else { return }; // no readelf
        let text = String::from_utf8_lossy(&out.stdout);
        let lines = |words: &[&str]| text.lines().any(|l| words.iter().all(|w| l.contains(w)));
        assert!(out.status.success() && !text.contains("Warning"), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(lines(&[".text", "NOBITS", "00007f1234560000", "010000", "AX"]), "{text}");
        let eh_addr = format!("{:016x}", img.as_ptr() as usize + EHDR);
        assert!(lines(&[".eh_frame", "PROGBITS", &eh_addr, &format!("{:06x}", eh.len()), " A "]), "{text}");
        assert!(lines(&[".symtab", "SYMTAB"]) && lines(&[".strtab", "STRTAB"]) && lines(&[".shstrtab"]), "{text}");
        assert!(lines(&["0000000000000040", "5 FUNC", "GLOBAL", "DEFAULT", "1 cbslot_stub_a"]), "{text}");
        assert!(lines(&["0000000000000080", "16 FUNC", "GLOBAL", "DEFAULT", "1 cbslot_stub_b"]), "{text}");
        assert!(lines(&["FDE cie=00000000 pc=00007f1234560040..00007f1234560045"]), "{text}");
        // (readelf names register 3 after the image's machine: rbx on x86_64, x3 on aarch64)
        assert!(lines(&["DW_CFA_def_cfa_offset: 16"]) && lines(&["DW_CFA_offset: r3 (", "at cfa-16"]), "{text}");
    }

    #[test]
    fn announce_links_the_entry() {
        let eh = eh_frame(0x1000);
        announce(0x1000, 0x10, &eh, &[("f", 0, 5)]);
        let _guard = LOCK.lock();
        // SAFETY: read under `LOCK`, which every writer holds.
        let d = unsafe { &*core::ptr::addr_of!(JIT_DEBUG_DESCRIPTOR) };
        assert_eq!((d.version, d.action_flag), (1, 0));
        // SAFETY: entries are never freed.
        let first = unsafe { &*d.first_entry };
        assert!(first.prev.is_null() && core::ptr::eq(first, d.relevant_entry));
        // SAFETY: the image is leaked, so it lives for the rest of the process.
        let img = unsafe { core::slice::from_raw_parts(first.symfile_addr, first.symfile_size as usize) };
        assert_eq!(&img[..4], b"\x7fELF");
    }
}
