/* Concurrency stress: threads mixing register / call / unregister (also from inside the callback) /
 * unregister_wait, handle retain/get/release, queue posts and drains with sinks going away, and VDE3
 * context event add/del on the built-in loop, while a sampler scans /proc/self/maps for W+X pages.
 *
 * Checked for every object: destroy exactly once, never while a call is inside fn, no call enters fn
 * after destroy, no call runs another registration (rounds of 1500 registrations stay below the 4096-slot
 * quarantine, and all threads meet between rounds, so no entry can legitimately be reused under a caller),
 * every posted event is delivered or counted as dropped, no W+X mapping ever.
 * Runs CBSLOT_STRESS_SECONDS seconds (default 10). */
#define _GNU_SOURCE
#include "check.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

enum { PER_ROUND = 1500, CELLS = 16, CALLERS = 2, QCAP = 256, SINKS = 8 };

typedef struct obj {
  long id;
  cb_handle handle;
  cb_fn entry;
  atomic_int in_call, destroyed, claimed, self_unregister;
} obj;

static obj *objs;
static _Atomic(obj *) cells[CELLS];
static atomic_int round_over, all_done;
static pthread_barrier_t round_start, round_end;
static atomic_long failures, calls, stale_calls, self_unregs, registrations, unregs, waits;
static atomic_long handle_ops, handle_destroys, handle_creates, wx_samples, ctx_events, ctx_fired;
static atomic_long q_posted, q_delivered, q_rejected;

static void fail(const char *what, long id) {
  fprintf(stderr, "FAIL: %s (%ld)\n", what, id);
  atomic_fetch_add(&failures, 1);
}

/* ---- callbacks ---- */
static void destroy_obj(void *ud) {
  obj *o = ud;
  if (atomic_load(&o->in_call)) fail("destroy while a call is inside fn", o->id);
  if (atomic_fetch_add(&o->destroyed, 1)) fail("destroy twice", o->id);
}
static int claim(obj *o) {
  int z = 0;
  return atomic_compare_exchange_strong(&o->claimed, &z, 1);
}
static long body(void *ud, long expected) {
  obj *o = ud;
  if (o->id != expected) fail("a call ran another registration", expected);
  if (atomic_load(&o->destroyed)) fail("call after destroy", o->id);
  atomic_fetch_add(&o->in_call, 1);
  if ((expected & 7) == 0) sched_yield();
  if (atomic_load(&o->self_unregister) && claim(o)) {
    if (cb_unregister(o->handle) != CB_OK) fail("self-unregister", o->id);
    atomic_fetch_add(&self_unregs, 1);
  }
  atomic_fetch_sub(&o->in_call, 1);
  return expected + 1;
}
static void on_stale(cb_fn e, void *a) {
  (void)e;
  (void)a;
  atomic_fetch_add(&stale_calls, 1);
}

static void *caller(void *arg) {
  uint64_t seed = 77 + (uint64_t)(intptr_t)arg;
  for (;;) {
    pthread_barrier_wait(&round_start);
    if (atomic_load(&all_done)) break; /* decided before the barrier: every caller sees the same value */
    while (!atomic_load(&round_over)) {
      obj *o = atomic_load(&cells[check_rand(&seed) % CELLS]);
      if (!o) continue;
      long r = ((long (*)(long))o->entry)(o->id);
      if (r != 0 && r != o->id + 1) fail("wrong result", o->id);
      atomic_fetch_add(&calls, 1);
    }
    pthread_barrier_wait(&round_end);
  }
  return NULL;
}

static void retire(obj *o, int wait) {
  if (!claim(o)) return;
  if ((wait ? cb_unregister_wait(o->handle) : cb_unregister(o->handle)) != CB_OK) fail("unregister", o->id);
  atomic_fetch_add(wait ? &waits : &unregs, 1);
}

/* ---- handles ---- */
typedef struct hobj {
  atomic_int alive, destroyed;
} hobj;
static void destroy_hobj(void *p) {
  hobj *h = p;
  atomic_store(&h->alive, 0);
  if (atomic_fetch_add(&h->destroyed, 1)) fail("handle destroyed twice", 0);
  atomic_fetch_add(&handle_destroys, 1);
}
static void *handle_churn(void *arg) {
  (void)arg;
  uint64_t seed = 5;
  enum { N = 64 };
  static hobj pool[1 << 16];
  cb_handle hs[N] = {0};
  long used = 0;
  while (!atomic_load(&all_done)) {
    int i = (int)(check_rand(&seed) % N);
    if (!hs[i] && used < (1 << 16)) {
      hobj *h = &pool[used++];
      atomic_store(&h->alive, 1);
      if (cb_handle_new(h, destroy_hobj, &hs[i]) != CB_OK) fail("handle_new", i);
      atomic_fetch_add(&handle_creates, 1);
    } else if (hs[i]) {
      void *p;
      if (cb_handle_retain(hs[i]) != CB_OK || cb_handle_get(hs[i], &p) != CB_OK) fail("retain/get", i);
      if (!atomic_load(&((hobj *)p)->alive)) fail("handle object destroyed under a reference", i);
      if (cb_handle_release(hs[i]) != CB_OK) fail("release", i);
      if (check_rand(&seed) % 4 == 0) {
        if (cb_handle_release(hs[i]) != CB_OK) fail("last release", i);
        if (cb_handle_release(hs[i]) != CB_ERR_INVALID_HANDLE) fail("double release accepted", i);
        hs[i] = 0;
      }
      atomic_fetch_add(&handle_ops, 1);
    }
  }
  for (int i = 0; i < N; i++)
    if (hs[i] && cb_handle_release(hs[i]) != CB_OK) fail("final release", i);
  for (long k = 0; k < used; k++)
    if (atomic_load(&pool[k].destroyed) != 1) fail("handle not destroyed exactly once", k);
  return NULL;
}

/* ---- queue ---- */
static cb_queue *q;
typedef struct sinkrec {
  cb_handle h;
  atomic_long delivered;
  atomic_int destroyed;
} sinkrec;
static sinkrec sinks[SINKS];
static void on_event(void *ud, const void *data, size_t len) {
  sinkrec *s = ud;
  if (len != sizeof(long) || atomic_load(&s->destroyed)) fail("bad delivery", len);
  (void)data;
  atomic_fetch_add(&s->delivered, 1);
  atomic_fetch_add(&q_delivered, 1);
}
static void sink_gone(void *ud) {
  if (atomic_fetch_add(&((sinkrec *)ud)->destroyed, 1)) fail("sink destroyed twice", 0);
}
static void *producer(void *arg) {
  uint64_t seed = 99 + (uint64_t)(intptr_t)arg;
  while (!atomic_load(&all_done)) {
    sinkrec *s = &sinks[check_rand(&seed) % SINKS];
    long v = (long)check_rand(&seed);
    cb_status st = cb_queue_post(s->h, &v, sizeof v);
    if (st == CB_OK)
      atomic_fetch_add(&q_posted, 1);
    else if (st == CB_ERR_CAPACITY || st == CB_ERR_INVALID_HANDLE)
      atomic_fetch_add(&q_rejected, 1);
    else
      fail("post", st);
  }
  return NULL;
}

/* ---- context on the built-in loop, driven by one thread ---- */
static void on_timer(int fd, short what, void *arg) {
  (void)fd;
  (void)what;
  (void)arg;
  atomic_fetch_add(&ctx_fired, 1);
}
static void *context_thread(void *arg) {
  (void)arg;
  cb_loop *lp;
  vde_event_handler h;
  vde_context *ctx;
  if (cb_loop_new(&lp) || cb_loop_handler(lp, &h) || vde_context_new(&ctx) || vde_context_init(ctx, &h, NULL)) {
    fail("context setup", 0);
    return NULL;
  }
  uint64_t seed = 11;
  void *toks[32] = {0};
  struct timeval tv = {0, 200};
  while (!atomic_load(&all_done)) {
    int i = (int)(check_rand(&seed) % 32);
    if (toks[i]) {
      vde_context_timeout_del(ctx, toks[i]); /* may already be finished (one-shot): errno, no crash */
      toks[i] = NULL;
    } else {
      toks[i] = vde_context_timeout_add(ctx, &tv, (check_rand(&seed) & 1) ? VDE_EV_PERSIST : 0, on_timer, NULL);
      if (!toks[i]) fail("timeout_add", i);
      atomic_fetch_add(&ctx_events, 1);
    }
    cb_loop_run_once(lp, 0, NULL);
  }
  vde_context_delete(ctx);
  if (cb_loop_free(lp) != CB_OK) fail("loop free", 0);
  return NULL;
}

/* ---- W+X sampler ---- */
static void *sampler(void *arg) {
  (void)arg;
  while (!atomic_load(&all_done)) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
      char perms[5] = "";
      if (sscanf(line, "%*x-%*x %4s", perms) == 1 && strchr(perms, 'w') && strchr(perms, 'x'))
        fail("W+X mapping", 0);
    }
    if (f) fclose(f);
    atomic_fetch_add(&wx_samples, 1);
    usleep(20000);
  }
  return NULL;
}

int main(void) {
  const char *env = getenv("CBSLOT_STRESS_SECONDS");
  double seconds = env ? atof(env) : 10;
  cb_set_stale_handler(on_stale, NULL);
  CHECK_STATUS(CB_OK, cb_queue_new(QCAP, &q));
  for (int i = 0; i < SINKS; i++) CHECK_STATUS(CB_OK, cb_queue_sink_register(q, on_event, &sinks[i], sink_gone, &sinks[i].h));
  pthread_barrier_init(&round_start, NULL, CALLERS + 1);
  pthread_barrier_init(&round_end, NULL, CALLERS + 1);
  pthread_t callers[CALLERS], others[4];
  for (long i = 0; i < CALLERS; i++) CHECK(pthread_create(&callers[i], NULL, caller, (void *)i) == 0);
  CHECK(pthread_create(&others[0], NULL, handle_churn, NULL) == 0);
  CHECK(pthread_create(&others[1], NULL, producer, (void *)1) == 0);
  CHECK(pthread_create(&others[2], NULL, context_thread, NULL) == 0);
  CHECK(pthread_create(&others[3], NULL, sampler, NULL) == 0);

  struct timespec t0, now;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  uint64_t seed = 3;
  long rounds = 0, next_id = 0;
  obj *all[4096];
  int nrounds_kept = 0;
  for (;;) {
    clock_gettime(CLOCK_MONOTONIC, &now);
    int last = (now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9 >= seconds;
    if (last) atomic_store(&all_done, 1);
    atomic_store(&round_over, 0);
    pthread_barrier_wait(&round_start);
    if (last) break;
    objs = calloc(PER_ROUND, sizeof *objs);
    CHECK(objs != NULL);
    for (int i = 0; i < PER_ROUND; i++) {
      obj *o = &objs[i];
      o->id = next_id++;
      atomic_store(&o->self_unregister, (int)(check_rand(&seed) % 8 == 0));
      CHECK_STATUS(CB_OK, cb_register((cb_fn)body, o, destroy_obj, &o->handle, &o->entry));
      atomic_fetch_add(&registrations, 1);
      obj *old = atomic_exchange(&cells[check_rand(&seed) % CELLS], o);
      if (old) retire(old, (int)(check_rand(&seed) % 8 == 0));
      if (i % 32 == 0) sched_yield();
      /* the queue's consumer lives here too: drain, and now and then replace a sink */
      if (i % 16 == 0) CHECK_STATUS(CB_OK, cb_queue_drain(q, 64, 0, NULL));
      if (i % 500 == 0) {
        sinkrec *s = &sinks[check_rand(&seed) % SINKS];
        cb_handle oldh = s->h;
        CHECK_STATUS(CB_OK, cb_queue_sink_unregister(oldh)); /* its queued events get dropped */
        CHECK_STATUS(CB_OK, cb_queue_drain(q, QCAP, 0, NULL)); /* its destroy has run once this returns */
        atomic_store(&s->destroyed, 0);
        CHECK_STATUS(CB_OK, cb_queue_sink_register(q, on_event, s, sink_gone, &s->h));
      }
    }
    atomic_store(&round_over, 1);
    pthread_barrier_wait(&round_end); /* no caller holds an entry from this round any more */
    for (int c = 0; c < CELLS; c++) {
      obj *old = atomic_exchange(&cells[c], NULL);
      if (old) retire(old, 0);
    }
    CHECK_STATUS(CB_OK, cb_barrier());
    for (int i = 0; i < PER_ROUND; i++) CHECK(atomic_load(&objs[i].destroyed) == 1);
    if (nrounds_kept < 4096) all[nrounds_kept++] = objs; /* kept: late stale calls must find them */
    rounds++;
  }
  for (int i = 0; i < 4; i++) CHECK(pthread_join(others[i], NULL) == 0);
  for (int i = 0; i < CALLERS; i++) CHECK(pthread_join(callers[i], NULL) == 0);
  /* the queue: everything posted was delivered or dropped */
  CHECK_STATUS(CB_OK, cb_queue_close(q, 1));
  cb_queue_stats qs;
  CHECK_STATUS(CB_OK, cb_queue_get_stats(q, &qs));
  CHECK(qs.posted == (uint64_t)atomic_load(&q_posted));
  CHECK(qs.delivered + qs.dropped == qs.posted);
  CHECK(qs.delivered == (uint64_t)atomic_load(&q_delivered));
  for (int i = 0; i < SINKS; i++) CHECK(atomic_load(&sinks[i].destroyed) == 1);
  CHECK_STATUS(CB_OK, cb_queue_free(q));
  CHECK(atomic_load(&failures) == 0);
  CHECK_STATUS(CB_OK, cb_barrier()); /* the loop's own entries, unregistered by cb_loop_free */
  cb_stats st;
  CHECK_STATUS(CB_OK, cb_get_stats(&st));
  CHECK(st.pending_destroy == 0);
  printf("stress %.0f s, %ld rounds: %ld registrations, %ld calls (%ld stale, caught), %ld self-unregisters, "
         "%ld unregisters + %ld unregister_waits; handles: %ld created, %ld ops, %ld destroyed; queue: %llu posted, "
         "%llu delivered, %llu dropped, %ld rejected; context: %ld timeouts added, %ld fired; %ld W+X scans, 0 "
         "found; 0 failures\n",
         seconds, rounds, atomic_load(&registrations), atomic_load(&calls), atomic_load(&stale_calls),
         atomic_load(&self_unregs), atomic_load(&unregs), atomic_load(&waits), atomic_load(&handle_creates),
         atomic_load(&handle_ops), atomic_load(&handle_destroys), (unsigned long long)qs.posted,
         (unsigned long long)qs.delivered, (unsigned long long)qs.dropped, atomic_load(&q_rejected),
         atomic_load(&ctx_events), atomic_load(&ctx_fired), atomic_load(&wx_samples));
  for (int i = 0; i < nrounds_kept; i++) free(all[i]);
  CHECK_DONE("test_stress");
}
