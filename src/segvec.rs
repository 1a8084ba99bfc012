//! Storage that never moves: up to 2³² slots kept in 65,536 chunks of 65,536 slots, each chunk allocated on
//! first use and published with one pointer store, so readers on any thread index it with no lock while it
//! grows. Looking up a slot is one shift, one load and one add; any 32-bit index is in range.
//!
//! A chunk's memory starts as all zero bytes, which must be a valid value of the slot type ([`Zeroed`]).
//! Chunks are allocated zeroed, so the pages of a chunk cost memory only once slots in them are used.

use crate::sys::{ForkLock, FutexMutex};
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};
use std::alloc::{self, Layout};

/// Marks types for which all-zero bytes is a valid value (atomics, integers).
///
/// # Safety
/// Implement only for types whose every field is valid when zeroed and that need no `Drop`.
pub(crate) unsafe trait Zeroed {}

// SAFETY: an all-zero atomic integer is 0.
unsafe impl Zeroed for core::sync::atomic::AtomicUsize {}
// SAFETY: as above.
unsafe impl Zeroed for core::sync::atomic::AtomicU64 {}

const CHUNK_SHIFT: u32 = 16;
const CHUNK_LEN: usize = 1 << CHUNK_SHIFT;
const CHUNKS: usize = 1 << (32 - CHUNK_SHIFT);

/// How many slots a `SegVec` can hold: every 32-bit index.
pub(crate) const MAX_SLOTS: u64 = 1 << 32;

pub(crate) struct SegVec<T: Zeroed> {
    chunks: [AtomicPtr<T>; CHUNKS],
}

/// One lock for growing any table (growth is rare), so fork handlers have one lock to hold.
static GROW: ForkLock<()> = ForkLock::const_new(<FutexMutex as parking_lot::lock_api::RawMutex>::INIT, ());

/// Holds the growth lock across `fork()` (see `callback::init_process`).
pub(crate) fn fork_prepare() {
    core::mem::forget(GROW.lock());
}

/// Releases the lock taken by [`fork_prepare`], in the parent and in the child.
pub(crate) fn fork_release() {
    // SAFETY: locked by this thread in fork_prepare, guard forgotten.
    unsafe { GROW.force_unlock() };
}

// SAFETY: slots are only reached through `&T`; `T` is responsible for its own interior synchronisation.
unsafe impl<T: Zeroed + Sync> Sync for SegVec<T> {}
// SAFETY: the chunks are heap memory owned by the `SegVec` (no thread affinity); moving it moves `T`s, which
// are `Send`.
unsafe impl<T: Zeroed + Send> Send for SegVec<T> {}

fn chunk_layout<T>() -> Layout {
    Layout::array::<T>(CHUNK_LEN).expect("chunk size overflows")
}

impl<T: Zeroed> SegVec<T> {
    /// An empty table. It is 512 KiB of pointers: keep it in a `static`.
    pub(crate) const fn new() -> Self {
        SegVec { chunks: [const { AtomicPtr::new(ptr::null_mut()) }; CHUNKS] }
    }

    /// The slot at `index`, if its chunk has been allocated. Lock-free.
    #[inline(always)]
    pub(crate) fn get(&self, index: u32) -> Option<&T> {
        let base = self.chunks[(index >> CHUNK_SHIFT) as usize].load(Ordering::Acquire);
        // SAFETY: a published chunk has CHUNK_LEN slots and is never freed or moved while `self` lives.
        (!base.is_null()).then(|| unsafe { &*base.add(index as usize & (CHUNK_LEN - 1)) })
    }

    /// The slot at `index`, allocating its chunk first if needed; `None` if the allocation fails.
    pub(crate) fn get_or_grow(&self, index: u32) -> Option<&T> {
        if let Some(slot) = self.get(index) {
            return Some(slot);
        }
        {
            let _guard = GROW.lock();
            let chunk = &self.chunks[(index >> CHUNK_SHIFT) as usize];
            if chunk.load(Ordering::Acquire).is_null() {
                // SAFETY: non-zero size; zeroed memory is a valid `[T]` (T: Zeroed).
                let fresh = unsafe { alloc::alloc_zeroed(chunk_layout::<T>()) } as *mut T;
                if fresh.is_null() {
                    return None;
                }
                chunk.store(fresh, Ordering::Release);
            }
        }
        self.get(index)
    }
}

impl<T: Zeroed> Drop for SegVec<T> {
    fn drop(&mut self) {
        for p in self.chunks.iter_mut() {
            let p = *p.get_mut();
            if !p.is_null() {
                // SAFETY: allocated in `get_or_grow` with this layout; `&mut self` means no reader is left.
                unsafe { alloc::dealloc(p as *mut u8, chunk_layout::<T>()) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicU64;

    #[test]
    fn get_is_none_until_grown_and_every_index_is_in_range() {
        static V: SegVec<AtomicU64> = SegVec::new();
        assert!(V.get(0).is_none());
        assert!(V.get(u32::MAX).is_none());
        V.get_or_grow(70_000).unwrap().store(7, Ordering::Relaxed);
        assert_eq!(V.get(70_000).unwrap().load(Ordering::Relaxed), 7);
        assert_eq!(V.get(65_536).unwrap().load(Ordering::Relaxed), 0, "same chunk, zeroed");
        assert!(V.get(65_535).is_none(), "chunk 0 was never grown");
        V.get_or_grow(u32::MAX).unwrap().store(9, Ordering::Relaxed);
        assert_eq!(V.get(u32::MAX).unwrap().load(Ordering::Relaxed), 9);
        // distinct indexes are distinct slots
        assert!(!core::ptr::eq(V.get(70_000).unwrap(), V.get(70_001).unwrap()));
    }
}
