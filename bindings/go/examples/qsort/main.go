// The README's Go example (built and run by CTest): C's qsort with a Go comparator that carries context,
// through a bare C function pointer from cbslot.NewCallback.
package main

/*
#include <stdint.h>
#include <stdlib.h>
static void sort_ints(int *v, size_t n, uintptr_t cmp) { qsort(v, n, sizeof(int), (int (*)(const void *, const void *))cmp); }
*/
import "C"

import (
	"fmt"
	"os"
	"unsafe"

	"github.com/cbslot/cbslot/bindings/go/cbslot"
)

func main() {
	descending := true
	comparisons := 0
	cmp, err := cbslot.NewCallback(func(a, b unsafe.Pointer) int32 {
		comparisons++
		x, y := *(*C.int)(a), *(*C.int)(b)
		if descending {
			x, y = y, x
		}
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	})
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	defer cmp.Free() // unlimited and freeable, unlike purego's 2000 permanent slots

	v := (*[5]C.int)(C.malloc(5 * C.sizeof_int))
	defer C.free(unsafe.Pointer(v))
	*v = [5]C.int{5, 3, 9, 1, 7}
	C.sort_ints(&v[0], 5, C.uintptr_t(cmp.Ptr()))
	fmt.Println(*v, "after", comparisons, "comparisons")
	if v[0] != 9 || v[4] != 1 {
		os.Exit(1)
	}
}
