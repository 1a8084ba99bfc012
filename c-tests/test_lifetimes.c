/* Lifetime regressions: events that fire (or end) while the host's add is still running, sinks
 * unregistered during their own delivery, sink registration racing close, close waking blocked callers,
 * allocation failures that must not abort, huge timevals, loop memory bounded by live events, re-entrant
 * run_once, errno/cb_last_error kept by a self-deleting timeout, and bare queue entries' 1/0 result.
 *
 * Every case runs in its own fork()ed child with alarm(20), so a crash, abort or hang fails that case
 * only. `./test_lifetimes NAME` runs one case in-process, for gdb or valgrind (with alarm(300): in gdb,
 * `handle SIGALRM nopass` for longer sessions). Use-after-free cases fail natively through a host that
 * reuses freed memory, and under valgrind as invalid reads/writes. */
#define _GNU_SOURCE
#include "check.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif


static void wait_flag(atomic_int *flag, int value) {
  while (atomic_load(flag) < value) usleep(100);
}

/* Freed memory gets reused: allocate (and zero) chunks of every small size, as a host loop would after
 * firing, so a record freed too early is overwritten and a use-after-free shows without valgrind too. */
static void *scribbled[2048];
static atomic_int nscribbled;
static void scribble(void) {
  for (size_t size = 16; size <= 256; size += 8)
    for (int i = 0; i < 8; i++) {
      void *p = malloc(size);
      CHECK(p != NULL);
      memset(p, 0, size);
      int k = atomic_fetch_add(&nscribbled, 1);
      CHECK(k < 2048);
      scribbled[k] = p;
    }
}
static void scribble_free(void) {
  int n = atomic_exchange(&nscribbled, 0);
  for (int i = 0; i < n; i++) free(scribbled[i]);
}

/* ---- 1. a fake VDE3 host: its add fires the event before returning its token ---- */
enum { HOST_SYNC, HOST_THREAD, HOST_BLOCK, HOST_RECORD };
typedef struct host_tok {
  int fd;
  short what;
  vde_event_cb cb;
  void *arg;
  atomic_int dels;
} host_tok;
static host_tok toks[16];
static atomic_int ntoks;
static int host_mode;
static pthread_barrier_t host_in, host_go; /* HOST_BLOCK: "add is inside the host", "go on" */
static atomic_int user_calls;

static void user_cb(int fd, short what, void *arg) {
  (void)fd;
  (void)what;
  CHECK(arg == (void *)&user_calls);
  atomic_fetch_add(&user_calls, 1);
}

static void *fire_on_thread(void *arg) {
  host_tok *t = arg;
  t->cb(t->fd, t->what, t->arg);
  scribble();
  return NULL;
}

static void *host_add(int fd, short what, vde_event_cb cb, void *arg) {
  int i = atomic_fetch_add(&ntoks, 1);
  CHECK(i < 16);
  host_tok *t = &toks[i];
  t->fd = fd;
  t->what = what;
  t->cb = cb;
  t->arg = arg;
  if (host_mode == HOST_SYNC) {
    cb(fd, what, arg);
    scribble();
  } else if (host_mode == HOST_THREAD) {
    pthread_t th;
    CHECK(pthread_create(&th, NULL, fire_on_thread, t) == 0);
    CHECK(pthread_join(th, NULL) == 0);
  } else if (host_mode == HOST_RECORD) {
    /* just remember it: the test fires it */
  } else {
    pthread_barrier_wait(&host_in);
    pthread_barrier_wait(&host_go);
  }
  return t;
}
static void *host_event_add(int fd, short events, const struct timeval *tv, vde_event_cb cb, void *arg) {
  (void)events;
  (void)tv;
  return host_add(fd, VDE_EV_READ, cb, arg);
}
static void *host_timeout_add(const struct timeval *tv, short events, vde_event_cb cb, void *arg) {
  (void)tv;
  (void)events;
  return host_add(-1, VDE_EV_TIMEOUT, cb, arg);
}
static void host_del(void *tok) {
  host_tok *t = tok;
  CHECK(t >= toks && t < toks + atomic_load(&ntoks)); /* always one of the host's own tokens */
  atomic_fetch_add(&t->dels, 1);
}

static vde_context *fake_ctx(int mode) {
  host_mode = mode;
  atomic_store(&ntoks, 0);
  atomic_store(&user_calls, 0);
  for (int i = 0; i < 16; i++) atomic_store(&toks[i].dels, 0);
  vde_event_handler h = {host_event_add, host_del, host_timeout_add, host_del};
  vde_context *ctx = NULL;
  CHECK(vde_context_new(&ctx) == 0);
  CHECK(vde_context_init(ctx, &h, NULL) == 0);
  return ctx;
}

static void *add_kind(vde_context *ctx, int fd_event) {
  struct timeval tv = {0, 1000};
  return fd_event ? vde_context_event_add(ctx, 7, VDE_EV_READ, NULL, user_cb, &user_calls)
                  : vde_context_timeout_add(ctx, 0, &tv, user_cb, &user_calls);
}
static void del_kind(vde_context *ctx, int fd_event, void *tok) {
  if (fd_event)
    vde_context_event_del(ctx, tok);
  else
    vde_context_timeout_del(ctx, tok);
}

/* 1a/1b: a one-shot fired before the host returned its token (on this thread, or on another one). The
 * old code freed the event record in the callback and then wrote the token into the freed record. */
static void fired_during_add(int mode) {
  vde_context *ctx = fake_ctx(mode);
  for (int fd_event = 0; fd_event < 2; fd_event++) {
    int i = atomic_load(&ntoks), calls = atomic_load(&user_calls);
    void *tok = add_kind(ctx, fd_event);
    CHECK(tok != NULL);
    CHECK(atomic_load(&ntoks) == i + 1);
    CHECK(atomic_load(&user_calls) == calls + 1); /* ran exactly once */
    CHECK(atomic_load(&toks[i].dels) == 1);        /* the host token went back once, by now */
    errno = 0;
    del_kind(ctx, fd_event, tok); /* a finished one-shot */
    CHECK(errno == EINVAL);
    CHECK(atomic_load(&toks[i].dels) == 1);
    toks[i].cb(toks[i].fd, toks[i].what, toks[i].arg); /* the host fires it again, late */
    CHECK(atomic_load(&user_calls) == calls + 1);
  }
  vde_context_delete(ctx);
  for (int i = 0; i < atomic_load(&ntoks); i++) CHECK(atomic_load(&toks[i].dels) == 1);
  scribble_free();
}
static void fire_in_host_add(void) { fired_during_add(HOST_SYNC); }
static void fire_in_host_add_other_thread(void) { fired_during_add(HOST_THREAD); }

/* 1c: fini or delete on another thread while the host's add is blocked: the old code's fini freed the
 * record that the add then wrote the host token into. */
static vde_context *race_ctx;
static int race_delete;
static void *finisher(void *arg) {
  (void)arg;
  pthread_barrier_wait(&host_in);
  if (race_delete)
    vde_context_delete(race_ctx);
  else
    vde_context_fini(race_ctx);
  scribble();
  pthread_barrier_wait(&host_go);
  return NULL;
}
static void ended_during_add(int del) {
  for (int fd_event = 0; fd_event < 2; fd_event++) {
    CHECK(pthread_barrier_init(&host_in, NULL, 2) == 0 && pthread_barrier_init(&host_go, NULL, 2) == 0);
    race_ctx = fake_ctx(HOST_BLOCK);
    race_delete = del;
    pthread_t t;
    CHECK(pthread_create(&t, NULL, finisher, NULL) == 0);
    void *tok = add_kind(race_ctx, fd_event); /* NULL or a token: either is fine */
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(atomic_load(&ntoks) == 1);
    CHECK(atomic_load(&toks[0].dels) == 1);
    if (tok) {
      errno = 0;
      del_kind(race_ctx, fd_event, tok);
      CHECK(errno == EINVAL);
    }
    toks[0].cb(toks[0].fd, toks[0].what, toks[0].arg); /* a late fire reaches nothing */
    CHECK(atomic_load(&user_calls) == 0);
    if (!del) vde_context_delete(race_ctx);
    CHECK(atomic_load(&toks[0].dels) == 1);
    pthread_barrier_destroy(&host_in);
    pthread_barrier_destroy(&host_go);
    scribble_free();
  }
}
static void fini_during_host_add(void) { ended_during_add(0); }
static void delete_during_host_add(void) { ended_during_add(1); }

/* 1d: the built-in loop on another thread fires zero-delay one-shots while their add is still returning
 * (the same use-after-free as 1a, as a race). */
enum { ZERO_TIMEOUTS = 20000 };
static atomic_int zero_counts[ZERO_TIMEOUTS];
static atomic_int zero_total;
static void zero_cb(int fd, short what, void *arg) {
  (void)fd;
  (void)what;
  if (arg) atomic_fetch_add((atomic_int *)arg, 1);
  atomic_fetch_add(&zero_total, 1);
}
static void *loop_runner(void *arg) {
  CHECK_STATUS(CB_OK, cb_loop_run((cb_loop *)arg));
  return NULL;
}
static void loop_ctx(cb_loop **lp, vde_context **ctx) {
  vde_event_handler h;
  CHECK_STATUS(CB_OK, cb_loop_new(lp));
  CHECK_STATUS(CB_OK, cb_loop_handler(*lp, &h));
  CHECK(vde_context_new(ctx) == 0);
  CHECK(vde_context_init(*ctx, &h, NULL) == 0);
}
static void loop_ctx_free(cb_loop *lp, vde_context *ctx) {
  vde_context_fini(ctx);
  vde_context_delete(ctx);
  CHECK_STATUS(CB_OK, cb_loop_free(lp));
}

static void builtin_loop_zero_timeouts(void) {
  if (!check_has(CB_FEATURE_LOOP, check_case_name)) return;
  int n = check_under_valgrind() ? 2000 : ZERO_TIMEOUTS;
  cb_loop *lp;
  vde_context *ctx;
  loop_ctx(&lp, &ctx);
  struct timeval hour = {3600, 0}, zero = {0, 0};
  CHECK(vde_context_timeout_add(ctx, VDE_EV_PERSIST, &hour, zero_cb, NULL) != NULL); /* keeps run going */
  pthread_t t;
  CHECK(pthread_create(&t, NULL, loop_runner, lp) == 0);
  for (int i = 0; i < n; i++) {
    if (i % 100 == 0) /* now and then let the loop catch up and fall asleep: the add below wakes it */
      for (int j = 0; j < 100000 && atomic_load(&zero_total) < i; j++) usleep(20);
    CHECK(vde_context_timeout_add(ctx, 0, &zero, zero_cb, &zero_counts[i]) != NULL);
  }
  for (int i = 0; i < 15000 && atomic_load(&zero_total) < n; i++) usleep(1000);
  CHECK(atomic_load(&zero_total) == n);
  for (int i = 0; i < n; i++) CHECK(atomic_load(&zero_counts[i]) == 1);
  CHECK_STATUS(CB_OK, cb_loop_stop(lp));
  CHECK(pthread_join(t, NULL) == 0);
  loop_ctx_free(lp, ctx);
}

/* ---- 2. a sink unregistered during a delivery to it ---- */
static cb_handle busy_sink;
static atomic_int busy_calls, busy_destroyed;
static int busy_from_other_thread;
static pthread_barrier_t sink_in, sink_go;

static void unregister_busy_sink(void) {
  CHECK_STATUS(CB_OK, cb_queue_sink_unregister(busy_sink));
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_queue_post(busy_sink, "late", 4));
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_queue_sink_unregister(busy_sink)); /* twice */
  CHECK(atomic_load(&busy_destroyed) == 0); /* its delivery is still running */
}
static void busy_fn(void *ud, const void *data, size_t len) {
  (void)ud;
  (void)data;
  (void)len;
  if (atomic_fetch_add(&busy_calls, 1) != 0) return;
  if (busy_from_other_thread) {
    pthread_barrier_wait(&sink_in);
    pthread_barrier_wait(&sink_go);
  } else {
    unregister_busy_sink();
  }
  CHECK(atomic_load(&busy_destroyed) == 0);
}
static void busy_destroy(void *ud) {
  (void)ud;
  atomic_fetch_add(&busy_destroyed, 1);
}
static void *unregisterer(void *arg) {
  (void)arg;
  pthread_barrier_wait(&sink_in);
  unregister_busy_sink();
  pthread_barrier_wait(&sink_go);
  return NULL;
}
static int other_calls;
static void other_fn(void *ud, const void *data, size_t len) {
  (void)ud;
  (void)data;
  (void)len;
  other_calls++;
}

/* The old code's unregister dropped only the registry's reference while the delivery held another: the
 * handle stayed live (posts accepted, a second unregister "worked" and ran destroy mid-delivery). */
static void unregister_during_delivery(int other_thread) {
  cb_queue *q;
  cb_handle other;
  busy_from_other_thread = other_thread;
  CHECK_STATUS(CB_OK, cb_queue_new(16, &q));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(q, busy_fn, NULL, busy_destroy, &busy_sink));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(q, other_fn, NULL, NULL, &other));
  for (int i = 0; i < 4; i++) CHECK_STATUS(CB_OK, cb_queue_post(busy_sink, &i, sizeof i));
  CHECK_STATUS(CB_OK, cb_queue_post(other, "o", 1));
  pthread_t t;
  if (other_thread) {
    CHECK(pthread_barrier_init(&sink_in, NULL, 2) == 0 && pthread_barrier_init(&sink_go, NULL, 2) == 0);
    CHECK(pthread_create(&t, NULL, unregisterer, NULL) == 0);
  }
  size_t n = 0;
  CHECK_STATUS(CB_OK, cb_queue_drain(q, 16, 0, &n));
  if (other_thread) {
    CHECK(pthread_join(t, NULL) == 0);
    pthread_barrier_destroy(&sink_in);
    pthread_barrier_destroy(&sink_go);
  }
  CHECK(n == 2 && atomic_load(&busy_calls) == 1 && other_calls == 1); /* the other 3 were dropped */
  CHECK(atomic_load(&busy_destroyed) == 1);                         /* once, after the delivery */
  cb_queue_stats st;
  CHECK_STATUS(CB_OK, cb_queue_get_stats(q, &st));
  CHECK(st.posted == 5 && st.delivered == 2 && st.dropped == 3 && st.pending == 0);
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_queue_post(busy_sink, "x", 1));
  CHECK_STATUS(CB_OK, cb_queue_free(q));
  CHECK(atomic_load(&busy_destroyed) == 1);
}
static void sink_unregisters_itself(void) { unregister_during_delivery(0); }
static void sink_unregistered_by_other_thread(void) { unregister_during_delivery(1); }

/* ---- 3. sink registration racing close: the old code could register a sink after close had
 * unregistered the queue's sinks, so it was never destroyed and kept pointing at the freed queue ---- */
enum { REGISTRARS = 2, MAX_REGS = 32 };
typedef struct reg_rec {
  cb_handle sink;
  cb_status status;
  atomic_int destroyed;
} reg_rec;
static reg_rec regs[REGISTRARS][MAX_REGS];
static int nregs[REGISTRARS];
static cb_queue *race_q;
static pthread_barrier_t race_start;
static void reg_destroy(void *ud) { atomic_fetch_add(&((reg_rec *)ud)->destroyed, 1); }
/* Each registrar keeps registering until the queue refuses, so close lands in the middle of a register. */
static void *registrar(void *arg) {
  int id = (int)(intptr_t)arg;
  pthread_barrier_wait(&race_start);
  nregs[id] = 0;
  for (int i = 0; i < MAX_REGS; i++) {
    reg_rec *r = &regs[id][i];
    atomic_store(&r->destroyed, 0);
    r->sink = 0;
    r->status = cb_queue_sink_register(race_q, other_fn, r, reg_destroy, &r->sink);
    nregs[id]++;
    if (r->status != CB_OK) break;
  }
  return NULL;
}

static void register_races_close(void) {
  int rounds = check_under_valgrind() ? 150 : 2000;
  for (int round = 0; round < rounds; round++) {
    CHECK_STATUS(CB_OK, cb_queue_new(4, &race_q));
    CHECK(pthread_barrier_init(&race_start, NULL, REGISTRARS + 1) == 0);
    pthread_t t[REGISTRARS];
    for (intptr_t i = 0; i < REGISTRARS; i++) CHECK(pthread_create(&t[i], NULL, registrar, (void *)i) == 0);
    pthread_barrier_wait(&race_start);
    for (volatile int spin = 0; spin < (round % 16) * 50; spin++) {
    }
    CHECK_STATUS(CB_OK, cb_queue_close(race_q, 0));
    for (int i = 0; i < REGISTRARS; i++) CHECK(pthread_join(t[i], NULL) == 0);
    pthread_barrier_destroy(&race_start);
    for (int i = 0; i < REGISTRARS; i++)
      for (int j = 0; j < nregs[i]; j++) {
        reg_rec *r = &regs[i][j];
        CHECK(r->status == CB_OK || (r->status == CB_ERR_CLOSED && r->sink == 0)); /* written on success only */
        if (r->status == CB_OK) CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_queue_sink_unregister(r->sink));
        CHECK(atomic_load(&r->destroyed) <= (r->status == CB_OK));
      }
    CHECK_STATUS(CB_OK, cb_queue_free(race_q));
    for (int i = 0; i < REGISTRARS; i++)
      for (int j = 0; j < nregs[i]; j++) {
        reg_rec *r = &regs[i][j];
        CHECK(atomic_load(&r->destroyed) == (r->status == CB_OK)); /* exactly once, or never */
        if (r->status == CB_OK) CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_queue_sink_unregister(r->sink));
      }
  }
}

/* ---- 4. close wakes callers blocked in post_wait and drain (the old close left them asleep, and the
 * old drain even held the consumer lock that close waits for) ---- */
static cb_queue *blocked_q;
static cb_handle blocked_sink;
static atomic_int blocked_state;
static cb_status blocked_status;
static size_t blocked_n = 99;
static void *blocked_poster(void *arg) {
  (void)arg;
  atomic_store(&blocked_state, 1);
  blocked_status = cb_queue_post_wait(blocked_sink, "y", 1, -1);
  atomic_store(&blocked_state, 2);
  return NULL;
}
static void *blocked_drainer(void *arg) {
  (void)arg;
  atomic_store(&blocked_state, 1);
  blocked_status = cb_queue_drain(blocked_q, 16, -1, &blocked_n);
  atomic_store(&blocked_state, 2);
  return NULL;
}
static void close_wakes(int drainer) {
  /* capacity 2, not 1: the old code's 1-cell ring never reports full (a separate bug) */
  CHECK_STATUS(CB_OK, cb_queue_new(2, &blocked_q));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(blocked_q, other_fn, NULL, NULL, &blocked_sink));
  if (!drainer) {
    CHECK_STATUS(CB_OK, cb_queue_post(blocked_sink, "x", 1));
    CHECK_STATUS(CB_OK, cb_queue_post(blocked_sink, "x", 1));
    CHECK_STATUS(CB_ERR_CAPACITY, cb_queue_post(blocked_sink, "x", 1)); /* full */
  }
  pthread_t t;
  CHECK(pthread_create(&t, NULL, drainer ? blocked_drainer : blocked_poster, NULL) == 0);
  wait_flag(&blocked_state, 1);
  usleep(50000); /* it is asleep inside the call by now */
  CHECK(atomic_load(&blocked_state) == 1);
  CHECK_STATUS(CB_OK, cb_queue_close(blocked_q, 0));
  CHECK(pthread_join(t, NULL) == 0);
  if (drainer) {
    CHECK(blocked_status == CB_OK && blocked_n == 0);
  } else {
    CHECK(blocked_status == CB_ERR_CLOSED);
  }
  CHECK_STATUS(CB_OK, cb_queue_free(blocked_q));
}
static void close_wakes_post_wait(void) { close_wakes(0); }
static void close_wakes_drain(void) { close_wakes(1); }

/* ---- 5. allocation failures return statuses instead of aborting (or leaving a claimed cell behind) ---- */
static void queue_post_size_max(void) {
  cb_queue *q;
  cb_handle s;
  char buf[8] = "abc";
  CHECK_STATUS(CB_OK, cb_queue_new(4, &q));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(q, other_fn, NULL, NULL, &s));
  CHECK_STATUS(CB_ERR_INVALID_ARG, cb_queue_post(s, buf, SIZE_MAX));
  CHECK_STATUS(CB_ERR_INVALID_ARG, cb_queue_post(s, buf, (size_t)PTRDIFF_MAX + 1));
  cb_queue_stats st;
  CHECK_STATUS(CB_OK, cb_queue_get_stats(q, &st));
  CHECK(st.posted == 0 && st.pending == 0);
  CHECK_STATUS(CB_OK, cb_queue_post(s, buf, 3));
  size_t n = 0;
  CHECK_STATUS(CB_OK, cb_queue_drain(q, 16, 0, &n));
  CHECK(n == 1);
  CHECK_STATUS(CB_OK, cb_queue_free(q));
}

static size_t got_len;
static char got[16];
static void record_fn(void *ud, const void *data, size_t len) {
  (void)ud;
  got_len = len;
  memcpy(got, data, len < sizeof got ? len : sizeof got);
}
static long statm_field(int i) { /* 0: virtual size, 1: resident, in pages */
  long v[2] = {0, 0};
  FILE *f = fopen("/proc/self/statm", "r");
  CHECK(f != NULL);
  CHECK(fscanf(f, "%ld %ld", &v[0], &v[1]) == 2);
  fclose(f);
  return v[i] * sysconf(_SC_PAGESIZE);
}

static void queue_out_of_memory(void) {
  if (UNDER_ASAN || check_under_valgrind()) {
    check_skip("RLIMIT_AS cannot work under ASan or valgrind");
    return;
  }
  const size_t big = (size_t)400 << 20;
  char *payload = malloc(big);
  CHECK(payload != NULL);
  memset(payload, 'p', big); /* really ours before the limit goes down */
  cb_queue *q;
  cb_handle s;
  CHECK_STATUS(CB_OK, cb_queue_new(4, &q));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(q, record_fn, NULL, NULL, &s));
  struct rlimit lim = {(rlim_t)statm_field(0) + ((rlim_t)300 << 20), RLIM_INFINITY};
  CHECK(setrlimit(RLIMIT_AS, &lim) == 0); /* the queue's own 400 MiB copy cannot fit */
  CHECK_STATUS(CB_ERR_NO_MEMORY, cb_queue_post(s, payload, big));
  cb_queue_stats st;
  CHECK_STATUS(CB_OK, cb_queue_get_stats(q, &st));
  CHECK(st.posted == 0 && st.pending == 0);
  CHECK_STATUS(CB_OK, cb_queue_post(s, "small", 5));
  size_t n = 0;
  CHECK_STATUS(CB_OK, cb_queue_drain(q, 16, 0, &n));
  CHECK(n == 1 && got_len == 5 && memcmp(got, "small", 5) == 0);
  cb_queue *huge = NULL;
  CHECK_STATUS(CB_ERR_NO_MEMORY, cb_queue_new((size_t)1 << 30, &huge)); /* valid: 64 GiB of cells */
  CHECK(huge == NULL);
  CHECK_STATUS(CB_OK, cb_queue_free(q));
  free(payload);
}

/* ---- 6. huge timevals: the old loop's deadline overflowed (a panic, then abort) ---- */
static int never_calls;
static void never_cb(int fd, short what, void *arg) {
  (void)fd;
  (void)what;
  (void)arg;
  never_calls++;
}
static void builtin_loop_huge_timeval(void) {
  if (!check_has(CB_FEATURE_LOOP, check_case_name)) return;
  cb_loop *lp;
  vde_context *ctx;
  loop_ctx(&lp, &ctx);
  int p[2];
  CHECK(pipe(p) == 0); /* never readable: nothing written */
  struct timeval max0 = {LONG_MAX, 0}, max = {LONG_MAX, 999999};
  errno = 0;
  void *t1 = vde_context_timeout_add(ctx, 0, &max0, never_cb, NULL);
  void *t2 = vde_context_timeout_add(ctx, VDE_EV_PERSIST, &max, never_cb, NULL);
  void *e1 = vde_context_event_add(ctx, p[0], VDE_EV_READ, &max, never_cb, NULL);
  void *e2 = vde_context_event_add(ctx, p[0], VDE_EV_READ | VDE_EV_PERSIST, &max, never_cb, NULL);
  CHECK(t1 && t2 && e1 && e2);
  size_t n = 99, pending = 0;
  CHECK_STATUS(CB_OK, cb_loop_run_once(lp, 0, &n));
  CHECK(n == 0 && never_calls == 0);
  CHECK_STATUS(CB_OK, cb_loop_pending(lp, &pending));
  CHECK(pending == 4);
  errno = 0;
  vde_context_timeout_del(ctx, t1);
  vde_context_timeout_del(ctx, t2);
  vde_context_event_del(ctx, e1);
  vde_context_event_del(ctx, e2);
  CHECK(errno == 0);
  CHECK_STATUS(CB_OK, cb_loop_pending(lp, &pending));
  CHECK(pending == 0);
  loop_ctx_free(lp, ctx);
  close(p[0]);
  close(p[1]);
}

/* ---- 7. loop memory is bounded by live events: the old loop kept a heap entry for every deleted
 * timeout until its (hour-long) deadline, and one more for every firing of a persistent event ---- */
#define RSS_BOUND ((long)16 << 20)
static int rss_skipped(void) {
  if (check_under_valgrind()) check_skip("RSS bounds are not measured under valgrind");
  else if (UNDER_ASAN) check_skip("ASan's quarantine of freed memory counts as RSS");
  else return 0;
  return 1;
}
static void loop_memory_timeout_churn(void) {
  if (!check_has(CB_FEATURE_LOOP, check_case_name)) return;
  if (rss_skipped()) return;
  cb_loop *lp;
  vde_context *ctx;
  loop_ctx(&lp, &ctx);
  struct timeval hour = {3600, 0};
  long before = 0;
  for (int i = -20000; i < 1000000; i++) {
    if (i == 0) before = statm_field(1);
    void *t = vde_context_timeout_add(ctx, 0, &hour, never_cb, NULL);
    CHECK(t != NULL);
    vde_context_timeout_del(ctx, t);
    if (i % 1000 == 999) CHECK_STATUS(CB_OK, cb_loop_run_once(lp, 0, NULL));
  }
  long grew = statm_field(1) - before;
  printf("  1,000,000 timeout add+del: RSS grew %ld KiB\n", grew >> 10);
  CHECK(grew < RSS_BOUND);
  loop_ctx_free(lp, ctx);
}

static long read_calls;
static void read_cb(int fd, short what, void *arg) {
  (void)fd;
  (void)arg;
  CHECK(what == VDE_EV_READ);
  read_calls++;
}
static void loop_memory_persistent_fd(void) {
  if (!check_has(CB_FEATURE_LOOP, check_case_name)) return;
  if (rss_skipped()) return;
  cb_loop *lp;
  vde_context *ctx;
  loop_ctx(&lp, &ctx);
  int p[2];
  CHECK(pipe(p) == 0);
  CHECK(write(p[1], "x", 1) == 1); /* never read: always readable */
  struct timeval hour = {3600, 0};
  void *ev = vde_context_event_add(ctx, p[0], VDE_EV_READ | VDE_EV_PERSIST, &hour, read_cb, NULL);
  CHECK(ev != NULL);
  const long rounds = 1000000;
  long before = 0;
  for (long i = -10000; i < rounds; i++) {
    if (i == 0) before = statm_field(1);
    size_t n = 0;
    CHECK_STATUS(CB_OK, cb_loop_run_once(lp, 0, &n));
    CHECK(n == 1);
  }
  long grew = statm_field(1) - before;
  printf("  %ld firings of a persistent fd event: RSS grew %ld KiB\n", rounds, grew >> 10);
  CHECK(read_calls == rounds + 10000);
  CHECK(grew < RSS_BOUND);
  vde_context_event_del(ctx, ev);
  loop_ctx_free(lp, ctx);
  close(p[0]);
  close(p[1]);
}

/* ---- 8. cb_loop_run_once from inside one of the loop's callbacks: the old loop recursed (with a
 * level-triggered fd, until the stack overflowed) ---- */
static cb_loop *reentrant_lp;
static int reentrant_calls;
static cb_status reentrant_status;
static void reentrant_cb(int fd, short what, void *arg) {
  (void)fd;
  (void)what;
  (void)arg;
  reentrant_calls++;
  size_t n = 99;
  reentrant_status = cb_loop_run_once(reentrant_lp, 0, &n);
  CHECK(n == 99); /* outputs only on success */
}
static void builtin_loop_reentrant_run_once(void) {
  if (!check_has(CB_FEATURE_LOOP, check_case_name)) return;
  vde_event_handler h;
  CHECK_STATUS(CB_OK, cb_loop_new(&reentrant_lp));
  CHECK_STATUS(CB_OK, cb_loop_handler(reentrant_lp, &h));
  int p[2];
  CHECK(pipe(p) == 0);
  CHECK(write(p[1], "x", 1) == 1);
  void *ev = h.event_add(p[0], VDE_EV_READ | VDE_EV_PERSIST, NULL, reentrant_cb, NULL);
  CHECK(ev != NULL);
  for (int round = 1; round <= 3; round++) {
    size_t n = 0;
    reentrant_status = CB_OK;
    CHECK_STATUS(CB_OK, cb_loop_run_once(reentrant_lp, 0, &n));
    CHECK(n == 1 && reentrant_calls == round); /* once per outer round */
    CHECK(reentrant_status == CB_ERR_INVALID_ARG);
  }
  h.event_del(ev);
  CHECK_STATUS(CB_OK, cb_loop_free(reentrant_lp));
  close(p[0]);
  close(p[1]);
}

/* ---- 9. a one-shot timeout deleting itself: the old code handed the loop a token it had already
 * dropped, and the loop's "unknown event token" clobbered errno and cb_last_error() ---- */
typedef struct self_del {
  vde_context *ctx;
  void *tok;
  int calls, errno_after;
  int text_kept;
} self_del;
static char known_error[256];
static void self_del_cb(int fd, short what, void *arg) {
  (void)fd;
  (void)what;
  self_del *s = arg;
  s->calls++;
  errno = 0;
  vde_context_timeout_del(s->ctx, s->tok);
  s->errno_after = errno;
  s->text_kept = strcmp(cb_last_error(), known_error) == 0;
}
static void builtin_loop_self_delete_keeps_errno(void) {
  if (!check_has(CB_FEATURE_LOOP, check_case_name)) return;
  cb_loop *lp;
  vde_context *ctx;
  loop_ctx(&lp, &ctx);
  void *p;
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_handle_get(0, &p)); /* a known last error */
  CHECK_LAST_ERROR("is 0");
  snprintf(known_error, sizeof known_error, "%s", cb_last_error());
  self_del s = {ctx, NULL, 0, -1, 0};
  struct timeval tv = {0, 0};
  s.tok = vde_context_timeout_add(ctx, 0, &tv, self_del_cb, &s);
  CHECK(s.tok != NULL);
  for (int i = 0; i < 100 && s.calls == 0; i++) {
    errno = 0;
    CHECK_STATUS(CB_OK, cb_loop_run_once(lp, 10, NULL));
    CHECK(errno == 0);
  }
  CHECK(s.calls == 1);
  CHECK(s.errno_after == 0 && s.text_kept);
  CHECK(errno == 0 && strcmp(cb_last_error(), known_error) == 0);
  loop_ctx_free(lp, ctx);
}

/* ---- 10. bare queue entries return 1 when the event was posted and 0 when it was not ---- */
static int stale_calls;
static void count_stale(cb_fn entry, void *arg) {
  (void)entry;
  (void)arg;
  stale_calls++;
}
typedef int (*int_entry)(const void *data, int len);
typedef int (*size_entry)(const void *data, size_t len);
static void queue_entry_result(void) {
  if (!check_has(CB_FEATURE_ENTRIES, check_case_name)) return;
  cb_queue *q;
  cb_handle s;
  cb_fn ei, es;
  CHECK_STATUS(CB_OK, cb_queue_new(2, &q));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(q, record_fn, NULL, NULL, &s));
  CHECK_STATUS(CB_OK, cb_queue_sink_entry(s, CB_QUEUE_LEN_INT, &ei));
  CHECK_STATUS(CB_OK, cb_queue_sink_entry(s, CB_QUEUE_LEN_SIZE_T, &es));
  CHECK(((int_entry)ei)("abc", 3) == 1);
  size_t n = 0;
  CHECK_STATUS(CB_OK, cb_queue_drain(q, 16, 0, &n));
  CHECK(n == 1 && got_len == 3 && memcmp(got, "abc", 3) == 0);
  CHECK(((size_entry)es)("de", 2) == 1);
  CHECK(((int_entry)ei)("fg", 2) == 1);
  CHECK(((int_entry)ei)("full", 4) == 0); /* capacity 2 */
  CHECK(((size_entry)es)("full", 4) == 0);
  CHECK_STATUS(CB_OK, cb_queue_drain(q, 16, 0, &n));
  CHECK(n == 2 && got_len == 2 && memcmp(got, "fg", 2) == 0);
  CHECK(((int_entry)ei)("neg", -1) == 0); /* negative length */
  cb_queue_stats st;
  CHECK_STATUS(CB_OK, cb_queue_get_stats(q, &st));
  CHECK(st.posted == 3 && st.pending == 0);
  CHECK_STATUS(CB_OK, cb_queue_sink_unregister(s));
  CHECK_STATUS(CB_OK, cb_barrier());
  cb_set_stale_handler(count_stale, NULL);
  CHECK(((int_entry)ei)("stale", 5) == 0); /* its sink is gone: a stale call */
  CHECK(stale_calls == 1);
  cb_set_stale_handler(NULL, NULL);
  CHECK_STATUS(CB_OK, cb_queue_free(q));
}

/* ---- 11. a cached sink's destroy waits only for the delivery in progress, not for the whole drain ---- */
static cb_handle cache_s1;
static atomic_int cache_destroyed, cache_go, cache_unregistered;
static void cache_d1(void *ud) {
  (void)ud;
  atomic_fetch_add(&cache_destroyed, 1);
}
static void cache_f1(void *ud, const void *d, size_t l) {
  (void)ud, (void)d, (void)l;
}
static void *cache_other(void *arg) {
  (void)arg;
  wait_flag(&cache_go, 1);
  CHECK_STATUS(CB_OK, cb_queue_sink_unregister(cache_s1));
  atomic_store(&cache_unregistered, 1);
  return NULL;
}
static void cache_f2(void *ud, const void *d, size_t l) { /* s1 was delivered to before; unregistered now */
  (void)ud, (void)d, (void)l;
  atomic_store(&cache_go, 1);
  wait_flag(&cache_unregistered, 1);
  CHECK(atomic_load(&cache_destroyed) == 0); /* this drain still holds s1 until this delivery returns */
}
static void cache_f3(void *ud, const void *d, size_t l) { /* the next delivery: s1 is gone by now */
  (void)ud, (void)d, (void)l;
  CHECK(atomic_load(&cache_destroyed) == 1);
}
static void sink_destroy_after_current_delivery(void) {
  cb_queue *q;
  cb_handle s2, s3;
  CHECK_STATUS(CB_OK, cb_queue_new(8, &q));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(q, cache_f1, NULL, cache_d1, &cache_s1));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(q, cache_f2, NULL, NULL, &s2));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(q, cache_f3, NULL, NULL, &s3));
  pthread_t t;
  CHECK(pthread_create(&t, NULL, cache_other, NULL) == 0);
  CHECK_STATUS(CB_OK, cb_queue_post(cache_s1, "a", 1));
  CHECK_STATUS(CB_OK, cb_queue_post(s2, "b", 1));
  CHECK_STATUS(CB_OK, cb_queue_post(s3, "c", 1));
  size_t n = 0;
  CHECK_STATUS(CB_OK, cb_queue_drain(q, 16, 0, &n));
  CHECK(n == 3 && atomic_load(&cache_destroyed) == 1);
  CHECK(pthread_join(t, NULL) == 0);
  CHECK_STATUS(CB_OK, cb_queue_free(q));
}

/* ---- 12. cb_queue_sink_entry from a watermark callback it triggers (callbacks run outside cbslot's locks) ---- */
static cb_handle wm_sink;
static atomic_int wm_fired;
static void wm_sinkfn(void *ud, const void *d, size_t l) {
  (void)ud, (void)d, (void)l;
}
static void wm_cb(uint64_t live, void *arg) {
  (void)live, (void)arg;
  cb_fn e;
  atomic_fetch_add(&wm_fired, 1);
  CHECK_STATUS(CB_OK, cb_queue_sink_entry(wm_sink, CB_QUEUE_LEN_SIZE_T, &e)); /* the same sink, re-entered */
}
static void entry_from_watermark(void) {
  if (!check_has(CB_FEATURE_ENTRIES, check_case_name)) return;
  cb_queue *q;
  CHECK_STATUS(CB_OK, cb_queue_new(8, &q));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(q, wm_sinkfn, NULL, NULL, &wm_sink));
  cb_stats st;
  CHECK_STATUS(CB_OK, cb_get_stats(&st));
  CHECK_STATUS(CB_OK, cb_set_watermark(st.live + 1, wm_cb, NULL));
  cb_fn e;
  CHECK_STATUS(CB_OK, cb_queue_sink_entry(wm_sink, CB_QUEUE_LEN_SIZE_T, &e)); /* hung here before */
  CHECK(atomic_load(&wm_fired) == 1);
  CHECK_STATUS(CB_OK, cb_set_watermark(0, NULL, NULL));
  CHECK_STATUS(CB_OK, cb_queue_free(q));
}

/* ---- 13. deleting an event whose fd is already closed succeeds and leaves errno alone ---- */
static void nop_cb(int fd, short what, void *arg) {
  (void)fd, (void)what, (void)arg;
}
static void closed_fd_delete_keeps_errno(void) {
  if (!check_has(CB_FEATURE_LOOP, check_case_name)) return;
  cb_loop *lp;
  vde_event_handler h;
  vde_context *ctx;
  CHECK_STATUS(CB_OK, cb_loop_new(&lp));
  CHECK_STATUS(CB_OK, cb_loop_handler(lp, &h));
  CHECK(vde_context_new(&ctx) == 0 && vde_context_init(ctx, &h, NULL) == 0);
  for (int fini = 0; fini < 2; fini++) {
    int p[2];
    CHECK(pipe(p) == 0);
    void *ev = vde_context_event_add(ctx, p[0], VDE_EV_READ | VDE_EV_PERSIST, NULL, nop_cb, NULL);
    CHECK(ev != NULL);
    close(p[0]); /* the usual order: close the fd, then delete its event */
    close(p[1]);
    errno = 0;
    if (fini)
      vde_context_fini(ctx);
    else
      vde_context_event_del(ctx, ev);
    CHECK(errno == 0);
  }
  vde_context_delete(ctx);
  CHECK_STATUS(CB_OK, cb_loop_free(lp));
}

/* ---- 14. a thread deep in callbacks does not hold up freeing an unrelated queue ---- */
static int (*deep_entry)(int);
static atomic_int deep_reached, deep_release;
static int deep_body(void *ud, int depth) {
  (void)ud;
  if (depth < 70) return deep_entry(depth + 1);
  atomic_store(&deep_reached, 1);
  wait_flag(&deep_release, 1);
  return depth;
}
static void *deep_thread(void *arg) {
  (void)arg;
  CHECK(deep_entry(1) == 70);
  return NULL;
}
static void deep_callbacks_do_not_stall_free(void) {
  if (!check_has(CB_FEATURE_ENTRIES, check_case_name)) return;
  cb_handle h;
  cb_fn e;
  CHECK_STATUS(CB_OK, cb_register((cb_fn)deep_body, NULL, NULL, &h, &e));
  deep_entry = (int (*)(int))e;
  cb_queue *q;
  cb_handle s;
  CHECK_STATUS(CB_OK, cb_queue_new(8, &q));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(q, wm_sinkfn, NULL, NULL, &s));
  CHECK_STATUS(CB_OK, cb_queue_post(s, "x", 1));
  pthread_t t;
  CHECK(pthread_create(&t, NULL, deep_thread, NULL) == 0);
  wait_flag(&deep_reached, 1); /* 70 callbacks deep: past the per-thread record's depth */
  CHECK_STATUS(CB_OK, cb_queue_free(q)); /* waited for that thread (until the alarm) before */
  atomic_store(&deep_release, 1);
  CHECK(pthread_join(t, NULL) == 0);
  CHECK_STATUS(CB_OK, cb_unregister_wait(h));
}

/* ---- 15. a stop ends one run: the next cb_loop_run_once waits again ---- */
static void stop_is_not_sticky(void) {
  if (!check_has(CB_FEATURE_LOOP, check_case_name)) return;
  cb_loop *lp;
  vde_event_handler h;
  CHECK_STATUS(CB_OK, cb_loop_new(&lp));
  CHECK_STATUS(CB_OK, cb_loop_handler(lp, &h));
  int p[2];
  CHECK(pipe(p) == 0);
  void *tok = h.event_add(p[0], VDE_EV_READ | VDE_EV_PERSIST, NULL, nop_cb, NULL); /* never ready */
  CHECK(tok != NULL);
  CHECK_STATUS(CB_OK, cb_loop_stop(lp));
  size_t n = 9;
  double t0 = check_mono_ms();
  CHECK_STATUS(CB_OK, cb_loop_run_once(lp, 5000, &n)); /* stopped: does not wait */
  CHECK(n == 0 && check_mono_ms() - t0 < 1000);
  t0 = check_mono_ms();
  CHECK_STATUS(CB_OK, cb_loop_run_once(lp, 100, &n)); /* the stop is used up: waits its 100 ms */
  CHECK(n == 0 && check_mono_ms() - t0 >= 90);
  h.event_del(tok);
  close(p[0]);
  close(p[1]);
  CHECK_STATUS(CB_OK, cb_loop_free(lp));
}

/* ---- 16. vde del waits for the event's callback running on another thread ---- */
static atomic_int dw_in_cb, dw_release, dw_returned;
static void dw_cb(int fd, short what, void *arg) {
  (void)fd, (void)what, (void)arg;
  atomic_store(&dw_in_cb, 1);
  wait_flag(&dw_release, 1);
  usleep(20000);
  atomic_store(&dw_returned, 1);
}
static void *dw_fire(void *arg) {
  host_tok *t = arg;
  t->cb(t->fd, t->what, t->arg);
  return NULL;
}
static void *dw_releaser(void *arg) {
  (void)arg;
  usleep(50000);
  atomic_store(&dw_release, 1);
  return NULL;
}
static vde_event_handler record_handler(void) {
  vde_event_handler h = {host_event_add, host_del, host_timeout_add, host_del};
  host_mode = HOST_RECORD;
  return h;
}
static void del_waits_for_running_callback(void) {
  vde_event_handler h = record_handler();
  vde_context *ctx;
  CHECK(vde_context_new(&ctx) == 0 && vde_context_init(ctx, &h, NULL) == 0);
  struct timeval tv = {1, 0};
  void *ev = vde_context_timeout_add(ctx, VDE_EV_PERSIST, &tv, dw_cb, NULL);
  CHECK(ev != NULL && atomic_load(&ntoks) == 1);
  pthread_t fire, rel;
  CHECK(pthread_create(&fire, NULL, dw_fire, &toks[0]) == 0); /* the host's loop thread fires it */
  wait_flag(&dw_in_cb, 1);
  CHECK(pthread_create(&rel, NULL, dw_releaser, NULL) == 0);
  errno = 0;
  vde_context_timeout_del(ctx, ev);
  CHECK(errno == 0);
  CHECK(atomic_load(&dw_returned) == 1); /* del returned only after the callback did */
  CHECK(atomic_load(&toks[0].dels) == 1);
  CHECK(pthread_join(fire, NULL) == 0 && pthread_join(rel, NULL) == 0);
  vde_context_delete(ctx);
}

/* ---- 17. two threads' callbacks deleting each other's events do not deadlock ---- */
static vde_context *x_ctx;
static void *x_ev[2];
static pthread_barrier_t x_both_in;
static void x_cb(int fd, short what, void *arg) {
  (void)fd, (void)what;
  int me = (int)(intptr_t)arg;
  pthread_barrier_wait(&x_both_in); /* both callbacks are running */
  errno = 0;
  vde_context_timeout_del(x_ctx, x_ev[1 - me]); /* the other's, while it runs: must not wait for it */
  CHECK(errno == 0);
}
static void cross_delete_from_callbacks(void) {
  vde_event_handler h = record_handler();
  CHECK(vde_context_new(&x_ctx) == 0 && vde_context_init(x_ctx, &h, NULL) == 0);
  CHECK(pthread_barrier_init(&x_both_in, NULL, 2) == 0);
  struct timeval tv = {1, 0};
  for (int i = 0; i < 2; i++) {
    x_ev[i] = vde_context_timeout_add(x_ctx, VDE_EV_PERSIST, &tv, x_cb, (void *)(intptr_t)i);
    CHECK(x_ev[i] != NULL);
  }
  pthread_t t[2];
  for (int i = 0; i < 2; i++) CHECK(pthread_create(&t[i], NULL, dw_fire, &toks[i]) == 0);
  for (int i = 0; i < 2; i++) CHECK(pthread_join(t[i], NULL) == 0); /* the alarm catches a deadlock */
  for (int i = 0; i < 2; i++) CHECK(atomic_load(&toks[i].dels) == 1);
  vde_context_delete(x_ctx);
  CHECK(pthread_barrier_destroy(&x_both_in) == 0);
}

/* ---- the cases, run by check_run_cases (check.h): one fork()ed child per case ---- */
#define CASE(f) CHECK_CASE(f) /* tests/tsan.sh reads the `CASE(name),` lines below */
static const struct check_case cases[] = {
    CASE(fire_in_host_add),
    CASE(fire_in_host_add_other_thread),
    CASE(fini_during_host_add),
    CASE(delete_during_host_add),
    CASE(builtin_loop_zero_timeouts),
    CASE(sink_unregisters_itself),
    CASE(sink_unregistered_by_other_thread),
    CASE(register_races_close),
    CASE(close_wakes_post_wait),
    CASE(close_wakes_drain),
    CASE(queue_post_size_max),
    CASE(queue_out_of_memory),
    CASE(builtin_loop_huge_timeval),
    CASE(loop_memory_timeout_churn),
    CASE(loop_memory_persistent_fd),
    CASE(builtin_loop_reentrant_run_once),
    CASE(builtin_loop_self_delete_keeps_errno),
    CASE(queue_entry_result),
    CASE(sink_destroy_after_current_delivery),
    CASE(entry_from_watermark),
    CASE(closed_fd_delete_keeps_errno),
    CASE(deep_callbacks_do_not_stall_free),
    CASE(stop_is_not_sticky),
    CASE(del_waits_for_running_callback),
    CASE(cross_delete_from_callbacks),
};
enum { NCASES = sizeof cases / sizeof *cases, ALARM_S = 20 };

int main(int argc, char **argv) {
  return check_run_cases("test_lifetimes", cases, NCASES, argc, argv, ALARM_S);
}
