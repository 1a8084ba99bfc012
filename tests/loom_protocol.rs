//! loom model checks of cbslot's two lock-free protocols, with the same state machines and memory
//! orderings as the production code (which uses core atomics, static tables and, for the call side,
//! assembly, so it is modelled here rather than run under loom as is):
//!
//! 1. **In-flight / grace period** (`src/inflight.rs`, the dispatcher): a caller publishes "I am
//!    inside slot S" and then loads the slot's fn; the unregistering side clears fn, runs the process-wide
//!    barrier, reads the caller's marker, and destroys only if the marker is absent. membarrier acts as a
//!    full fence on every running thread between the two; it is modelled as a SeqCst fence on each side.
//!    Checked: destroy never happens while the caller is inside fn, and a caller never enters fn after
//!    the slot was destroyed.
//! 2. **Handle generations** (`src/handle.rs`): `get` loads state, reads the pointer, loads state again;
//!    the last `release` moves the slot to the next generation in one CAS, and a later `insert` writes the
//!    new pointer (Release) and publishes the new state. Checked: a `get` of the old handle never returns
//!    the new object's pointer, and a `retain` can never revive a released handle.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --test loom_protocol` (CTest: rust/loom).
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*, fence};
use loom::thread;

#[test]
fn grace_period_never_destroys_a_slot_in_use() {
    loom::model(|| {
        let func = Arc::new(AtomicUsize::new(1)); // the slot's fn (non-zero: registered)
        let marker = Arc::new(AtomicUsize::new(0)); // the caller's record: 1 = inside this slot
        let destroyed = Arc::new(AtomicUsize::new(0));
        let caller = {
            let (func, marker, destroyed) = (func.clone(), marker.clone(), destroyed.clone());
            thread::spawn(move || {
                marker.store(1, Relaxed); // the dispatcher's plain store
                fence(SeqCst); // what membarrier forces on this thread
                if func.load(Relaxed) != 0 {
                    // inside fn: userdata must still be alive
                    assert_eq!(destroyed.load(Relaxed), 0, "destroyed while a call was inside fn");
                }
                marker.store(0, Release); // leaving
            })
        };
        // the unregister side
        func.store(0, Relaxed); // new calls take the stale path
        fence(SeqCst); // membarrier(PRIVATE_EXPEDITED)
        if marker.load(Acquire) == 0 {
            destroyed.store(1, Relaxed); // no thread inside: destroy
        }
        caller.join().unwrap();
    });
}

const GEN_SHIFT: u64 = 32;

fn state(generation: u64, refs: u64) -> u64 {
    generation << GEN_SHIFT | refs
}

#[test]
fn stale_handle_never_reaches_a_newer_object() {
    loom::model(|| {
        // slot: generation 1 with 1 reference, pointing at object 100
        let st = Arc::new(AtomicU64::new(state(1, 1)));
        let ptr = Arc::new(AtomicUsize::new(100));
        let reader = {
            let (st, ptr) = (st.clone(), ptr.clone());
            thread::spawn(move || {
                // get(handle with generation 1)
                let s1 = st.load(Acquire);
                if s1 >> GEN_SHIFT == 1 && s1 & 0xffff_ffff != 0 {
                    let p = ptr.load(Acquire);
                    let s2 = st.load(Acquire);
                    if s2 >> GEN_SHIFT == 1 && s2 & 0xffff_ffff != 0 {
                        assert_eq!(p, 100, "a stale handle reached another object");
                    }
                }
                // retain(handle with generation 1): never revives a released slot
                let mut s = st.load(Relaxed);
                loop {
                    if s >> GEN_SHIFT != 1 || s & 0xffff_ffff == 0 {
                        break;
                    }
                    match st.compare_exchange_weak(s, s + 1, Relaxed, Relaxed) {
                        Ok(_) => {
                            assert_ne!(s & 0xffff_ffff, 0);
                            st.fetch_sub(1, Release); // give it back (not the last)
                            break;
                        }
                        Err(now) => s = now,
                    }
                }
            })
        };
        // the owner releases the last reference (generation 1 -> 2, in one CAS) ...
        let mut s = st.load(Relaxed);
        loop {
            let next = if s & 0xffff_ffff > 1 { s - 1 } else { state(2, 0) };
            match st.compare_exchange_weak(s, next, AcqRel, Relaxed) {
                Ok(_) if s & 0xffff_ffff > 1 => {
                    // the reader held a reference: wait for it to be given back, then release again
                    s = st.load(Relaxed);
                    continue;
                }
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        // ... and the slot is reused for object 200 under generation 2
        ptr.store(200, Release);
        st.store(state(2, 1), Release);
        reader.join().unwrap();
    });
}
