//! Platforms without trampolines: `cb_register` says `CB_ERR_UNSUPPORTED` (and writes nothing) while
//! handles work. Run on x86_64 with `RUSTFLAGS="--cfg cbslot_force_unsupported"` (CTest does).
#![cfg(cbslot_force_unsupported)]

use cbslot::*;
use std::ffi::{CStr, c_void};

unsafe extern "C" fn f() {}

#[test]
fn register_is_unsupported_and_handles_work() {
    let (mut h, mut e): (cb_handle, cb_fn) = (7, None);
    assert_eq!(cb_register(Some(f), std::ptr::null_mut(), None, &mut h, &mut e), cb_status::CB_ERR_UNSUPPORTED);
    assert_eq!((h, e), (7, None));
    // SAFETY: `cb_last_error()` is never NULL, NUL-terminated, and stays put until this thread's next failure.
    let msg = unsafe { CStr::from_ptr(cb_last_error()) }.to_str().unwrap();
    assert!(msg.starts_with("cb_register: callback trampolines are not implemented"), "{msg}");
    assert_eq!(cb_unregister(h), cb_status::CB_ERR_INVALID_HANDLE);
    assert_eq!(cb_barrier(), cb_status::CB_OK);

    let mut x = 5u8;
    let mut handle = 0;
    assert_eq!(cb_handle_new(&mut x as *mut u8 as *mut c_void, None, &mut handle), cb_status::CB_OK);
    let mut p = std::ptr::null_mut();
    assert_eq!(cb_handle_get(handle, &mut p), cb_status::CB_OK);
    assert_eq!(p, &mut x as *mut u8 as *mut c_void);
    assert_eq!(cb_handle_release(handle), cb_status::CB_OK);
}
