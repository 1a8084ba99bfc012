// Lints: the one list of what the crate allows (each with its reason) and of what it asks for beyond the defaults.
// Every `unsafe` block and `unsafe impl` says why it is sound, in a `// SAFETY:` comment.
#![warn(clippy::undocumented_unsafe_blocks)]
// The C API's types keep their C names (`cb_status`, `vde_context`, ...): cbindgen writes them to the header as is.
#![allow(non_camel_case_types)]
// Without trampolines (`cbslot_entries` off) the call path (dispatcher helpers, stub tables) is never referenced.
#![cfg_attr(not(cbslot_entries), allow(dead_code))]

//! cbslot: callbacks and context handed to C code with GC-safe semantics.
//!
//! The library never keeps a pointer to caller memory beyond a call, except the opaque `userdata`/`ptr` the
//! caller hands it on purpose, and every lifetime it manages ends in one well-defined notification.
//!
//! Layers, each importing only from the ones below it:
//! * [`ffi`]: the thin exported C layer (checks arguments, converts, runs bodies in the panic boundary).
//! * Components: [`callback`] (the callback slot table, trampolines in `callback::arch`), [`queue`] (the
//!   cross-thread delivery queue), [`vde`] (VDE3 contexts and the VDE3 C types) and [`evloop`] (the
//!   built-in epoll loop). Within the layer, [`queue`]'s sink entries and [`evloop`]'s host functions are
//!   [`callback`] entries, and [`evloop`] fills [`vde`]'s handler struct.
//! * Shared machinery: [`table`] (the owning typed registry of cbslot's own objects), [`handle`]
//!   (generational handles, also behind `cb_handle_*`), [`inflight`] (which threads are inside what: the
//!   grace-period protocol), [`segvec`] (lock-free never-moving storage), [`sys`] (descriptors as `Drop`
//!   types) and [`error`] (statuses, `cb_last_error`, the panic boundary).

pub(crate) mod callback;
pub mod error;
pub(crate) mod evloop;
pub mod ffi;
pub(crate) mod handle;
pub(crate) mod inflight;
pub(crate) mod queue;
pub(crate) mod segvec;
pub(crate) mod sys;
pub(crate) mod table;
pub(crate) mod vde;

pub use error::cb_status;
pub use ffi::*;
