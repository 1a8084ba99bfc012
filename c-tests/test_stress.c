/* Concurrency stress: threads mixing register / call / unregister (also from inside the callback) /
 * unregister_wait, handle retain/get/release, queue posts and drains with sinks going away, and VDE3
 * context event add/del on the built-in loop, while a sampler scans /proc/self/maps for W+X pages.
 *
 * Checked for every object: destroy exactly once, never while a call is inside fn, no call enters fn
 * after destroy, no call runs another registration (rounds of 1500 registrations stay below the 4096-slot
 * quarantine, and all threads meet between rounds, so no entry can legitimately be reused under a caller),
 * every posted event is delivered or counted as dropped, no W+X mapping ever.
 *
 * Cross-thread lifetime modes, running alongside for the same time:
 *  xl  timeouts added and deleted from two other threads while cb_loop_run fires them on its own thread:
 *      a one-shot runs at most once, no callback starts after its timeout_del returned, a refused del
 *      means the one-shot had fired, every one-shot fires once or is deleted.
 *  sk  sinks that unregister themselves and each other mid-delivery, producers posting to random sinks,
 *      a thread re-registering: destroy exactly once, never during the sink's call, no delivery after it,
 *      posted == delivered + dropped + pending after the final close.
 *  cl  rounds on a fresh 4-event queue: post, post_wait(-1), drain(-1) and register released by a barrier
 *      with close(random deliver) + free: every call returns with an allowed status, each registered
 *      sink's destroy has run once when free returns, none for refused registers, and calls on the freed
 *      queue return errors.
 *  fh  rounds on a context over a fake host whose adds yield, sleep, fail or fire synchronously, with a
 *      host thread firing tokens (also late), while the context is finished or deleted: every host token
 *      comes back exactly once, no user callback after fini (or del) returned.
 * Runs CBSLOT_STRESS_SECONDS seconds (default 10). */
#define _GNU_SOURCE
#include "check.h"

#include <errno.h>
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
      toks[i] = vde_context_timeout_add(ctx, (check_rand(&seed) & 1) ? VDE_EV_PERSIST : 0, &tv, on_timer, NULL);
      if (!toks[i]) fail("timeout_add", i);
      atomic_fetch_add(&ctx_events, 1);
    }
    cb_loop_run_once(lp, 0, NULL);
  }
  vde_context_delete(ctx);
  if (cb_loop_free(lp) != CB_OK) fail("loop free", 0);
  return NULL;
}

/* ==== helpers shared by the cross-thread modes ==== */
static _Thread_local uint64_t tl_seed;
static uint64_t trand(void) { /* for code running on whichever thread (sinks, callbacks, host functions) */
  if (!tl_seed) tl_seed = ((uint64_t)(uintptr_t)&tl_seed * 0x9E3779B97F4A7C15ULL) | 1;
  return check_rand(&tl_seed);
}
static void spin(uint64_t n) {
  for (volatile uint64_t i = 0; i < n; i++) {
  }
}
/* a short random pause of one of several kinds, so racing calls meet at different points */
static void jitter(uint64_t r) {
  switch (r % 4) {
  case 0: break;
  case 1: sched_yield(); break;
  case 2: spin((r >> 8) % 20000); break;
  default: usleep((useconds_t)((r >> 8) % 200)); break;
  }
}

/* ==== xl: timeouts added and deleted from other threads while the built-in loop fires them ==== */
enum { XL_SLOTS = 64, XL_POOL = 1 << 16, XL_ADDERS = 2, XL_LIMBO = XL_POOL / XL_ADDERS };
typedef struct xev {
  void *tok;
  int persistent;
  long epoch; /* keepalive count when it was deleted (see xl_take) */
  atomic_int fired, deleted, del_ok;
} xev;
static xev *xl_pool;
static atomic_long xl_next;
static _Atomic(xev *) xl_slots[XL_SLOTS];
static cb_loop *xl_loop;
static vde_context *xl_ctx;
static atomic_int xl_stop;
static cb_status xl_run_status = CB_ERR_PANIC;
static atomic_long xl_added, xl_added_persistent, xl_fired, xl_dels, xl_dels_after_fire, xl_keepalive, xl_reused;

static void xl_on_timeout(int fd, short what, void *arg) {
  xev *e = arg;
  if (fd != -1 || what != VDE_EV_TIMEOUT) fail("xl: timeout callback with a wrong fd or events", what);
  if (atomic_load(&e->deleted)) fail("xl: callback started after its vde_context_timeout_del returned", e - xl_pool);
  int n = atomic_fetch_add(&e->fired, 1);
  if (!e->persistent && n) fail("xl: one-shot timeout fired twice", e - xl_pool);
  atomic_fetch_add(&xl_fired, 1);
}
static void xl_on_keepalive(int fd, short what, void *arg) {
  (void)fd;
  (void)what;
  (void)arg;
  atomic_fetch_add(&xl_keepalive, 1);
}
static void *xl_loop_thread(void *arg) {
  (void)arg;
  xl_run_status = cb_loop_run(xl_loop);
  return NULL;
}
static void xl_delete(xev *e) {
  errno = 0;
  vde_context_timeout_del(xl_ctx, e->tok);
  int err = errno;
  atomic_store(&e->deleted, 1); /* from here on its callback must not start */
  e->epoch = atomic_load(&xl_keepalive);
  if (err == 0) {
    atomic_store(&e->del_ok, 1);
    atomic_fetch_add(&xl_dels, 1);
  } else if (err != EINVAL) {
    fail("xl: timeout_del set an unexpected errno", err);
  } else if (e->persistent) {
    fail("xl: timeout_del refused a live persistent timeout", e - xl_pool);
  } else if (!atomic_load(&e->fired)) {
    fail("xl: timeout_del refused a one-shot that never fired", e - xl_pool); /* it ends only by firing */
  } else {
    atomic_fetch_add(&xl_dels_after_fire, 1);
  }
}
/* A record for a new timeout: a fresh one, or one deleted long enough ago. All callbacks run on the loop
 * thread, one at a time, and the keepalive is one of them: once it has run twice after a delete returned,
 * no callback of the deleted timeout can still be on its way, so the record may be reused. */
typedef struct xl_limbo {
  xev *ring[XL_LIMBO];
  long head, tail;
} xl_limbo;
static xev *xl_take(xl_limbo *l) {
  if (l->head != l->tail && atomic_load(&xl_keepalive) >= l->ring[l->head % XL_LIMBO]->epoch + 2) {
    xev *e = l->ring[l->head++ % XL_LIMBO];
    atomic_fetch_add(&xl_reused, 1);
    return e;
  }
  long k = atomic_fetch_add(&xl_next, 1);
  return k < XL_POOL ? &xl_pool[k] : NULL;
}
static void xl_retire(xl_limbo *l, xev *e) {
  xl_delete(e);
  if (l->tail - l->head < XL_LIMBO) l->ring[l->tail++ % XL_LIMBO] = e; /* else: not reused */
}
static void *xl_adder(void *arg) {
  uint64_t seed = 1234 + (uint64_t)(intptr_t)arg;
  static xl_limbo limbos[XL_ADDERS];
  xl_limbo *l = &limbos[(intptr_t)arg];
  while (!atomic_load(&xl_stop)) {
    uint64_t r = check_rand(&seed);
    if (r % 16 == 0) usleep(50); /* leave the loop thread time to fire */
    int i = (int)((r >> 3) % XL_SLOTS);
    xev *old = atomic_exchange(&xl_slots[i], NULL); /* whoever takes it out of the slot deletes it */
    if (old) {
      xl_retire(l, old);
      continue;
    }
    xev *e = xl_take(l);
    if (!e) { /* all records in use: wait for the loop */
      usleep(1000);
      continue;
    }
    e->tok = NULL;
    e->epoch = 0;
    atomic_store(&e->fired, 0);
    atomic_store(&e->deleted, 0);
    atomic_store(&e->del_ok, 0);
    e->persistent = (r >> 9) % 4 == 0;
    struct timeval tv = {0, 0};
    if (e->persistent)
      tv.tv_usec = 50 + (long)((r >> 16) % 1000);
    else if ((r >> 11) % 3 == 1)
      tv.tv_usec = (long)((r >> 16) % 200);
    else if ((r >> 11) % 3 == 2)
      tv.tv_usec = 200 + (long)((r >> 16) % 1800);
    e->tok = vde_context_timeout_add(xl_ctx, e->persistent ? VDE_EV_PERSIST : 0, &tv, xl_on_timeout, e);
    if (!e->tok) {
      fail("xl: timeout_add", errno);
      continue;
    }
    atomic_fetch_add(e->persistent ? &xl_added_persistent : &xl_added, 1);
    old = atomic_exchange(&xl_slots[i], e);
    if (old) xl_retire(l, old);
  }
  return NULL;
}

static void xl_setup(pthread_t *loop_thread, pthread_t *adders) {
  vde_event_handler h;
  xl_pool = calloc(XL_POOL, sizeof *xl_pool);
  CHECK(xl_pool != NULL);
  CHECK_STATUS(CB_OK, cb_loop_new(&xl_loop));
  CHECK_STATUS(CB_OK, cb_loop_handler(xl_loop, &h));
  CHECK(vde_context_new(&xl_ctx) == 0 && vde_context_init(xl_ctx, &h, NULL) == 0);
  struct timeval tv = {0, 5000}; /* keeps cb_loop_run going until cb_loop_stop; its count is the grace epoch */
  CHECK(vde_context_timeout_add(xl_ctx, VDE_EV_PERSIST, &tv, xl_on_keepalive, NULL) != NULL);
  CHECK(pthread_create(loop_thread, NULL, xl_loop_thread, NULL) == 0);
  for (long i = 0; i < XL_ADDERS; i++) CHECK(pthread_create(&adders[i], NULL, xl_adder, (void *)i) == 0);
}

static void xl_finish(pthread_t loop_thread, pthread_t *adders) {
  atomic_store(&xl_stop, 1);
  for (int i = 0; i < XL_ADDERS; i++) CHECK(pthread_join(adders[i], NULL) == 0);
  /* deleted timeouts were checked by xl_delete; the one-shots left in the slots fire by themselves (2 ms at
   * most): give them up to 3 s */
  long unfired = 0;
  for (int tries = 0; tries < 3000; tries++) {
    unfired = 0;
    for (int i = 0; i < XL_SLOTS; i++) {
      xev *e = atomic_load(&xl_slots[i]);
      if (e && !e->persistent && atomic_load(&e->fired) != 1) unfired++;
    }
    if (!unfired) break;
    usleep(1000);
  }
  if (unfired) fail("xl: one-shot timeouts never fired (nor were deleted)", unfired);
  CHECK_STATUS(CB_OK, cb_loop_stop(xl_loop)); /* the keepalive and live persistent timeouts still hold it */
  CHECK(pthread_join(loop_thread, NULL) == 0);
  CHECK_STATUS(CB_OK, xl_run_status);
  errno = 0;
  vde_context_delete(xl_ctx); /* ends the live persistent timeouts (and the keepalive) */
  CHECK(errno == 0);
  size_t left = 1;
  CHECK_STATUS(CB_OK, cb_loop_pending(xl_loop, &left));
  CHECK(left == 0); /* every host token went back to the loop */
  CHECK_STATUS(CB_OK, cb_loop_free(xl_loop));
  free(xl_pool);
}

/* ==== sk: sinks unregistering themselves and each other mid-delivery ==== */
enum { SK_SLOTS = 6, SK_POOL = 1 << 16, SK_PRODUCERS = 2, SK_QCAP = 64 };
typedef struct skrec {
  cb_handle h;
  atomic_int in_call, destroyed, registered;
} skrec;
static skrec *sk_pool;
static atomic_long sk_next;
static _Atomic(skrec *) sk_slot[SK_SLOTS];
static _Atomic(cb_handle) sk_h[SK_SLOTS];
static cb_queue *sk_q;
static atomic_int sk_stop, sk_closed;
static atomic_long sk_posted, sk_rejected, sk_delivered, sk_self_unregs, sk_other_unregs, sk_regs, sk_destroys;

static void sk_on_event(void *ud, const void *data, size_t len) {
  skrec *s = ud;
  if (atomic_load(&s->destroyed)) fail("sk: delivery after the sink's destroy", s - sk_pool);
  atomic_fetch_add(&s->in_call, 1);
  cb_handle to;
  if (len != sizeof to) {
    fail("sk: wrong payload length", (long)len);
  } else {
    memcpy(&to, data, sizeof to);
    if (to != s->h) fail("sk: event delivered to another sink than it was posted to", s - sk_pool);
  }
  atomic_fetch_add(&sk_delivered, 1);
  uint64_t r = trand() % 64;
  if (r == 0) {
    cb_status st = cb_queue_sink_unregister(s->h); /* nobody else can have unregistered it during its delivery */
    if (st != CB_OK) fail("sk: a sink could not unregister itself mid-delivery", st);
    atomic_fetch_add(&sk_self_unregs, 1);
  } else if (r == 1) {
    cb_status st = cb_queue_sink_unregister(atomic_load(&sk_h[trand() % SK_SLOTS]));
    if (st == CB_OK)
      atomic_fetch_add(&sk_other_unregs, 1);
    else if (st != CB_ERR_INVALID_HANDLE)
      fail("sk: unregister of another sink", st);
  }
  atomic_fetch_sub(&s->in_call, 1);
}
static void sk_gone(void *ud) {
  skrec *s = ud;
  if (atomic_load(&s->in_call)) fail("sk: destroy while the sink's function runs", s - sk_pool);
  if (atomic_fetch_add(&s->destroyed, 1)) fail("sk: sink destroyed twice", s - sk_pool);
  atomic_fetch_add(&sk_destroys, 1);
}
static void *sk_producer(void *arg) {
  uint64_t seed = 4242 + (uint64_t)(intptr_t)arg;
  while (!atomic_load(&sk_stop)) {
    cb_handle h = atomic_load(&sk_h[check_rand(&seed) % SK_SLOTS]);
    cb_status st = cb_queue_post(h, &h, sizeof h);
    if (st == CB_OK)
      atomic_fetch_add(&sk_posted, 1);
    else if (st == CB_ERR_CAPACITY || st == CB_ERR_INVALID_HANDLE)
      atomic_fetch_add(&sk_rejected, 1);
    else
      fail("sk: post", st);
    if (check_rand(&seed) % 16 == 0) sched_yield();
  }
  return NULL;
}
static void *sk_registrar(void *arg) {
  (void)arg;
  while (!atomic_load(&sk_stop)) {
    for (int i = 0; i < SK_SLOTS; i++) {
      skrec *s = atomic_load(&sk_slot[i]);
      if (s && !atomic_load(&s->destroyed)) continue;
      long k = atomic_fetch_add(&sk_next, 1);
      if (k >= SK_POOL) break;
      skrec *n = &sk_pool[k];
      cb_handle h;
      cb_status st = cb_queue_sink_register(sk_q, sk_on_event, n, sk_gone, &h);
      if (st != CB_OK) {
        fail("sk: register", st);
        continue;
      }
      n->h = h;
      atomic_store(&n->registered, 1);
      atomic_store(&sk_slot[i], n);
      atomic_store(&sk_h[i], h);
      atomic_fetch_add(&sk_regs, 1);
    }
    usleep(20);
  }
  return NULL;
}
static void *sk_consumer(void *arg) {
  (void)arg;
  while (!atomic_load(&sk_closed)) {
    size_t n;
    cb_status st = cb_queue_drain(sk_q, 16, -1, &n); /* woken by the final close */
    if (st != CB_OK) fail("sk: drain", st);
  }
  return NULL;
}
static void sk_setup(pthread_t *threads) {
  sk_pool = calloc(SK_POOL, sizeof *sk_pool);
  CHECK(sk_pool != NULL);
  CHECK_STATUS(CB_OK, cb_queue_new(SK_QCAP, &sk_q));
  CHECK(pthread_create(&threads[0], NULL, sk_consumer, NULL) == 0);
  CHECK(pthread_create(&threads[1], NULL, sk_registrar, NULL) == 0);
  for (long i = 0; i < SK_PRODUCERS; i++) CHECK(pthread_create(&threads[2 + i], NULL, sk_producer, (void *)i) == 0);
}
static cb_queue_stats sk_finish(pthread_t *threads, uint64_t *seed) {
  atomic_store(&sk_stop, 1);
  for (int i = 1; i < 2 + SK_PRODUCERS; i++) CHECK(pthread_join(threads[i], NULL) == 0);
  /* the consumer may be blocked in drain(-1): close wakes it, delivering or dropping what is pending */
  CHECK_STATUS(CB_OK, cb_queue_close(sk_q, (int)(check_rand(seed) & 1)));
  atomic_store(&sk_closed, 1);
  CHECK(pthread_join(threads[0], NULL) == 0);
  cb_queue_stats qs;
  CHECK_STATUS(CB_OK, cb_queue_get_stats(sk_q, &qs));
  CHECK(qs.pending == 0);
  CHECK(qs.posted == qs.delivered + qs.dropped + qs.pending);
  CHECK(qs.posted == (uint64_t)atomic_load(&sk_posted));
  CHECK(qs.delivered == (uint64_t)atomic_load(&sk_delivered));
  long used = atomic_load(&sk_next) < SK_POOL ? atomic_load(&sk_next) : SK_POOL;
  for (long k = 0; k < used; k++)
    if (atomic_load(&sk_pool[k].destroyed) != atomic_load(&sk_pool[k].registered))
      fail("sk: sink not destroyed exactly once", k);
  cb_handle h = atomic_load(&sk_h[0]);
  CHECK_STATUS(CB_OK, cb_queue_free(sk_q));
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_queue_post(h, &h, sizeof h));
  CHECK_STATUS(CB_ERR_INVALID_ARG, cb_queue_drain(sk_q, 1, 0, NULL));
  free(sk_pool);
  return qs;
}

/* ==== cl: close racing posts, waits, drains and registers, one fresh queue a round ==== */
enum { CL_WORKERS = 4, CL_RECS = 64, CL_QCAP = 4 };
enum { CL_POST, CL_WAIT, CL_DRAIN, CL_REGISTER };
typedef struct clrec {
  cb_handle h;
  atomic_int reg_ok, reg_failed, in_call, destroyed, unreg_called, unreg_returned;
} clrec;
static clrec cl_recs[CL_RECS];
static atomic_int cl_nrecs, cl_npub, cl_freed, cl_last;
static int cl_pub[CL_RECS]; /* indices of registered records, published by one writer at a time */
static cb_queue *cl_q;
static pthread_barrier_t cl_start, cl_end;
static atomic_long cl_rounds, cl_posts, cl_waits, cl_drained, cl_regs, cl_regs_refused, cl_unregs, cl_after_free,
    cl_delivered, cl_round_delivered;

static void cl_on_event(void *ud, const void *data, size_t len) {
  clrec *r = ud;
  (void)data;
  if (atomic_load(&r->destroyed)) fail("cl: delivery after the sink's destroy", r - cl_recs);
  atomic_fetch_add(&r->in_call, 1);
  if (len != sizeof(long)) fail("cl: wrong payload length", (long)len);
  atomic_fetch_add(&cl_round_delivered, 1);
  atomic_fetch_sub(&r->in_call, 1);
}
static void cl_gone(void *ud) {
  clrec *r = ud;
  if (atomic_load(&r->in_call)) fail("cl: destroy while the sink's function runs", r - cl_recs);
  if (atomic_fetch_add(&r->destroyed, 1)) fail("cl: sink destroyed twice", r - cl_recs);
}
static cb_handle cl_pick(uint64_t *seed) {
  int n = atomic_load(&cl_npub);
  return cl_recs[cl_pub[check_rand(seed) % (uint64_t)n]].h;
}
/* one call of the worker's kind; after_free: the queue is gone, so it must fail */
static void cl_step(int role, uint64_t *seed, int after_free) {
  long v = (long)check_rand(seed);
  cb_status st;
  switch (role) {
  case CL_POST:
    st = cb_queue_post(cl_pick(seed), &v, sizeof v);
    if (st == CB_OK && !after_free)
      atomic_fetch_add(&cl_posts, 1);
    else if (!(st == CB_ERR_CLOSED || st == CB_ERR_INVALID_HANDLE || (st == CB_ERR_CAPACITY && !after_free)))
      fail(after_free ? "cl: post on a freed queue" : "cl: post", st);
    break;
  case CL_WAIT:
    st = cb_queue_post_wait(cl_pick(seed), &v, sizeof v, -1);
    if (st == CB_OK && !after_free)
      atomic_fetch_add(&cl_waits, 1);
    else if (!(st == CB_ERR_CLOSED || st == CB_ERR_INVALID_HANDLE))
      fail(after_free ? "cl: post_wait on a freed queue" : "cl: post_wait", st);
    break;
  case CL_DRAIN: {
    size_t n = 0;
    st = cb_queue_drain(cl_q, 1 + check_rand(seed) % 4, -1, &n);
    if (st == CB_OK && !after_free)
      atomic_fetch_add(&cl_drained, (long)n);
    else if (st != CB_ERR_INVALID_ARG)
      fail(after_free ? "cl: drain on a freed queue" : "cl: drain", st);
    break;
  }
  default: {
    int npub = atomic_load(&cl_npub);
    if (check_rand(seed) % 4 == 0) { /* unregister one of the round's sinks (at most once each) */
      clrec *r = &cl_recs[cl_pub[check_rand(seed) % (uint64_t)npub]];
      if (atomic_load(&r->unreg_called)) break;
      atomic_store(&r->unreg_called, 1);
      st = cb_queue_sink_unregister(r->h);
      atomic_store(&r->unreg_returned, 1);
      if (st == CB_OK && !after_free)
        atomic_fetch_add(&cl_unregs, 1);
      else if (st != CB_ERR_INVALID_HANDLE)
        fail(after_free ? "cl: sink_unregister on a freed queue" : "cl: sink_unregister", st);
      break;
    }
    int k = atomic_fetch_add(&cl_nrecs, 1);
    if (k >= CL_RECS) {
      sched_yield();
      break;
    }
    clrec *r = &cl_recs[k];
    cb_handle h;
    st = cb_queue_sink_register(cl_q, cl_on_event, r, cl_gone, &h);
    if (st == CB_OK) {
      r->h = h;
      atomic_store(&r->reg_ok, 1);
      cl_pub[npub] = k;
      atomic_store(&cl_npub, npub + 1);
      atomic_fetch_add(&cl_regs, 1);
      if (after_free) fail("cl: sink_register on a freed queue succeeded", k);
    } else if (st == CB_ERR_CLOSED || st == CB_ERR_INVALID_ARG) {
      atomic_store(&r->reg_failed, 1);
      atomic_fetch_add(&cl_regs_refused, 1);
      if (after_free && st != CB_ERR_INVALID_ARG) fail("cl: sink_register on a freed queue", st);
    } else {
      fail("cl: sink_register", st);
    }
  }
  }
}
static void *cl_worker(void *arg) {
  int role = (int)(intptr_t)arg;
  uint64_t seed = 555 + (uint64_t)role;
  for (;;) {
    pthread_barrier_wait(&cl_start);
    if (atomic_load(&cl_last)) break;
    while (!atomic_load(&cl_freed)) cl_step(role, &seed, 0);
    for (int i = 0; i < 3; i++) cl_step(role, &seed, 1);
    pthread_barrier_wait(&cl_end);
  }
  return NULL;
}
static void *cl_coordinator(void *arg) {
  (void)arg;
  uint64_t seed = 777;
  int snap[CL_RECS];
  for (;;) {
    for (int k = 0; k < CL_RECS; k++) {
      clrec *r = &cl_recs[k];
      r->h = 0;
      atomic_store(&r->reg_ok, 0);
      atomic_store(&r->reg_failed, 0);
      atomic_store(&r->in_call, 0);
      atomic_store(&r->destroyed, 0);
      atomic_store(&r->unreg_called, 0);
      atomic_store(&r->unreg_returned, 0);
    }
    atomic_store(&cl_round_delivered, 0);
    atomic_store(&cl_freed, 0);
    CHECK_STATUS(CB_OK, cb_queue_new(CL_QCAP, &cl_q));
    for (int k = 0; k < 2; k++) { /* two sinks to post to from the start */
      CHECK_STATUS(CB_OK, cb_queue_sink_register(cl_q, cl_on_event, &cl_recs[k], cl_gone, &cl_recs[k].h));
      atomic_store(&cl_recs[k].reg_ok, 1);
      cl_pub[k] = k;
    }
    atomic_store(&cl_nrecs, 2);
    atomic_store(&cl_npub, 2);
    int last = atomic_load(&all_done);
    atomic_store(&cl_last, last);
    pthread_barrier_wait(&cl_start);
    if (last) {
      CHECK_STATUS(CB_OK, cb_queue_free(cl_q));
      break;
    }
    cb_queue *q = cl_q;
    jitter(check_rand(&seed));
    CHECK_STATUS(CB_OK, cb_queue_close(q, (int)(check_rand(&seed) & 1)));
    cb_queue_stats qs;
    CHECK_STATUS(CB_OK, cb_queue_get_stats(q, &qs));
    if (qs.pending != 0 || qs.posted != qs.delivered + qs.dropped) fail("cl: stats after close", (long)qs.pending);
    if (qs.delivered != (uint64_t)atomic_load(&cl_round_delivered)) fail("cl: deliveries miscounted", (long)qs.delivered);
    jitter(check_rand(&seed));
    if (check_rand(&seed) % 8 == 0) CHECK_STATUS(CB_ERR_CLOSED, cb_queue_close(q, 0));
    CHECK_STATUS(CB_OK, cb_queue_free(q));
    /* every sink registered is ended by now: by the close, or by an unregister that has returned */
    for (int k = 0; k < CL_RECS; k++) {
      int called = atomic_load(&cl_recs[k].unreg_called), returned = atomic_load(&cl_recs[k].unreg_returned);
      snap[k] = called && !returned ? -1 : atomic_load(&cl_recs[k].destroyed);
    }
    atomic_store(&cl_freed, 1);
    atomic_fetch_add(&cl_delivered, (long)qs.delivered);
    CHECK_STATUS(CB_ERR_INVALID_ARG, cb_queue_close(q, 0));
    CHECK_STATUS(CB_ERR_INVALID_ARG, cb_queue_free(q));
    CHECK_STATUS(CB_ERR_INVALID_ARG, cb_queue_get_stats(q, &qs));
    int fd;
    CHECK_STATUS(CB_ERR_INVALID_ARG, cb_queue_fd(q, &fd));
    atomic_fetch_add(&cl_after_free, 4 + 3 * CL_WORKERS);
    pthread_barrier_wait(&cl_end);
    int n = atomic_load(&cl_nrecs) < CL_RECS ? atomic_load(&cl_nrecs) : CL_RECS;
    for (int k = 0; k < n; k++) {
      clrec *r = &cl_recs[k];
      if (atomic_load(&r->reg_ok)) {
        if (snap[k] == 0) fail("cl: a registered sink's destroy had not run when cb_queue_free returned", k);
        if (atomic_load(&r->destroyed) != 1) fail("cl: a registered sink was not destroyed exactly once", k);
      } else if (atomic_load(&r->destroyed)) {
        fail("cl: destroy ran for a refused register", k);
      }
    }
    atomic_fetch_add(&cl_rounds, 1);
  }
  return NULL;
}

/* ==== fh: contexts finished while their (fake) host's add runs ==== */
enum { FH_ADDERS = 2, FH_EVS = 512, FH_TOKS = 1024, FH_MINE = 64 };
typedef struct htok { /* a host token (malloc'd): given back once, freed when the round is over */
  vde_event_cb cb;
  void *arg;
  int fd;
  short events;
  atomic_int given_back, host_fired;
} htok;
typedef struct fhev { /* the user's argument of one event */
  void *tok;
  int persistent, is_fd;
  long round;
  atomic_int fired, deleted;
} fhev;
static _Atomic(htok *) fh_toks[FH_TOKS];
static atomic_int fh_ntoks, fh_nevs, fh_fini_done, fh_last;
static fhev fh_evs[FH_EVS];
static vde_context *fh_ctx;
static atomic_long fh_round, fh_outstanding;
static pthread_barrier_t fh_start, fh_end;
static atomic_long fh_rounds, fh_finis, fh_deletes, fh_tokens, fh_adds, fh_add_refused, fh_host_failed, fh_sync_fires,
    fh_host_fires, fh_late_fires, fh_cbs, fh_dels;

static void fh_on_event(int fd, short what, void *arg) {
  fhev *e = arg;
  (void)fd;
  (void)what;
  if (e->round != atomic_load(&fh_round)) fail("fh: callback of an earlier round's context", e->round);
  if (atomic_load(&fh_fini_done)) fail("fh: callback after its context's fini/delete returned", e - fh_evs);
  if (atomic_load(&e->deleted)) fail("fh: callback started after its del returned", e - fh_evs);
  int n = atomic_fetch_add(&e->fired, 1);
  if (!e->persistent && n) fail("fh: one-shot fired twice", e - fh_evs);
  atomic_fetch_add(&fh_cbs, 1);
}
/* the host fires a token: a one-shot at most once, a persistent one any number of times */
static int fh_host_fire(htok *t) {
  if (!(t->events & VDE_EV_PERSIST)) {
    int z = 0;
    if (!atomic_compare_exchange_strong(&t->host_fired, &z, 1)) return 0;
  }
  t->cb(t->fd, t->fd < 0 ? VDE_EV_TIMEOUT : VDE_EV_READ, t->arg);
  return 1;
}
static void *fh_host_add(int fd, short events, vde_event_cb cb, void *arg) {
  uint64_t r = trand();
  if (r % 64 == 0) { /* the host refuses */
    atomic_fetch_add(&fh_host_failed, 1);
    errno = EAGAIN;
    return NULL;
  }
  int i = atomic_fetch_add(&fh_ntoks, 1);
  if (i >= FH_TOKS) {
    atomic_fetch_add(&fh_host_failed, 1);
    errno = EAGAIN;
    return NULL;
  }
  htok *t = calloc(1, sizeof *t);
  CHECK(t != NULL);
  t->cb = cb;
  t->arg = arg;
  t->fd = fd;
  t->events = events;
  atomic_fetch_add(&fh_outstanding, 1);
  atomic_fetch_add(&fh_tokens, 1);
  atomic_store(&fh_toks[i], t);
  switch ((r >> 8) % 8) { /* meanwhile, the context may be finished on another thread */
  case 0: sched_yield(); break;
  case 1: usleep((useconds_t)((r >> 16) % 150)); break;
  case 2:
  case 3: atomic_fetch_add(&fh_sync_fires, fh_host_fire(t)); break; /* fires before its token is known */
  case 4:
    atomic_fetch_add(&fh_sync_fires, fh_host_fire(t));
    usleep((useconds_t)((r >> 16) % 100));
    break;
  case 5:
    usleep((useconds_t)((r >> 16) % 100));
    atomic_fetch_add(&fh_sync_fires, fh_host_fire(t));
    break;
  default: break;
  }
  return t;
}
static void *fh_event_add(int fd, short events, const struct timeval *tv, vde_event_cb cb, void *arg) {
  (void)tv;
  return fh_host_add(fd, events, cb, arg);
}
static void *fh_timeout_add(const struct timeval *tv, short events, vde_event_cb cb, void *arg) {
  (void)tv;
  return fh_host_add(-1, events, cb, arg);
}
static void fh_host_del(void *tok) {
  htok *t = tok;
  if (atomic_fetch_add(&t->given_back, 1)) fail("fh: a host token was given back twice", 0);
  atomic_fetch_sub(&fh_outstanding, 1);
}
static void fh_delete(fhev *e) {
  errno = 0;
  if (e->is_fd)
    vde_context_event_del(fh_ctx, e->tok);
  else
    vde_context_timeout_del(fh_ctx, e->tok);
  int err = errno;
  atomic_store(&e->deleted, 1);
  if (err == 0)
    atomic_fetch_add(&fh_dels, 1);
  else if (err != EINVAL) /* EINVAL: a one-shot that fired, or the context was finished meanwhile */
    fail("fh: del set an unexpected errno", err);
}
static void *fh_adder(void *arg) {
  (void)arg;
  for (;;) {
    pthread_barrier_wait(&fh_start);
    if (atomic_load(&fh_last)) break;
    long round = atomic_load(&fh_round);
    fhev *mine[FH_MINE];
    int nmine = 0;
    while (!atomic_load(&fh_fini_done)) {
      uint64_t r = trand();
      if (nmine && r % 3 == 0) {
        int j = (int)((r >> 8) % (uint64_t)nmine);
        fh_delete(mine[j]);
        mine[j] = mine[--nmine];
        continue;
      }
      int k = atomic_fetch_add(&fh_nevs, 1);
      if (k >= FH_EVS) {
        sched_yield();
        continue;
      }
      fhev *e = &fh_evs[k];
      e->persistent = (r >> 8) & 1;
      e->is_fd = (r >> 9) % 4 == 0;
      e->round = round;
      short persist = e->persistent ? VDE_EV_PERSIST : 0;
      struct timeval tv = {0, 1000};
      errno = 0;
      void *tok = e->is_fd ? vde_context_event_add(fh_ctx, 1, VDE_EV_READ | persist, NULL, fh_on_event, e)
                           : vde_context_timeout_add(fh_ctx, persist, &tv, fh_on_event, e);
      if (!tok) {
        if (errno == EINVAL)
          atomic_fetch_add(&fh_add_refused, 1); /* the context was finished */
        else if (errno != EAGAIN)             /* the host refused */
          fail("fh: add set an unexpected errno", errno);
        continue;
      }
      e->tok = tok;
      atomic_fetch_add(&fh_adds, 1);
      if (nmine < FH_MINE) mine[nmine++] = e;
    }
    /* the context's fini has returned: adds are refused, deletes find nothing */
    static fhev dummy; /* never called */
    struct timeval tv = {0, 0};
    errno = 0;
    if (vde_context_timeout_add(fh_ctx, 0, &tv, fh_on_event, &dummy) != NULL || errno != EINVAL)
      fail("fh: timeout_add after fini", errno);
    for (int j = 0; j < nmine; j++) {
      errno = 0;
      if (mine[j]->is_fd)
        vde_context_event_del(fh_ctx, mine[j]->tok);
      else
        vde_context_timeout_del(fh_ctx, mine[j]->tok);
      if (errno != EINVAL) fail("fh: del after fini", errno);
    }
    pthread_barrier_wait(&fh_end);
  }
  return NULL;
}
static void *fh_firer(void *arg) { /* the host's own thread, firing whatever tokens it has (late ones too) */
  (void)arg;
  for (;;) {
    pthread_barrier_wait(&fh_start);
    if (atomic_load(&fh_last)) break;
    while (!atomic_load(&fh_fini_done)) {
      int n = atomic_load(&fh_ntoks);
      n = n < FH_TOKS ? n : FH_TOKS;
      uint64_t r = trand();
      htok *t = n ? atomic_load(&fh_toks[r % (uint64_t)n]) : NULL;
      if (t) atomic_fetch_add(&fh_host_fires, fh_host_fire(t));
      if (!t || (r >> 32) % 8 == 0) sched_yield();
    }
    int n = atomic_load(&fh_ntoks);
    n = n < FH_TOKS ? n : FH_TOKS;
    for (int i = 0; i < n; i++) { /* late: after fini returned, none of these may reach a user callback */
      htok *t = atomic_load(&fh_toks[i]);
      if (t) atomic_fetch_add(&fh_late_fires, fh_host_fire(t));
    }
    pthread_barrier_wait(&fh_end);
  }
  return NULL;
}
static void *fh_coordinator(void *arg) {
  (void)arg;
  uint64_t seed = 999;
  vde_event_handler host = {fh_event_add, fh_host_del, fh_timeout_add, fh_host_del};
  for (;;) {
    memset(fh_evs, 0, sizeof fh_evs);
    for (int i = 0; i < FH_TOKS; i++) atomic_store(&fh_toks[i], NULL);
    atomic_store(&fh_ntoks, 0);
    atomic_store(&fh_nevs, 0);
    atomic_store(&fh_fini_done, 0);
    atomic_fetch_add(&fh_round, 1);
    CHECK(vde_context_new(&fh_ctx) == 0 && vde_context_init(fh_ctx, &host, NULL) == 0);
    int last = atomic_load(&all_done);
    atomic_store(&fh_last, last);
    pthread_barrier_wait(&fh_start);
    if (last) {
      vde_context_delete(fh_ctx);
      break;
    }
    vde_context *ctx = fh_ctx;
    jitter(check_rand(&seed));
    int use_delete = (int)(check_rand(&seed) & 1);
    errno = 0;
    if (use_delete)
      vde_context_delete(ctx);
    else
      vde_context_fini(ctx);
    if (errno != 0) fail(use_delete ? "fh: vde_context_delete" : "fh: vde_context_fini", errno);
    atomic_store(&fh_fini_done, 1); /* no user callback from here on */
    atomic_fetch_add(use_delete ? &fh_deletes : &fh_finis, 1);
    pthread_barrier_wait(&fh_end);
    /* every add has returned: every host token must have been given back */
    if (atomic_load(&fh_outstanding) != 0) fail("fh: host tokens not given back", atomic_load(&fh_outstanding));
    if (!use_delete) {
      errno = 0;
      vde_context_fini(ctx);
      if (errno != EINVAL) fail("fh: second fini accepted", errno);
      errno = 0;
      vde_context_delete(ctx);
      if (errno != 0) fail("fh: delete after fini", errno);
    }
    errno = 0;
    vde_context_delete(ctx);
    if (errno != EINVAL) fail("fh: second delete accepted", errno);
    int n = atomic_load(&fh_ntoks);
    n = n < FH_TOKS ? n : FH_TOKS;
    for (int i = 0; i < n; i++) {
      htok *t = atomic_load(&fh_toks[i]);
      if (atomic_load(&t->given_back) != 1) fail("fh: a host token was not given back exactly once", i);
      free(t);
    }
    atomic_store(&fh_outstanding, 0); /* reported above; start the next round clean */
    atomic_fetch_add(&fh_rounds, 1);
  }
  return NULL;
}

/* ==== watchdog: a round that does not finish is a hang; abort (so a debugger or core shows where) ==== */
static atomic_int wd_stop;
static double wd_seconds;
static void *watchdog(void *arg) {
  (void)arg;
  long seen[2] = {-1, -1}, ticks[2] = {0, 0};
  for (long t = 0; !atomic_load(&wd_stop); t++) {
    usleep(100000);
    long now[2] = {atomic_load(&cl_rounds), atomic_load(&fh_rounds)};
    for (int i = 0; i < 2; i++) {
      if (now[i] != seen[i]) seen[i] = now[i], ticks[i] = 0;
      if (++ticks[i] > 300 && !atomic_load(&wd_stop)) { /* 30 s without a finished round */
        fprintf(stderr, "FAIL: test_stress hung: no %s round finished for 30 s\n", i ? "fh" : "cl");
        abort();
      }
    }
    if (t > (long)(wd_seconds * 10) + 1200) {
      fprintf(stderr, "FAIL: test_stress hung: still running %.0f s after its time\n", 120.0);
      abort();
    }
  }
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
  check_require(CB_FEATURE_ENTRIES | CB_FEATURE_LOOP);
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
  /* the cross-thread modes run for the same time (they stop on all_done) */
  pthread_t xl_loop_th, xl_adders[XL_ADDERS], sk_threads[2 + SK_PRODUCERS], cl_threads[CL_WORKERS + 1],
      fh_threads[FH_ADDERS + 2], wd;
  wd_seconds = seconds;
  CHECK(pthread_create(&wd, NULL, watchdog, NULL) == 0);
  xl_setup(&xl_loop_th, xl_adders);
  sk_setup(sk_threads);
  pthread_barrier_init(&cl_start, NULL, CL_WORKERS + 1);
  pthread_barrier_init(&cl_end, NULL, CL_WORKERS + 1);
  CHECK(pthread_create(&cl_threads[0], NULL, cl_coordinator, NULL) == 0);
  for (long i = 0; i < CL_WORKERS; i++) CHECK(pthread_create(&cl_threads[1 + i], NULL, cl_worker, (void *)i) == 0);
  pthread_barrier_init(&fh_start, NULL, FH_ADDERS + 2);
  pthread_barrier_init(&fh_end, NULL, FH_ADDERS + 2);
  CHECK(pthread_create(&fh_threads[0], NULL, fh_coordinator, NULL) == 0);
  CHECK(pthread_create(&fh_threads[1], NULL, fh_firer, NULL) == 0);
  for (long i = 0; i < FH_ADDERS; i++) CHECK(pthread_create(&fh_threads[2 + i], NULL, fh_adder, (void *)i) == 0);

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
  for (int i = 0; i < CL_WORKERS + 1; i++) CHECK(pthread_join(cl_threads[i], NULL) == 0);
  for (int i = 0; i < FH_ADDERS + 2; i++) CHECK(pthread_join(fh_threads[i], NULL) == 0);
  xl_finish(xl_loop_th, xl_adders);
  cb_queue_stats sks = sk_finish(sk_threads, &seed);
  atomic_store(&wd_stop, 1);
  CHECK(pthread_join(wd, NULL) == 0);
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
  printf("stress cross-thread: loop: %ld one-shot + %ld persistent timeouts added from 2 threads, %ld fired, %ld "
         "deleted, %ld deletes after firing (refused), %ld records reused, %ld keepalives; sinks: %ld registered, %ld self-unregisters, "
         "%ld unregistered by another sink, %ld destroyed, %llu posted, %llu delivered, %llu dropped, %ld rejected; "
         "close races: %ld rounds, %ld posts + %ld post_waits accepted, %ld drained, %ld delivered, %ld registers "
         "(%ld refused), %ld unregisters, %ld calls after free refused; fake host: %ld rounds (%ld fini, %ld delete), "
         "%ld adds (%ld refused after fini, %ld host failures), %ld host tokens all given back, %ld fired inside add, "
         "%ld fired by the host thread, %ld late fires ignored, %ld user callbacks, %ld deletes\n",
         atomic_load(&xl_added), atomic_load(&xl_added_persistent), atomic_load(&xl_fired), atomic_load(&xl_dels),
         atomic_load(&xl_dels_after_fire), atomic_load(&xl_reused), atomic_load(&xl_keepalive), atomic_load(&sk_regs),
         atomic_load(&sk_self_unregs), atomic_load(&sk_other_unregs), atomic_load(&sk_destroys),
         (unsigned long long)sks.posted, (unsigned long long)sks.delivered, (unsigned long long)sks.dropped,
         atomic_load(&sk_rejected), atomic_load(&cl_rounds), atomic_load(&cl_posts), atomic_load(&cl_waits),
         atomic_load(&cl_drained), atomic_load(&cl_delivered), atomic_load(&cl_regs), atomic_load(&cl_regs_refused),
         atomic_load(&cl_unregs), atomic_load(&cl_after_free), atomic_load(&fh_rounds), atomic_load(&fh_finis),
         atomic_load(&fh_deletes), atomic_load(&fh_adds), atomic_load(&fh_add_refused), atomic_load(&fh_host_failed),
         atomic_load(&fh_tokens), atomic_load(&fh_sync_fires), atomic_load(&fh_host_fires), atomic_load(&fh_late_fires),
         atomic_load(&fh_cbs), atomic_load(&fh_dels));
  for (int i = 0; i < nrounds_kept; i++) free(all[i]);
  CHECK_DONE("test_stress");
}
