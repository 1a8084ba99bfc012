//! The owning, typed registry for cbslot's own objects (contexts, events, loops, queues, sinks).
//!
//! A [`Table<T>`] ties one handle kind to one Rust type and one ownership kind: it owns an `Arc<T>` per
//! handle. Nothing outside this module turns a handle into a reference by hand:
//! * [`Table::get`] gives a guard (an `Arc<T>`): the object lives for as long as the guard is held, whatever
//!   other threads do to its handle meanwhile.
//! * [`Table::remove`] makes the handle invalid at once (every later `get`, `pin` and `remove` fails) and
//!   gives the caller the last guard it hands out; the object is dropped, and its `Drop` runs (where
//!   components put their destroy notifications), when the last guard goes.
//! * [`Table::pin`] is the read path for hot, allocation- and write-free lookups (a queue post): it marks the
//!   thread as inside the object ([`inflight::pin`]) instead of counting a reference. Tables made with
//!   [`Table::pinnable`] wait, in `remove`, until no thread is pinned inside the object before they give up
//!   their own reference, so a pinned `&T` stays valid for as long as the [`Pinned`] guard lives.
//!
//! Handles are the registry's ([`crate::handle`]): generational, so a stale or garbage handle is an error,
//! never another object.

use crate::error::Error;
use crate::handle::{Kind, Registry, Slot};
use crate::inflight::{self, Pin};
use crate::segvec::SegVec;
use core::ffi::c_void;
use core::marker::PhantomData;
use core::ops::Deref;
use std::sync::Arc;

/// A registry of `Arc<T>`s named by handles of one kind (see the module docs).
pub(crate) struct Table<T> {
    reg: Registry,
    /// `remove` waits for pinned readers (see [`Table::pin`]).
    pins: bool,
    _owns: PhantomData<Arc<T>>,
}

/// The registry's destroy for a `Table<T>`: drops the table's own `Arc`.
unsafe extern "C" fn drop_arc<T>(p: *mut c_void) {
    // SAFETY: every pointer in a `Table<T>`'s registry comes from `Arc::into_raw` in `insert`, and the
    // registry runs its destroy once.
    drop(unsafe { Arc::from_raw(p as *const T) });
}

impl<T: Send + Sync> Table<T> {
    /// A table whose objects are reached through guards only.
    pub(crate) const fn new(kind: Kind, slots: &'static SegVec<Slot>) -> Self {
        Table { reg: Registry::new(kind, slots), pins: false, _owns: PhantomData }
    }

    /// A table whose objects may also be reached by [`Table::pin`].
    pub(crate) const fn pinnable(kind: Kind, slots: &'static SegVec<Slot>) -> Self {
        Table { reg: Registry::new(kind, slots), pins: true, _owns: PhantomData }
    }

    /// Registers `obj`; returns its handle. On failure `obj` is dropped.
    pub(crate) fn insert(&self, obj: Arc<T>) -> Result<u64, Error> {
        let raw = Arc::into_raw(obj);
        self.reg.insert(raw as *mut c_void, Some(drop_arc::<T>)).inspect_err(|_| {
            // SAFETY: not registered: the reference is still ours.
            drop(unsafe { Arc::from_raw(raw) });
        })
    }

    /// A guard for the object named by `handle`.
    pub(crate) fn get(&self, handle: u64) -> Result<Arc<T>, Error> {
        self.reg.retain(handle)?;
        let guard = self.held(handle);
        self.reg.unpin(handle);
        Ok(guard)
    }

    /// A new `Arc` for a handle the caller holds a registry reference to (from `retain`).
    fn held(&self, handle: u64) -> Arc<T> {
        let p = self.reg.held_ptr(handle) as *const T;
        // SAFETY: the caller's reference keeps the table's `Arc` (from `insert`) alive until its `unpin`.
        unsafe {
            Arc::increment_strong_count(p);
            Arc::from_raw(p)
        }
    }

    /// True while `handle` names a live (not removed) object. No write.
    pub(crate) fn is_live(&self, handle: u64) -> bool {
        self.reg.get(handle).is_ok()
    }

    /// Makes `handle` invalid at once and returns a guard for its object (the table's own reference is
    /// given up). Fails if the handle is not live, so of two racing removes exactly one succeeds.
    /// In a pinnable table it first waits until no thread is pinned inside the object; from a thread that is
    /// itself pinned there it fails with `WouldDeadlock` and changes nothing.
    pub(crate) fn remove(&self, handle: u64) -> Result<Arc<T>, Error> {
        self.reg.retain(handle)?;
        let guard = self.held(handle);
        let addr = Arc::as_ptr(&guard) as usize;
        if self.pins && inflight::pinned_on_this_thread(addr) {
            self.reg.unpin(handle);
            return Err(Error::WouldDeadlock("the object is in use by this thread's own call"));
        }
        let removed = self.reg.remove(handle);
        if removed.is_ok() && self.pins {
            // the handle is invalid, so no new pin succeeds; wait out those taken before
            inflight::wait_until_unpinned(addr);
        }
        self.reg.unpin(handle);
        removed.map(|()| guard)
    }

    /// Pins the object named by `handle` for the life of the returned guard, with no reference count
    /// (see the module docs). Only for tables made with [`Table::pinnable`].
    pub(crate) fn pin(&self, handle: u64) -> Result<Pinned<'_, T>, Error> {
        debug_assert!(self.pins, "pin on a table that does not wait for pins");
        let p = self.reg.get(handle)?;
        let inside = inflight::pin(p as usize).ok_or(Error::Capacity("this thread holds too many pins"))?;
        // Validated again after the marker: a `remove` that made the handle invalid after this point waits
        // for the marker before it drops the table's reference; one that did so before is seen here.
        match self.reg.get(handle) {
            Ok(q) if q == p => {}
            other => return Err(other.err().unwrap_or(Error::InvalidHandle(handle, "was removed"))),
        }
        // SAFETY: see above: the table's `Arc` stays alive while `inside` is held.
        Ok(Pinned { obj: unsafe { &*(p as *const T) }, _inside: inside, _t: PhantomData })
    }
}

/// A pinned object (see [`Table::pin`]): usable for the guard's life, on this thread only.
pub(crate) struct Pinned<'a, T> {
    obj: &'a T,
    _inside: Pin,
    /// Not `Send`: the in-flight marker belongs to this thread.
    _t: PhantomData<*const T>,
}

impl<T> Deref for Pinned<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.obj
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicUsize, Ordering::*};

    #[derive(Debug)]
    struct Obj(&'static AtomicUsize);
    impl Drop for Obj {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn guards_outlive_removal_and_removal_is_once() {
        static S: SegVec<Slot> = SegVec::new();
        static T: Table<Obj> = Table::new(Kind::Object, &S);
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        let h = T.insert(Arc::new(Obj(&DROPS))).unwrap();
        let g = T.get(h).unwrap();
        let last = T.remove(h).unwrap();
        assert!(T.get(h).is_err() && !T.is_live(h) && T.remove(h).is_err());
        drop(last);
        assert_eq!(DROPS.load(SeqCst), 0, "a guard is still held");
        drop(g);
        assert_eq!(DROPS.load(SeqCst), 1);
    }

    #[test]
    fn remove_waits_for_pins_and_refuses_its_own() {
        static S: SegVec<Slot> = SegVec::new();
        static T: Table<Obj> = Table::pinnable(Kind::Queue, &S);
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        let h = T.insert(Arc::new(Obj(&DROPS))).unwrap();
        {
            let _p = T.pin(h).unwrap();
            assert_eq!(
                T.remove(h).unwrap_err(),
                Error::WouldDeadlock("the object is in use by this thread's own call")
            );
            assert!(T.is_live(h), "a refused remove changes nothing");
        }
        let pinned = std::sync::Barrier::new(2);
        let leave = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                let p = T.pin(h).unwrap();
                pinned.wait();
                leave.wait();
                assert_eq!(DROPS.load(SeqCst), 0, "dropped while pinned");
                drop(p);
            });
            pinned.wait();
            s.spawn(|| leave.wait());
            drop(T.remove(h).unwrap()); // returns only after the pin is gone
            assert_eq!(DROPS.load(SeqCst), 1);
        });
        assert!(T.pin(h).is_err());
    }
}
