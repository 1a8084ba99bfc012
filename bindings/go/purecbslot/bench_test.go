package purecbslot_test

import (
	"sync"
	"testing"

	"github.com/cbslot/cbslot/bindings/go/purecbslot"
	"github.com/ebitengine/purego"
)

func inc(x int64) int64 { return x + 1 }

// callFromC calls entry like C code would, b.N times, checking the result.
func callFromC(b *testing.B, entry uintptr) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if r, _, _ := purego.SyscallN(entry, uintptr(i)); r != uintptr(i)+1 {
			b.Fatalf("got %d for %d", r, i)
		}
	}
}

// A call through a cbslot entry: trampoline, purego's arity-1 dispatcher, the plan.
func BenchmarkCallFromC(b *testing.B) {
	cb, err := purecbslot.NewCallback(inc)
	if err != nil {
		b.Fatal(err)
	}
	defer cb.Free()
	callFromC(b, cb.Ptr())
}

var plain struct {
	once sync.Once
	ptr  uintptr
}

// The same func as a plain purego callback (made once: its slot is never freed).
func BenchmarkCallFromCPlainPurego(b *testing.B) {
	plain.once.Do(func() { plain.ptr = purego.NewCallback(inc) })
	callFromC(b, plain.ptr)
}

var plain2 struct {
	once sync.Once
	ptr  uintptr
}

// A plain purego callback of our dispatcher's shape (key, x), called with the key as C's userdata
// would be: what purego itself costs per call of a one-argument callback through cbslot.
func BenchmarkCallFromCPlainPuregoKeyArg(b *testing.B) {
	plain2.once.Do(func() { plain2.ptr = purego.NewCallback(func(key, x uintptr) uintptr { return x + key }) })
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if r, _, _ := purego.SyscallN(plain2.ptr, 1, uintptr(i)); r != uintptr(i)+1 {
			b.Fatalf("got %d for %d", r, i)
		}
	}
}

func BenchmarkNewCallbackFree(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		cb, err := purecbslot.NewCallback(inc)
		if err != nil {
			b.Fatal(err)
		}
		if err := cb.Free(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := purecbslot.Barrier(); err != nil {
		b.Fatal(err)
	}
}
