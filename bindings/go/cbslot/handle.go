package cbslot

/*
#include <cbslot.h>
#include <stdint.h>

extern void cbslotGoHandleDestroy(uintptr_t key);

// Results come back by value: a pointer to a Go variable would make it escape to the heap.
typedef struct { cb_status s; uint64_t v; } cbslot_go_result;

// A destroy that runs inside Go's own Delete hands the key back to it instead of calling into Go (a
// C->Go callback costs more than the rest of Delete); a release by C code calls Go.
static _Thread_local uintptr_t *cbslot_go_released;
static void cbslot_go_handle_destroy(void *p) {
  if (cbslot_go_released && !*cbslot_go_released) { // one per Delete; a destroy that ends more calls Go
    *cbslot_go_released = (uintptr_t)p;
    return;
  }
  cbslotGoHandleDestroy((uintptr_t)p);
}
static cbslot_go_result cbslot_go_handle_release(cb_handle h) {
  uintptr_t key = 0;
  cbslot_go_released = &key;
  cb_status s = cb_handle_release(h);
  cbslot_go_released = NULL;
  return (cbslot_go_result){s, key};
}
static cbslot_go_result cbslot_go_handle_new(uintptr_t key) {
  cb_handle h = 0;
  cb_status s = cb_handle_new((void *)key, cbslot_go_handle_destroy, &h);
  return (cbslot_go_result){s, h};
}
static cbslot_go_result cbslot_go_handle_get(cb_handle h) {
  void *p = NULL;
  cb_status s = cb_handle_get(h, &p);
  return (cbslot_go_result){s, (uintptr_t)p};
}
*/
import "C"

import (
	"runtime"
	"sync/atomic"
)

// Handle is cbslot's answer to cgo.Handle: a 64-bit value that C code can hold instead of a Go pointer,
// backed by cbslot's generational handle registry. Unlike cgo.Handle it is refcounted (Retain/Delete),
// can notify a destroy func, and a stale, double-deleted or garbage handle is an error, never a crash or
// another value.
type Handle uint64

type handleValue struct {
	v       interface{}
	destroy func(interface{})
	h       uint64 // the handle: a key freed and reused under a concurrent Lookup names another value
}

var handleValues table[handleValue]

// NewHandle returns a handle for v, holding one reference.
func NewHandle(v interface{}) Handle {
	h, err := NewHandleWithDestroy(v, nil)
	if err != nil {
		panic(err)
	}
	return h
}

// NewHandleWithDestroy is NewHandle with a func that runs once, with v, when the last reference goes.
func NewHandleWithDestroy(v interface{}, destroy func(interface{})) (Handle, error) {
	key := handleValues.put(&handleValue{v: v, destroy: destroy})
	runtime.LockOSThread()
	r := C.cbslot_go_handle_new(C.uintptr_t(key))
	err := statusErr(r.s)
	runtime.UnlockOSThread()
	if err != nil {
		handleValues.take(key)
		return 0, err
	}
	atomic.StoreUint64(&handleValues.get(key).h, uint64(r.v))
	return Handle(r.v), nil
}

// Value returns the value. Like cgo.Handle.Value it panics on an invalid handle; Lookup returns the error.
func (h Handle) Value() interface{} {
	v, err := h.Lookup()
	if err != nil {
		panic(err)
	}
	return v
}

// Lookup returns the value, or an *Error (status ErrInvalid) for 0, garbage, stale or deleted handles.
func (h Handle) Lookup() (interface{}, error) {
	runtime.LockOSThread()
	r := C.cbslot_go_handle_get(C.cb_handle(h))
	err := statusErr(r.s)
	runtime.UnlockOSThread()
	if err != nil {
		return nil, err
	}
	hv := handleValues.get(uintptr(r.v))
	if hv == nil || atomic.LoadUint64(&hv.h) != uint64(h) {
		return nil, &Error{Status: ErrInvalid, Detail: "the handle's value was released"}
	}
	return hv.v, nil
}

// Retain adds a reference; each one is given back with Delete.
func (h Handle) Retain() error {
	return call(func() C.cb_status { return C.cb_status(C.cb_handle_retain(C.cb_handle(h))) })
}

// Delete drops a reference; the last one releases the value (and runs its destroy func). Deleting more
// often than retained returns an *Error and changes nothing.
func (h Handle) Delete() error {
	runtime.LockOSThread()
	r := C.cbslot_go_handle_release(C.cb_handle(h))
	err := statusErr(r.s)
	runtime.UnlockOSThread()
	if r.v != 0 {
		cbslotGoHandleDestroy(C.uintptr_t(r.v))
	}
	return err
}

//export cbslotGoHandleDestroy
func cbslotGoHandleDestroy(key C.uintptr_t) {
	if hv := handleValues.take(uintptr(key)); hv != nil {
		if hv.destroy != nil {
			hv.destroy(hv.v)
		}
	}
}
