package purecbslot_test

import (
	"errors"
	"fmt"
	"math/rand"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"unsafe"

	"github.com/cbslot/cbslot/bindings/go/purecbslot"
	"github.com/ebitengine/purego"
)

// libc's functions the tests call C code through.
var libc struct {
	malloc, free, qsort, bsearch, pthreadCreate, pthreadJoin uintptr
}

func TestMain(m *testing.M) {
	// before anything loads the library: a missing one is ErrUnsupported and says what to set
	err := purecbslot.Open("/nonexistent/libcbslot.so.0")
	if !errors.Is(err, purecbslot.StatusError(purecbslot.ErrUnsupported)) || !strings.Contains(err.Error(), "CBSLOT_LIBRARY") {
		fmt.Fprintf(os.Stderr, "Open of a missing library: got %v, want ErrUnsupported naming CBSLOT_LIBRARY\n", err)
		os.Exit(1)
	}
	// the default library, as the tests use it (say why it cannot load, not just that tests fail)
	if err := purecbslot.Barrier(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	h, err := purego.Dlopen("libc.so.6", purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		fmt.Fprintln(os.Stderr, "libc:", err)
		os.Exit(1)
	}
	for name, p := range map[string]*uintptr{"malloc": &libc.malloc, "free": &libc.free, "qsort": &libc.qsort,
		"bsearch": &libc.bsearch, "pthread_create": &libc.pthreadCreate, "pthread_join": &libc.pthreadJoin} {
		if *p, err = purego.Dlsym(h, name); err != nil {
			fmt.Fprintln(os.Stderr, "libc:", err)
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// cptr turns an address of C memory into an unsafe.Pointer.
func cptr(p uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&p)) }

func malloc(t testing.TB, n uintptr) uintptr {
	p, _, _ := purego.SyscallN(libc.malloc, n)
	if p == 0 {
		t.Fatal("malloc failed")
	}
	t.Cleanup(func() { purego.SyscallN(libc.free, p) })
	return p
}

// isStatus fails the test unless err is an *Error with status s.
func isStatus(t *testing.T, what string, err error, s purecbslot.Status) {
	t.Helper()
	var e *purecbslot.Error
	if !errors.Is(err, purecbslot.StatusError(s)) || !errors.As(err, &e) || e.Detail == "" {
		t.Fatalf("%s: got %v, want an *Error with status %d and a detail", what, err, s)
	}
}

// baseline waits for due destroys (of earlier tests' callbacks too) and returns the live count.
func baseline(t *testing.T) int {
	t.Helper()
	if err := purecbslot.Barrier(); err != nil {
		t.Fatal(err)
	}
	return purecbslot.LiveCallbacks()
}

// waitReleased waits for due destroys and checks the live count.
func waitReleased(t *testing.T, want int) {
	t.Helper()
	if n := baseline(t); n != want {
		t.Fatalf("LiveCallbacks = %d after Barrier, want %d", n, want)
	}
}

func TestVersionAndOpen(t *testing.T) {
	v := purecbslot.Version()
	if !regexp.MustCompile(`^\d+\.\d+\.\d+$`).MatchString(v) {
		t.Fatalf("Version() = %q", v)
	}
	path := os.Getenv("CBSLOT_LIBRARY")
	if path == "" {
		path = "libcbslot.so.0"
	}
	if err := purecbslot.Open(path); err != nil {
		t.Fatalf("Open of the loaded library: %v", err)
	}
	isStatus(t, "Open of another library once loaded", purecbslot.Open("/other/libcbslot.so.0"), purecbslot.ErrInvalidArg)
}

func TestQsortBsearch(t *testing.T) {
	const n = 5000
	calls := 0
	cmp, err := purecbslot.NewCallback(func(a, b unsafe.Pointer) int32 {
		calls++
		x, y := *(*int32)(a), *(*int32)(b)
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cmp.Free()
	base := malloc(t, n*4)
	arr := unsafe.Slice((*int32)(cptr(base)), n)
	rng := rand.New(rand.NewSource(1))
	for i := range arr {
		arr[i] = int32(rng.Intn(1<<30)) * 2 // even: odd keys are absent
	}
	want := slices.Clone(arr)
	slices.Sort(want)
	runtime.GC()
	purego.SyscallN(libc.qsort, base, n, 4, cmp.Ptr())
	if !slices.Equal(arr, want) {
		t.Fatal("qsort with a Go comparator did not sort")
	}
	if calls < n {
		t.Fatalf("comparator called %d times for %d elements", calls, n)
	}
	key := malloc(t, 4)
	for _, i := range []int{0, 1, n / 3, n - 1} {
		*(*int32)(cptr(key)) = want[i]
		r, _, _ := purego.SyscallN(libc.bsearch, key, base, n, 4, cmp.Ptr())
		if r == 0 || *(*int32)(cptr(r)) != want[i] {
			t.Fatalf("bsearch(%d) = %#x", want[i], r)
		}
		*(*int32)(cptr(key)) = want[i] + 1
		if r, _, _ := purego.SyscallN(libc.bsearch, key, base, n, 4, cmp.Ptr()); r != 0 {
			t.Fatalf("bsearch(%d) found %#x, want nothing", want[i]+1, r)
		}
	}
}

func TestCThreads(t *testing.T) {
	const threads = 4
	var mu sync.Mutex
	tids := map[int]bool{}
	cb, err := purecbslot.NewCallback(func(arg uintptr) uintptr {
		mu.Lock()
		tids[syscall.Gettid()] = true
		mu.Unlock()
		return arg*2 + 1
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Free()
	pt := malloc(t, threads*8)
	ret := malloc(t, 8)
	for i := range threads {
		if r, _, _ := purego.SyscallN(libc.pthreadCreate, pt+uintptr(8*i), 0, cb.Ptr(), uintptr(100+i)); int32(r) != 0 {
			t.Fatalf("pthread_create: %d", int32(r))
		}
	}
	for i := range threads {
		if r, _, _ := purego.SyscallN(libc.pthreadJoin, *(*uintptr)(cptr(pt + uintptr(8*i))), ret); int32(r) != 0 {
			t.Fatalf("pthread_join: %d", int32(r))
		}
		if got := *(*uintptr)(cptr(ret)); got != uintptr(2*(100+i)+1) {
			t.Fatalf("thread %d returned %d, want %d", i, got, 2*(100+i)+1)
		}
	}
	if len(tids) != threads || tids[syscall.Gettid()] {
		t.Fatalf("the callback ran on threads %v, want %d C threads", tids, threads)
	}
}

func TestGoroutines(t *testing.T) {
	var n atomic.Int64
	cb, err := purecbslot.NewCallback(func(x uint32) uint32 { n.Add(1); return x ^ 0xffff })
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Free()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				x := uintptr(g<<16 | i)
				if r, _, _ := purego.SyscallN(cb.Ptr(), x); uint32(r) != uint32(x)^0xffff {
					t.Errorf("got %#x for %#x", r, x)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n.Load() != 8*500 {
		t.Fatalf("%d calls, want %d", n.Load(), 8*500)
	}
}

func TestManyLive(t *testing.T) {
	const n = 10000 // five times purego's 2000 slots
	base := baseline(t)
	cbs := make([]*purecbslot.Callback, n)
	seen := make(map[uintptr]bool, n)
	for i := range cbs {
		cb, err := purecbslot.NewCallback(func(x int64) int64 { return x*3 + int64(i) })
		if err != nil {
			t.Fatalf("callback %d: %v", i, err)
		}
		if seen[cb.Ptr()] {
			t.Fatalf("callback %d: entry %#x handed out twice", i, cb.Ptr())
		}
		seen[cb.Ptr()] = true
		cbs[i] = cb
	}
	if got := purecbslot.LiveCallbacks(); got != base+n {
		t.Fatalf("LiveCallbacks = %d, want %d", got, base+n)
	}
	runtime.GC() // the funcs live only in the package's table
	for i, cb := range cbs {
		if r, _, _ := purego.SyscallN(cb.Ptr(), uintptr(i)); int64(r) != int64(i)*3+int64(i) {
			t.Fatalf("callback %d returned %d", i, int64(r))
		}
	}
	for i, cb := range cbs {
		if err := cb.Free(); err != nil {
			t.Fatalf("Free %d: %v", i, err)
		}
	}
	waitReleased(t, base)
}

func TestFreeInsideCall(t *testing.T) {
	base := baseline(t)
	var self *purecbslot.Callback
	calls := 0
	self, err := purecbslot.NewCallback(func(x int32) int32 {
		calls++
		if err := self.Free(); err != nil {
			t.Errorf("Free inside the call: %v", err)
		}
		return x * 3
	})
	if err != nil {
		t.Fatal(err)
	}
	if r, _, _ := purego.SyscallN(self.Ptr(), 5); int32(r) != 15 || calls != 1 {
		t.Fatalf("got %d after %d calls", int32(r), calls)
	}
	waitReleased(t, base)
	isStatus(t, "second Free", self.Free(), purecbslot.ErrInvalid)
}

func TestHandles(t *testing.T) {
	destroyed := 0
	var got any
	h, err := purecbslot.NewHandleWithDestroy("value", func(v any) { destroyed++; got = v })
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	if v := h.Value(); v != "value" {
		t.Fatalf("Value = %v", v)
	}
	for range 2 {
		if err := h.Retain(); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if destroyed != 0 {
			t.Fatalf("destroyed before the last Delete (after %d)", i)
		}
		if err := h.Delete(); err != nil {
			t.Fatal(err)
		}
	}
	if destroyed != 1 || got != "value" {
		t.Fatalf("destroy ran %d times with %v, want once with \"value\"", destroyed, got)
	}
	_, err = h.Lookup()
	isStatus(t, "Lookup of a deleted handle", err, purecbslot.ErrInvalid)
	isStatus(t, "double Delete", h.Delete(), purecbslot.ErrInvalid)
	isStatus(t, "Retain of a deleted handle", h.Retain(), purecbslot.ErrInvalid)
	if destroyed != 1 {
		t.Fatalf("destroy ran %d times", destroyed)
	}
	for _, bad := range []purecbslot.Handle{0, 0x1234567, 0xdeadbeefcafe} {
		_, err := bad.Lookup()
		isStatus(t, fmt.Sprintf("Lookup(%#x)", uint64(bad)), err, purecbslot.ErrInvalid)
		isStatus(t, fmt.Sprintf("Delete(%#x)", uint64(bad)), bad.Delete(), purecbslot.ErrInvalid)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("Value of a deleted handle did not panic")
			}
		}()
		h.Value()
	}()
	h2 := purecbslot.NewHandle(42)
	if h2 == h {
		t.Fatal("a new handle equals a deleted one")
	}
	if v := h2.Value(); v != 42 {
		t.Fatalf("Value = %v", v)
	}
	if err := h2.Delete(); err != nil {
		t.Fatal(err)
	}
}

func TestFloatArgs(t *testing.T) {
	cb, err := purecbslot.NewCallback(func(x float64, n int32, y float32) int64 {
		return int64(x*1000) + int64(n)*1000000 + int64(y*10)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Free()
	var f func(float64, int32, float32) int64
	purego.RegisterFunc(&f, cb.Ptr())
	if r := f(1.5, -3, 2.5); r != 1500-3000000+25 {
		t.Fatalf("got %d", r)
	}

	// every argument register: 5 integer, 8 floating-point, interleaved
	wide, err := purecbslot.NewCallback(func(a int64, f0 float64, b int8, f1 float32, c uint16, f2, f3, f4, f5, f6, f7 float64,
		d int32, e uintptr) int64 {
		fs := f0 + float64(f1) + f2 + f3 + f4 + f5 + f6 + f7
		return a + int64(b) + int64(c) + int64(d) + int64(e) + int64(fs*100)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer wide.Free()
	var g func(int64, float64, int8, float32, uint16, float64, float64, float64, float64, float64, float64, int32, uintptr) int64
	purego.RegisterFunc(&g, wide.Ptr())
	want := int64(1000000000000 - 7 + 65000 - 70000 + 9 + (0.5+0.25+1+2+3+4+5+6)*100)
	if r := g(1000000000000, 0.5, -7, 0.25, 65000, 1, 2, 3, 4, 5, 6, -70000, 9); r != want {
		t.Fatalf("got %d, want %d", r, want)
	}
}

type pair struct {
	A int32
	B float32
}

type vec struct{ X, Y float64 }

func TestStructArgs(t *testing.T) {
	cb, err := purecbslot.NewCallback(func(p pair, v vec, k int64) int64 {
		return int64(p.A)*1000 + int64(p.B*100) + int64(v.X*10) + int64(v.Y) + k
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Free()
	var f func(pair, vec, int64) int64
	purego.RegisterFunc(&f, cb.Ptr())
	if r := f(pair{-4, 1.25}, vec{2.5, 7}, 100000); r != -4000+125+25+7+100000 {
		t.Fatalf("got %d", r)
	}

	// an 8-byte struct result is one integer register (its eightbyte is INTEGER)
	swap, err := purecbslot.NewCallback(func(p pair) pair { return pair{p.A + 1, p.B * 2} })
	if err != nil {
		t.Fatal(err)
	}
	defer swap.Free()
	var g func(pair) pair
	purego.RegisterFunc(&g, swap.Ptr())
	if r := g(pair{41, -1.5}); r != (pair{42, -3}) {
		t.Fatalf("got %+v", r)
	}
}

func TestRefusedShapes(t *testing.T) {
	base := baseline(t)
	for _, c := range []struct {
		name string
		fn   any
		rule string
	}{
		{"float result", func(x int64) float64 { return float64(x) }, "dispatchers return only an integer register"},
		{"float32 struct result", func() struct{ A, B float32 } { return struct{ A, B float32 }{} }, "dispatchers return only an integer register"},
		{"16-byte struct result", func() struct{ A, B int64 } { return struct{ A, B int64 }{} }, "dispatchers return only an integer register"},
		{"string argument", func(s string) {}, "not a C type"},
		{"6 integer arguments", func(a, b, c, d, e, f int) {}, "more than 5 integer"},
		{"not a func", 42, "not a func"},
	} {
		cb, err := purecbslot.NewCallback(c.fn)
		if cb != nil {
			t.Fatalf("%s: registered", c.name)
		}
		isStatus(t, c.name, err, purecbslot.ErrInvalidArg)
		if !strings.Contains(err.Error(), c.rule) {
			t.Fatalf("%s: %q does not name the rule %q", c.name, err, c.rule)
		}
	}
	if n := purecbslot.LiveCallbacks(); n != base {
		t.Fatalf("LiveCallbacks = %d after refusals, want %d", n, base)
	}
}
