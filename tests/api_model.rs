//! Model-based random API sequences: proptest drives the C API (through the rlib) with random operations
//! — including 0, garbage, stale and double handles, NULL out-pointers, calls through unregistered
//! entries — and checks every result code, every value and every destroy count against a small model.
//! (Each case stays far below the 4096-slot quarantine, so an unregistered entry is never reused here.)

use cbslot::*;
use proptest::prelude::*;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

static STALE: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" fn on_stale(_entry: cb_fn, _arg: *mut c_void) {
    STALE.fetch_add(1, SeqCst);
}

/// What a handle or callback points to: its tag and how often its destroy ran.
struct Obj {
    tag: i64,
    destroyed: AtomicU64,
}

unsafe extern "C" fn destroy(p: *mut c_void) {
    // SAFETY: `p` is a model's boxed `Obj`; the model keeps every box until the end of the case.
    unsafe { &*(p as *const Obj) }.destroyed.fetch_add(1, SeqCst);
}

unsafe extern "C" fn add_tag(ud: *mut c_void, x: i64) -> i64 {
    // SAFETY: as in `destroy`.
    unsafe { &*(ud as *const Obj) }.tag + x
}

#[derive(Debug, Clone)]
enum Op {
    New,
    Get(usize),
    Retain(usize),
    Release(usize),
    Garbage(u64),
    NullOut,
    Register,
    Unregister(usize),
    UnregisterWait(usize),
    Call(usize, i64),
    CrossKind(usize),
    Barrier,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::New),
        3 => (0usize..16).prop_map(Op::Get),
        2 => (0usize..16).prop_map(Op::Retain),
        3 => (0usize..16).prop_map(Op::Release),
        1 => any::<u64>().prop_map(Op::Garbage),
        1 => Just(Op::NullOut),
        2 => Just(Op::Register),
        2 => (0usize..16).prop_map(Op::Unregister),
        1 => (0usize..16).prop_map(Op::UnregisterWait),
        3 => ((0usize..16), -1000i64..1000).prop_map(|(i, x)| Op::Call(i, x)),
        1 => (0usize..16).prop_map(Op::CrossKind),
        1 => Just(Op::Barrier),
    ]
}

struct ModelHandle {
    h: cb_handle,
    obj: Box<Obj>,
    refs: u64,
}

struct ModelCallback {
    h: cb_handle,
    entry: unsafe extern "C" fn(i64) -> i64,
    obj: Box<Obj>,
    live: bool,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn c_api_matches_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        cb_set_stale_handler(Some(on_stale), std::ptr::null_mut());
        let mut handles: Vec<ModelHandle> = Vec::new();
        let mut callbacks: Vec<ModelCallback> = Vec::new();
        let mut next_tag = 1i64;
        for op in ops {
            match op {
                Op::New => {
                    let obj = Box::new(Obj { tag: next_tag, destroyed: AtomicU64::new(0) });
                    next_tag += 1;
                    let mut h = 0;
                    prop_assert_eq!(cb_handle_new(&*obj as *const Obj as *mut c_void, Some(destroy), &mut h), cb_status::CB_OK);
                    prop_assert!(h != 0);
                    handles.push(ModelHandle { h, obj, refs: 1 });
                }
                Op::Get(i) if i < handles.len() => {
                    let m = &handles[i];
                    let mut p = std::ptr::without_provenance_mut::<c_void>(1); // a marker, never dereferenced
                    let s = cb_handle_get(m.h, &mut p);
                    if m.refs > 0 {
                        prop_assert_eq!(s, cb_status::CB_OK);
                        prop_assert_eq!(p as *const Obj, &*m.obj as *const Obj);
                    } else {
                        prop_assert_eq!(s, cb_status::CB_ERR_INVALID_HANDLE);
                        prop_assert_eq!(p, std::ptr::without_provenance_mut(1), "output written on failure");
                    }
                }
                Op::Retain(i) if i < handles.len() => {
                    let m = &mut handles[i];
                    let want = if m.refs > 0 { m.refs += 1; cb_status::CB_OK } else { cb_status::CB_ERR_INVALID_HANDLE };
                    prop_assert_eq!(cb_handle_retain(m.h), want);
                }
                Op::Release(i) if i < handles.len() => {
                    let m = &mut handles[i];
                    let want = if m.refs > 0 { m.refs -= 1; cb_status::CB_OK } else { cb_status::CB_ERR_INVALID_HANDLE };
                    prop_assert_eq!(cb_handle_release(m.h), want);
                    prop_assert_eq!(m.obj.destroyed.load(SeqCst), u64::from(m.refs == 0), "destroy exactly once, at the last release");
                }
                Op::Garbage(g) => {
                    let known = handles.iter().any(|m| m.h == g && m.refs > 0) || callbacks.iter().any(|c| c.h == g && c.live);
                    if !known {
                        let mut p = std::ptr::null_mut();
                        prop_assert_eq!(cb_handle_get(g, &mut p), cb_status::CB_ERR_INVALID_HANDLE);
                        prop_assert_eq!(cb_handle_release(g), cb_status::CB_ERR_INVALID_HANDLE);
                        prop_assert_eq!(cb_unregister(g), cb_status::CB_ERR_INVALID_HANDLE);
                    }
                }
                Op::NullOut => {
                    prop_assert_eq!(cb_handle_new(std::ptr::null_mut(), None, std::ptr::null_mut()), cb_status::CB_ERR_NULL_ARG);
                    prop_assert_eq!(cb_handle_get(0, std::ptr::null_mut()), cb_status::CB_ERR_NULL_ARG);
                    let mut e: cb_fn = None;
                    prop_assert_eq!(cb_register(None, std::ptr::null_mut(), None, &mut 0, &mut e), cb_status::CB_ERR_NULL_ARG);
                    prop_assert!(e.is_none());
                }
                Op::Register => {
                    let obj = Box::new(Obj { tag: next_tag, destroyed: AtomicU64::new(0) });
                    next_tag += 1;
                    let (mut h, mut e) = (0, None);
                    // SAFETY: erasing the signature for `cb_register`; the entry is called as `add_tag` without `ud`.
                    let f: unsafe extern "C" fn() = unsafe { std::mem::transmute(add_tag as unsafe extern "C" fn(*mut c_void, i64) -> i64) };
                    prop_assert_eq!(cb_register(Some(f), &*obj as *const Obj as *mut c_void, Some(destroy), &mut h, &mut e), cb_status::CB_OK);
                    // SAFETY: the entry just registered for `add_tag`, typed as `add_tag` without its userdata.
                    let entry: unsafe extern "C" fn(i64) -> i64 = unsafe { std::mem::transmute(e.unwrap()) };
                    prop_assert!(callbacks.iter().all(|c| c.entry as usize != entry as usize), "a live or quarantined entry was handed out again");
                    callbacks.push(ModelCallback { h, entry, obj, live: true });
                }
                Op::Unregister(i) | Op::UnregisterWait(i) if i < callbacks.len() => {
                    let wait = matches!(op, Op::UnregisterWait(_));
                    let c = &mut callbacks[i];
                    let want = if c.live { cb_status::CB_OK } else { cb_status::CB_ERR_INVALID_HANDLE };
                    let got = if wait { cb_unregister_wait(c.h) } else { cb_unregister(c.h) };
                    prop_assert_eq!(got, want);
                    c.live = false;
                    if wait && want == cb_status::CB_OK {
                        prop_assert_eq!(c.obj.destroyed.load(SeqCst), 1);
                    }
                }
                Op::Call(i, x) if i < callbacks.len() => {
                    let c = &callbacks[i];
                    let before = STALE.load(SeqCst);
                    // SAFETY: a live entry runs `add_tag` on the model's `Obj`; a stale one goes to `on_stale`.
                    let r = unsafe { (c.entry)(x) };
                    if c.live {
                        prop_assert_eq!(r, c.obj.tag + x);
                    } else {
                        prop_assert_eq!(r, 0, "a stale call returns 0");
                        prop_assert_eq!(STALE.load(SeqCst), before + 1);
                    }
                }
                Op::CrossKind(i) => {
                    if let Some(m) = handles.get(i) {
                        prop_assert_eq!(cb_unregister(m.h), cb_status::CB_ERR_INVALID_HANDLE);
                    }
                    if let Some(c) = callbacks.get(i) {
                        prop_assert_eq!(cb_handle_retain(c.h), cb_status::CB_ERR_INVALID_HANDLE);
                    }
                }
                Op::Barrier => {
                    prop_assert_eq!(cb_barrier(), cb_status::CB_OK);
                    for c in callbacks.iter().filter(|c| !c.live) {
                        prop_assert_eq!(c.obj.destroyed.load(SeqCst), 1);
                    }
                }
                _ => {}
            }
        }
        // end of the case: give everything back; every destroy ran exactly once
        for m in &mut handles {
            while m.refs > 0 {
                prop_assert_eq!(cb_handle_release(m.h), cb_status::CB_OK);
                m.refs -= 1;
            }
        }
        for c in &mut callbacks {
            if c.live {
                prop_assert_eq!(cb_unregister(c.h), cb_status::CB_OK);
            }
        }
        prop_assert_eq!(cb_barrier(), cb_status::CB_OK);
        for m in &handles { prop_assert_eq!(m.obj.destroyed.load(SeqCst), 1); }
        for c in &callbacks { prop_assert_eq!(c.obj.destroyed.load(SeqCst), 1); }
    }
}
