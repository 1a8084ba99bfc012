/* Callback benchmark (not a test). One process, one run, printing markdown tables:
 *   1. calls through a pointer, int f(int x) ending in the user's fn(userdata, x), ns per call:
 *      the direct call, the C-wrapper floor, a tracked cbslot entry, an untracked one, a libffi closure;
 *      from 1 thread, and from 2 threads at once (each its own entry);
 *   2. cb_register+cb_unregister pairs (tracked and untracked) with 1k and 1M other callbacks live, and
 *      libffi's closure alloc+prep+free for scale;
 *   3. resident memory per live callback at 1M live;
 *   4. destroy latency: from cb_unregister returning to destroy(userdata) running, with the default reclaim
 *      delay (no call in flight; a call in flight), and with the delay set to 0 (no reclaimer thread).
 * Every timed figure in 1 and 2 is min / median / max over RUNS timed runs; the runs of the variants are
 * interleaved (run 1 of each, then run 2 of each, ...), so a slow phase of the machine hits them all.
 * Usage: bench_callbacks [scale]   (scale multiplies the length of each timed run; 1 takes about 12 s) */
#include <cbslot.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef CBSLOT_HAVE_LIBFFI
#include <ffi.h>
#endif

enum {
  RUNS = 7,          /* timed runs per figure */
  LAT_SAMPLES = 200, /* unregisters per destroy-latency case */
  BALLAST = 1000,    /* the "1k live" callbacks */
  MANY = 1000000,    /* the "1M live" callbacks */
};
#define MS 1000000LL /* a millisecond, in ns */

static int64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_until(int64_t t) {
  struct timespec ts = {(time_t)(t / 1000000000), (long)(t % 1000000000)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

static void sem_take(sem_t *s) {
  while (sem_wait(s) != 0) {
  }
}

static void must(cb_status st, const char *what) {
  if (st == CB_OK) return;
  fprintf(stderr, "bench_callbacks: %s: %s (%s)\n", what, cb_status_str(st), cb_last_error());
  exit(1);
}

/* ---- statistics ---- */

typedef struct spread {
  double min, med, max;
} spread;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* n <= 2 * RUNS */
static spread spread_of(const double *v, int n) {
  double s[2 * RUNS];
  memcpy(s, v, (size_t)n * sizeof *s);
  qsort(s, (size_t)n, sizeof *s, cmp_double);
  spread r = {s[0], n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2, s[n - 1]};
  return r;
}

/* nearest-rank percentile (per_cent of 100) of sorted[0..n) */
static double percentile(const double *sorted, int n, int per_cent) {
  int k = (per_cent * n + 99) / 100;
  return sorted[k < 1 ? 0 : k - 1];
}

/* ---- the calls ---- */

typedef int (*target_fn)(void *, int); /* the user's function: fn(userdata, x) */
typedef int (*entry_fn)(int);          /* what the C code calls: f(x) */

__attribute__((noinline)) static int add_one(void *ud, int x) {
  (void)ud;
  return x + 1;
}
static void destroy_nop(void *ud) { (void)ud; }

/* Figure "direct": the user's function called through a volatile pointer, so it is not inlined. */
static target_fn volatile direct_target = add_one;

/* Figure "C-wrapper floor": the cheapest trampoline that knows when the call returns. It counts nesting in
 * a thread-local (as cbslot's dispatcher keeps an in-flight record), loads fn and userdata from memory (as a
 * trampoline loads its slot), and calls fn (a real call, not a tail jump, so it runs again after fn). */
static target_fn volatile floor_target = add_one;
static void *volatile floor_userdata;
static _Thread_local long floor_nesting;
__attribute__((noinline)) static int floor_wrap(int x) {
  floor_nesting++;
  int r = floor_target(floor_userdata, x);
  floor_nesting--;
  return r;
}

#ifdef CBSLOT_HAVE_LIBFFI
/* Figure "libffi closure": a closure of type int(int) whose handler calls fn(userdata, x), the same work
 * cbslot's entries do. */
typedef struct ffi_target {
  target_fn fn;
  void *userdata;
} ffi_target;
static ffi_cif int_int_cif;
static ffi_type *int_arg[1] = {&ffi_type_sint};
static ffi_target ffi_add_one = {add_one, NULL};

static void ffi_handler(ffi_cif *cif, void *ret, void **args, void *data) {
  (void)cif;
  const ffi_target *t = data;
  *(ffi_sarg *)ret = t->fn(t->userdata, *(int *)args[0]);
}

static entry_fn ffi_make(ffi_closure **out) {
  void *code;
  ffi_closure *cl = ffi_closure_alloc(sizeof(ffi_closure), &code);
  if (!cl || ffi_prep_closure_loc(cl, &int_int_cif, ffi_handler, &ffi_add_one, code) != FFI_OK) {
    fprintf(stderr, "bench_callbacks: libffi closure failed\n");
    exit(1);
  }
  *out = cl;
  entry_fn f;
  memcpy(&f, &code, sizeof f); /* libffi hands out code as void * */
  return f;
}
#endif

typedef struct variant {
  const char *label;
  entry_fn f[2]; /* one per thread; f[0] == NULL: the direct call */
  long iters;    /* calls per timed run */
  double ns[RUNS], two[2 * RUNS];
} variant;

/* One timed run: iters calls chained (each result is the next argument: latency, as in a comparator chain),
 * through a pointer read from a volatile once. Returns ns per call. */
static double run_calls(const variant *v, int thread, long iters) {
  int acc = 0;
  int64_t t0;
  if (!v->f[thread]) {
    target_fn f = direct_target;
    t0 = mono_ns();
    for (long i = 0; i < iters; i++) acc = f(NULL, acc);
  } else {
    entry_fn volatile fv = v->f[thread];
    entry_fn f = fv;
    t0 = mono_ns();
    for (long i = 0; i < iters; i++) acc = f(acc);
  }
  double ns = (double)(mono_ns() - t0) / (double)iters;
  if (acc != (int)iters) {
    fprintf(stderr, "bench_callbacks: %s: wrong result %d after %ld calls\n", v->label, acc, iters);
    exit(1);
  }
  return ns;
}

typedef struct two_ctx {
  variant *v;
  int thread;
  pthread_barrier_t *start;
} two_ctx;

static void *two_thread_body(void *arg) {
  two_ctx *c = arg;
  pthread_barrier_wait(c->start);
  for (int r = 0; r < RUNS; r++) c->v->two[c->thread * RUNS + r] = run_calls(c->v, c->thread, c->v->iters);
  return NULL;
}

/* ---- register + unregister ---- */

/* One timed run of `pairs` register+unregister pairs, then cb_barrier(), so every destroy is in the time.
 * Wall time per pair. */
static double reg_unreg_run(uint32_t flags, long pairs) {
  int64_t t0 = mono_ns();
  for (long i = 0; i < pairs; i++) {
    cb_handle h;
    cb_fn e;
    must(cb_register_ex((cb_fn)add_one, NULL, destroy_nop, flags, &h, &e), "cb_register_ex");
    must(cb_unregister(h), "cb_unregister");
  }
  must(cb_barrier(), "cb_barrier");
  return (double)(mono_ns() - t0) / (double)pairs;
}

/* Interleaved runs of: tracked pairs (default reclaim delay: the reclaimer thread runs the grace periods),
 * tracked pairs with the reclaim delay 0 (the unregistering thread runs one every CB_GRACE_BATCH), untracked
 * pairs. Prints their rows. */
static void reg_unreg_rows(const char *live, long pairs) {
  static const char *const what[3] = {"tracked", "tracked, reclaim delay 0", "untracked"};
  double ns[3][RUNS];
  for (int r = 0; r < RUNS; r++)
    for (int k = 0; k < 3; k++) {
      must(cb_set_reclaim_delay(k == 1 ? 0 : CB_RECLAIM_DELAY_DEFAULT_MS), "cb_set_reclaim_delay");
      ns[k][r] = reg_unreg_run(k == 2 ? CB_REGISTER_UNTRACKED : 0, pairs);
    }
  for (int k = 0; k < 3; k++) {
    spread s = spread_of(ns[k], RUNS);
    printf("| %s | %s | %.1f | %.1f | %.1f |\n", what[k], live, s.min, s.med, s.max);
  }
}

/* resident memory of one kind ("RssAnon:", "RssFile:", "RssShmem:") from /proc/self/status, in bytes */
static long rss_bytes(const char *kind) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, kind, strlen(kind)) == 0) kb = atol(line + strlen(kind));
  if (f) fclose(f);
  if (kb < 0) exit(1);
  return kb * 1024;
}

/* ---- destroy latency ---- */

typedef struct lat_sample {
  _Atomic int64_t destroyed; /* when destroy(userdata) ran (0: not yet) */
  int64_t unregistered;      /* when cb_unregister returned */
  int64_t call_end;          /* case (b): when the call in flight returned */
} lat_sample;

static lat_sample samples[LAT_SAMPLES];

static void record_destroy(void *userdata) {
  lat_sample *s = userdata;
  atomic_store(&s->destroyed, mono_ns());
}

static int64_t since(int64_t t) { return mono_ns() - t; }

/* Polls (1 ms sleeps) until every sample's destroy ran or `timeout` passed; returns how many ran. */
static int wait_destroyed(int64_t timeout) {
  int64_t t0 = mono_ns();
  for (;;) {
    int ran = 0;
    for (int i = 0; i < LAT_SAMPLES; i++) ran += atomic_load(&samples[i].destroyed) != 0;
    if (ran == LAT_SAMPLES || since(t0) > timeout) return ran;
    sleep_until(mono_ns() + MS);
  }
}

/* Cases (a) and (c): register, call once, unregister; one every millisecond. */
static void unregister_spaced(void) {
  memset(samples, 0, sizeof samples);
  int64_t next = mono_ns();
  for (int i = 0; i < LAT_SAMPLES; i++) {
    cb_handle h;
    cb_fn e;
    must(cb_register((cb_fn)add_one, &samples[i], record_destroy, &h, &e), "cb_register");
    ((entry_fn)e)(1);
    must(cb_unregister(h), "cb_unregister");
    samples[i].unregistered = mono_ns();
    next += MS;
    sleep_until(next);
  }
}

/* Case (b): a worker thread calls the entry; inside fn it waits until the main thread has unregistered,
 * stays HOLD_NS longer (asleep), notes the time and returns. */
#define HOLD_NS (2 * MS)
static struct {
  sem_t go, entered, unregistered, done;
  cb_fn entry;
  int stop;
} hold;

static int held_target(void *userdata, int x) {
  lat_sample *s = userdata;
  sem_post(&hold.entered);
  sem_take(&hold.unregistered);
  sleep_until(s->unregistered + HOLD_NS);
  s->call_end = mono_ns();
  return x + 1;
}

static void *hold_worker(void *arg) {
  (void)arg;
  for (;;) {
    sem_take(&hold.go);
    if (hold.stop) return NULL;
    ((entry_fn)hold.entry)(1);
    sem_post(&hold.done);
  }
}

static void unregister_in_flight(void) {
  memset(samples, 0, sizeof samples);
  sem_init(&hold.go, 0, 0);
  sem_init(&hold.entered, 0, 0);
  sem_init(&hold.unregistered, 0, 0);
  sem_init(&hold.done, 0, 0);
  pthread_t worker;
  if (pthread_create(&worker, NULL, hold_worker, NULL)) exit(1);
  for (int i = 0; i < LAT_SAMPLES; i++) {
    cb_handle h;
    must(cb_register((cb_fn)held_target, &samples[i], record_destroy, &h, &hold.entry), "cb_register");
    sem_post(&hold.go);
    sem_take(&hold.entered);
    must(cb_unregister(h), "cb_unregister");
    samples[i].unregistered = mono_ns();
    sem_post(&hold.unregistered);
    sem_take(&hold.done);
    sleep_until(mono_ns() + MS);
  }
  hold.stop = 1;
  sem_post(&hold.go);
  pthread_join(worker, NULL);
}

/* Prints one latency row: p50 / p99 / max in ms of destroyed - (call_end if in_flight, else unregistered). */
static void latency_row(const char *label, int in_flight, int ran) {
  double ms[LAT_SAMPLES];
  int n = 0;
  for (int i = 0; i < LAT_SAMPLES; i++) {
    int64_t d = atomic_load(&samples[i].destroyed);
    if (d) ms[n++] = (double)(d - (in_flight ? samples[i].call_end : samples[i].unregistered)) / 1e6;
  }
  if (n == 0) {
    printf("| %s | 0 of %d | – | – | – |\n", label, LAT_SAMPLES);
    return;
  }
  qsort(ms, (size_t)n, sizeof *ms, cmp_double);
  printf("| %s | %d of %d | %.2f | %.2f | %.2f |\n", label, ran, LAT_SAMPLES, percentile(ms, n, 50),
         percentile(ms, n, 99), ms[n - 1]);
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0); /* tables appear as they are measured, also through a pipe */
  double scale = argc > 1 ? atof(argv[1]) : 1.0;
  if (!(scale > 0)) scale = 1.0;
  const double run_ns = 60e6 * scale; /* length of one timed call run */
  const long pairs = (long)(500000 * scale);

  /* ---- 1. calls ---- */
  cb_handle tracked[2], untracked[2];
  cb_fn te[2], ue[2];
  for (int t = 0; t < 2; t++) {
    must(cb_register((cb_fn)add_one, NULL, NULL, &tracked[t], &te[t]), "cb_register");
    must(cb_register_ex((cb_fn)add_one, NULL, NULL, CB_REGISTER_UNTRACKED, &untracked[t], &ue[t]),
         "cb_register_ex(CB_REGISTER_UNTRACKED)");
  }
  variant v[5] = {
      {.label = "direct: fn(ud, x)", .f = {NULL, NULL}},
      {.label = "C-wrapper floor: wrap(x)", .f = {floor_wrap, floor_wrap}},
      {.label = "cbslot tracked entry (cb_register)", .f = {(entry_fn)te[0], (entry_fn)te[1]}},
      {.label = "cbslot untracked entry (CB_REGISTER_UNTRACKED)", .f = {(entry_fn)ue[0], (entry_fn)ue[1]}},
      {.label = "libffi closure"},
  };
  enum { DIRECT, FLOOR, TRACKED, UNTRACKED, LIBFFI };
  int nv = 4;
#ifdef CBSLOT_HAVE_LIBFFI
  if (ffi_prep_cif(&int_int_cif, FFI_DEFAULT_ABI, 1, &ffi_type_sint, int_arg) != FFI_OK) return 1;
  ffi_closure *closures[2];
  v[LIBFFI].f[0] = ffi_make(&closures[0]);
  v[LIBFFI].f[1] = ffi_make(&closures[1]);
  nv = 5;
#endif
  /* calls per run: from a short warm-up run, so that every run lasts about run_ns */
  for (int i = 0; i < nv; i++) {
    run_calls(&v[i], 0, 200000);
    double est = run_calls(&v[i], 0, 1000000);
    double n = run_ns / (est > 0.05 ? est : 0.05);
    v[i].iters = n < 100000 ? 100000 : n > 1e9 ? 1000000000 : (long)n;
  }
  for (int r = 0; r < RUNS; r++)
    for (int i = 0; i < nv; i++) v[i].ns[r] = run_calls(&v[i], 0, v[i].iters);
  for (int i = 0; i < nv; i++) {
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    two_ctx c[2] = {{&v[i], 0, &start}, {&v[i], 1, &start}};
    pthread_t t[2];
    for (int k = 0; k < 2; k++)
      if (pthread_create(&t[k], NULL, two_thread_body, &c[k])) return 1;
    for (int k = 0; k < 2; k++) pthread_join(t[k], NULL);
    pthread_barrier_destroy(&start);
  }

  spread s[5];
  for (int i = 0; i < nv; i++) s[i] = spread_of(v[i].ns, RUNS);
  printf("### Calls: int f(int x) through a pointer, running fn(userdata, x); ns per call\n\n");
  printf("min / median / max over %d runs of about %.0f ms each, calls chained (each result is the next "
         "argument); runs of the callees interleaved. 2 threads: both threads at once, each its own entry, "
         "median (min–max) over both threads' runs.\n\n",
         RUNS, run_ns / 1e6);
  printf("| callee | min | median | max | median vs direct | 2 threads |\n|---|---|---|---|---|---|\n");
  for (int i = 0; i < nv; i++) {
    spread t = spread_of(v[i].two, 2 * RUNS);
    printf("| %s | %.2f | %.2f | %.2f | %.2fx | %.2f (%.2f–%.2f) |\n", v[i].label, s[i].min, s[i].med, s[i].max,
           s[i].med / s[DIRECT].med, t.med, t.min, t.max);
  }
  if (nv == 4) printf("| libffi closure | (not built: install libffi-dev) | | | | |\n");
  printf("\n- direct: the user's `int fn(void *ud, int x)` called through a volatile function pointer.\n"
         "- C-wrapper floor: `int wrap(int x)` that increments a thread-local nesting counter, calls fn(ud, x) "
         "through a pointer, decrements it and returns: the cheapest trampoline that knows when the call "
         "returns.\n"
         "- tracked entry: `cb_register`; the dispatcher records the call in flight, so `cb_unregister` is "
         "safe during calls.\n"
         "- untracked entry: `cb_register_ex(..., CB_REGISTER_UNTRACKED, ...)`; the entry moves the arguments "
         "and jumps to fn.\n"
         "- libffi closure: `ffi_closure` of type int(int) whose handler calls fn(ud, x).\n\n");

  /* ratios: of the medians, and the range of the ratio within each run (the same run of both callees) */
  printf("| ratio | of medians | range over runs |\n|---|---|---|\n");
  static const int pair[][2] = {{TRACKED, FLOOR}, {UNTRACKED, DIRECT}, {LIBFFI, UNTRACKED}, {LIBFFI, TRACKED}};
  static const char *const names[] = {"direct", "floor", "tracked", "untracked", "libffi"};
  for (size_t p = 0; p < sizeof pair / sizeof pair[0]; p++) {
    int a = pair[p][0], b = pair[p][1];
    if (a >= nv) continue;
    double q[RUNS];
    for (int r = 0; r < RUNS; r++) q[r] = v[a].ns[r] / v[b].ns[r];
    spread qs = spread_of(q, RUNS);
    printf("| %s / %s | %.2fx | %.2fx–%.2fx |\n", names[a], names[b], s[a].med / s[b].med, qs.min, qs.max);
  }

  /* ---- 2. register + unregister ---- */
  printf("\n### Register + unregister, ns per pair\n\n");
  printf("min / median / max over %d runs of %ld pairs; each run ends with cb_barrier(), so every destroy "
         "is in the time (tracked: destroys run in grace periods, on the reclaimer thread or, with the reclaim "
         "delay 0, on the unregistering thread; untracked: inside cb_unregister).\n\n",
         RUNS, pairs);
  printf("| registration | live callbacks | min | median | max |\n|---|---|---|---|---|\n");
  static cb_handle ballast[BALLAST];
  for (int i = 0; i < BALLAST; i++) {
    cb_fn e;
    must(cb_register((cb_fn)add_one, NULL, NULL, &ballast[i], &e), "cb_register");
  }
  reg_unreg_rows("1k", pairs);

  cb_handle *live = malloc(MANY * sizeof *live);
  cb_fn *entries = malloc(MANY * sizeof *entries);
  if (!live || !entries) return 1;
  memset(live, 0xff, MANY * sizeof *live); /* touched now: the benchmark's own arrays are not cbslot's memory */
  memset(entries, 0xff, MANY * sizeof *entries);
  must(cb_barrier(), "cb_barrier");
  long anon0 = rss_bytes("RssAnon:"), file0 = rss_bytes("RssFile:") + rss_bytes("RssShmem:");
  for (long i = 0; i < MANY; i++) must(cb_register((cb_fn)add_one, NULL, NULL, &live[i], &entries[i]), "cb_register");
  for (long i = 0; i < MANY; i += 4096) ((entry_fn)entries[i])(1); /* touch the code pages, as calls would */
  long anon1 = rss_bytes("RssAnon:"), file1 = rss_bytes("RssFile:") + rss_bytes("RssShmem:");
  reg_unreg_rows("1M", pairs);
#ifdef CBSLOT_HAVE_LIBFFI
  {
    double ns[RUNS];
    for (int r = 0; r < RUNS; r++) {
      int64_t t0 = mono_ns();
      for (long i = 0; i < pairs; i++) {
        ffi_closure *c;
        ffi_make(&c);
        ffi_closure_free(c);
      }
      ns[r] = (double)since(t0) / (double)pairs;
    }
    spread f = spread_of(ns, RUNS);
    printf("| libffi closure alloc+prep+free, for scale | – | %.1f | %.1f | %.1f |\n", f.min, f.med, f.max);
  }
#endif

  /* ---- 3. memory ---- */
  printf("\n### Memory, resident bytes per live callback at 1M live\n\n");
  printf("| memory | bytes per callback |\n|---|---|\n");
  printf("| private (data slots, control table) | %.1f |\n", (double)(anon1 - anon0) / MANY);
  printf("| trampoline code (shared pages of the library file or memfd, mapped once per block) | %.1f |\n",
         (double)(file1 - file0) / MANY);
  for (long i = 0; i < MANY; i++) must(cb_unregister(live[i]), "cb_unregister");
  for (int i = 0; i < BALLAST; i++) must(cb_unregister(ballast[i]), "cb_unregister");
  must(cb_barrier(), "cb_barrier");
  free(live);
  free(entries);

  /* ---- 4. destroy latency ---- */
  printf("\n### Destroy latency: from cb_unregister returning to destroy(userdata) running, ms\n\n");
  printf("%d unregisters about 1 ms apart per case, no cb_barrier() during a case; destroy notes "
         "clock_gettime(CLOCK_MONOTONIC). Percentiles over the destroys that ran (within 2 s).\n\n",
         LAT_SAMPLES);
  printf("| case | destroys run | p50 | p99 | max |\n|---|---|---|---|---|\n");
  char label[200];
  must(cb_set_reclaim_delay(CB_RECLAIM_DELAY_DEFAULT_MS), "cb_set_reclaim_delay");
  unregister_spaced();
  int ran = wait_destroyed(2000 * MS);
  snprintf(label, sizeof label, "(a) reclaim delay %d ms (default), no call in flight", CB_RECLAIM_DELAY_DEFAULT_MS);
  latency_row(label, 0, ran);
  must(cb_barrier(), "cb_barrier");

  unregister_in_flight();
  ran = wait_destroyed(2000 * MS);
  snprintf(label, sizeof label,
           "(b) reclaim delay %d ms, a call in flight returning %lld ms after cb_unregister; from that return",
           CB_RECLAIM_DELAY_DEFAULT_MS, HOLD_NS / MS);
  latency_row(label, 1, ran);
  must(cb_barrier(), "cb_barrier");

  /* (c) no reclaimer thread: destroys wait for a grace period (every CB_GRACE_BATCH unregisters, or
   * cb_barrier), so this only counts how many ran within 100 ms of their cb_unregister */
  must(cb_set_reclaim_delay(0), "cb_set_reclaim_delay");
  unregister_spaced();
  sleep_until(samples[LAT_SAMPLES - 1].unregistered + 100 * MS);
  int soon = 0;
  for (int i = 0; i < LAT_SAMPLES; i++) {
    int64_t d = atomic_load(&samples[i].destroyed);
    soon += d != 0 && d - samples[i].unregistered <= 100 * MS;
  }
  must(cb_barrier(), "cb_barrier");
  ran = 0;
  for (int i = 0; i < LAT_SAMPLES; i++) ran += atomic_load(&samples[i].destroyed) != 0;
  must(cb_set_reclaim_delay(CB_RECLAIM_DELAY_DEFAULT_MS), "cb_set_reclaim_delay");
  printf("| (c) reclaim delay 0 (no reclaimer thread), no cb_barrier(): destroys run within 100 ms | %d of %d "
         "| – | – | – |\n",
         soon, LAT_SAMPLES);
  printf("\n(c) is unbounded by design: without the reclaimer, destroys wait for a grace period (every %d "
         "unregisters, or cb_barrier()); the cb_barrier() after (c) ran %d of %d.\n",
         CB_GRACE_BATCH, ran, LAT_SAMPLES);

  for (int t = 0; t < 2; t++) {
    must(cb_unregister(tracked[t]), "cb_unregister");
    must(cb_unregister(untracked[t]), "cb_unregister");
  }
#ifdef CBSLOT_HAVE_LIBFFI
  ffi_closure_free(closures[0]);
  ffi_closure_free(closures[1]);
#endif
  must(cb_barrier(), "cb_barrier");
  return 0;
}
