package purecbslot

import (
	"runtime"
	"sync/atomic"
	"unsafe"
)

// Handle is cbslot's answer to cgo.Handle: a 64-bit value that C code can hold instead of a Go pointer,
// backed by cbslot's generational handle registry. It is refcounted (Retain/Delete), can notify a
// destroy func, and a stale, double-deleted or garbage handle is an error, never a crash or another value.
type Handle uint64

type handleValue struct {
	v       any
	destroy func(any)
	h       atomic.Uint64 // the handle: a key freed and reused under a concurrent Lookup names another value
}

var handleValues keyTable[handleValue]

// destroyHandle is a handle's destroy notification: it runs inside the last cb_handle_release, on
// the thread that called it.
func destroyHandle(key uintptr) {
	if hv := handleValues.remove(key); hv != nil && hv.destroy != nil {
		hv.destroy(hv.v)
	}
}

// NewHandle returns a handle for v, holding one reference. It panics if the library cannot be loaded
// or cbslot refuses (NewHandleWithDestroy returns the error instead).
func NewHandle(v any) Handle {
	h, err := NewHandleWithDestroy(v, nil)
	if err != nil {
		panic(err)
	}
	return h
}

// NewHandleWithDestroy is NewHandle with a func that runs once, with v, when the last reference goes.
func NewHandleWithDestroy(v any, destroy func(any)) (Handle, error) {
	l, err := lib()
	if err != nil {
		return 0, err
	}
	if err := dispatchers(); err != nil {
		return 0, err
	}
	hv := &handleValue{v: v, destroy: destroy}
	key := handleValues.add(hv)
	out := new(uint64)
	err = l.call(l.handleNew, key, dispatch.handleDestroy, uintptr(unsafe.Pointer(out)))
	runtime.KeepAlive(out)
	if err != nil {
		handleValues.remove(key)
		return 0, err
	}
	hv.h.Store(*out)
	return Handle(*out), nil
}

// Value returns the value. Like cgo.Handle.Value it panics on an invalid handle; Lookup returns the error.
func (h Handle) Value() any {
	v, err := h.Lookup()
	if err != nil {
		panic(err)
	}
	return v
}

// Lookup returns the value, or an *Error (status ErrInvalid) for 0, garbage, stale or deleted handles.
func (h Handle) Lookup() (any, error) {
	l, err := lib()
	if err != nil {
		return nil, err
	}
	out := new(uintptr)
	err = l.call(l.handleGet, uintptr(h), uintptr(unsafe.Pointer(out)))
	runtime.KeepAlive(out)
	if err != nil {
		return nil, err
	}
	hv := handleValues.get(*out)
	if hv == nil || hv.h.Load() != uint64(h) {
		return nil, &Error{Status: ErrInvalid, Detail: "the handle's value was released"}
	}
	return hv.v, nil
}

// Retain adds a reference; each one is given back with Delete.
func (h Handle) Retain() error {
	l, err := lib()
	if err != nil {
		return err
	}
	return l.call(l.handleRetain, uintptr(h))
}

// Delete drops a reference; the last one releases the value and runs its destroy func, on this
// goroutine, before Delete returns. Deleting more often than retained returns an *Error (status
// ErrInvalid) and changes nothing.
func (h Handle) Delete() error {
	l, err := lib()
	if err != nil {
		return err
	}
	return l.call(l.handleRelease, uintptr(h))
}
