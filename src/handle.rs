//! The generational handle registry: 64-bit handles for host objects, reference counted, with an exactly-once
//! destroy notification.
//!
//! ## Handle layout
//! ```text
//!  63      56 55                32 31                               0
//! +----------+--------------------+----------------------------------+
//! |   kind   |  generation (24 b) |           slot index             |
//! +----------+--------------------+----------------------------------+
//! ```
//! `kind` says which registry issued the handle, so a handle of one kind is never mistaken for another.
//! Generations start at 1, so 0 is never a valid handle. Each time a slot's object is destroyed its generation
//! goes up by one; a slot whose generation is used up is retired for good instead of wrapping, so a stale
//! handle can never name a later object.
//!
//! ## Slot protocol
//! A slot's `state` packs the upper half of its current handle (`kind << 24 | generation`) over the refcount,
//! so "is this handle live?" is one compare of the handle's upper half with the state's, plus refcount > 0.
//! A slot is live while its refcount is > 0.
//! * `get`: load state (check it), read the pointer, load state again: an unchanged generation proves the
//!   pointer belongs to the handle's object. No lock, no allocation, no write. Why a handle failed (0, wrong
//!   kind, never issued, stale) is worked out only on the error path.
//! * `retain` / `release`: compare-and-swap on `state`. The release that drops the count to 0 moves the slot
//!   to the next generation in the same atomic step, so the handle is invalid from that instant on; then it
//!   returns the slot to the free list and calls `destroy(ptr)`, holding no lock.
//! * `remove` (for owned objects, see [`crate::table`]): drops the owner's reference and sets the
//!   [`CLOSED`] bit in the same step, so the handle is invalid at once even while other references (guards
//!   taken by `retain`) are still held; those are dropped with `unpin`, and the last one frees the slot.
//! * Free slots sit on lock-free LIFO stacks (Treiber stacks with a 32-bit ABA tag in the head word); the
//!   `ptr` word of a free slot holds the next free index. There are [`SHARDS`] stacks, each on its own cache
//!   line, and each thread uses its own (chosen round-robin at its first use), so threads that create and
//!   release handles at the same time do not fight over one head. A thread whose stack is empty takes from
//!   the others before it grows the table.

use crate::error::Error;
use crate::segvec::{self, SegVec, Zeroed};
use core::cell::Cell;
use core::ffi::c_void;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};

/// Which registry a handle belongs to (the top byte of every handle).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A host object registered with `cb_handle_new`.
    Object = 0xC1,
    /// A callback registered with `cb_register`.
    Callback = 0xC2,
    /// A `vde_context`.
    Context = 0xC3,
    /// An event or timeout registered through a `vde_context` (its token).
    Event = 0xC4,
    /// A built-in event loop (`cb_loop`).
    Loop = 0xC5,
    /// A delivery queue (`cb_queue`).
    Queue = 0xC6,
    /// A queue's sink (`cb_queue_sink_register`).
    Sink = 0xC7,
}

pub(crate) const GEN_BITS: u32 = 24;
/// The last generation a slot may reach; after it the slot is retired.
pub(crate) const GEN_MAX: u32 = (1 << GEN_BITS) - 1;

/// Packs a handle. `generation` must be in `1..=GEN_MAX`.
pub(crate) fn pack(kind: Kind, index: u32, generation: u32) -> u64 {
    debug_assert!((1..=GEN_MAX).contains(&generation));
    (kind as u64) << 56 | (generation as u64) << 32 | index as u64
}

/// Splits a handle into (kind byte, generation, index).
pub(crate) fn unpack(handle: u64) -> (u8, u32, u32) {
    ((handle >> 56) as u8, (handle >> 32) as u32 & GEN_MAX, handle as u32)
}

/// Checks the parts of a handle that do not need the registry: kind and generation.
pub(crate) fn check_kind(handle: u64, kind: Kind) -> Result<(u32, u32), Error> {
    let (k, generation, index) = unpack(handle);
    if handle == 0 {
        return Err(Error::InvalidHandle(handle, "is 0, which is never a valid handle"));
    }
    if k != kind as u8 {
        return Err(Error::InvalidHandle(handle, kind_mismatch(k, kind)));
    }
    if generation == 0 {
        return Err(Error::InvalidHandle(handle, "was never issued (generation 0)"));
    }
    Ok((generation, index))
}

fn kind_mismatch(found: u8, expected: Kind) -> &'static str {
    match (found, expected) {
        (x, Kind::Callback) if x == Kind::Object as u8 => {
            "is an object handle (cb_handle_new), not a callback: release it with cb_handle_release"
        }
        (x, Kind::Object) if x == Kind::Callback as u8 => {
            "is a callback handle (cb_register), not an object handle: end it with cb_unregister"
        }
        _ => "is not a cbslot handle (garbage)",
    }
}

const REFS_MASK: u64 = 0xFFFF_FFFF;
/// In the refs half: the handle was removed; what is left are pins that keep the object until they go.
const CLOSED: u64 = 1 << 31;
/// The reference count proper (below `CLOSED`).
const COUNT_MASK: u64 = CLOSED - 1;

/// The state word of a slot whose current handle has upper half `tag` and `refs` references.
#[inline]
fn state(tag: u32, refs: u32) -> u64 {
    (tag as u64) << 32 | refs as u64
}

/// Upper half of a handle: kind byte and generation.
#[inline]
fn tag_of(handle: u64) -> u32 {
    (handle >> 32) as u32
}

#[inline]
fn refs_of(s: u64) -> u32 {
    (s & COUNT_MASK) as u32
}

/// True when state `s` holds a live (not removed) object for a handle with upper half `tag`.
#[inline]
fn live_for(s: u64, tag: u32) -> bool {
    tag_of(s) == tag && refs_of(s) != 0 && s & CLOSED == 0
}

/// True when state `s` still holds references for a handle with upper half `tag`, removed or not.
#[inline]
fn held_for(s: u64, tag: u32) -> bool {
    tag_of(s) == tag && refs_of(s) != 0
}

/// Which reference a `drop_ref` gives up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ref {
    /// A reference of a live handle (`cb_handle_release`).
    Release,
    /// The owner's reference: the handle is invalid from now on.
    Remove,
    /// A reference taken by `retain`, also after the handle was removed.
    Unpin,
}

/// A host object's destroy notification, stored as an address (0 = none).
pub(crate) type DestroyFn = unsafe extern "C" fn(*mut c_void);

pub(crate) struct Slot {
    state: AtomicU64,
    /// The object pointer while live; the next free index while on the free list.
    ptr: AtomicUsize,
    destroy: AtomicUsize,
}

// SAFETY: atomics only; zero = tag 0 (matches no handle), no refs.
unsafe impl Zeroed for Slot {}

/// Free-list "no next" marker; also why index `u32::MAX` is never used.
const NO_NEXT: u64 = u32::MAX as u64;

const STALE: &str = "is stale: its object was released";

pub(crate) struct Registry {
    kind: Kind,
    /// A separate all-zero static, so the 512 KiB chunk table lands in .bss, not in the library file.
    slots: &'static SegVec<Slot>,
    /// Free-list heads: ABA tag (high 32 bits) | index (low 32 bits), `NO_NEXT` index when empty.
    free: [FreeHead; SHARDS],
    /// Next never-used slot index.
    fresh: AtomicU64,
    /// Highest number of slots this registry may use (tests make it small).
    max_slots: u64,
}

/// How many free-slot stacks a registry keeps (see the module docs).
pub(crate) const SHARDS: usize = 8;

#[repr(align(64))]
struct FreeHead(AtomicU64);

/// The free-list shard of the calling thread.
#[inline]
fn my_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD
        .try_with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT.fetch_add(1, Relaxed) % SHARDS);
            }
            s.get()
        })
        .unwrap_or(0)
}

/// Most slots a registry can have: every 32-bit index but `u32::MAX`.
pub(crate) const MAX_SLOTS: u64 = segvec::MAX_SLOTS - 1;

impl Registry {
    pub(crate) const fn new(kind: Kind, slots: &'static SegVec<Slot>) -> Self {
        Self::with_max_slots(kind, slots, MAX_SLOTS)
    }

    pub(crate) const fn with_max_slots(kind: Kind, slots: &'static SegVec<Slot>, max_slots: u64) -> Self {
        Registry {
            kind,
            slots,
            free: [const { FreeHead(AtomicU64::new(NO_NEXT)) }; SHARDS],
            fresh: AtomicU64::new(0),
            max_slots,
        }
    }

    /// Registers `ptr` with one reference and returns its handle.
    pub(crate) fn insert(&self, ptr: *mut c_void, destroy: Option<DestroyFn>) -> Result<u64, Error> {
        let (index, slot) = self.take_slot()?;
        // a free slot's state holds the generation its next object gets; a fresh slot's holds 0
        let generation = (tag_of(slot.state.load(Relaxed)) & GEN_MAX).max(1);
        let handle = pack(self.kind, index as u32, generation);
        slot.destroy.store(destroy.map_or(0, |f| f as usize), Relaxed);
        // Release: a reader that loads this pointer and then the state sees the state change before it
        // (see `get`); the state store below publishes both fields.
        slot.ptr.store(ptr as usize, Release);
        slot.state.store(state(tag_of(handle), 1), Release);
        Ok(handle)
    }

    /// The pointer registered under `handle`. It stays valid while the caller holds a reference.
    #[inline]
    pub(crate) fn get(&self, handle: u64) -> Result<*mut c_void, Error> {
        let tag = tag_of(handle);
        if let Some(slot) = self.slots.get(handle as u32) {
            let s1 = slot.state.load(Acquire);
            if live_for(s1, tag) {
                let ptr = slot.ptr.load(Acquire);
                if live_for(slot.state.load(Acquire), tag) {
                    return Ok(ptr as *mut c_void);
                }
            }
        }
        Err(self.why_invalid(handle))
    }

    /// Adds a reference.
    pub(crate) fn retain(&self, handle: u64) -> Result<(), Error> {
        let slot = self.lookup(handle)?;
        let mut s = slot.state.load(Relaxed);
        loop {
            if !live_for(s, tag_of(handle)) {
                return Err(self.why_invalid(handle));
            }
            if refs_of(s) as u64 == COUNT_MASK {
                return Err(Error::Capacity("reference count would pass 2147483647"));
            }
            match slot.state.compare_exchange_weak(s, s + 1, Relaxed, Relaxed) {
                Ok(_) => return Ok(()),
                Err(now) => s = now,
            }
        }
    }

    /// Drops a reference; the last one frees the slot and runs `destroy(ptr)` (outside any lock).
    pub(crate) fn release(&self, handle: u64) -> Result<(), Error> {
        self.drop_ref(handle, Ref::Release)
    }

    /// Drops the owner's reference and makes `handle` invalid at once: `get`, `retain`, `release` and
    /// `remove` fail from now on. References taken by `retain` stay good until `unpin`; the last reference
    /// frees the slot and runs `destroy(ptr)`.
    pub(crate) fn remove(&self, handle: u64) -> Result<(), Error> {
        self.drop_ref(handle, Ref::Remove)
    }

    /// Drops a reference taken by `retain`, whether or not the handle has been removed since.
    pub(crate) fn unpin(&self, handle: u64) {
        let _ = self.drop_ref(handle, Ref::Unpin);
    }

    /// The pointer of a handle the caller holds a reference to (from `retain`), even if it was removed.
    pub(crate) fn held_ptr(&self, handle: u64) -> *mut c_void {
        self.slots.get(handle as u32).map_or(core::ptr::null_mut(), |slot| slot.ptr.load(Acquire) as *mut c_void)
    }

    fn drop_ref(&self, handle: u64, how: Ref) -> Result<(), Error> {
        let slot = self.lookup(handle)?;
        let (_, generation, index) = unpack(handle);
        let mut s = slot.state.load(Relaxed);
        loop {
            let ok = if how == Ref::Unpin { held_for(s, tag_of(handle)) } else { live_for(s, tag_of(handle)) };
            if !ok {
                return Err(self.why_invalid(handle));
            }
            // the last reference moves the slot on to the next generation in the same step
            // (a free slot's upper half holds just the generation its next object will get)
            let closed = if how == Ref::Remove { CLOSED } else { 0 };
            let next = if refs_of(s) > 1 { (s - 1) | closed } else { state(generation + 1, 0) };
            match slot.state.compare_exchange_weak(s, next, AcqRel, Relaxed) {
                Ok(_) if refs_of(s) > 1 => return Ok(()),
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        // We own the slot now: nobody else can retain, get or release this generation.
        let ptr = slot.ptr.load(Relaxed) as *mut c_void;
        let destroy = slot.destroy.load(Relaxed);
        // a slot whose generations are used up is retired: it never goes back on a free list
        if generation < GEN_MAX {
            self.push_free(index, slot);
        }
        if destroy != 0 {
            // SAFETY: stored from a `DestroyFn` in `insert` (0 means none); the caller's destroy, run exactly once
            // with its own pointer: this thread moved the slot to its next generation, so no other can.
            unsafe { core::mem::transmute::<usize, DestroyFn>(destroy)(ptr) };
        }
        Ok(())
    }

    fn lookup(&self, handle: u64) -> Result<&Slot, Error> {
        self.slots.get(handle as u32).ok_or_else(|| self.why_invalid(handle))
    }

    /// Why `handle` is not live (called on error paths only).
    #[cold]
    fn why_invalid(&self, handle: u64) -> Error {
        if let Err(e) = check_kind(handle, self.kind) {
            return e;
        }
        if handle as u32 as u64 >= self.fresh.load(Relaxed).min(self.max_slots) {
            return Error::InvalidHandle(handle, "was never issued (slot index out of range)");
        }
        Error::InvalidHandle(handle, STALE)
    }

    fn take_slot(&self) -> Result<(u64, &Slot), Error> {
        let mine = my_shard();
        for k in 0..SHARDS {
            if let Some(found) = self.pop_free(&self.free[(mine + k) % SHARDS].0) {
                return Ok(found);
            }
        }
        let mut index = self.fresh.load(Relaxed);
        loop {
            if index >= self.max_slots {
                return Err(Error::Capacity("every handle slot is in use (see the README's limits)"));
            }
            // Growing storage for an index we then fail to claim is harmless: the next claimer uses it.
            let slot = self.slots.get_or_grow(index as u32).ok_or(Error::NoMemory("growing the handle table"))?;
            match self.fresh.compare_exchange_weak(index, index + 1, Relaxed, Relaxed) {
                Ok(_) => return Ok((index, slot)),
                Err(now) => index = now,
            }
        }
    }

    fn pop_free(&self, head_word: &AtomicU64) -> Option<(u64, &Slot)> {
        let mut head = head_word.load(Acquire);
        loop {
            let index = head & REFS_MASK;
            if index == NO_NEXT {
                return None;
            }
            let slot = self.slots.get(index as u32).expect("free-list index has storage");
            // may read a stale link if another thread pops this slot first; the tag makes our CAS fail then
            let next = slot.ptr.load(Relaxed) as u64 & REFS_MASK;
            let new_head = (head & !REFS_MASK).wrapping_add(1 << 32) | next;
            match head_word.compare_exchange_weak(head, new_head, Acquire, Acquire) {
                Ok(_) => return Some((index, slot)),
                Err(now) => head = now,
            }
        }
    }

    fn push_free(&self, index: u32, slot: &Slot) {
        let head_word = &self.free[my_shard()].0;
        let mut head = head_word.load(Relaxed);
        loop {
            slot.ptr.store((head & REFS_MASK) as usize, Relaxed);
            let new_head = (head & !REFS_MASK).wrapping_add(1 << 32) | index as u64;
            match head_word.compare_exchange_weak(head, new_head, Release, Relaxed) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }
}

/// The process-wide registry behind `cb_handle_*`.
pub(crate) static OBJECTS: Registry = Registry::new(Kind::Object, &OBJECT_SLOTS);
static OBJECT_SLOTS: SegVec<Slot> = SegVec::new();

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::cb_status;
    use core::ptr::without_provenance_mut;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn pack_unpack_round_trip_and_zero_is_invalid() {
        for &(i, g) in &[(0u32, 1u32), (1, 1), (u32::MAX, GEN_MAX), (12345, 678)] {
            let h = pack(Kind::Object, i, g);
            assert_ne!(h, 0);
            assert_eq!(unpack(h), (Kind::Object as u8, g, i));
            assert_eq!(check_kind(h, Kind::Object), Ok((g, i)));
        }
        assert!(check_kind(0, Kind::Object).is_err());
        assert!(check_kind(1, Kind::Object).is_err(), "kind byte 0");
        assert!(check_kind((Kind::Object as u64) << 56 | 5, Kind::Object).is_err(), "generation 0");
    }

    static DESTROYED: AtomicU32 = AtomicU32::new(0);
    unsafe extern "C" fn count_destroy(p: *mut c_void) {
        DESTROYED.fetch_add(p as u32, Relaxed);
    }

    #[test]
    fn release_bumps_generation_and_reuses_slot() {
        static S: SegVec<Slot> = SegVec::new();
        static R: Registry = Registry::with_max_slots(Kind::Object, &S, 4);
        let r = &R;
        let a = r.insert(without_provenance_mut(1), None).unwrap();
        r.release(a).unwrap();
        let b = r.insert(without_provenance_mut(2), None).unwrap();
        let (_, ga, ia) = unpack(a);
        let (_, gb, ib) = unpack(b);
        assert_eq!((ia, gb), (ib, ga + 1), "same slot, next generation");
        assert_eq!(r.get(a).unwrap_err().status(), cb_status::CB_ERR_INVALID_HANDLE);
        assert_eq!(r.release(a).unwrap_err().status(), cb_status::CB_ERR_INVALID_HANDLE);
        assert_eq!(r.get(b).unwrap(), without_provenance_mut(2));
    }

    #[test]
    fn capacity_is_enforced_and_slots_come_back() {
        static S: SegVec<Slot> = SegVec::new();
        static R: Registry = Registry::with_max_slots(Kind::Object, &S, 3);
        let r = &R;
        let hs: Vec<u64> = (0..3).map(|i| r.insert(i as *mut c_void, None).unwrap()).collect();
        assert_eq!(r.insert(without_provenance_mut(9), None).unwrap_err().status(), cb_status::CB_ERR_CAPACITY);
        r.release(hs[1]).unwrap();
        let h = r.insert(without_provenance_mut(9), None).unwrap();
        assert_eq!(unpack(h).2, unpack(hs[1]).2);
        assert_eq!(r.insert(without_provenance_mut(9), None).unwrap_err().status(), cb_status::CB_ERR_CAPACITY);
    }

    #[test]
    fn a_slot_whose_generation_is_used_up_is_retired_not_wrapped() {
        static S: SegVec<Slot> = SegVec::new();
        static R: Registry = Registry::with_max_slots(Kind::Object, &S, 2);
        let r = &R;
        let h = r.insert(core::ptr::null_mut(), None).unwrap();
        let slot = r.slots.get(unpack(h).2).unwrap();
        r.release(h).unwrap();
        // fast-forward the free slot to its last generation
        slot.state.store(state(GEN_MAX, 0), Relaxed);
        let last = r.insert(core::ptr::null_mut(), None).unwrap();
        assert_eq!(unpack(last).1, GEN_MAX);
        r.release(last).unwrap();
        // the retired slot is not reused: the next handle takes a fresh slot, and the old ones stay invalid
        let next = r.insert(core::ptr::null_mut(), None).unwrap();
        assert_ne!(unpack(next).2, unpack(last).2);
        assert!(r.get(last).is_err() && r.get(h).is_err());
        assert_eq!(r.insert(core::ptr::null_mut(), None).unwrap_err().status(), cb_status::CB_ERR_CAPACITY);
    }

    #[test]
    fn refcount_and_destroy_once() {
        static S: SegVec<Slot> = SegVec::new();
        static R: Registry = Registry::new(Kind::Object, &S);
        let r = &R;
        let before = DESTROYED.load(Relaxed);
        let h = r.insert(without_provenance_mut(5), Some(count_destroy)).unwrap();
        r.retain(h).unwrap();
        r.retain(h).unwrap();
        r.release(h).unwrap();
        r.release(h).unwrap();
        assert_eq!(DESTROYED.load(Relaxed), before);
        r.release(h).unwrap();
        assert_eq!(DESTROYED.load(Relaxed), before + 5);
        assert!(r.release(h).is_err() && r.retain(h).is_err());
        assert_eq!(DESTROYED.load(Relaxed), before + 5);
    }

    #[test]
    fn remove_invalidates_at_once_and_the_last_pin_destroys() {
        static S: SegVec<Slot> = SegVec::new();
        static R: Registry = Registry::new(Kind::Object, &S);
        let r = &R;
        let before = DESTROYED.load(Relaxed);
        let h = r.insert(without_provenance_mut(7), Some(count_destroy)).unwrap();
        r.retain(h).unwrap(); // a guard
        r.remove(h).unwrap();
        assert!(r.get(h).is_err() && r.retain(h).is_err() && r.release(h).is_err());
        assert_eq!(r.remove(h).unwrap_err().status(), cb_status::CB_ERR_INVALID_HANDLE, "second remove");
        assert_eq!(r.held_ptr(h), without_provenance_mut(7), "the guard still reaches the object");
        assert_eq!(DESTROYED.load(Relaxed), before, "not destroyed while pinned");
        r.unpin(h);
        assert_eq!(DESTROYED.load(Relaxed), before + 7);
        r.unpin(h); // a stray unpin of a freed slot does nothing
        assert_eq!(DESTROYED.load(Relaxed), before + 7);
        let again = r.insert(without_provenance_mut(1), None).unwrap();
        assert_eq!(unpack(again).2, unpack(h).2, "the slot came back");
        assert!(r.get(h).is_err());
    }

    #[test]
    fn refcount_overflow_is_capacity() {
        static S: SegVec<Slot> = SegVec::new();
        static R: Registry = Registry::new(Kind::Object, &S);
        let r = &R;
        let h = r.insert(core::ptr::null_mut(), None).unwrap();
        let slot = r.slots.get(unpack(h).2).unwrap();
        slot.state.store(state(tag_of(h), COUNT_MASK as u32), Relaxed);
        assert_eq!(r.retain(h).unwrap_err().status(), cb_status::CB_ERR_CAPACITY);
        slot.state.store(state(tag_of(h), 1), Relaxed);
        r.release(h).unwrap();
    }

    #[test]
    fn concurrent_insert_release_never_hands_out_a_slot_twice() {
        static S: SegVec<Slot> = SegVec::new();
        static R: Registry = Registry::new(Kind::Object, &S);
        let r = &R;
        std::thread::scope(|s| {
            for t in 0..4usize {
                s.spawn(move || {
                    for i in 0..20_000usize {
                        let tag = t << 32 | i;
                        let h = r.insert(tag as *mut c_void, None).unwrap();
                        assert_eq!(r.get(h).unwrap() as usize, tag);
                        r.release(h).unwrap();
                        assert!(r.get(h).is_err());
                    }
                });
            }
        });
        // each thread holds at most one live slot plus one it is still pushing back: the table never grows past 8
        assert!(r.fresh.load(Relaxed) <= 8);
    }
}
