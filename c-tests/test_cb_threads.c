/* Unregister racing calls on other threads. Caller threads keep calling entries published in a few
 * cells while the main thread replaces and unregisters them (cb_unregister or cb_unregister_wait), and
 * some callbacks unregister themselves. Checked for every object: destroy runs exactly once, never while
 * a call is inside fn, and no call enters fn after destroy; a stale call never runs another registration
 * (fewer registrations than the 4096-slot quarantine, so no slot is reused here). */
#include "check.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

enum { OBJECTS = 3000, CELLS = 8, CALLERS = 3 };

typedef struct obj {
  long id;
  cb_handle handle;
  cb_fn entry;
  atomic_int in_call, destroyed, unregister_claimed, self_unregister;
} obj;

static obj objs[OBJECTS];
static _Atomic(obj *) cells[CELLS];
static atomic_int stop;
static atomic_long failures, calls, stale_calls, self_unregisters;

static void fail(const char *what, long id) {
  fprintf(stderr, "FAIL: %s (object %ld)\n", what, id);
  atomic_fetch_add(&failures, 1);
}

static void destroy_obj(void *ud) {
  obj *o = ud;
  if (atomic_load(&o->in_call)) fail("destroy ran while a call was inside fn", o->id);
  if (atomic_fetch_add(&o->destroyed, 1) != 0) fail("destroy ran twice", o->id);
}

/* claims the right to unregister o: exactly one party does it */
static int claim(obj *o) {
  int expected = 0;
  return atomic_compare_exchange_strong(&o->unregister_claimed, &expected, 1);
}

static long callback(void *ud, long expected_id) {
  obj *o = ud;
  if (o->id != expected_id) fail("a call ran another registration", expected_id);
  if (atomic_load(&o->destroyed)) fail("call entered fn after destroy", o->id);
  atomic_fetch_add(&o->in_call, 1);
  static _Thread_local unsigned n;
  if (++n % 4 == 0) sched_yield(); /* stay inside now and then, so unregisters meet calls in flight */
  if (atomic_load(&o->self_unregister) && claim(o)) {
    if (cb_unregister(o->handle) != CB_OK) fail("self-unregister", o->id);
    atomic_fetch_add(&self_unregisters, 1);
  }
  if (atomic_load(&o->destroyed)) fail("destroy ran during the call", o->id);
  atomic_fetch_sub(&o->in_call, 1);
  return o->id + 1;
}

static void on_stale(cb_fn entry, void *arg) {
  (void)entry;
  (void)arg;
  atomic_fetch_add(&stale_calls, 1);
}

static void *caller(void *arg) {
  uint64_t seed = 1000 + (uint64_t)(intptr_t)arg;
  while (!atomic_load(&stop)) {
    obj *o = atomic_load(&cells[check_rand(&seed) % CELLS]);
    if (!o) continue;
    long r = ((long (*)(long))o->entry)(o->id);
    if (r != 0 && r != o->id + 1) fail("wrong result", o->id); /* 0: a stale call */
    atomic_fetch_add(&calls, 1);
  }
  return NULL;
}

static void retire(obj *o, int wait) {
  if (!claim(o)) return; /* it unregistered itself */
  CHECK_STATUS(CB_OK, wait ? cb_unregister_wait(o->handle) : cb_unregister(o->handle));
  if (wait) CHECK(atomic_load(&o->destroyed) == 1);
}

int main(void) {
  check_require(CB_FEATURE_ENTRIES);
  cb_set_stale_handler(on_stale, NULL);
  pthread_t t[CALLERS];
  for (long i = 0; i < CALLERS; i++) CHECK(pthread_create(&t[i], NULL, caller, (void *)(intptr_t)i) == 0);
  uint64_t seed = 5;
  for (long i = 0; i < OBJECTS; i++) {
    obj *o = &objs[i];
    o->id = i;
    atomic_store(&o->self_unregister, i % 10 == 3);
    CHECK_STATUS(CB_OK, cb_register((cb_fn)callback, o, destroy_obj, &o->handle, &o->entry));
    /* let the callers make calls, then swap and unregister at once, so unregisters meet calls in flight */
    long target = atomic_load(&calls) + 16;
    for (int spin = 0; spin < 1000 && atomic_load(&calls) < target; spin++) sched_yield();
    obj *old = atomic_exchange(&cells[check_rand(&seed) % CELLS], o);
    if (old) retire(old, i % 4 == 0);
  }
  for (int c = 0; c < CELLS; c++) {
    obj *old = atomic_exchange(&cells[c], NULL);
    if (old) retire(old, 0);
  }
  atomic_store(&stop, 1);
  for (int i = 0; i < CALLERS; i++) CHECK(pthread_join(t[i], NULL) == 0);
  CHECK_STATUS(CB_OK, cb_barrier());
  CHECK(atomic_load(&failures) == 0);
  for (int i = 0; i < OBJECTS; i++) CHECK(atomic_load(&objs[i].destroyed) == 1);
  cb_stats s;
  CHECK_STATUS(CB_OK, cb_get_stats(&s));
  CHECK(s.live == 0 && s.pending_destroy == 0 && s.stale_calls == (uint64_t)atomic_load(&stale_calls));
  printf("objects %d, calls %ld (stale %ld), self-unregisters %ld\n", OBJECTS, atomic_load(&calls),
         atomic_load(&stale_calls), atomic_load(&self_unregisters));
  CHECK_DONE("test_cb_threads");
}
