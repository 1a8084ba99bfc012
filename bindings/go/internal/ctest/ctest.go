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

// ForeignEvents counts the events delivered by ForeignCallbacks.
var ForeignEvents int64

//export ctestGoEvent
func ctestGoEvent(thread, seq C.uint32_t) { atomic.AddInt64(&ForeignEvents, 1) }

// ForeignCallbacks makes one C-created thread call into Go once per event.
func ForeignCallbacks(events int64) { C.foreign_callbacks(C.long(events)) }
