//! Architecture-specific trampoline code (`x86_64.rs`, `aarch64.rs`: the assembly only; `common.rs`: the
//! Rust side they share) behind one small interface:
//! `SUPPORTED`, `TABLE_BYTES`, `STUB_BYTES`, `SLOT_BYTES`, `SLOT_OFFSET`, `SLOTS_PER_BLOCK`,
//! `tables()`, `code_prot()`, `write_header()`, `unwind_template()` and `tls_rec_slot()`, plus the kinds below. See
//! `x86_64.rs` for the contract and for how another architecture slots in.
//!
//! `--cfg cbslot_force_unsupported` builds the unsupported variant on x86_64 too, so its path is tested.

#[cfg(cbslot_entries)]
mod common;
#[cfg(cbslot_entries)]
pub(crate) use common::*;

#[cfg(all(cbslot_entries, target_arch = "x86_64"))]
mod x86_64;

#[cfg(all(cbslot_entries, target_arch = "aarch64"))]
mod aarch64;

#[cfg(not(cbslot_entries))]
mod unsupported;
#[cfg(not(cbslot_entries))]
pub(crate) use unsupported::*;

/// Code tables, one per kind of entry ([`TRACKED`], [`UNTRACKED`]), each `TABLE_BYTES` long.
pub(crate) const TABLES: usize = 2;
/// The kind whose dispatcher records the call in the thread's in-flight record.
pub(crate) const TRACKED: usize = 0;
/// The kind whose dispatcher jumps straight to `fn`.
pub(crate) const UNTRACKED: usize = 1;

/// What the unwinder and debuggers need to know about one kind's code table.
pub(crate) struct UnwindTemplate {
    /// `.eh_frame` records (ending in a zero terminator) whose code addresses are offsets from the table's
    /// start and whose personality pointer, if any, is 0.
    pub(crate) eh_frame: &'static [u8],
    /// The personality routine to patch in (tracked entries: it restores the in-flight record).
    pub(crate) personality: usize,
    /// Named code ranges (offset, length) for debuggers; empty names are unused.
    pub(crate) symbols: [(&'static str, usize, usize); 3],
}
