package cbslot_test

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cbslot/cbslot/bindings/go/cbslot"
	"github.com/cbslot/cbslot/bindings/go/internal/ctest"
)

// newCB registers fn and frees it when the test ends.
func newCB(t *testing.T, fn interface{}) uintptr {
	t.Helper()
	cb, err := cbslot.NewCallback(fn)
	must(t, err)
	t.Cleanup(func() { cb.Free() })
	return cb.Ptr()
}

// Structs by value in both directions, one case per System V classification (INTEGER, SSE, mixed,
// packed fields, odd sizes), plus typed pointers and narrow integers.
func TestStructShapes(t *testing.T) {
	type ( // the same layouts as ctest's (and their C twins), local so that literals can be unkeyed
		sll struct{ A, B int64 }
		sdd struct{ X, Y float64 }
		sif struct {
			A int32
			B float32
		}
		sff struct{ A, B float32 }
		sld struct {
			A int64
			B float64
		}
		sdl struct {
			A float64
			B int64
		}
		smix struct {
			A    uint8
			B    int16
			C    int32
			D, E float32
		}
		s3b struct{ A, B, C int8 }
		s3f struct{ A, B, C float32 }
	)
	if got := sll(ctest.CallSLL(newCB(t, func(s sll, n int32) sll { return sll{s.B + int64(n), s.A} }))); got != (sll{1<<40 + 7, -1}) {
		t.Errorf("s_ll: %+v", got)
	}
	if got := sdd(ctest.CallSDD(newCB(t, func(k float64, s sdd) sdd { return sdd{s.Y * k, s.X * k} }))); got != (sdd{-1.5, 0.625}) {
		t.Errorf("s_dd: %+v", got)
	}
	if got := sif(ctest.CallSIF(newCB(t, func(a, b sif) sif { return sif{a.A * b.A, a.B * b.B} }))); got != (sif{-63, -0.375}) {
		t.Errorf("s_if: %+v", got)
	}
	if got := sff(ctest.CallSFF(newCB(t, func(s sff, k float32) sff { return sff{s.B * k, s.A * k} }))); got != (sff{10, 6}) {
		t.Errorf("s_ff: %+v", got)
	}
	if got := sld(ctest.CallSLD(newCB(t, func(s sld) sld { return sld{s.A * 2, s.B * 2} }))); got != (sld{-84, 0.25}) {
		t.Errorf("s_ld: %+v", got)
	}
	if got := sdl(ctest.CallSDL(newCB(t, func(s sdl) sdl { return sdl{s.A * 2, -s.B} }))); got != (sdl{-1, -1234567890123}) {
		t.Errorf("s_dl: %+v", got)
	}
	if got := smix(ctest.CallSMix(newCB(t, func(n int32, s smix, k float64) smix {
		return smix{s.A + uint8(n), s.B * int16(n), s.C * n, s.D * float32(k), s.E * float32(k)}
	}))); got != (smix{253, -900, -210000, 12, -20}) {
		t.Errorf("s_mix: %+v", got)
	}
	if got := s3b(ctest.CallS3B(newCB(t, func(a, b s3b) s3b { return s3b{a.A * b.A, a.B * b.B, a.C * b.C} }))); got != (s3b{-4, -10, -18}) {
		t.Errorf("s_3b: %+v", got)
	}
	if got := s3f(ctest.CallS3F(newCB(t, func(s s3f) s3f { return s3f{s.C, s.B, s.A} }))); got != (s3f{3, 2, 1}) {
		t.Errorf("s_3f: %+v", got)
	}
	if got := ctest.CallPoint(newCB(t, func(p *ctest.Point, k int8, neg bool) int32 {
		if neg {
			k = -k
		}
		return p.X*int32(k) + p.Y
	})); got != 2 {
		t.Errorf("*point: %d", got)
	}
	if got := ctest.CallFive(newCB(t, func(a, b, c, d ctest.Point, e int64) int64 {
		return int64(a.X+b.Y+c.X+d.Y) + e
	})); got != 1+4+5+8+9 {
		t.Errorf("five points: %d", got)
	}
}

// Funcs C cannot call, or that Go would not pass in registers, are refused with the rule named.
func TestRefusedShapes(t *testing.T) {
	type big struct{ A, B, C int64 }
	type arr struct{ V [2]int32 }
	type empty struct{}
	for _, c := range []struct {
		fn   interface{}
		rule string
	}{
		{42, "is not a func"},
		{(func())(nil), "nil"},
		{func(string) {}, "not a C type"},
		{func(a, b, c, d, e, f int) {}, "more than 5 integer"},
		{func(a, b, c, d, e, f, g, h, i float64) {}, "more than 8 floating-point"},
		{func() (int, int) { return 0, 0 }, "at most one value"},
		{func(...int) {}, "variadic"},
		{func(big) {}, "over 16 bytes"},
		{func() big { return big{} }, "over 16 bytes"},
		{func(arr) {}, "arrays of more than one element"},
		{func(empty) {}, "size 0"},
		{func(a, b, c, d ctest.Point, s ctest.SLL) {}, "does not fit"},
		{func(chan int) {}, "not a C type"},
		{func(a, b, c, d, e ctest.Point) {}, "Go would pass"}, // 10 of Go's 9 integer registers
	} {
		_, err := cbslot.NewCallback(c.fn)
		if !errors.Is(err, cbslot.StatusError(cbslot.ErrInvalidArg)) || !strings.Contains(err.Error(), c.rule) {
			t.Errorf("%T: want ErrInvalidArg naming %q, got %v", c.fn, c.rule, err)
		}
	}
}

// A handle released by C code (its last reference) runs the Go destroy func through a C->Go call.
func TestHandleReleasedByC(t *testing.T) {
	got := make(chan interface{}, 1)
	h, err := cbslot.NewHandleWithDestroy(42, func(v interface{}) { got <- v })
	must(t, err)
	must(t, h.Retain())
	must(t, h.Delete())
	if st := ctest.ReleaseHandle(uint64(h)); st != 0 {
		t.Fatalf("cb_handle_release from C: %d", st)
	}
	if v := <-got; v != 42 {
		t.Fatalf("destroy got %v", v)
	}
	if _, err := h.Lookup(); err == nil {
		t.Fatal("the handle must be dead")
	}
}

// AutoFree: an unreachable callback is unregistered by the garbage collector, its Go func released by
// the destroy notification, and a late call from C is a caught stale call that returns 0.
func TestAutoFree(t *testing.T) {
	must(t, cbslot.Barrier())
	base := cbslot.LiveCallbacks()
	var stale []uintptr
	var mu sync.Mutex
	cbslot.SetStaleHandler(func(entry uintptr) { mu.Lock(); stale = append(stale, entry); mu.Unlock() })
	defer cbslot.SetStaleHandler(nil)
	ptr := func() uintptr { // the *Callback does not outlive this func
		cb, err := cbslot.NewCallback(func(x uintptr) uintptr { return x + 1 })
		must(t, err)
		cb.AutoFree()
		if got := ctest.Call5(cb.Ptr(), 41, 0, 0, 0, 0); got != 42 {
			t.Fatalf("call: %d", got)
		}
		return cb.Ptr()
	}()
	deadline := time.Now().Add(10 * time.Second)
	for cbslot.LiveCallbacks() != base {
		if time.Now().After(deadline) {
			t.Fatal("the collected callback was never released")
		}
		runtime.GC()
		must(t, cbslot.Barrier())
	}
	if got := ctest.Call5(ptr, 41, 0, 0, 0, 0); got != 0 {
		t.Fatalf("late call returned %d", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(stale) != 1 || stale[0] != ptr {
		t.Fatalf("stale handler saw %x, want [%x]", stale, ptr)
	}
}

// A panic that would leave a callback ends the process with its message (a recover in the C caller's
// caller would leave cbslot counting the call as running for ever). Run in a child process.
func TestPanicEndsProcess(t *testing.T) {
	if os.Getenv("CBSLOT_TEST_PANIC") == "1" {
		cb, err := cbslot.NewCallback(func() { panic("boom") })
		must(t, err)
		func() {
			defer func() { _ = recover() }()
			ctest.Call5(cb.Ptr(), 0, 0, 0, 0, 0)
		}()
		os.Exit(0) // not reached
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPanicEndsProcess$")
	cmd.Env = append(os.Environ(), "CBSLOT_TEST_PANIC=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "panic in a Go func called from C") ||
		!strings.Contains(string(out), "boom") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// Closing: a second Close, Drain and DrainBatch after Close are ErrClosed (not a write to freed memory);
// Close(false) returns even though nobody receives from a full Events channel; Events after Close is a
// closed channel.
func TestQueueClose(t *testing.T) {
	q, err := cbslot.NewQueue(4096)
	must(t, err)
	s, err := q.NewSink()
	must(t, err)
	events := q.Events()
	for i := 0; i < 2000; i++ { // more than the channel holds
		must(t, s.Post([]byte{byte(i)}))
	}
	<-events // the pump is running; then nobody receives
	done := make(chan error)
	go func() { done <- q.Close(false) }()
	select {
	case err := <-done:
		must(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Close(false) waits for a consumer that stopped receiving")
	}
	closed := cbslot.StatusError(cbslot.ErrClosed)
	if err := q.Close(false); !errors.Is(err, closed) {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := q.Drain(10); !errors.Is(err, closed) {
		t.Fatalf("Drain after Close: %v", err)
	}
	if _, err := q.DrainBatch(10, func([]cbslot.Event) { t.Fatal("called") }); !errors.Is(err, closed) {
		t.Fatalf("DrainBatch after Close: %v", err)
	}
	q2, err := cbslot.NewQueue(16)
	must(t, err)
	must(t, q2.Close(true))
	if _, ok := <-q2.Events(); ok {
		t.Fatal("Events after Close must be closed")
	}
}
