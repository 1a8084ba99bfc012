/* Queue benchmark (not a test):
 *   - post cost, 16-byte payload: 1 producer (uncontended), 2 producers at once (per-thread cost);
 *   - drain cost per event, in batches of 256;
 *   - end to end: 2 producers posting, 1 consumer draining, events per second;
 *   - latency from post to delivery with the consumer blocked on the fd (poll), median and p99.
 * Usage: bench_queue [scale] */
#include <cbslot.h>
#include <poll.h>
#include <sched.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static atomic_long sunk;
static void sink_fn(void *ud, const void *data, size_t len) {
  (void)ud;
  (void)data;
  (void)len;
  atomic_fetch_add_explicit(&sunk, 1, memory_order_relaxed);
}

typedef struct prod {
  cb_handle sink;
  long n;
  double ns;
  long full;
  int wait; /* block in cb_queue_post_wait when full, instead of retrying with sched_yield */
} prod;

static void *producer(void *arg) {
  prod *p = arg;
  char payload[16] = "0123456789abcde";
  double t0 = now_ns();
  for (long i = 0; i < p->n; i++) {
    if (p->wait) {
      if (cb_queue_post_wait(p->sink, payload, sizeof payload, -1) != CB_OK) abort();
      continue;
    }
    while (cb_queue_post(p->sink, payload, sizeof payload) == CB_ERR_CAPACITY) {
      p->full++;
      sched_yield(); /* let the consumer run: 3 threads share 2 cores here */
    }
  }
  p->ns = (now_ns() - t0) / (double)p->n;
  return NULL;
}

static atomic_int consumer_stop;
static cb_queue *cq;
static void *consumer(void *arg) {
  long *got = arg;
  while (!atomic_load(&consumer_stop)) {
    size_t n = 0;
    cb_queue_drain(cq, 256, 10, &n);
    *got += (long)n;
  }
  return NULL;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double stamp;
static double *lat;
static int nlat;
static void latency_sink(void *ud, const void *data, size_t len) {
  (void)ud;
  (void)len;
  double sent;
  memcpy(&sent, data, sizeof sent);
  lat[nlat++] = now_ns() - sent;
}
static void *lat_consumer(void *arg) {
  int fd, total = *(int *)arg;
  cb_queue_fd(cq, &fd);
  while (nlat < total) {
    struct pollfd p = {fd, POLLIN, 0};
    poll(&p, 1, 1000);
    cb_queue_drain(cq, 16, 0, NULL);
  }
  return NULL;
}

int main(int argc, char **argv) {
  double scale = argc > 1 ? atof(argv[1]) : 1.0;
  long n = (long)(5000000 * scale);
  cb_handle s1, s2;

  /* post, uncontended (a queue big enough to take them all) */
  cb_queue_new((size_t)n, &cq);
  cb_queue_sink_register(cq, sink_fn, NULL, NULL, &s1);
  prod one = {s1, n, 0, 0, 0};
  producer(&one);
  /* drain in batches of 256 */
  double t0 = now_ns();
  size_t got, total = 0;
  do {
    cb_queue_drain(cq, 256, 0, &got);
    total += got;
  } while (got);
  double drain_ns = (now_ns() - t0) / (double)total;
  cb_queue_free(cq);

  /* post, 2 producers at once */
  cb_queue_new((size_t)n * 2, &cq);
  cb_queue_sink_register(cq, sink_fn, NULL, NULL, &s1);
  cb_queue_sink_register(cq, sink_fn, NULL, NULL, &s2);
  prod two[2] = {{s1, n, 0, 0, 0}, {s2, n, 0, 0, 0}};
  pthread_t t[3];
  for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, producer, &two[i]);
  for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
  cb_queue_free(cq);

  /* end to end: 2 producers, 1 consumer, a 4096-event queue; producers retry with sched_yield when it is
     full, or block in cb_queue_post_wait */
  double e2e_rate[2];
  long e2e_full = 0;
  for (int w = 0; w < 2; w++) {
    cb_queue_new(4096, &cq);
    cb_queue_sink_register(cq, sink_fn, NULL, NULL, &s1);
    cb_queue_sink_register(cq, sink_fn, NULL, NULL, &s2);
    prod e2e[2] = {{s1, n, 0, 0, w}, {s2, n, 0, 0, w}};
    long consumed = 0;
    atomic_store(&consumer_stop, 0);
    atomic_store(&sunk, 0);
    t0 = now_ns();
    pthread_create(&t[2], NULL, consumer, &consumed);
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, producer, &e2e[i]);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    while (atomic_load(&sunk) < 2 * n) sched_yield();
    e2e_rate[w] = 2.0 * (double)n / ((now_ns() - t0) / 1e9) / 1e6;
    if (!w) e2e_full = e2e[0].full + e2e[1].full;
    atomic_store(&consumer_stop, 1);
    pthread_join(t[2], NULL);
    cb_queue_free(cq);
  }
  /* latency, consumer blocked on the fd */
  int lat_n = (int)(20000 * scale) + 100;
  lat = malloc(sizeof(double) * (size_t)lat_n);
  cb_queue_new(1024, &cq);
  cb_queue_sink_register(cq, latency_sink, NULL, NULL, &s1);
  pthread_create(&t[2], NULL, lat_consumer, &lat_n);
  for (int i = 0; i < lat_n; i++) {
    struct timespec pause = {0, 20000}; /* 20 us apart, so the consumer is asleep on the fd each time */
    nanosleep(&pause, NULL);
    stamp = now_ns();
    cb_queue_post(s1, &stamp, sizeof stamp);
  }
  pthread_join(t[2], NULL);
  cb_queue_free(cq);
  qsort(lat, (size_t)nlat, sizeof *lat, cmp_double);

  printf("| measure | cbslot queue |\n|---|---|\n");
  printf("| post, 16-byte payload, 1 producer | %.1f ns |\n", one.ns);
  printf("| post, 16-byte payload, 2 producers at once | %.1f / %.1f ns per post |\n", two[0].ns, two[1].ns);
  printf("| drain, per event, batches of 256 (sink does an atomic add) | %.1f ns |\n", drain_ns);
  printf("| end to end, 2 producers -> 1 consumer, 4096-event queue, producers yield when full | %.1f M events/s (%ld full retries) |\n",
         e2e_rate[0], e2e_full);
  printf("| end to end, the same, producers block in cb_queue_post_wait when full | %.1f M events/s |\n", e2e_rate[1]);
  printf("| post -> delivery latency, consumer asleep in poll() on the fd | median %.1f us, p99 %.1f us |\n",
         lat[nlat / 2] / 1e3, lat[(int)(nlat * 0.99)] / 1e3);
  return 0;
}
