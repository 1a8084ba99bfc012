/* The queue's fd after a late wake-up: a producer that claimed the wake-up (the consumer was idle) is
 * descheduled before its eventfd write lands; meanwhile the consumer drains the event and goes idle again.
 * The late write must not leave the fd readable for good (an epoll consumer would spin, and a drain with a
 * timeout would spin for all of it): the next drain that finds the queue empty resets it.
 *
 * Deterministic: this program interposes write(2) (cbslot calls it through the PLT) and stalls the 8-byte
 * eventfd write of one producer thread until the consumer has drained and gone idle. */
#define _GNU_SOURCE
#include "check.h"

#include <dlfcn.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

static _Thread_local int stall_my_write;
static atomic_int write_stalled, consumer_idle;

ssize_t write(int fd, const void *buf, size_t n) {
  static ssize_t (*real)(int, const void *, size_t);
  if (!real) {
    void *sym = dlsym(RTLD_NEXT, "write");
    memcpy(&real, &sym, sizeof real); /* POSIX's way from dlsym to a function pointer */
  }
  if (stall_my_write && n == 8) { /* the eventfd wake-up of this producer's post */
    stall_my_write = 0;
    atomic_store(&write_stalled, 1);
    while (!atomic_load(&consumer_idle)) usleep(100);
  }
  return real(fd, buf, n);
}

static int delivered;
static void sink(void *ud, const void *data, size_t len) {
  (void)ud, (void)data, (void)len;
  delivered++;
}

static cb_handle s;
static void *producer(void *arg) {
  (void)arg;
  stall_my_write = 1;
  CHECK_STATUS(CB_OK, cb_queue_post(s, "x", 1));
  return NULL;
}

static int readable(int fd) {
  struct pollfd p = {fd, POLLIN, 0};
  return poll(&p, 1, 0);
}

int main(void) {
  cb_queue *q;
  int fd;
  CHECK_STATUS(CB_OK, cb_queue_new(8, &q));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(q, sink, NULL, NULL, &s));
  CHECK_STATUS(CB_OK, cb_queue_fd(q, &fd));
  CHECK(readable(fd) == 0);
  pthread_t t;
  CHECK(pthread_create(&t, NULL, producer, NULL) == 0);
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
  CHECK_DONE("test_queue_late_signal");
}
