/* Wake-ups that land late, made deterministic by interposing write(2) (cbslot calls it through the PLT)
 * and stalling one thread's 8-byte eventfd write (before or after it lands) until the other side has moved on:
 * 1. queue: a producer's wake-up lands after the consumer drained its event and went idle again. The fd
 *    must not stay readable for good (an epoll consumer would spin): the next empty drain resets it.
 * 2. queue: the producer stalls right after its write landed, before it could flag it. A timed drain must
 *    sleep, not spin for its whole timeout.
 * 3. built-in loop: a timeout's wake-up lands after the round it was meant for (the loop woke for another
 *    fd). The next cb_loop_run_once(-1) must wait for the timeout, not return at once with nothing due. */
#define _GNU_SOURCE
#include "check.h"

#include <dlfcn.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

enum { STALL_BEFORE = 1, STALL_AROUND = 2 };
static _Thread_local int stall_my_write;
static atomic_int write_stalled, consumer_idle, write_landed, release;

/* STALL_BEFORE: the write waits until the other side is idle. STALL_AROUND: the same, and then, once it has
 * landed, the writer stays stalled (before it can say so) until released. */
ssize_t write(int fd, const void *buf, size_t n) {
  static ssize_t (*real)(int, const void *, size_t);
  if (!real) {
    void *sym = dlsym(RTLD_NEXT, "write");
    memcpy(&real, &sym, sizeof real); /* POSIX's way from dlsym to a function pointer */
  }
  int stall = n == 8 ? stall_my_write : 0; /* 8 bytes: an eventfd wake-up of this thread */
  stall_my_write = 0;
  if (!stall) return real(fd, buf, n);
  atomic_store(&write_stalled, 1);
  while (!atomic_load(&consumer_idle)) usleep(100);
  ssize_t r = real(fd, buf, n);
  if (stall == STALL_AROUND) {
    atomic_store(&write_landed, 1);
    while (!atomic_load(&release)) usleep(100);
  }
  return r;
}

static int delivered;
static void sink(void *ud, const void *data, size_t len) {
  (void)ud, (void)data, (void)len;
  delivered++;
}

static cb_handle s;
static void *producer(void *arg) {
  stall_my_write = (int)(intptr_t)arg;
  CHECK_STATUS(CB_OK, cb_queue_post(s, "x", 1));
  return NULL;
}

static int readable(int fd) {
  struct pollfd p = {fd, POLLIN, 0};
  return poll(&p, 1, 0);
}

static void late_write_lands_after_idle(void) {
  cb_queue *q;
  int fd;
  CHECK_STATUS(CB_OK, cb_queue_new(8, &q));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(q, sink, NULL, NULL, &s));
  CHECK_STATUS(CB_OK, cb_queue_fd(q, &fd));
  CHECK(readable(fd) == 0);
  pthread_t t;
  CHECK(pthread_create(&t, NULL, producer, (void *)(intptr_t)STALL_BEFORE) == 0);
  while (!atomic_load(&write_stalled)) usleep(100); /* the event is in the ring; its wake-up is not yet */
  size_t n = 0;
  CHECK_STATUS(CB_OK, cb_queue_drain(q, 16, 0, &n)); /* delivers it and goes idle (resets, re-arms) */
  CHECK(n == 1 && delivered == 1);
  atomic_store(&consumer_idle, 1);
  CHECK(pthread_join(t, NULL) == 0); /* the late write has landed: the fd is readable, nothing pending */
  cb_queue_stats st;
  CHECK_STATUS(CB_OK, cb_queue_get_stats(q, &st));
  CHECK(st.pending == 0);
  CHECK_STATUS(CB_OK, cb_queue_drain(q, 16, 0, &n)); /* finds it empty: must make the fd unreadable */
  CHECK(n == 0);
  CHECK(readable(fd) == 0);
  /* and the protocol still works: the next post makes it readable, a drain makes it unreadable */
  CHECK_STATUS(CB_OK, cb_queue_post(s, "y", 1));
  CHECK(readable(fd) == 1);
  CHECK_STATUS(CB_OK, cb_queue_drain(q, 16, 0, &n));
  CHECK(n == 1 && delivered == 2 && readable(fd) == 0);
  CHECK_STATUS(CB_OK, cb_queue_free(q));
}

static double thread_cpu_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void producer_stalled_after_its_write(void) {
  cb_queue *q;
  atomic_store(&write_stalled, 0);
  atomic_store(&consumer_idle, 0);
  delivered = 0;
  CHECK_STATUS(CB_OK, cb_queue_new(8, &q));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(q, sink, NULL, NULL, &s));
  pthread_t t;
  CHECK(pthread_create(&t, NULL, producer, (void *)(intptr_t)STALL_AROUND) == 0);
  while (!atomic_load(&write_stalled)) usleep(100);
  size_t n = 0;
  CHECK_STATUS(CB_OK, cb_queue_drain(q, 16, 0, &n)); /* delivers; idle again, armed */
  CHECK(n == 1);
  atomic_store(&consumer_idle, 1);
  while (!atomic_load(&write_landed)) usleep(100); /* readable, nothing pending, and not flagged yet */
  double cpu0 = thread_cpu_ms(), t0 = check_mono_ms();
  CHECK_STATUS(CB_OK, cb_queue_drain(q, 16, 300, &n)); /* nothing comes: sleeps its 300 ms */
  double cpu = thread_cpu_ms() - cpu0, wall = check_mono_ms() - t0;
  printf("timed drain with a stalled producer: %.0f ms wall, %.1f ms CPU\n", wall, cpu);
  CHECK(n == 0 && wall >= 250 && cpu < 100); /* spun for all of it before */
  atomic_store(&release, 1);
  CHECK(pthread_join(t, NULL) == 0);
  CHECK_STATUS(CB_OK, cb_queue_free(q));
}

static cb_loop *lp;
static vde_event_handler h;
static int pipefd[2];
static atomic_int fired_timeout;
static void loop_cb(int fd, short what, void *arg) {
  (void)arg;
  char c;
  if (fd >= 0) CHECK(read(fd, &c, 1) == 1);
  if (what & VDE_EV_TIMEOUT) atomic_fetch_add(&fired_timeout, 1);
}
static void *adder(void *arg) {
  (void)arg;
  usleep(50 * 1000); /* the loop sleeps in epoll_wait */
  stall_my_write = STALL_BEFORE;
  struct timeval tv = {1, 500 * 1000}; /* far enough that the first round cannot see it due, even under valgrind */
  CHECK(h.timeout_add(&tv, VDE_EV_TIMEOUT, loop_cb, NULL) != NULL); /* sees the loop asleep; its write stalls */
  return NULL;
}
static void *kicker(void *arg) {
  (void)arg;
  while (!atomic_load(&write_stalled)) usleep(100);
  CHECK(write(pipefd[1], "x", 1) == 1); /* wakes the loop instead */
  return NULL;
}
static void loop_wakeup_lands_after_its_round(void) {
  if (!check_has(CB_FEATURE_LOOP, "loop_wakeup_lands_after_its_round")) return;
  atomic_store(&write_stalled, 0);
  atomic_store(&consumer_idle, 0);
  CHECK(pipe(pipefd) == 0);
  CHECK_STATUS(CB_OK, cb_loop_new(&lp));
  CHECK_STATUS(CB_OK, cb_loop_handler(lp, &h));
  void *tok = h.event_add(pipefd[0], VDE_EV_READ | VDE_EV_PERSIST, NULL, loop_cb, NULL);
  CHECK(tok != NULL);
  pthread_t a, k;
  CHECK(pthread_create(&a, NULL, adder, NULL) == 0 && pthread_create(&k, NULL, kicker, NULL) == 0);
  size_t n = 0;
  CHECK_STATUS(CB_OK, cb_loop_run_once(lp, -1, &n)); /* woken by the pipe, not by the add */
  CHECK(n == 1 && atomic_load(&fired_timeout) == 0);
  atomic_store(&consumer_idle, 1);
  CHECK(pthread_join(a, NULL) == 0 && pthread_join(k, NULL) == 0); /* the add's wake-up has landed now */
  double t0 = check_mono_ms();
  CHECK_STATUS(CB_OK, cb_loop_run_once(lp, -1, &n)); /* nothing is due before the timeout: waits for it */
  CHECK(n == 1 && atomic_load(&fired_timeout) == 1 && check_mono_ms() - t0 >= 100);
  h.event_del(tok);
  CHECK_STATUS(CB_OK, cb_loop_free(lp));
  close(pipefd[0]);
  close(pipefd[1]);
}

int main(void) {
  late_write_lands_after_idle();
  producer_stalled_after_its_write();
  loop_wakeup_lands_after_its_round();
  CHECK_DONE("test_late_wakeups");
}
