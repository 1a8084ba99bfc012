//! Architecture-specific trampoline code behind one small interface:
//! `SUPPORTED`, `TABLE_BYTES`, `STUB_BYTES`, `SLOT_BYTES`, `SLOT_OFFSET`, `SLOTS_PER_BLOCK`,
//! `table()`, `write_header()` and `tls_rec_slot()`. See `x86_64.rs` for the contract and for how another
//! architecture slots in.

//!
//! `--cfg cbslot_force_unsupported` builds the unsupported variant on x86_64 too, so its path is tested.

#[cfg(all(target_arch = "x86_64", target_os = "linux", not(cbslot_force_unsupported)))]
mod x86_64;
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(cbslot_force_unsupported)))]
pub(crate) use x86_64::*;

#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(cbslot_force_unsupported))))]
mod unsupported;
#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(cbslot_force_unsupported))))]
pub(crate) use unsupported::*;
