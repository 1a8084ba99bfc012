package purecbslot

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"unsafe"

	"github.com/cbslot/cbslot/bindings/go/internal/callplan"
	"github.com/ebitengine/purego"
)

// Callback is a Go func registered as a bare C function pointer (see NewCallback).
type Callback struct {
	handle uint64  // cb_handle, written by cb_register
	ptr    uintptr // cb_fn entry, written by cb_register
}

var funcs keyTable[callplan.Plan]

// dispatch holds the purego callbacks cbslot calls as fn(userdata = key, args...) and destroy(key).
var dispatch struct {
	once          sync.Once
	err           error
	ints          [callplan.CInts + 1]uintptr // by integer argument count, no floating-point ones
	floats        uintptr                     // 5 integer and 8 floating-point arguments
	release       uintptr                     // a callback's destroy notification
	handleDestroy uintptr                     // a handle's destroy notification
}

// dispatchers makes the purego callbacks on first use.
func dispatchers() error {
	dispatch.once.Do(func() {
		defer func() {
			// purego panics when its 2000 slots are spent
			if r := recover(); r != nil {
				dispatch.err = &Error{Status: ErrCapacity, Detail: fmt.Sprint("purego.NewCallback: ", r)}
			}
		}()
		dispatch.ints = [...]uintptr{
			purego.NewCallback(call0), purego.NewCallback(call1), purego.NewCallback(call2),
			purego.NewCallback(call3), purego.NewCallback(call4), purego.NewCallback(call5),
		}
		dispatch.floats = purego.NewCallback(callFloats)
		dispatch.release = purego.NewCallback(releaseFunc)
		dispatch.handleDestroy = purego.NewCallback(destroyHandle)
	})
	return dispatch.err
}

// run calls key's func with the C call's registers and returns what goes to rax.
func run(key uintptr, w *callplan.Words) uintptr {
	p := funcs.get(key)
	if p == nil {
		return 0 // released: cbslot routes no call here after the destroy notification
	}
	r := p.Call(w)
	return uintptr(r.Int[0])
}

// The dispatchers: one per integer argument count, so purego's per-call work follows the func's shape.

func call0(key uintptr) uintptr { return run(key, &callplan.Words{}) }

func call1(key, a0 uintptr) uintptr { return run(key, &callplan.Words{uint64(a0)}) }

func call2(key, a0, a1 uintptr) uintptr {
	return run(key, &callplan.Words{uint64(a0), uint64(a1)})
}

func call3(key, a0, a1, a2 uintptr) uintptr {
	return run(key, &callplan.Words{uint64(a0), uint64(a1), uint64(a2)})
}

func call4(key, a0, a1, a2, a3 uintptr) uintptr {
	return run(key, &callplan.Words{uint64(a0), uint64(a1), uint64(a2), uint64(a3)})
}

func call5(key, a0, a1, a2, a3, a4 uintptr) uintptr {
	return run(key, &callplan.Words{uint64(a0), uint64(a1), uint64(a2), uint64(a3), uint64(a4)})
}

func callFloats(key, a0, a1, a2, a3, a4 uintptr, f0, f1, f2, f3, f4, f5, f6, f7 float64) uintptr {
	return run(key, &callplan.Words{uint64(a0), uint64(a1), uint64(a2), uint64(a3), uint64(a4),
		math.Float64bits(f0), math.Float64bits(f1), math.Float64bits(f2), math.Float64bits(f3),
		math.Float64bits(f4), math.Float64bits(f5), math.Float64bits(f6), math.Float64bits(f7)})
}

// releaseFunc is a callback's destroy notification: cbslot routes no more calls to key.
func releaseFunc(key uintptr) { funcs.remove(key) }

// NewCallback registers fn and returns a unique bare C function pointer that calls it, like
// purego.NewCallback but with no limit on their number and freeable.
//
// fn is a func whose arguments are C types: Go's integer types, bool, uintptr, unsafe.Pointer, typed
// pointers (*T), float32, float64, and structs of those of up to 16 bytes that the C calling convention
// passes in registers (amd64), at most 5 integer-class and 8 floating-point registers in all (a struct
// takes one per 8 bytes). It returns nothing or one value that C reads from the integer register: an
// integer, bool, pointer, or an integer-class struct of up to 8 bytes: this package's dispatchers return
// one integer register. Float results and struct results over 8 bytes are refused, like any other shape
// that does not fit, with an *Error (status ErrInvalidArg) naming the rule.
//
// The pointer may be called from any thread, C-created ones included. fn is held only through an
// integer key in this package's table; cbslot's destroy notification, after Free and the last call in
// flight, removes it.
func NewCallback(fn any) (*Callback, error) {
	plan, err := callplan.Compile(fn)
	if err != nil {
		s := ErrInvalidArg
		if !errors.Is(err, callplan.ErrShape) {
			s = ErrUnsupported
		}
		return nil, &Error{Status: s, Detail: "NewCallback: " + err.Error()}
	}
	if plan.Result != callplan.ResultInt || plan.ResultRegs > 1 {
		return nil, &Error{Status: ErrInvalidArg, Detail: fmt.Sprintf("NewCallback(%T): this package's dispatchers "+
			"return only an integer register: float and struct results over 8 bytes need the cgo package", fn)}
	}
	l, err := lib()
	if err != nil {
		return nil, err
	}
	if err := dispatchers(); err != nil {
		return nil, err
	}
	entry := dispatch.floats
	if plan.Floats == 0 {
		entry = dispatch.ints[plan.Ints]
	}
	key := funcs.add(plan)
	cb := new(Callback)
	err = l.call(l.register, entry, key, dispatch.release,
		uintptr(unsafe.Pointer(&cb.handle)), uintptr(unsafe.Pointer(&cb.ptr)))
	runtime.KeepAlive(cb)
	if err != nil {
		funcs.remove(key)
		return nil, err
	}
	return cb, nil
}

// Ptr is the bare C function pointer. Calling it after Free is a stale call: cbslot's stale handler runs
// (by default it prints the pointer and aborts the process) and the call returns 0.
func (c *Callback) Ptr() uintptr { return c.ptr }

// Free unregisters the callback. Calls already running finish; the Go func is released about 10 ms after
// the last returns (cbslot's reclaim delay), with no further call needed. A callback may Free itself
// from inside its own call. Freeing twice returns an *Error with status ErrInvalid and changes nothing.
func (c *Callback) Free() error {
	l, err := lib()
	if err != nil {
		return err
	}
	return l.call(l.unregister, uintptr(c.handle))
}

// LiveCallbacks is the number of Go funcs this package holds for callbacks (registered and not yet
// released by cbslot's destroy notification).
func LiveCallbacks() int { return funcs.len() }

// Barrier waits until every destroy notification due for earlier unregisters has run (see cb_barrier).
func Barrier() error {
	l, err := lib()
	if err != nil {
		return err
	}
	return l.call(l.barrier)
}
