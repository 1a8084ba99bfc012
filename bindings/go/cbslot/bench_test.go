package cbslot_test

import (
	"runtime/cgo"
	"sync/atomic"
	"testing"

	"github.com/cbslot/cbslot/bindings/go/cbslot"
	"github.com/cbslot/cbslot/bindings/go/internal/ctest"
)

// NewCallback + Free (the destroy notification releasing the Go func included, amortized).
func BenchmarkNewCallbackFree(b *testing.B) {
	f := func(x uintptr) uintptr { return x }
	for i := 0; i < b.N; i++ {
		cb, err := cbslot.NewCallback(f)
		if err != nil {
			b.Fatal(err)
		}
		cb.Free()
	}
	cbslot.Barrier()
}

// The cgo.Handle anchor: NewHandle + Delete.
func BenchmarkCgoHandleNewDelete(b *testing.B) {
	for i := 0; i < b.N; i++ {
		h := cgo.NewHandle(i)
		h.Delete()
	}
}

// cbslot's Handle: NewHandle + Delete.
func BenchmarkHandleNewDelete(b *testing.B) {
	for i := 0; i < b.N; i++ {
		h := cbslot.NewHandle(i)
		h.Delete()
	}
}

// A callback called from C on a Go thread: Go -> C (cgo) -> entry -> Go func, per call.
func BenchmarkCallbackCallFromC(b *testing.B) {
	cb, _ := cbslot.NewCallback(func(a, b2, c, d, e uintptr) uintptr { return a + e })
	defer cb.Free()
	for i := 0; i < b.N; i++ {
		ctest.Call5(cb.Ptr(), uintptr(i), 0, 0, 0, 1)
	}
}

// A typed callback (int64 in, int64 out): the shapes that went through reflection before.
func BenchmarkCallbackTypedFromC(b *testing.B) {
	cb, _ := cbslot.NewCallback(func(x int64) int64 { return x + 1 })
	defer cb.Free()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		ctest.Call5(cb.Ptr(), uintptr(i), 0, 0, 0, 0)
	}
}

// One C-created thread delivering events into Go: through the queue (posts, a goroutine drains batches
// into a channel) ...
func BenchmarkCThreadEventsViaQueue(b *testing.B) {
	q, _ := cbslot.NewQueue(65536)
	s, _ := q.NewSink()
	events := q.Events()
	b.ResetTimer()
	go ctest.PostFromCThreads(s.Handle(), 0, 1, int64(b.N))
	for i := 0; i < b.N; i++ {
		<-events
	}
	b.StopTimer()
	q.Close(false)
}

// ... and as a direct foreign-thread C -> Go callback per event (what the queue replaces).
func BenchmarkCThreadEventsViaForeignCallback(b *testing.B) {
	atomic.StoreInt64(&ctest.ForeignEvents, 0)
	ctest.ForeignCallbacks(int64(b.N))
	if atomic.LoadInt64(&ctest.ForeignEvents) != int64(b.N) {
		b.Fatal("lost events")
	}
}

// The batch API end to end: one C thread posts while Go takes batches with DrainBatch.
func BenchmarkCThreadEventsViaDrainBatch(b *testing.B) {
	q, _ := cbslot.NewQueue(65536)
	s, _ := q.NewSink()
	b.ReportAllocs()
	b.ResetTimer()
	go ctest.PostFromCThreads(s.Handle(), 0, 1, int64(b.N))
	sum := 0
	for got := 0; got < b.N; {
		n, _ := q.DrainBatch(4096, func(evs []cbslot.Event) {
			for _, e := range evs {
				sum += int(e.Data[4])
			}
		})
		got += n
	}
	b.StopTimer()
	q.Close(false)
}

// What DrainBatch costs Go per event: the queue is filled by C threads with the clock stopped, then
// drained (the other side of a foreign-thread callback's cost, which the C thread pays inside Go).
func BenchmarkDrainBatchPerEvent(b *testing.B) {
	const fill = 65536
	q, _ := cbslot.NewQueue(fill)
	s, _ := q.NewSink()
	b.ReportAllocs()
	sum := 0
	for done := 0; done < b.N; {
		n := b.N - done
		if n > fill {
			n = fill
		}
		b.StopTimer()
		ctest.PostFromCThreads(s.Handle(), 0, 1, int64(n))
		b.StartTimer()
		for got := 0; got < n; {
			k, _ := q.DrainBatch(4096, func(evs []cbslot.Event) {
				for _, e := range evs {
					sum += int(e.Data[4])
				}
			})
			got += k
		}
		done += n
	}
	b.StopTimer()
	q.Close(false)
}

// The queue without the per-event channel: the consumer drains batches itself (the floor of the queue path).
func BenchmarkCThreadEventsViaQueueBatches(b *testing.B) {
	q, _ := cbslot.NewQueue(65536)
	s, _ := q.NewSink()
	b.ResetTimer()
	go ctest.PostFromCThreads(s.Handle(), 0, 1, int64(b.N))
	for got := 0; got < b.N; {
		evs, _ := q.Drain(256)
		got += len(evs)
	}
	b.StopTimer()
	q.Close(false)
}
