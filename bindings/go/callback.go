package cbslot

/*
#include <cbslot.h>
#include <stdint.h>

// The Go side of every callback: one C function per result kind. cbslot calls them as
// fn(userdata = key, <the C caller's arguments>); they read all the argument registers (5 integer, 8
// floating point) and let Go pick the ones the Go func declares.
extern uintptr_t cbslotGoCall(uintptr_t key, uintptr_t a0, uintptr_t a1, uintptr_t a2, uintptr_t a3,
                              uintptr_t a4, double f0, double f1, double f2, double f3, double f4, double f5,
                              double f6, double f7, double *fret);
extern void cbslotGoRelease(uintptr_t key);

static uintptr_t cbslot_go_int(void *ud, uintptr_t a0, uintptr_t a1, uintptr_t a2, uintptr_t a3, uintptr_t a4,
                               double f0, double f1, double f2, double f3, double f4, double f5, double f6,
                               double f7) {
  double fret = 0;
  return cbslotGoCall((uintptr_t)ud, a0, a1, a2, a3, a4, f0, f1, f2, f3, f4, f5, f6, f7, &fret);
}
static double cbslot_go_float(void *ud, uintptr_t a0, uintptr_t a1, uintptr_t a2, uintptr_t a3, uintptr_t a4,
                              double f0, double f1, double f2, double f3, double f4, double f5, double f6,
                              double f7) {
  double fret = 0;
  cbslotGoCall((uintptr_t)ud, a0, a1, a2, a3, a4, f0, f1, f2, f3, f4, f5, f6, f7, &fret);
  return fret;
}
static void cbslot_go_release(void *ud) { cbslotGoRelease((uintptr_t)ud); }

static cb_status cbslot_go_register(uintptr_t key, int float_result, cb_handle *h, uintptr_t *entry) {
  cb_fn e = NULL;
  cb_status s = cb_register(float_result ? (cb_fn)cbslot_go_float : (cb_fn)cbslot_go_int, (void *)key,
                            cbslot_go_release, h, &e);
  *entry = (uintptr_t)e;
  return s;
}
*/
import "C"

import (
	"fmt"
	"math"
	"reflect"
	"sync"
	"unsafe"
)

// Callback is a Go func registered as a bare C function pointer (see NewCallback).
type Callback struct {
	handle C.cb_handle
	ptr    uintptr
}

type goFunc struct {
	fast   func(a *[5]uintptr) uintptr // set for funcs of uintptr arguments and result: no reflection
	fn     reflect.Value
	ins    []reflect.Type
	floats []bool // per argument: taken from the floating-point registers
	out    reflect.Type
}

var funcs keys

// NewCallback registers fn and returns a unique bare C function pointer that calls it, like
// syscall.NewCallback or purego.NewCallback, but with no limit on their number and freeable.
//
// fn must be a func with at most 5 integer-class arguments (int*, uint*, uintptr, unsafe.Pointer, bool)
// and at most 8 float32/float64 arguments, in any order, and zero or one result of those types. The C
// caller passes the arguments in the same order. The C pointer may be called from any thread: Go threads
// (through cgo) and threads C created (Go's foreign-thread callback path, which is slower).
//
// fn is reachable only through an integer key in this package's table; cbslot's destroy notification
// (after Free, once no call is in flight) removes it.
func NewCallback(fn interface{}) (*Callback, error) {
	info, err := inspect(fn)
	if err != nil {
		return nil, err
	}
	key := funcs.put(info)
	floatResult := info.out != nil && (info.out.Kind() == reflect.Float32 || info.out.Kind() == reflect.Float64)
	cb := &Callback{}
	var entry C.uintptr_t
	fr := C.int(0)
	if floatResult {
		fr = 1
	}
	if err := call(func() C.cb_status { return C.cbslot_go_register(C.uintptr_t(key), fr, &cb.handle, &entry) }); err != nil {
		funcs.take(key)
		return nil, err
	}
	cb.ptr = uintptr(entry)
	return cb, nil
}

// Ptr is the bare C function pointer. Calling it after Free is a stale call: cbslot's stale handler runs
// (by default it prints the pointer and aborts the process) and the call returns 0.
func (c *Callback) Ptr() uintptr { return c.ptr }

// Free unregisters the callback. Calls already running finish; the Go func is released about 10 ms after
// the last returns (cbslot's reclaim delay), with no further call needed. Freeing twice returns an *Error
// with status ErrInvalid and changes nothing.
func (c *Callback) Free() error {
	return call(func() C.cb_status { return C.cb_status(C.cb_unregister(c.handle)) })
}

// LiveCallbacks is the number of Go funcs this package holds for callbacks (registered and not yet
// released by cbslot's destroy notification).
func LiveCallbacks() int { return funcs.len() }

// Barrier waits until every destroy notification due for earlier unregisters has run (see cb_barrier).
func Barrier() error { return call(func() C.cb_status { return C.cb_status(C.cb_barrier()) }) }

// shapes caches what inspect learns about a func type.
var shapes sync.Map // reflect.Type -> *goFunc (without fn)

func inspect(fn interface{}) (*goFunc, error) {
	v := reflect.ValueOf(fn)
	if v.Kind() != reflect.Func || v.IsNil() {
		return nil, &Error{Status: ErrInvalidArg, Detail: fmt.Sprintf("NewCallback: %T is not a func", fn)}
	}
	if shape, ok := shapes.Load(v.Type()); ok {
		info := *shape.(*goFunc)
		info.fn = v
		info.fast = fastPath(fn)
		return &info, nil
	}
	info, err := inspectType(v.Type())
	if err != nil {
		return nil, err
	}
	shapes.Store(v.Type(), info)
	out := *info
	out.fn = v
	out.fast = fastPath(fn)
	return &out, nil
}

// fastPath calls the common all-uintptr shapes directly instead of through reflect.Call.
func fastPath(fn interface{}) func(a *[5]uintptr) uintptr {
	switch f := fn.(type) {
	case func():
		return func(*[5]uintptr) uintptr { f(); return 0 }
	case func() uintptr:
		return func(*[5]uintptr) uintptr { return f() }
	case func(uintptr):
		return func(a *[5]uintptr) uintptr { f(a[0]); return 0 }
	case func(uintptr) uintptr:
		return func(a *[5]uintptr) uintptr { return f(a[0]) }
	case func(uintptr, uintptr):
		return func(a *[5]uintptr) uintptr { f(a[0], a[1]); return 0 }
	case func(uintptr, uintptr) uintptr:
		return func(a *[5]uintptr) uintptr { return f(a[0], a[1]) }
	case func(uintptr, uintptr, uintptr) uintptr:
		return func(a *[5]uintptr) uintptr { return f(a[0], a[1], a[2]) }
	case func(uintptr, uintptr, uintptr, uintptr) uintptr:
		return func(a *[5]uintptr) uintptr { return f(a[0], a[1], a[2], a[3]) }
	case func(uintptr, uintptr, uintptr, uintptr, uintptr) uintptr:
		return func(a *[5]uintptr) uintptr { return f(a[0], a[1], a[2], a[3], a[4]) }
	}
	return nil
}

func inspectType(t reflect.Type) (*goFunc, error) {
	if t.IsVariadic() {
		return nil, &Error{Status: ErrInvalidArg, Detail: "NewCallback: variadic funcs are not supported"}
	}
	info := &goFunc{}
	ints, floats := 0, 0
	for i := 0; i < t.NumIn(); i++ {
		in := t.In(i)
		isFloat, ok := kindOf(in)
		if !ok {
			return nil, &Error{Status: ErrInvalidArg, Detail: fmt.Sprintf("NewCallback: argument %d has unsupported type %s", i, in)}
		}
		if isFloat {
			floats++
		} else {
			ints++
		}
		info.ins = append(info.ins, in)
		info.floats = append(info.floats, isFloat)
	}
	if ints > 5 || floats > 8 {
		return nil, &Error{Status: ErrInvalidArg, Detail: "NewCallback: at most 5 integer and 8 floating-point arguments"}
	}
	switch t.NumOut() {
	case 0:
	case 1:
		if _, ok := kindOf(t.Out(0)); !ok {
			return nil, &Error{Status: ErrInvalidArg, Detail: fmt.Sprintf("NewCallback: unsupported result type %s", t.Out(0))}
		}
		info.out = t.Out(0)
	default:
		return nil, &Error{Status: ErrInvalidArg, Detail: "NewCallback: at most one result"}
	}
	return info, nil
}

// kindOf says whether t travels in a floating-point register (true) or an integer one (false); ok is
// false for unsupported types.
func kindOf(t reflect.Type) (isFloat, ok bool) {
	switch t.Kind() {
	case reflect.Float32, reflect.Float64:
		return true, true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.UnsafePointer, reflect.Bool:
		return false, true
	}
	return false, false
}

func fromInt(t reflect.Type, raw uintptr) reflect.Value {
	v := reflect.New(t).Elem()
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(signExtend(raw, t.Size()))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		v.SetUint(uint64(raw) & mask(t.Size()))
	case reflect.Bool:
		v.SetBool(raw&0xff != 0)
	case reflect.UnsafePointer:
		v.SetPointer(*(*unsafe.Pointer)(unsafe.Pointer(&raw)))
	}
	return v
}

func mask(size uintptr) uint64 {
	if size >= 8 {
		return math.MaxUint64
	}
	return 1<<(8*size) - 1
}

func signExtend(raw uintptr, size uintptr) int64 {
	shift := 64 - 8*size
	return int64(uint64(raw)<<shift) >> shift
}

//export cbslotGoCall
func cbslotGoCall(key C.uintptr_t, a0, a1, a2, a3, a4 C.uintptr_t, f0, f1, f2, f3, f4, f5, f6, f7 C.double, fret *C.double) C.uintptr_t {
	v, ok := funcs.get(uintptr(key))
	if !ok {
		return 0 // released: cannot happen while cbslot routes calls to it (destroy runs after the last)
	}
	info := v.(*goFunc)
	ints := [5]uintptr{uintptr(a0), uintptr(a1), uintptr(a2), uintptr(a3), uintptr(a4)}
	if info.fast != nil {
		return C.uintptr_t(info.fast(&ints))
	}
	floats := [8]float64{float64(f0), float64(f1), float64(f2), float64(f3), float64(f4), float64(f5), float64(f6), float64(f7)}
	args := make([]reflect.Value, len(info.ins))
	ni, nf := 0, 0
	for i, t := range info.ins {
		if info.floats[i] {
			if t.Kind() == reflect.Float32 {
				// a float arrives in the low 32 bits of its register
				args[i] = reflect.ValueOf(math.Float32frombits(uint32(math.Float64bits(floats[nf])))).Convert(t)
			} else {
				args[i] = reflect.ValueOf(floats[nf]).Convert(t)
			}
			nf++
		} else {
			args[i] = fromInt(t, ints[ni])
			ni++
		}
	}
	out := info.fn.Call(args)
	if info.out == nil {
		return 0
	}
	r := out[0]
	switch r.Kind() {
	case reflect.Float32:
		// returned in the low 32 bits of xmm0
		*fret = C.double(math.Float64frombits(uint64(math.Float32bits(float32(r.Float())))))
		return 0
	case reflect.Float64:
		*fret = C.double(r.Float())
		return 0
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return C.uintptr_t(r.Int())
	case reflect.Bool:
		if r.Bool() {
			return 1
		}
		return 0
	case reflect.UnsafePointer:
		return C.uintptr_t(uintptr(r.Pointer()))
	default:
		return C.uintptr_t(r.Uint())
	}
}

//export cbslotGoRelease
func cbslotGoRelease(key C.uintptr_t) {
	funcs.take(uintptr(key))
}
