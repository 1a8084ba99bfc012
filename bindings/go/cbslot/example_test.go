package cbslot_test

import (
	"fmt"
	"time"

	"github.com/cbslot/cbslot/bindings/go/cbslot"
	"github.com/cbslot/cbslot/bindings/go/internal/ctest"
)

// A Go comparator for C's qsort, which takes a bare function pointer and no context: the closure
// carries the context. (ctest.Qsort stands for C code: it calls qsort with the pointer.)
func ExampleNewCallback() {
	descending := true
	cmp, err := cbslot.NewCallback(func(a, b *int32) int32 {
		if descending {
			a, b = b, a
		}
		return *a - *b
	})
	if err != nil {
		panic(err)
	}
	defer cmp.Free()
	v := []int32{5, 3, 9, 1, 7}
	ctest.Qsort(v, cmp.Ptr())
	fmt.Println(v)
	// Output: [9 7 5 3 1]
}

// A handle C code can hold, retain and release instead of a Go pointer; the destroy func runs once,
// when the last reference goes, whichever side drops it.
func ExampleNewHandleWithDestroy() {
	h, err := cbslot.NewHandleWithDestroy("session 7", func(v interface{}) { fmt.Println("destroyed", v) })
	if err != nil {
		panic(err)
	}
	_ = h.Retain() // as C would with cb_handle_retain
	v, _ := h.Lookup()
	fmt.Println(v)
	_ = h.Delete()
	_ = h.Delete() // the last reference
	_, err = h.Lookup()
	fmt.Println(err != nil)
	// Output:
	// session 7
	// destroyed session 7
	// true
}

// A VDE3 context on cbslot's built-in loop: a timer that fires three times, then stops the loop.
func ExampleNewLoopContext() {
	loop, err := cbslot.NewLoop()
	if err != nil {
		panic(err)
	}
	defer loop.Free()
	ctx, err := cbslot.NewLoopContext(loop)
	if err != nil {
		panic(err)
	}
	defer ctx.Close()
	ticks := 0
	_, err = ctx.TimeoutAdd(time.Millisecond, cbslot.EvPersist, func(fd int, events int16) {
		ticks++
		if ticks == 3 {
			loop.Stop()
		}
	})
	if err != nil {
		panic(err)
	}
	if err := loop.Run(); err != nil {
		panic(err)
	}
	fmt.Println("ticks:", ticks)
	// Output: ticks: 3
}

// Events from C threads, taken into Go in batches: C posts copies (cb_queue_post with the sink's
// handle), Go drains them with one call per batch. (ctest.PostFromCThreads stands for C producers.)
func ExampleQueue_DrainBatch() {
	q, err := cbslot.NewQueue(1024)
	if err != nil {
		panic(err)
	}
	defer q.Close(false)
	sink, _ := q.NewSink()
	ctest.PostFromCThreads(sink.Handle(), 0, 2, 100) // 2 C threads, 100 events of 8 bytes each
	total, bytes := 0, 0
	for total < 200 {
		n, err := q.DrainBatch(64, func(batch []cbslot.Event) {
			for _, e := range batch {
				bytes += len(e.Data) // e.Data is valid only during the call: copy what you keep
			}
		})
		if err != nil {
			panic(err)
		}
		total += n
	}
	fmt.Println("events:", total, "bytes:", bytes)
	// Output: events: 200 bytes: 1600
}
