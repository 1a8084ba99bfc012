package cbslot

/*
#include <cbslot.h>
#include <stdint.h>
#include <string.h>

// The C side of every Go callback: cbslot calls one of these as fn(userdata = key, <the C caller's
// arguments>). Each reads every argument register (5 integer after userdata, 8 floating point), hands them
// to Go as words, and returns Go's result in the registers the C caller reads: one function per pair of
// result registers, since a C function chooses them by its return type.
extern void cbslotGoCall(uintptr_t key, uint64_t *words, uint64_t *ret);
extern void cbslotGoRelease(uintptr_t key);

typedef struct { uint64_t a, b; } cbslot_ii;
typedef struct { double a, b; } cbslot_ff;
typedef struct { uint64_t a; double b; } cbslot_if;
typedef struct { double a; uint64_t b; } cbslot_fi;

#define CBSLOT_GO_DISPATCH(name, type, first, second)                                                     \
  static type name(void *ud, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, double f0,  \
                   double f1, double f2, double f3, double f4, double f5, double f6, double f7) {          \
    uint64_t w[13] = {a0, a1, a2, a3, a4};                                                                 \
    double f[8] = {f0, f1, f2, f3, f4, f5, f6, f7};                                                        \
    uint64_t r[4] = {0};                                                                                   \
    type out;                                                                                              \
    memcpy(&w[5], f, sizeof f);                                                                            \
    cbslotGoCall((uintptr_t)ud, w, r);                                                                     \
    memcpy(&out.a, &r[first], 8);                                                                          \
    memcpy(&out.b, &r[second], 8);                                                                         \
    return out;                                                                                            \
  }
// r: rax, rdx, xmm0, xmm1 (x0, x1, d0, d1 on arm64)
CBSLOT_GO_DISPATCH(cbslot_go_ii, cbslot_ii, 0, 1)
CBSLOT_GO_DISPATCH(cbslot_go_ff, cbslot_ff, 2, 3)
CBSLOT_GO_DISPATCH(cbslot_go_if, cbslot_if, 0, 2)
CBSLOT_GO_DISPATCH(cbslot_go_fi, cbslot_fi, 2, 0)

static void cbslot_go_release(void *ud) { cbslotGoRelease((uintptr_t)ud); }

extern void cbslotGoStale(uintptr_t entry);
static void cbslot_go_stale(cb_fn entry, void *arg) { (void)arg; cbslotGoStale((uintptr_t)entry); }
static void cbslot_go_set_stale(void) { cb_set_stale_handler(cbslot_go_stale, NULL); }

static cb_status cbslot_go_register(uintptr_t key, int result, cb_handle *h, uintptr_t *entry) {
  static const cb_fn dispatch[] = {(cb_fn)cbslot_go_ii, (cb_fn)cbslot_go_ff, (cb_fn)cbslot_go_if,
                                   (cb_fn)cbslot_go_fi};
  cb_fn e = NULL;
  cb_status s = cb_register(dispatch[result], (void *)key, cbslot_go_release, h, &e);
  *entry = (uintptr_t)e;
  return s;
}
*/
import "C"

import (
	"errors"
	"runtime"
	"sync/atomic"
	"unsafe"

	"github.com/cbslot/cbslot/bindings/go/internal/callplan"
)

// Callback is a Go func registered as a bare C function pointer (see NewCallback).
type Callback struct {
	handle C.cb_handle
	ptr    C.uintptr_t
	auto   autoFree // set by AutoFree
}

var funcs table[callplan.Plan]

// NewCallback registers fn and returns a unique bare C function pointer that calls it, like
// syscall.NewCallback or purego.NewCallback, but with no limit on their number and freeable.
//
// fn is a func whose arguments and result are C types: Go's integer types, bool, uintptr,
// unsafe.Pointer, typed pointers (*T), float32 and float64, and structs of those of up to 16 bytes
// (amd64) that the C calling convention passes in registers. A func takes at most 5 integer-class and 8
// floating-point argument registers (a struct takes one per 8 bytes) and returns at most one value. The
// C caller passes the arguments in the same order. Anything else is refused with an *Error (status
// ErrInvalidArg) naming the rule. Calls allocate nothing and do not use reflection: the func's shape is
// compiled once per type into a plan of register moves.
//
// The pointer may be called from any thread: Go threads (through cgo) and threads C created (Go's
// foreign-thread callback path). fn is reachable only through an integer key in this package's table;
// cbslot's destroy notification (after Free, once no call is in flight) removes it.
func NewCallback(fn interface{}) (*Callback, error) {
	plan, err := callplan.Compile(fn)
	if err != nil {
		s := ErrInvalidArg
		if !errors.Is(err, callplan.ErrShape) {
			s = ErrUnsupported
		}
		return nil, &Error{Status: s, Detail: "NewCallback: " + err.Error()}
	}
	key := funcs.put(plan)
	cb := &Callback{}
	runtime.LockOSThread()
	s := C.cbslot_go_register(C.uintptr_t(key), C.int(plan.Result), &cb.handle, &cb.ptr)
	err = statusErr(s)
	runtime.UnlockOSThread()
	if err != nil {
		funcs.take(key)
		return nil, err
	}
	return cb, nil
}

// Ptr is the bare C function pointer. Calling it after Free is a stale call: cbslot's stale handler runs
// (by default it prints the pointer and aborts the process) and the call returns 0.
func (c *Callback) Ptr() uintptr { return uintptr(c.ptr) }

// Free unregisters the callback. Calls already running finish; the Go func is released about 10 ms after
// the last returns (cbslot's reclaim delay), with no further call needed. Freeing twice returns an *Error
// with status ErrInvalid and changes nothing.
func (c *Callback) Free() error {
	c.auto.stop(c)
	runtime.LockOSThread()
	err := statusErr(C.cb_status(C.cb_unregister(c.handle)))
	runtime.UnlockOSThread()
	return err
}

// AutoFree makes the garbage collector free the callback: once c is unreachable, a cleanup
// (runtime.AddCleanup on Go 1.24 and later, a finalizer before) unregisters it, as Free would. Free may
// still be called first; the cleanup is then cancelled.
//
// What C must still guarantee: it stops calling Ptr() before the Go program drops c. Go cannot see C's
// copies of the pointer, so nothing keeps c reachable while C holds one. A call that comes too late is a
// stale call, caught by cbslot while the entry's slot is quarantined (until CB_QUARANTINE_SLOTS = 4096
// later frees): the stale handler runs (see SetStaleHandler; by default it aborts) and the call returns
// 0. After the quarantine the entry may belong to a newer callback. Keep c reachable (a global, a field,
// runtime.KeepAlive) for as long as C may call it.
func (c *Callback) AutoFree() { c.auto.start(c) }

// SetStaleHandler installs fn to be called, on the calling thread, for every stale call (a call through
// a freed callback's entry while its slot is quarantined) with the entry that was called; the stale call
// then returns 0 to its C caller. nil restores cbslot's default: print the entry and abort the process.
func SetStaleHandler(fn func(entry uintptr)) {
	if fn == nil {
		C.cb_set_stale_handler(nil, nil)
		staleHandler.Store((*func(uintptr))(nil))
		return
	}
	staleHandler.Store(&fn)
	C.cbslot_go_set_stale()
}

var staleHandler atomic.Value // *func(uintptr)

//export cbslotGoStale
func cbslotGoStale(entry C.uintptr_t) {
	if fn, _ := staleHandler.Load().(*func(uintptr)); fn != nil && *fn != nil {
		(*fn)(uintptr(entry))
	}
}

// LiveCallbacks is the number of Go funcs this package holds for callbacks (registered and not yet
// released by cbslot's destroy notification).
func LiveCallbacks() int { return funcs.len() }

// Barrier waits until every destroy notification due for earlier unregisters has run (see cb_barrier).
func Barrier() error { return call(func() C.cb_status { return C.cb_status(C.cb_barrier()) }) }

// unregister is what a cleanup does for a callback that became unreachable.
func unregister(h C.cb_handle) { C.cb_unregister(h) }

//export cbslotGoCall
func cbslotGoCall(key C.uintptr_t, words, ret *C.uint64_t) {
	p := funcs.get(uintptr(key))
	if p == nil {
		return // released: cannot happen while cbslot routes calls to it (destroy runs after the last)
	}
	*(*callplan.Ret)(unsafe.Pointer(ret)) = p.Call((*callplan.Words)(unsafe.Pointer(words)))
}

//export cbslotGoRelease
func cbslotGoRelease(key C.uintptr_t) {
	funcs.take(uintptr(key))
}
