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
	"sync/atomic"
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

func (e *Error) Error() string {
	return fmt.Sprintf("cbslot: %s (%s)", e.Detail, C.GoString(C.cb_status_str(C.cb_status(e.Status))))
}

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
	err := statusErr(f())
	runtime.UnlockOSThread()
	return err
}

// statusErr turns a status into an error; the caller has locked its OS thread since the call.
func statusErr(s C.cb_status) error {
	if s == C.CB_OK {
		return nil
	}
	return &Error{Status: Status(s), Detail: C.GoString(C.cb_last_error())}
}

// table maps integer keys to Go values; C only ever sees the keys. Lookups take no lock (they run on
// every call of a callback, from any thread); a key is reused once its value is taken.
type table[T any] struct {
	mu     sync.Mutex
	chunks atomic.Pointer[[]*chunk[T]]
	free   []uintptr
	next   uintptr
	live   int
}

const chunkBits = 12

type chunk[T any] [1 << chunkBits]atomic.Pointer[T]

func (t *table[T]) slot(key uintptr) *atomic.Pointer[T] {
	cs := t.chunks.Load()
	i := key - 1
	if cs == nil || i>>chunkBits >= uintptr(len(*cs)) {
		return nil
	}
	return &(*cs)[i>>chunkBits][i&(1<<chunkBits-1)]
}

func (t *table[T]) put(v *T) uintptr {
	t.mu.Lock()
	defer t.mu.Unlock()
	var key uintptr
	if n := len(t.free); n > 0 {
		key, t.free = t.free[n-1], t.free[:n-1]
	} else {
		t.next++
		key = t.next
		if s := t.slot(key); s == nil { // grow by one chunk; readers keep using the old slice
			var cs []*chunk[T]
			if old := t.chunks.Load(); old != nil {
				cs = append(cs, *old...)
			}
			cs = append(cs, new(chunk[T]))
			t.chunks.Store(&cs)
		}
	}
	t.slot(key).Store(v)
	t.live++
	return key
}

// get returns the value for key, or nil.
func (t *table[T]) get(key uintptr) *T {
	if s := t.slot(key); s != nil {
		return s.Load()
	}
	return nil
}

// take removes and returns the value for key, or nil.
func (t *table[T]) take(key uintptr) *T {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.slot(key)
	if s == nil {
		return nil
	}
	v := s.Swap(nil)
	if v != nil {
		t.free = append(t.free, key)
		t.live--
	}
	return v
}

func (t *table[T]) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.live
}

// Version is the library's version string.
func Version() string { return C.GoString(C.cb_version()) }
