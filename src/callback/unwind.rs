//! Unwind information for every mapped block, so unwinders (C++ exceptions, `pthread_exit`,
//! `_Unwind_Backtrace`) and debuggers can cross an entry.
//!
//! `arch` provides, per kind of table, `.eh_frame` records whose code addresses are offsets from the table's
//! start. For each mapped block this makes a copy with absolute addresses (and the personality routine's
//! address), registers it with the unwinder (`__register_frame`, libgcc's interface for code it did not
//! load) and announces it to gdb. Blocks are never unmapped, so neither is ever undone.

use super::arch::{self, UnwindTemplate};

unsafe extern "C" {
    /// libgcc: registers `.eh_frame` records (a list ending with a zero length) for code it did not load.
    fn __register_frame(begin: *const u8);
}

/// Registers the unwind information of the block of `kind` whose code starts at `code`.
pub(crate) fn register_block(kind: usize, code: usize) {
    let template = arch::unwind_template(kind);
    let eh_frame: &'static [u8] = Vec::leak(absolute(&template, code));
    // SAFETY: well-formed records ending in a terminator, alive forever (leaked).
    unsafe { __register_frame(eh_frame.as_ptr()) };
    let symbols: Vec<_> = template.symbols.iter().filter(|s| s.2 != 0).copied().collect();
    super::gdbjit::announce(code, arch::TABLE_BYTES, eh_frame, &symbols);
}

/// A copy of the template's records with every FDE's start address moved by `code` and the personality
/// routine filled in. The template's CIEs use absolute (`DW_EH_PE_absptr`) 8-byte encodings, and a CIE with
/// a personality has augmentation "zPR".
fn absolute(template: &UnwindTemplate, code: usize) -> Vec<u8> {
    let mut out = template.eh_frame.to_vec();
    let mut at = 0;
    loop {
        let len = u32::from_le_bytes(out[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 {
            return out;
        }
        let id = u32::from_le_bytes(out[at + 4..at + 8].try_into().expect("4 bytes"));
        if id != 0 {
            // FDE: pc_begin right after the CIE pointer
            add(&mut out[at + 8..at + 16], code);
        } else if out[at + 9..].starts_with(b"zPR\0") {
            // CIE: version, "zPR", code and data alignment, return column, augmentation length, P encoding
            let personality = at + 9 + 4 + 5;
            add(&mut out[personality..personality + 8], template.personality);
        }
        at += 4 + len;
    }
}

fn add(field: &mut [u8], value: usize) {
    let v = u64::from_le_bytes(field.try_into().expect("8 bytes")) + value as u64;
    field.copy_from_slice(&v.to_le_bytes());
}

#[cfg(all(test, cbslot_entries))]
mod tests {
    use super::*;

    #[test]
    fn templates_are_moved_to_the_block() {
        for kind in 0..arch::TABLES {
            let t = arch::unwind_template(kind);
            let moved = absolute(&t, 0x7000_0000_0000);
            assert_eq!(moved.len(), t.eh_frame.len());
            assert!(moved.ends_with(&[0, 0, 0, 0]), "terminated");
            let (mut at, mut fdes) = (0, 0);
            while at < moved.len() - 4 {
                let len = u32::from_le_bytes(moved[at..at + 4].try_into().unwrap()) as usize;
                if u32::from_le_bytes(moved[at + 4..at + 8].try_into().unwrap()) != 0 {
                    let pc = u64::from_le_bytes(moved[at + 8..at + 16].try_into().unwrap());
                    let range = u64::from_le_bytes(moved[at + 16..at + 24].try_into().unwrap());
                    assert!(
                        pc >= 0x7000_0000_0000
                            && range > 0
                            && pc - 0x7000_0000_0000 + range <= arch::TABLE_BYTES as u64
                    );
                    fdes += 1;
                }
                at += 4 + len;
            }
            assert!(fdes >= 2, "kind {kind}: {fdes} FDEs");
        }
    }
}
