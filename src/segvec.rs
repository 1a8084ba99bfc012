//! Storage that never moves: a vector of slots kept in segments of doubling size, allocated on demand and
//! published with a pointer store, so readers on any thread index it with no lock while it grows.
//!
//! Segment `s` holds `BASE << s` slots; index `i` lives in segment `floor(log2(i + BASE)) - log2(BASE)`.
//! A slot's memory starts as all zero bytes, which must be a valid value of the slot type ([`Zeroed`]).

use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};
use parking_lot::Mutex;
use std::alloc::{self, Layout};

/// Marks types for which all-zero bytes is a valid value (atomics, integers).
///
/// # Safety
/// Implement only for types whose every field is valid when zeroed and that need no `Drop`.
pub(crate) unsafe trait Zeroed {}

const BASE_SHIFT: u32 = 10;
const SEGMENTS: usize = 22;

/// How many slots a `SegVec` can ever hold: 1024 × (2²² − 1) = 4,294,966,272, so an index fits in 32 bits.
pub(crate) const MAX_SLOTS: u64 = (1u64 << BASE_SHIFT) * ((1u64 << SEGMENTS) - 1);

pub(crate) struct SegVec<T: Zeroed> {
    segments: [AtomicPtr<T>; SEGMENTS],
    grow: Mutex<()>,
}

// SAFETY: slots are only reached through `&T`; `T` is responsible for its own interior synchronisation.
unsafe impl<T: Zeroed + Sync> Sync for SegVec<T> {}
unsafe impl<T: Zeroed + Send> Send for SegVec<T> {}

fn locate(index: u64) -> (usize, usize) {
    let j = index + (1u64 << BASE_SHIFT);
    let seg = 63 - j.leading_zeros() - BASE_SHIFT;
    (seg as usize, (j - (1u64 << (seg + BASE_SHIFT))) as usize)
}

fn layout<T>(seg: usize) -> Layout {
    Layout::array::<T>(1usize << (seg as u32 + BASE_SHIFT)).expect("segment size overflows")
}

impl<T: Zeroed> SegVec<T> {
    pub(crate) const fn new() -> Self {
        SegVec { segments: [const { AtomicPtr::new(ptr::null_mut()) }; SEGMENTS], grow: Mutex::new(()) }
    }

    /// The slot at `index`, if its segment has been allocated. Lock-free; never reads out of bounds.
    #[inline]
    pub(crate) fn get(&self, index: u64) -> Option<&T> {
        if index >= MAX_SLOTS {
            return None;
        }
        let (seg, off) = locate(index);
        let base = self.segments[seg].load(Ordering::Acquire);
        // SAFETY: a published segment has `BASE << seg` slots and is never freed or moved while `self` lives.
        (!base.is_null()).then(|| unsafe { &*base.add(off) })
    }

    /// The slot at `index`, allocating its segment first if needed. `None` when `index` is past
    /// [`MAX_SLOTS`] or the allocation fails.
    pub(crate) fn get_or_grow(&self, index: u64) -> Option<&T> {
        if let Some(slot) = self.get(index) {
            return Some(slot);
        }
        if index >= MAX_SLOTS {
            return None;
        }
        let (seg, _) = locate(index);
        {
            let _guard = self.grow.lock();
            if self.segments[seg].load(Ordering::Acquire).is_null() {
                // SAFETY: the layout has a non-zero size; zeroed memory is a valid `[T]` (T: Zeroed).
                let fresh = unsafe { alloc::alloc_zeroed(layout::<T>(seg)) } as *mut T;
                if fresh.is_null() {
                    return None;
                }
                self.segments[seg].store(fresh, Ordering::Release);
            }
        }
        self.get(index)
    }

    /// Bytes of slot memory allocated so far.
    #[cfg(test)]
    pub(crate) fn allocated_bytes(&self) -> usize {
        (0..SEGMENTS)
            .filter(|&s| !self.segments[s].load(Ordering::Acquire).is_null())
            .map(|s| layout::<T>(s).size())
            .sum()
    }
}

impl<T: Zeroed> Drop for SegVec<T> {
    fn drop(&mut self) {
        for (seg, p) in self.segments.iter_mut().enumerate() {
            let p = *p.get_mut();
            if !p.is_null() {
                // SAFETY: allocated in `get_or_grow` with this very layout; `&mut self` means no reader is left.
                unsafe { alloc::dealloc(p as *mut u8, layout::<T>(seg)) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicU64;

    unsafe impl Zeroed for AtomicU64 {}

    #[test]
    fn locate_maps_indexes_to_consecutive_segments() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(1023), (0, 1023));
        assert_eq!(locate(1024), (1, 0));
        assert_eq!(locate(3071), (1, 2047));
        assert_eq!(locate(3072), (2, 0));
        assert_eq!(locate(MAX_SLOTS - 1), (SEGMENTS - 1, (1 << (SEGMENTS as u32 - 1 + BASE_SHIFT)) - 1));
        // every index maps inside its segment, and consecutive indexes to consecutive places
        let mut prev = locate(0);
        for i in 1..100_000u64 {
            let cur = locate(i);
            assert!(cur.1 < 1 << (cur.0 as u32 + BASE_SHIFT));
            assert!(cur == (prev.0, prev.1 + 1) || cur == (prev.0 + 1, 0), "index {i}");
            prev = cur;
        }
    }

    #[test]
    fn get_is_none_until_grown_and_out_of_range_is_none() {
        let v: SegVec<AtomicU64> = SegVec::new();
        assert!(v.get(0).is_none());
        assert!(v.get(u64::MAX).is_none());
        assert!(v.get_or_grow(MAX_SLOTS).is_none());
        v.get_or_grow(5000).unwrap().store(7, Ordering::Relaxed);
        assert_eq!(v.get(5000).unwrap().load(Ordering::Relaxed), 7);
        assert_eq!(v.get(4999).unwrap().load(Ordering::Relaxed), 0);
        assert!(v.get(0).is_none(), "segment 0 was never grown");
        assert_eq!(v.allocated_bytes(), 4 * 1024 * 8);
    }
}
