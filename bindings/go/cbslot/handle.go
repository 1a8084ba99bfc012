package cbslot

/*
#include <cbslot.h>
#include <stdint.h>

extern void cbslotGoHandleDestroy(uintptr_t key);
static void cbslot_go_handle_destroy(void *p) { cbslotGoHandleDestroy((uintptr_t)p); }
static cb_status cbslot_go_handle_new(uintptr_t key, cb_handle *out) {
  return cb_handle_new((void *)key, cbslot_go_handle_destroy, out);
}
static cb_status cbslot_go_handle_get(cb_handle h, uintptr_t *key) {
  void *p = NULL;
  cb_status s = cb_handle_get(h, &p);
  *key = (uintptr_t)p;
  return s;
}
*/
import "C"

// Handle is cbslot's answer to cgo.Handle: a 64-bit value that C code can hold instead of a Go pointer,
// backed by cbslot's generational handle registry. Unlike cgo.Handle it is refcounted (Retain/Delete),
// can notify a destroy func, and a stale, double-deleted or garbage handle is an error, never a crash or
// another value.
type Handle uint64

type handleValue struct {
	v       interface{}
	destroy func(interface{})
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
	var h C.cb_handle
	if err := call(func() C.cb_status { return C.cbslot_go_handle_new(C.uintptr_t(key), &h) }); err != nil {
		handleValues.take(key)
		return 0, err
	}
	return Handle(h), nil
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
	var key C.uintptr_t
	if err := call(func() C.cb_status { return C.cbslot_go_handle_get(C.cb_handle(h), &key) }); err != nil {
		return nil, err
	}
	hv := handleValues.get(uintptr(key))
	if hv == nil {
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
	return call(func() C.cb_status { return C.cb_status(C.cb_handle_release(C.cb_handle(h))) })
}

//export cbslotGoHandleDestroy
func cbslotGoHandleDestroy(key C.uintptr_t) {
	if hv := handleValues.take(uintptr(key)); hv != nil {
		if hv.destroy != nil {
			hv.destroy(hv.v)
		}
	}
}
