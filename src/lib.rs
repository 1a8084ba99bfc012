//! cbslot: callbacks and context handed to C code with GC-safe semantics.
//!
//! The library never keeps a pointer to caller memory beyond a call, except the opaque `userdata`/`ptr` the
//! caller hands it on purpose, and every lifetime it manages ends in one well-defined notification.
//!
//! Components, one module each: [`handle`] (generational handle registry), with [`segvec`] (lock-free
//! never-moving storage) under it; [`callback`] (the callback slot table, with its trampolines in
//! `callback::arch` and the in-flight protocol in `callback::inflight`); [`error`] (status codes, `cb_last_error`, the panic boundary); and [`ffi`],
//! the thin exported C layer.

pub(crate) mod callback;
pub mod error;
pub(crate) mod evloop;
pub mod ffi;
pub(crate) mod handle;
pub(crate) mod queue;
pub(crate) mod segvec;
pub(crate) mod sys;
pub(crate) mod table;
pub(crate) mod vde;

pub use error::cb_status;
pub use ffi::*;
