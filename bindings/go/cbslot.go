// Package cbslot binds cbslot (callback slots, handles, VDE3 contexts and the delivery queue) for Go, with
// the standard library and cgo only. It links libcbslot through pkg-config (`cbslot.pc`).
//
// The GC-safe rule holds from Go too: cbslot never keeps a pointer to Go memory. Go values live in this
// package's tables behind integer keys, and cbslot hands the keys back in its destroy notifications.
package cbslot

/*
#cgo pkg-config: cbslot
#include <cbslot.h>
#include <stdlib.h>
*/
import "C"

import (
	"fmt"
	"runtime"
	"sync"
)

// Status is a cbslot status code (cb_status).
type Status int

// The status codes (numbers never change).
const (
	OK             Status = C.CB_OK
	ErrNullArg     Status = C.CB_ERR_NULL_ARG
	ErrInvalid     Status = C.CB_ERR_INVALID_HANDLE
	ErrCapacity    Status = C.CB_ERR_CAPACITY
	ErrNoMemory    Status = C.CB_ERR_NO_MEMORY
	ErrUnsupported Status = C.CB_ERR_UNSUPPORTED
	ErrInvalidArg  Status = C.CB_ERR_INVALID_ARG
	ErrDeadlock    Status = C.CB_ERR_WOULD_DEADLOCK
	ErrPanic       Status = C.CB_ERR_PANIC
	ErrClosed      Status = C.CB_ERR_CLOSED
	ErrTimeout     Status = C.CB_ERR_TIMEOUT
	ErrSystem      Status = C.CB_ERR_SYSTEM
)

// Error is a failed cbslot call: its status and cb_last_error()'s text.
type Error struct {
	Status Status
	Detail string
}

func (e *Error) Error() string { return fmt.Sprintf("cbslot: %s (%s)", e.Detail, C.GoString(C.cb_status_str(C.cb_status(e.Status)))) }

// Is lets errors.Is(err, cbslot.ErrClosed) style checks work on the status alone.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Detail == "" && t.Status == e.Status
}

// StatusError returns an error value to compare with errors.Is.
func StatusError(s Status) error { return &Error{Status: s} }

// call runs one cbslot call and turns its status into an error. cb_last_error() is per OS thread, so the
// goroutine stays on its thread from the call until the error text is read.
func call(f func() C.cb_status) error {
	runtime.LockOSThread()
	s := f()
	var err error
	if s != C.CB_OK {
		err = &Error{Status: Status(s), Detail: C.GoString(C.cb_last_error())}
	}
	runtime.UnlockOSThread()
	return err
}

// keys maps integer keys to Go values; C only ever sees the keys.
type keys struct {
	mu   sync.Mutex
	next uintptr
	m    map[uintptr]interface{}
}

func (k *keys) put(v interface{}) uintptr {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = make(map[uintptr]interface{})
	}
	k.next++
	k.m[k.next] = v
	return k.next
}

func (k *keys) get(key uintptr) (interface{}, bool) {
	k.mu.Lock()
	v, ok := k.m[key]
	k.mu.Unlock()
	return v, ok
}

func (k *keys) take(key uintptr) (interface{}, bool) {
	k.mu.Lock()
	v, ok := k.m[key]
	delete(k.m, key)
	k.mu.Unlock()
	return v, ok
}

func (k *keys) len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}

// Version is the library's version string.
func Version() string { return C.GoString(C.cb_version()) }

// runtimeKeepAlive keeps a Go buffer alive until after the C call that reads it.
func runtimeKeepAlive(v interface{}) { runtime.KeepAlive(v) }
