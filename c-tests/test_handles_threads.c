/* Readers (get / retain+get+release) race with writers (new / release) on other threads.
 * Checked: a get under a held reference never returns a destroyed object; any successful get returns
 * the object that handle was issued for; every object is destroyed exactly once. */
#include "check.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>

enum { CELLS = 8, WRITERS = 2, READERS = 2, OBJECTS_PER_WRITER = 300000, READ_ROUNDS = 1000000 };

typedef struct object {
  _Atomic cb_handle handle; /* the handle issued for it */
  atomic_int alive;         /* 1 until destroy runs */
  atomic_int destroyed;     /* times destroy ran */
} object;

static _Atomic cb_handle cells[CELLS]; /* each published handle carries one reference owned by its cell */
static object *objects;                /* never freed during the run, so stale pointers can be inspected */
static atomic_long failures, held_checks, stale_seen;

static void destroy_object(void *p) {
  object *o = p;
  atomic_store(&o->alive, 0);
  atomic_fetch_add(&o->destroyed, 1);
}

static void fail(const char *what) {
  fprintf(stderr, "FAIL: %s\n", what);
  atomic_fetch_add(&failures, 1);
}

static void *writer(void *arg) {
  long w = (long)(intptr_t)arg;
  uint64_t seed = 0x1234 + w;
  for (long i = 0; i < OBJECTS_PER_WRITER; i++) {
    object *o = &objects[w * OBJECTS_PER_WRITER + i];
    atomic_store(&o->alive, 1);
    cb_handle h;
    if (cb_handle_new(o, destroy_object, &h) != CB_OK) fail("cb_handle_new");
    atomic_store(&o->handle, h);
    cb_handle old = atomic_exchange(&cells[check_rand(&seed) % CELLS], h);
    if (old && cb_handle_release(old) != CB_OK) fail("release of a cell's own reference");
  }
  return NULL;
}

static void *reader(void *arg) {
  uint64_t seed = 0x9876 + (uint64_t)(intptr_t)arg;
  for (long i = 0; i < READ_ROUNDS; i++) {
    cb_handle h = atomic_load(&cells[check_rand(&seed) % CELLS]);
    if (!h) continue;
    void *p = NULL;
    if (i & 1) {
      /* plain get: if it succeeds it must be the object issued under h (maybe destroyed right after) */
      if (cb_handle_get(h, &p) == CB_OK && atomic_load(&((object *)p)->handle) != h) fail("get: wrong object");
      continue;
    }
    if (cb_handle_retain(h) != CB_OK) { /* lost the race with the last release: fine, and counted */
      atomic_fetch_add(&stale_seen, 1);
      continue;
    }
    if (cb_handle_get(h, &p) != CB_OK) fail("get under a held reference failed");
    object *o = p;
    if (atomic_load(&o->handle) != h) fail("get under reference: wrong object");
    for (int k = 0; k < 8; k++) {
      if (!atomic_load(&o->alive)) fail("object destroyed while a reference was held");
      sched_yield();
    }
    atomic_fetch_add(&held_checks, 1);
    if (cb_handle_release(h) != CB_OK) fail("release of the reader's reference");
  }
  return NULL;
}

int main(void) {
  long total = (long)WRITERS * OBJECTS_PER_WRITER;
  objects = calloc((size_t)total, sizeof *objects);
  CHECK(objects != NULL);
  pthread_t w[WRITERS], r[READERS];
  for (long i = 0; i < READERS; i++) CHECK(pthread_create(&r[i], NULL, reader, (void *)(intptr_t)i) == 0);
  for (long i = 0; i < WRITERS; i++) CHECK(pthread_create(&w[i], NULL, writer, (void *)(intptr_t)i) == 0);
  for (int i = 0; i < WRITERS; i++) CHECK(pthread_join(w[i], NULL) == 0);
  for (int i = 0; i < READERS; i++) CHECK(pthread_join(r[i], NULL) == 0);
  for (int i = 0; i < CELLS; i++) {
    cb_handle h = atomic_exchange(&cells[i], 0);
    if (h) CHECK_STATUS(CB_OK, cb_handle_release(h));
  }
  CHECK(atomic_load(&failures) == 0);
  for (long i = 0; i < total; i++) CHECK(atomic_load(&objects[i].destroyed) == 1);
  printf("objects %ld, reads under a held reference %ld, retains refused as stale %ld\n", total,
         atomic_load(&held_checks), atomic_load(&stale_seen));
  free(objects);
  CHECK_DONE("test_handles_threads");
}
