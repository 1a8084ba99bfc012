// Package ctest holds the C side of the Go binding's tests and benchmarks (cgo is not allowed in _test.go
// files): calling C function pointers, and C-created threads that call callbacks or post to queues.
package ctest

/*
#cgo pkg-config: cbslot
#include <cbslot.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static uintptr_t call5(uintptr_t f, uintptr_t a, uintptr_t b, uintptr_t c, uintptr_t d, uintptr_t e) {
  return ((uintptr_t(*)(uintptr_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t))f)(a, b, c, d, e);
}
static double call_mixed(uintptr_t f, int a, double x, long b, float y) {
  return ((double (*)(int, double, long, float))f)(a, x, b, y);
}
static float call_float(uintptr_t f, float x, int n) { return ((float (*)(float, int))f)(x, n); }
static int call_cmp(uintptr_t f, const void *a, const void *b) { return ((int (*)(const void *, const void *))f)(a, b); }


// Structs by value (System V: up to 16 bytes in registers). Each call_* calls f with a known value and
// returns what f returned; the Go side checks both directions.
typedef struct { int64_t a, b; } s_ll;
typedef struct { double x, y; } s_dd;
typedef struct { int32_t a; float b; } s_if;
typedef struct { float a, b; } s_ff;
typedef struct { int64_t a; double b; } s_ld;
typedef struct { double a; int64_t b; } s_dl;
typedef struct { uint8_t a; int16_t b; int32_t c; float d, e; } s_mix;
typedef struct { int8_t a, b, c; } s_3b;
typedef struct { float a, b, c; } s_3f;
typedef struct { int32_t x, y; } point;
static s_ll call_s_ll(uintptr_t f) { return ((s_ll(*)(s_ll, int))f)((s_ll){-1, 1LL << 40}, 7); }
static s_dd call_s_dd(uintptr_t f) { return ((s_dd(*)(double, s_dd))f)(0.5, (s_dd){1.25, -3}); }
static s_if call_s_if(uintptr_t f) { return ((s_if(*)(s_if, s_if))f)((s_if){-7, 0.25f}, (s_if){9, -1.5f}); }
static s_ff call_s_ff(uintptr_t f) { return ((s_ff(*)(s_ff, float))f)((s_ff){1.5f, 2.5f}, 4.0f); }
static s_ld call_s_ld(uintptr_t f) { return ((s_ld(*)(s_ld))f)((s_ld){-42, 0.125}); }
static s_dl call_s_dl(uintptr_t f) { return ((s_dl(*)(s_dl))f)((s_dl){-0.5, 1234567890123LL}); }
static s_mix call_s_mix(uintptr_t f) {
  return ((s_mix(*)(int, s_mix, double))f)(3, (s_mix){250, -300, -70000, 1.5f, -2.5f}, 8.0);
}
static s_3b call_s_3b(uintptr_t f) { return ((s_3b(*)(s_3b, s_3b))f)((s_3b){-1, 2, -3}, (s_3b){4, -5, 6}); }
static s_3f call_s_3f(uintptr_t f) { return ((s_3f(*)(s_3f))f)((s_3f){1, 2, 3}); }
static int32_t call_point(uintptr_t f) { point p = {3, -4}; return ((int32_t(*)(point *, int8_t, _Bool))f)(&p, -2, 1); }
// four structs of 8 bytes and a long use all five integer registers (and nine of Go's)
static int64_t call_five(uintptr_t f) {
  return ((int64_t(*)(point, point, point, point, int64_t))f)((point){1, 2}, (point){3, 4}, (point){5, 6},
                                                              (point){7, 8}, 9);
}

static void sort_ints(int32_t *v, size_t n, uintptr_t cmp) {
  qsort(v, n, sizeof *v, (int (*)(const void *, const void *))cmp);
}

typedef struct job {
  uintptr_t fn;
  long calls;
  long sum;
  uint64_t sink;
  int id;
} job;

static void *call_thread(void *arg) {
  job *j = arg;
  for (long i = 0; i < j->calls; i++) j->sum += (long)((uintptr_t(*)(uintptr_t))j->fn)((uintptr_t)i);
  return NULL;
}
static long call_from_c_threads(uintptr_t fn, int threads, long calls) {
  pthread_t t[16];
  job jobs[16];
  long sum = 0;
  for (int i = 0; i < threads; i++) {
    jobs[i] = (job){fn, calls, 0, 0, i};
    pthread_create(&t[i], NULL, call_thread, &jobs[i]);
  }
  for (int i = 0; i < threads; i++) {
    pthread_join(t[i], NULL);
    sum += jobs[i].sum;
  }
  return sum;
}

typedef struct msg {
  uint32_t thread, seq;
} msg;
static void *post_thread(void *arg) {
  job *j = arg;
  for (long i = 0; i < j->calls; i++) {
    msg m = {(uint32_t)j->id, (uint32_t)i};
    while (cb_queue_post(j->sink, &m, sizeof m) == CB_ERR_CAPACITY) sched_yield();
  }
  return NULL;
}
static void *entry_thread(void *arg) {
  job *j = arg;
  for (long i = 0; i < j->calls; i++) {
    msg m = {(uint32_t)j->id, (uint32_t)i};
    while (((int (*)(char *, int))j->fn)((char *)&m, (int)sizeof m) != 1) sched_yield(); // 1: posted
  }
  return NULL;
}
static void post_from_c_threads(uint64_t sink, uintptr_t entry, int threads, long events) {
  pthread_t t[16];
  job jobs[16];
  for (int i = 0; i < threads; i++) {
    jobs[i] = (job){entry, events, 0, sink, i};
    pthread_create(&t[i], NULL, entry ? entry_thread : post_thread, &jobs[i]);
  }
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
}

// The comparison: a C thread calling into Go once per event (Go's foreign-thread callback path).
extern void ctestGoEvent(uint32_t thread, uint32_t seq);
static void *foreign_thread(void *arg) {
  job *j = arg;
  for (long i = 0; i < j->calls; i++) ctestGoEvent((uint32_t)j->id, (uint32_t)i);
  return NULL;
}
static void foreign_callbacks(long events) {
  pthread_t t;
  job j = {0, events, 0, 0, 0};
  pthread_create(&t, NULL, foreign_thread, &j);
  pthread_join(t, NULL);
}
*/
import "C"

import (
	"sync/atomic"
	"unsafe"
)

// Qsort sorts v with C's qsort and the comparator cmp (`int cmp(const void *, const void *)`).
func Qsort(v []int32, cmp uintptr) {
	if len(v) == 0 {
		return
	}
	c := (*int32)(C.malloc(C.size_t(4 * len(v))))
	defer C.free(unsafe.Pointer(c))
	cv := unsafe.Slice(c, len(v))
	copy(cv, v)
	C.sort_ints((*C.int32_t)(unsafe.Pointer(c)), C.size_t(len(v)), C.uintptr_t(cmp))
	copy(v, cv)
}

// Call5 calls a C function pointer `uintptr_t f(uintptr_t x5)`.
func Call5(f, a, b, c, d, e uintptr) uintptr {
	return uintptr(C.call5(C.uintptr_t(f), C.uintptr_t(a), C.uintptr_t(b), C.uintptr_t(c), C.uintptr_t(d), C.uintptr_t(e)))
}

// CallMixed calls `double f(int, double, long, float)`.
func CallMixed(f uintptr, a int32, x float64, b int64, y float32) float64 {
	return float64(C.call_mixed(C.uintptr_t(f), C.int(a), C.double(x), C.long(b), C.float(y)))
}

// CallFloat calls `float f(float, int)`.
func CallFloat(f uintptr, x float32, n int32) float32 {
	return float32(C.call_float(C.uintptr_t(f), C.float(x), C.int(n)))
}

// CallCmp calls `int f(const void *, const void *)` on two C ints.
func CallCmp(f uintptr, a, b int32) int32 {
	pa := (*C.int)(C.malloc(8))
	defer C.free(unsafe.Pointer(pa))
	arr := unsafe.Slice(pa, 2)
	arr[0], arr[1] = C.int(a), C.int(b)
	return int32(C.call_cmp(C.uintptr_t(f), unsafe.Pointer(&arr[0]), unsafe.Pointer(&arr[1])))
}

// CallFromCThreads calls `uintptr_t f(uintptr_t i)` for i in 0..calls from `threads` C-created threads
// and returns the sum of the results.
func CallFromCThreads(f uintptr, threads int, calls int64) int64 {
	return int64(C.call_from_c_threads(C.uintptr_t(f), C.int(threads), C.long(calls)))
}

// PostFromCThreads posts `events` messages {thread, seq} (8 bytes) per C-created thread to a sink, with
// cb_queue_post, or through a bare `int entry(char *, int)` when entry != 0.
func PostFromCThreads(sink uint64, entry uintptr, threads int, events int64) {
	C.post_from_c_threads(C.uint64_t(sink), C.uintptr_t(entry), C.int(threads), C.long(events))
}

// Struct shapes, laid out as their C twins in the C source. Each CallS* calls f with a fixed value (see
// the C source) and returns its result.
type (
	SLL struct{ A, B int64 }
	SDD struct{ X, Y float64 }
	SIF struct {
		A int32
		B float32
	}
	SFF struct{ A, B float32 }
	SLD struct {
		A int64
		B float64
	}
	SDL struct {
		A float64
		B int64
	}
	SMix struct {
		A    uint8
		B    int16
		C    int32
		D, E float32
	}
	S3B   struct{ A, B, C int8 }
	S3F   struct{ A, B, C float32 }
	Point struct{ X, Y int32 }
)

// as reads a C struct as its Go twin (same size checked).
func as[T, U any](u U) T {
	var t T
	if unsafe.Sizeof(t) != unsafe.Sizeof(u) {
		panic("ctest: a Go struct and its C twin differ in size")
	}
	return *(*T)(unsafe.Pointer(&u))
}

// CallSLL calls `s_ll f(s_ll{-1, 1<<40}, 7)`.
func CallSLL(f uintptr) SLL { return as[SLL](C.call_s_ll(C.uintptr_t(f))) }

// CallSDD calls `s_dd f(0.5, s_dd{1.25, -3})`.
func CallSDD(f uintptr) SDD { return as[SDD](C.call_s_dd(C.uintptr_t(f))) }

// CallSIF calls `s_if f(s_if{-7, 0.25}, s_if{9, -1.5})`.
func CallSIF(f uintptr) SIF { return as[SIF](C.call_s_if(C.uintptr_t(f))) }

// CallSFF calls `s_ff f(s_ff{1.5, 2.5}, 4.0f)`.
func CallSFF(f uintptr) SFF { return as[SFF](C.call_s_ff(C.uintptr_t(f))) }

// CallSLD calls `s_ld f(s_ld{-42, 0.125})`.
func CallSLD(f uintptr) SLD { return as[SLD](C.call_s_ld(C.uintptr_t(f))) }

// CallSDL calls `s_dl f(s_dl{-0.5, 1234567890123})`.
func CallSDL(f uintptr) SDL { return as[SDL](C.call_s_dl(C.uintptr_t(f))) }

// CallSMix calls `s_mix f(3, s_mix{250, -300, -70000, 1.5, -2.5}, 8.0)`.
func CallSMix(f uintptr) SMix { return as[SMix](C.call_s_mix(C.uintptr_t(f))) }

// CallS3B calls `s_3b f(s_3b{-1, 2, -3}, s_3b{4, -5, 6})`.
func CallS3B(f uintptr) S3B { return as[S3B](C.call_s_3b(C.uintptr_t(f))) }

// CallS3F calls `s_3f f(s_3f{1, 2, 3})`.
func CallS3F(f uintptr) S3F { return as[S3F](C.call_s_3f(C.uintptr_t(f))) }

// CallPoint calls `int32_t f(point *{3, -4}, int8_t -2, bool true)`.
func CallPoint(f uintptr) int32 { return int32(C.call_point(C.uintptr_t(f))) }

// CallFive calls `int64_t f(point{1,2}, point{3,4}, point{5,6}, point{7,8}, int64_t 9)`.
func CallFive(f uintptr) int64 { return int64(C.call_five(C.uintptr_t(f))) }

// ReleaseHandle releases a handle from C (cb_handle_release), as C code that retained it would.
func ReleaseHandle(h uint64) int { return int(C.cb_handle_release(C.cb_handle(h))) }

// ForeignEvents counts the events delivered by ForeignCallbacks.
var ForeignEvents int64

//export ctestGoEvent
func ctestGoEvent(thread, seq C.uint32_t) { atomic.AddInt64(&ForeignEvents, 1) }

// ForeignCallbacks makes one C-created thread call into Go once per event.
func ForeignCallbacks(events int64) { C.foreign_callbacks(C.long(events)) }
