// Package purecbslot binds cbslot's callbacks and handles for Go programs built without cgo
// (CGO_ENABLED=0), through github.com/ebitengine/purego. It mirrors that part of the cgo package
// (github.com/cbslot/cbslot/bindings/go/cbslot): NewCallback gives any number of unique, freeable C
// function pointers for Go funcs, and Handle is a refcounted, checked stand-in for Go pointers in C.
//
// It loads libcbslot at run time with purego.Dlopen and calls it with purego.SyscallN. Go funcs are
// reached through a fixed set of purego callbacks, made once on first use: one dispatcher per integer
// argument count 0..5, one for funcs with floating-point arguments, and two destroy notifications
// (callbacks, handles). That spends 9 of purego's 2000 permanent callback slots, whatever the number of
// callbacks made here. cbslot calls a dispatcher with an integer key as userdata; the key finds the Go
// func in this package's table, and the destroy notification removes it.
//
// The dispatchers return one integer register (purego callbacks cannot return a bare float), so float and
// double results and struct results over 8 bytes are refused: use the cgo package for those. Arguments
// are as in the cgo package: integers, pointers, floats and (amd64) structs of up to 16 bytes, at most 5
// integer-class and 8 floating-point registers.
//
// The library is loaded by Open, or on first use from $CBSLOT_LIBRARY if set, else by its soname
// (libcbslot.so.0; libcbslot.0.dylib on macOS) through the dynamic loader's search (LD_LIBRARY_PATH,
// rpath, ldconfig's cache). With CGO_ENABLED=0 this works on Linux because purego supplies the runtime
// hooks cgo would (its fakecgo package), so C threads may call the pointers too.
package purecbslot

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/ebitengine/purego"
)

// Status is a cbslot status code (cb_status).
type Status int

// The status codes (numbers never change).
const (
	OK             Status = 0
	ErrNullArg     Status = 1
	ErrInvalid     Status = 2 // CB_ERR_INVALID_HANDLE
	ErrCapacity    Status = 3
	ErrNoMemory    Status = 4
	ErrUnsupported Status = 5
	ErrInvalidArg  Status = 6
	ErrDeadlock    Status = 7 // CB_ERR_WOULD_DEADLOCK
	ErrPanic       Status = 8
	ErrClosed      Status = 9
	ErrTimeout     Status = 10
	ErrSystem      Status = 11
)

// statusNames name the statuses when the library is not loaded (so cb_status_str cannot be asked).
var statusNames = [...]string{"CB_OK", "CB_ERR_NULL_ARG", "CB_ERR_INVALID_HANDLE", "CB_ERR_CAPACITY",
	"CB_ERR_NO_MEMORY", "CB_ERR_UNSUPPORTED", "CB_ERR_INVALID_ARG", "CB_ERR_WOULD_DEADLOCK", "CB_ERR_PANIC",
	"CB_ERR_CLOSED", "CB_ERR_TIMEOUT", "CB_ERR_SYSTEM"}

// Error is a failed cbslot call: its status and cb_last_error()'s text (or this package's own).
type Error struct {
	Status Status
	Detail string
}

// Error formats the detail and the status's name.
func (e *Error) Error() string {
	var name string
	if l := loaded.Load(); l != nil {
		r, _, _ := purego.SyscallN(l.statusStr, uintptr(e.Status))
		name = goString(r)
	} else if e.Status >= 0 && int(e.Status) < len(statusNames) {
		name = statusNames[e.Status]
	} else {
		name = fmt.Sprintf("status %d", int(e.Status))
	}
	return fmt.Sprintf("cbslot: %s (%s)", e.Detail, name)
}

// Is lets errors.Is(err, StatusError(ErrInvalid)) match on the status alone.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Detail == "" && t.Status == e.Status
}

// StatusError returns an error value to compare with errors.Is.
func StatusError(s Status) error { return &Error{Status: s} }

// library is libcbslot once loaded: the addresses of the functions this package calls.
type library struct {
	path          string
	register      uintptr // cb_register
	unregister    uintptr // cb_unregister
	barrier       uintptr // cb_barrier
	lastError     uintptr // cb_last_error
	statusStr     uintptr // cb_status_str
	version       uintptr // cb_version
	handleNew     uintptr // cb_handle_new
	handleGet     uintptr // cb_handle_get
	handleRetain  uintptr // cb_handle_retain
	handleRelease uintptr // cb_handle_release
}

var (
	loadMu sync.Mutex
	loaded atomic.Pointer[library] // nil until a load succeeds; never unloaded
)

// defaultName is the library's soname on this system.
func defaultName() string {
	switch runtime.GOOS {
	case "darwin", "ios":
		return "libcbslot.0.dylib"
	default:
		return "libcbslot.so.0"
	}
}

// Open loads libcbslot from path (a file path, or a name for the dynamic loader to search). Call it
// before anything else in this package to choose the library; without it, the first use loads
// $CBSLOT_LIBRARY or the default name. Once a library is loaded it stays: Open with the same path then
// returns nil, with another an *Error (status ErrInvalidArg). A library that cannot be loaded gives an
// *Error with status ErrUnsupported and the loader's text.
func Open(path string) error {
	loadMu.Lock()
	defer loadMu.Unlock()
	if l := loaded.Load(); l != nil {
		if l.path == path {
			return nil
		}
		return &Error{Status: ErrInvalidArg, Detail: fmt.Sprintf("Open(%q): libcbslot is already loaded from %q", path, l.path)}
	}
	return load(path, "Open")
}

// lib returns the loaded library, loading the default one on first use.
func lib() (*library, error) {
	if l := loaded.Load(); l != nil {
		return l, nil
	}
	loadMu.Lock()
	defer loadMu.Unlock()
	if l := loaded.Load(); l != nil {
		return l, nil
	}
	path, from := os.Getenv("CBSLOT_LIBRARY"), "$CBSLOT_LIBRARY"
	if path == "" {
		path, from = defaultName(), "the default name"
	}
	if err := load(path, from); err != nil {
		return nil, err
	}
	return loaded.Load(), nil
}

// load opens path and resolves the symbols; loadMu is held. from says where path came from.
func load(path, from string) error {
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		env := "LD_LIBRARY_PATH"
		if runtime.GOOS == "darwin" || runtime.GOOS == "ios" {
			env = "DYLD_LIBRARY_PATH"
		}
		return &Error{Status: ErrUnsupported, Detail: fmt.Sprintf("cannot load libcbslot %q (%s): %v; "+
			"set CBSLOT_LIBRARY to the library's path, or %s to its directory, or call purecbslot.Open",
			path, from, err, env)}
	}
	l := &library{path: path}
	for _, s := range []struct {
		name string
		addr *uintptr
	}{
		{"cb_register", &l.register}, {"cb_unregister", &l.unregister}, {"cb_barrier", &l.barrier},
		{"cb_last_error", &l.lastError}, {"cb_status_str", &l.statusStr}, {"cb_version", &l.version},
		{"cb_handle_new", &l.handleNew}, {"cb_handle_get", &l.handleGet},
		{"cb_handle_retain", &l.handleRetain}, {"cb_handle_release", &l.handleRelease},
	} {
		if *s.addr, err = purego.Dlsym(h, s.name); err != nil {
			// keep the handle open: dlclose of a library some other code may share gains nothing
			return &Error{Status: ErrUnsupported, Detail: fmt.Sprintf("%q has no %s: %v", path, s.name, err)}
		}
	}
	loaded.Store(l)
	return nil
}

// check turns the cb_status in a C call's rax into an error. cb_last_error() is per OS thread: the
// caller has locked its OS thread since the call.
func (l *library) check(rax uintptr) error {
	s := Status(int32(uint32(rax))) // a 32-bit enum: the upper half of rax is undefined
	if s == OK {
		return nil
	}
	r, _, _ := purego.SyscallN(l.lastError)
	return &Error{Status: s, Detail: goString(r)}
}

// call runs a cbslot function returning cb_status with its OS thread locked, and checks the status.
// uintptrescapes (as on purego.SyscallN) moves what uintptr(unsafe.Pointer(p)) arguments point at to the
// heap and keeps it alive and reloaded across the call.
//
//go:uintptrescapes
func (l *library) call(fn uintptr, args ...uintptr) error {
	runtime.LockOSThread()
	r, _, _ := purego.SyscallN(fn, args...)
	err := l.check(r)
	runtime.UnlockOSThread()
	return err
}

// cptr turns an address of C memory into an unsafe.Pointer (go vet accepts this form).
func cptr(p uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&p)) }

// goString copies the NUL-terminated C string at p.
func goString(p uintptr) string {
	if p == 0 {
		return ""
	}
	n := 0
	for *(*byte)(unsafe.Add(cptr(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice((*byte)(cptr(p)), n))
}

// Version is the library's version string, or "" if it cannot be loaded (the other functions return
// the reason).
func Version() string {
	l, err := lib()
	if err != nil {
		return ""
	}
	r, _, _ := purego.SyscallN(l.version)
	return goString(r)
}
