/* Handle-registry benchmark (not a test): ns per operation, best of several runs.
 *
 *   get (one handle)       cb_handle_get on the same handle, in a loop
 *   get (spread)           cb_handle_get over all live handles in a shuffled order (cache misses at 1M)
 *   retain+release         a pair on one handle
 *   new+release            create a handle and release it (destroy runs), with `live` others alive
 *
 * Each at 1k and 1M live handles, on 1 thread and on 2 threads at once (each thread on its own handles;
 * the figure is the per-thread cost). The first row is the cost of calling an empty cbslot function, the floor
 * under every other row (a PLT call when linked to the shared library, a direct call when linked statically).
 * Usage: bench_handles [scale]  (scale multiplies the iteration counts). */
#include <cbslot.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void destroy_nop(void *p) { (void)p; }

typedef enum { OP_CALL, OP_GET_ONE, OP_GET_SPREAD, OP_RETAIN_RELEASE, OP_NEW_RELEASE, OP_COUNT } op;
static const char *op_names[OP_COUNT] = {"floor: empty call into cbslot (cb_version)", "get (one handle)",
                                         "get (spread over live)", "retain+release", "new+release"};

typedef struct job {
  op which;
  cb_handle *live; /* this thread's share of the live handles */
  uint32_t *order; /* shuffled indexes into live */
  long nlive;
  long iters;
  double ns_per_op;
  uintptr_t sink;
} job;

static void *run(void *arg) {
  job *j = arg;
  double best = 1e30;
  for (int rep = 0; rep < 5; rep++) {
    uintptr_t sink = 0;
    double t0 = now_ns();
    switch (j->which) {
    case OP_CALL:
      for (long i = 0; i < j->iters; i++) {
        const char *v = cb_version();
        __asm__ volatile("" : : "r"(v) : "memory");
      }
      break;
    case OP_GET_ONE:
      for (long i = 0; i < j->iters; i++) {
        void *p;
        cb_handle_get(j->live[0], &p);
        sink += (uintptr_t)p;
        __asm__ volatile("" ::: "memory");
      }
      break;
    case OP_GET_SPREAD:
      for (long i = 0, k = 0; i < j->iters; i++) {
        void *p;
        cb_handle_get(j->live[j->order[k]], &p);
        sink += (uintptr_t)p;
        if (++k == j->nlive) k = 0;
      }
      break;
    case OP_RETAIN_RELEASE:
      for (long i = 0; i < j->iters; i++) {
        cb_handle_retain(j->live[0]);
        cb_handle_release(j->live[0]);
      }
      break;
    case OP_NEW_RELEASE:
      for (long i = 0; i < j->iters; i++) {
        cb_handle h;
        cb_handle_new(&sink, destroy_nop, &h);
        cb_handle_release(h);
      }
      break;
    default:
      break;
    }
    double ns = (now_ns() - t0) / (double)j->iters;
    if (ns < best) best = ns;
    j->sink += sink;
  }
  j->ns_per_op = best;
  return NULL;
}

int main(int argc, char **argv) {
  double scale = argc > 1 ? atof(argv[1]) : 1.0;
  const long lives[] = {1000, 1000000};
#ifdef CBSLOT_BENCH_STATIC
  printf("linked statically (libcbslot.a)\n\n");
#else
  printf("linked to the shared library (libcbslot.so, calls through the PLT)\n\n");
#endif
  printf("| operation | live handles | 1 thread (ns/op) | 2 threads (ns/op, per thread) |\n");
  printf("|---|---|---|---|\n");
  for (size_t li = 0; li < 2; li++) {
    long nlive = lives[li];
    cb_handle *live = malloc(nlive * sizeof *live);
    uint32_t *order = malloc(nlive * sizeof *order);
    if (!live || !order) return 1;
    for (long i = 0; i < nlive; i++) {
      if (cb_handle_new(&live[i], destroy_nop, &live[i]) != CB_OK) return 1;
      order[i] = (uint32_t)i;
    }
    uint64_t seed = 88172645463325252ULL;
    for (long i = nlive - 1; i > 0; i--) { /* shuffle (half-open per thread below) */
      seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
      long k = (long)(seed % (uint64_t)(i + 1));
      uint32_t t = order[i];
      order[i] = order[k];
      order[k] = t;
    }
    for (int o = 0; o < OP_COUNT; o++) {
      long iters = (long)(5000000 * scale);
      job one = {(op)o, live, order, nlive, iters, 0, 0};
      run(&one);
      /* two threads: each takes half of the live handles (shuffled order restricted to its half) */
      job two[2];
      pthread_t t[2];
      uint32_t *half_order[2];
      for (int k = 0; k < 2; k++) {
        long n = nlive / 2;
        half_order[k] = malloc(n * sizeof(uint32_t));
        for (long i = 0, m = 0; i < nlive && m < n; i++)
          if ((order[i] < n) == (k == 0)) half_order[k][m++] = order[i] - (k ? (uint32_t)n : 0);
        two[k] = (job){(op)o, live + k * n, half_order[k], n, iters, 0, 0};
        pthread_create(&t[k], NULL, run, &two[k]);
      }
      for (int k = 0; k < 2; k++) pthread_join(t[k], NULL), free(half_order[k]);
      printf("| %s | %ld | %.2f | %.2f / %.2f |\n", op_names[o], nlive, one.ns_per_op, two[0].ns_per_op,
             two[1].ns_per_op);
    }
    for (long i = 0; i < nlive; i++) cb_handle_release(live[i]);
    free(live);
    free(order);
  }
  return 0;
}
