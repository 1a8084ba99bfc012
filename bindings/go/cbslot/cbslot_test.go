package cbslot_test

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/cbslot/cbslot/bindings/go/cbslot"
	"github.com/cbslot/cbslot/bindings/go/internal/ctest"
)

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestCallbackShapes(t *testing.T) {
	sum, err := cbslot.NewCallback(func(a, b, c, d, e uintptr) uintptr { return a + 10*b + 100*c + 1000*d + 10000*e })
	must(t, err)
	defer sum.Free()
	if got := ctest.Call5(sum.Ptr(), 1, 2, 3, 4, 5); got != 54321 {
		t.Fatalf("5 ints: %d", got)
	}
	mixed, err := cbslot.NewCallback(func(a int32, x float64, b int64, y float32) float64 { return float64(a) + x + float64(b) + float64(y) })
	must(t, err)
	defer mixed.Free()
	if got := ctest.CallMixed(mixed.Ptr(), -3, 0.5, 1000, 0.25); got != 997.75 {
		t.Fatalf("mixed: %v", got)
	}
	f32, err := cbslot.NewCallback(func(x float32, n int32) float32 { return x * float32(n) })
	must(t, err)
	defer f32.Free()
	if got := ctest.CallFloat(f32.Ptr(), 1.5, -4); got != -6 {
		t.Fatalf("float32: %v", got)
	}
	// a comparator reading C memory through unsafe.Pointer, registered twice: two different pointers
	cmp := func(a, b unsafe.Pointer) int32 {
		x, y := *(*int32)(a), *(*int32)(b)
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	}
	c1, err := cbslot.NewCallback(cmp)
	must(t, err)
	c2, err := cbslot.NewCallback(cmp)
	must(t, err)
	if c1.Ptr() == c2.Ptr() {
		t.Fatal("the same func twice must give two entries")
	}
	if ctest.CallCmp(c1.Ptr(), 1, 2) != -1 || ctest.CallCmp(c2.Ptr(), 7, -7) != 1 {
		t.Fatal("comparator")
	}
	must(t, c1.Free())
	must(t, c2.Free())
	// misuse: Free twice is an error, not a crash
	err = c1.Free()
	var cerr *cbslot.Error
	if !errors.As(err, &cerr) || cerr.Status != cbslot.ErrInvalid {
		t.Fatalf("double Free: %v", err)
	}
	// unsupported funcs are refused
	for _, bad := range []interface{}{42, func(string) {}, func(a, b, c, d, e, f int) {}, func() (int, int) { return 0, 0 }, func(...int) {}} {
		if _, err := cbslot.NewCallback(bad); !errors.Is(err, cbslot.StatusError(cbslot.ErrInvalidArg)) {
			t.Fatalf("%T: %v", bad, err)
		}
	}
}

// 100k live at once, then 1M create/free cycles: far past purego's and syscall.NewCallback's 2000.
func TestManyCallbacks(t *testing.T) {
	must(t, cbslot.Barrier()) // earlier tests' frees are destroyed now
	base := cbslot.LiveCallbacks()
	const live = 100000
	cbs := make([]*cbslot.Callback, live)
	for i := range cbs {
		i := uintptr(i)
		cb, err := cbslot.NewCallback(func(x uintptr) uintptr { return x + i })
		must(t, err)
		cbs[i] = cb
	}
	runtime.GC()
	for i := 0; i < live; i += 997 {
		if got := ctest.Call5(cbs[i].Ptr(), 1, 0, 0, 0, 0); got != uintptr(i)+1 {
			t.Fatalf("callback %d: %d", i, got)
		}
	}
	for _, cb := range cbs {
		must(t, cb.Free())
	}
	cycles := 1000000
	if testing.Short() {
		cycles = 100000
	}
	f := func(x uintptr) uintptr { return x * 2 }
	for i := 0; i < cycles; i++ {
		cb, err := cbslot.NewCallback(f)
		must(t, err)
		if i%100000 == 0 && ctest.Call5(cb.Ptr(), 21, 0, 0, 0, 0) != 42 {
			t.Fatal("cycle call")
		}
		must(t, cb.Free())
	}
	must(t, cbslot.Barrier())
	if n := cbslot.LiveCallbacks(); n != base {
		t.Fatalf("%d Go funcs still held after freeing everything (base %d)", n, base)
	}
}

func TestCallsFromCThreads(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	cb, err := cbslot.NewCallback(func(i uintptr) uintptr {
		mu.Lock()
		calls++
		mu.Unlock()
		return i
	})
	must(t, err)
	const threads, per = 4, 5000
	got := ctest.CallFromCThreads(cb.Ptr(), threads, per)
	if want := int64(threads) * per * (per - 1) / 2; got != want || calls != threads*per {
		t.Fatalf("sum %d want %d, calls %d", got, want, calls)
	}
	// and from Go threads (goroutines on Go-created threads calling through cgo)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				ctest.Call5(cb.Ptr(), 1, 0, 0, 0, 0)
			}
		}()
	}
	wg.Wait()
	must(t, cb.Free())
}

// The seed-004 scenario: a Go-allocated vde_event_handler handed to vde_context_init and dropped; after
// many GCs the context's events still fire.
func TestSeed004HandlerCollected(t *testing.T) {
	loop, err := cbslot.NewLoop()
	must(t, err)
	ctx, err := cbslot.NewLoopContext(loop) // the handler struct it built in Go memory is garbage now
	must(t, err)
	for i := 0; i < 20; i++ {
		_ = make([]byte, 1<<20) // churn
		runtime.GC()
	}
	r, w, err := os.Pipe()
	must(t, err)
	defer r.Close()
	defer w.Close()
	got := make(chan string, 10)
	rfd := int(r.Fd())
	_, err = ctx.EventAdd(rfd, cbslot.EvRead, 0, func(fd int, ev int16) {
		buf := make([]byte, 16)
		n, _ := r.Read(buf)
		got <- string(buf[:n])
	})
	must(t, err)
	ticks := 0
	_, err = ctx.TimeoutAdd(2*time.Millisecond, cbslot.EvPersist, func(fd int, ev int16) {
		ticks++
		if ticks == 3 {
			w.Write([]byte("ping"))
		}
		if ticks == 6 {
			loop.Stop()
		}
	})
	must(t, err)
	runtime.LockOSThread()
	must(t, loop.Run())
	runtime.UnlockOSThread()
	if msg := <-got; msg != "ping" || ticks != 6 {
		t.Fatalf("got %q after %d ticks", msg, ticks)
	}
	must(t, ctx.Close())
	must(t, loop.Free())
}

// A VDE3 loop written in Go: its four functions are Go funcs behind NewCallback.
func TestContextWithGoHandler(t *testing.T) {
	type reg struct{ cb, arg uintptr }
	var mu sync.Mutex
	regs := map[uintptr]reg{}
	next := uintptr(0)
	deleted := 0
	add := func(cb, arg uintptr) uintptr {
		mu.Lock()
		defer mu.Unlock()
		next++
		regs[next] = reg{cb, arg}
		return next
	}
	del := func(tok uintptr) {
		mu.Lock()
		defer mu.Unlock()
		delete(regs, tok)
		deleted++
	}
	var lastTimeout time.Duration
	h := &cbslot.EventHandler{
		EventAdd: func(fd int32, events int16, timeout unsafe.Pointer, cb, arg uintptr) uintptr { return add(cb, arg) },
		EventDel: func(ev uintptr) { del(ev) },
		TimeoutAdd: func(timeout unsafe.Pointer, events int16, cb, arg uintptr) uintptr {
			lastTimeout = cbslot.TimevalDuration(timeout)
			return add(cb, arg)
		},
		TimeoutDel: func(ev uintptr) { del(ev) },
	}
	ctx, err := cbslot.NewContext(h)
	must(t, err)
	h = nil
	for i := 0; i < 10; i++ {
		runtime.GC()
	}
	fired := 0
	tok, err := ctx.TimeoutAdd(1500*time.Millisecond, cbslot.EvPersist, func(fd int, ev int16) { fired++ })
	must(t, err)
	if lastTimeout != 1500*time.Millisecond {
		t.Fatalf("timeout seen by the Go loop: %v", lastTimeout)
	}
	mu.Lock()
	var r reg
	for _, v := range regs {
		r = v
	}
	mu.Unlock()
	for i := 0; i < 3; i++ {
		cbslot.FireEvent(r.cb, -1, cbslot.EvTimeout, r.arg)
	}
	if fired != 3 {
		t.Fatalf("fired %d", fired)
	}
	must(t, ctx.TimeoutDel(tok))
	cbslot.FireEvent(r.cb, -1, cbslot.EvTimeout, r.arg) // late: reaches nothing
	if fired != 3 || deleted != 1 {
		t.Fatalf("after delete: fired %d deleted %d", fired, deleted)
	}
	if err := ctx.TimeoutDel(tok); err == nil {
		t.Fatal("double delete must fail")
	}
	must(t, ctx.Close())
}

func TestQueueFromCThreads(t *testing.T) {
	q, err := cbslot.NewQueue(4096)
	must(t, err)
	s1, err := q.NewSink()
	must(t, err)
	s2, err := q.NewSink()
	must(t, err)
	entry, err := s2.Entry(true)
	must(t, err)
	events := q.Events()
	const threads, per = 3, 50000
	done := make(chan struct{})
	go func() {
		ctest.PostFromCThreads(s1.Handle(), 0, threads, per) // cb_queue_post from C threads
		ctest.PostFromCThreads(s2.Handle(), entry, 1, per)   // a bare int entry(char *, int)
		close(done)
	}()
	next := map[*cbslot.Sink][]uint32{s1: make([]uint32, threads), s2: make([]uint32, 1)}
	total := 0
	for total < (threads+1)*per {
		e := <-events
		if len(e.Data) != 8 {
			t.Fatalf("payload %d bytes", len(e.Data))
		}
		th := uint32(e.Data[0]) | uint32(e.Data[1])<<8 | uint32(e.Data[2])<<16 | uint32(e.Data[3])<<24
		seq := uint32(e.Data[4]) | uint32(e.Data[5])<<8 | uint32(e.Data[6])<<16 | uint32(e.Data[7])<<24
		want := next[e.Sink]
		if want == nil || int(th) >= len(want) || seq != want[th] {
			t.Fatalf("out of order or unknown: sink %p thread %d seq %d", e.Sink, th, seq)
		}
		want[th]++
		total++
	}
	<-done
	posted, delivered, dropped, _, _, _ := q.Stats()
	if posted != uint64(total) || delivered != posted || dropped != 0 {
		t.Fatalf("stats posted %d delivered %d dropped %d", posted, delivered, dropped)
	}
	// pending events are delivered on Close, then the channel closes
	must(t, s1.Post([]byte("last")))
	must(t, q.Close(true))
	e, ok := <-events
	if !ok || string(e.Data) != "last" {
		t.Fatalf("close delivered %q %v", e.Data, ok)
	}
	if _, ok := <-events; ok {
		t.Fatal("channel not closed")
	}
	if err := s1.Post([]byte("x")); err == nil {
		t.Fatal("post after close must fail")
	}
}

func TestHandle(t *testing.T) {
	destroyed := 0
	h, err := cbslot.NewHandleWithDestroy("hello", func(v interface{}) {
		if v.(string) == "hello" {
			destroyed++
		}
	})
	must(t, err)
	if h.Value().(string) != "hello" {
		t.Fatal("value")
	}
	must(t, h.Retain())
	must(t, h.Delete())
	if destroyed != 0 {
		t.Fatal("destroyed early")
	}
	must(t, h.Delete())
	if destroyed != 1 {
		t.Fatal("destroy did not run once")
	}
	if _, err := h.Lookup(); !errors.Is(err, cbslot.StatusError(cbslot.ErrInvalid)) {
		t.Fatalf("stale lookup: %v", err)
	}
	if err := h.Delete(); err == nil || destroyed != 1 {
		t.Fatal("double delete must fail and destroy nothing")
	}
	for _, g := range []cbslot.Handle{0, 1, ^cbslot.Handle(0)} {
		if _, err := g.Lookup(); err == nil {
			t.Fatalf("garbage %x accepted", uint64(g))
		}
	}
	defer func() {
		if recover() == nil {
			t.Fatal("Value on a dead handle must panic like cgo.Handle")
		}
	}()
	h.Value()
}
