/* Callback benchmark (not a test). In one process:
 *   - a C loop calling int f(int, int) through a pointer: the plain function, a cbslot entry, a libffi
 *     closure (same signature), each result fed into the next call (latency, like a comparator chain);
 *   - the same calls from 2 threads at once (each its own entry; per-thread cost);
 *   - cb_register+cb_unregister pairs with 1k and 1M other callbacks live (grace periods and destroys
 *     included), and libffi's closure alloc+prep+free;
 *   - resident memory per live callback at 1M.
 * Usage: bench_callbacks [scale] */
#include <cbslot.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef CBSLOT_HAVE_LIBFFI
#include <ffi.h>
#endif

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

__attribute__((noinline)) static int add_direct(int a, int b) { return a + b; }
static int add_cb(void *ud, int a, int b) {
  (void)ud;
  return a + b;
}
static void destroy_nop(void *ud) { (void)ud; }

/* The floor for any trampoline that must know when the call ends: a C wrapper that calls the real function
 * through a pointer (not a tail call) and counts nesting in a thread-local, as cbslot's dispatcher does. */
static int (*volatile wrapped)(void *, int, int) = add_cb;
static _Thread_local long nesting;
__attribute__((noinline)) static int c_wrapper(int a, int b) {
  nesting++;
  int r = wrapped(NULL, a, b);
  nesting--;
  return r;
}

typedef int (*add_fn)(int, int);

typedef struct run {
  add_fn f;
  long iters;
  double ns;
} run;

static void *chain(void *arg) {
  run *r = arg;
  double best = 1e30;
  for (int rep = 0; rep < 5; rep++) {
    add_fn volatile fv = r->f;
    add_fn f = fv;
    int acc = 0;
    double t0 = now_ns();
    for (long i = 0; i < r->iters; i++) acc = f(acc, 1);
    double ns = (now_ns() - t0) / (double)r->iters;
    if (acc != (int)r->iters) {
      fprintf(stderr, "wrong result\n");
      exit(1);
    }
    if (ns < best) best = ns;
  }
  r->ns = best;
  return NULL;
}

static double one_thread(add_fn f, long iters) {
  run r = {f, iters, 0};
  chain(&r);
  return r.ns;
}

static void two_threads(add_fn f1, add_fn f2, long iters, double out[2]) {
  run r[2] = {{f1, iters, 0}, {f2, iters, 0}};
  pthread_t t[2];
  for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, chain, &r[i]);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL), out[i] = r[i].ns;
}

#ifdef CBSLOT_HAVE_LIBFFI
static ffi_cif cif;
static ffi_type *arg_types[2] = {&ffi_type_sint, &ffi_type_sint};
static void ffi_handler(ffi_cif *c, void *ret, void **args, void *ud) {
  (void)c;
  (void)ud;
  *(ffi_arg *)ret = (ffi_arg)(*(int *)args[0] + *(int *)args[1]);
}
static add_fn ffi_make(ffi_closure **out) {
  void *code;
  ffi_closure *cl = ffi_closure_alloc(sizeof(ffi_closure), &code);
  if (!cl || ffi_prep_closure_loc(cl, &cif, ffi_handler, NULL, code) != FFI_OK) exit(1);
  *out = cl;
  add_fn f;
  memcpy(&f, &code, sizeof f); /* libffi hands out code as void * */
  return f;
}
#endif

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

static double reg_unreg(long pairs) {
  double best = 1e30;
  for (int rep = 0; rep < 3; rep++) {
    double t0 = now_ns();
    for (long i = 0; i < pairs; i++) {
      cb_handle h;
      cb_fn e;
      cb_register((cb_fn)add_cb, NULL, destroy_nop, &h, &e);
      cb_unregister(h);
    }
    cb_barrier();
    double ns = (now_ns() - t0) / (double)pairs;
    if (ns < best) best = ns;
  }
  return best;
}

int main(int argc, char **argv) {
  double scale = argc > 1 ? atof(argv[1]) : 1.0;
  long iters = (long)(50000000 * scale);
  cb_handle h1, h2;
  cb_fn e1, e2;
  if (cb_register((cb_fn)add_cb, NULL, NULL, &h1, &e1) || cb_register((cb_fn)add_cb, NULL, NULL, &h2, &e2)) {
    fprintf(stderr, "cb_register: %s\n", cb_last_error());
    return 1;
  }
  double direct = one_thread(add_direct, iters), entry = one_thread((add_fn)e1, iters), two[2], two_direct[2];
  double floor = one_thread(c_wrapper, iters);
  two_threads(add_direct, add_direct, iters, two_direct);
  two_threads((add_fn)e1, (add_fn)e2, iters, two);
  printf("## Calls: int f(int, int) through a pointer, ns per call (best of 5 x %ld)\n\n", iters);
  printf("| callee | 1 thread | 2 threads (per thread) | vs direct |\n|---|---|---|---|\n");
  printf("| direct function | %.2f | %.2f / %.2f | 1.00x |\n", direct, two_direct[0], two_direct[1]);
  printf("| C wrapper calling it (floor for a call-tracking trampoline) | %.2f | | %.2fx |\n", floor,
         floor / direct);
  printf("| cbslot entry | %.2f | %.2f / %.2f | %.2fx |\n", entry, two[0], two[1], entry / direct);
#ifdef CBSLOT_HAVE_LIBFFI
  if (ffi_prep_cif(&cif, FFI_DEFAULT_ABI, 2, &ffi_type_sint, arg_types) != FFI_OK) return 1;
  ffi_closure *c1, *c2;
  add_fn f1 = ffi_make(&c1), f2 = ffi_make(&c2);
  double ffi = one_thread(f1, iters / 4);
  two_threads(f1, f2, iters / 4, two);
  printf("| libffi closure | %.2f | %.2f / %.2f | %.2fx |\n", ffi, two[0], two[1], ffi / direct);
  printf("\ncbslot entry is %.1fx faster than a libffi closure.\n", ffi / entry);
  ffi_closure_free(c1);
  ffi_closure_free(c2);
#else
  printf("| libffi closure | (not built: install libffi-dev) | | |\n");
#endif

  printf("\n## Register + unregister (destroy included), ns per pair\n\n| live callbacks | cbslot |\n|---|---|\n");
  long pairs = (long)(2000000 * scale);
  printf("| 1k | %.1f |\n", reg_unreg(pairs));
  enum { MANY = 1000000 };
  cb_handle *live = malloc(MANY * sizeof *live);
  cb_fn *entries = malloc(MANY * sizeof *entries);
  if (!live || !entries) return 1;
  memset(live, 0xff, MANY * sizeof *live); /* touched now: the benchmark's own arrays are not cbslot's memory */
  memset(entries, 0xff, MANY * sizeof *entries);
  cb_barrier();
  long anon0 = rss_bytes("RssAnon:"), file0 = rss_bytes("RssFile:") + rss_bytes("RssShmem:");
  for (long i = 0; i < MANY; i++) cb_register((cb_fn)add_cb, NULL, NULL, &live[i], &entries[i]);
  for (long i = 0; i < MANY; i += 4096) ((add_fn)entries[i])(1, 2); /* touch like a user would */
  long anon1 = rss_bytes("RssAnon:"), file1 = rss_bytes("RssFile:") + rss_bytes("RssShmem:");
  printf("| 1M | %.1f |\n", reg_unreg(pairs));
#ifdef CBSLOT_HAVE_LIBFFI
  double t0 = now_ns();
  for (long i = 0; i < pairs; i++) {
    ffi_closure *c;
    ffi_make(&c);
    ffi_closure_free(c);
  }
  printf("| libffi alloc+prep+free (for scale) | %.1f |\n", (now_ns() - t0) / (double)pairs);
#endif
  printf("\n## Memory, resident bytes per live callback at 1M live\n\n");
  printf("- private memory (data slots, control table): %.1f\n", (double)(anon1 - anon0) / MANY);
  printf("- trampoline code, shared pages of the library file or memfd, mapped once per block: %.1f\n",
         (double)(file1 - file0) / MANY);
  for (long i = 0; i < MANY; i++) cb_unregister(live[i]);
  cb_barrier();
  return 0;
}
