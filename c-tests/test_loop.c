/* cbslot's built-in loop on its own: fd readiness, persistent timers repeat and one-shot ones fire once,
 * an fd event with a timeout fires VDE_EV_TIMEOUT when idle, run returns when nothing is left, stop from a
 * callback and from another thread, its handler functions are cbslot entries (stale after free), and
 * every bad input. */
#include "check.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static vde_event_handler h;
static cb_loop *lp;

typedef struct rec {
  int calls;
  short what;
  int fd;
  void *self; /* token, for deleting itself */
  int stop_after;
  int del_after;
} rec;

static void on_event(int fd, short what, void *arg) {
  rec *r = arg;
  r->calls++;
  r->what = what;
  r->fd = fd;
  if (fd >= 0 && (what & VDE_EV_READ)) {
    char c;
    CHECK(read(fd, &c, 1) == 1);
  }
  if (r->stop_after && r->calls == r->stop_after) CHECK_STATUS(CB_OK, cb_loop_stop(lp));
  if (r->del_after && r->calls == r->del_after) h.timeout_del(r->self);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void timers(void) {
  rec once = {0}, every = {0};
  struct timeval t5 = {0, 5000}, t2 = {0, 2000};
  CHECK(h.timeout_add(&t5, 0, on_event, &once) != NULL);
  every.del_after = 5;
  every.self = h.timeout_add(&t2, VDE_EV_PERSIST, on_event, &every);
  CHECK(every.self != NULL);
  double t0 = now_ms();
  CHECK_STATUS(CB_OK, cb_loop_run(lp)); /* returns when both are gone */
  double took = now_ms() - t0;
  CHECK(once.calls == 1 && once.what == VDE_EV_TIMEOUT && once.fd == -1);
  CHECK(every.calls == 5);
  CHECK(took >= 9.0 && took < 2000); /* 5 rounds of 2 ms */
  size_t pending = 1;
  CHECK_STATUS(CB_OK, cb_loop_pending(lp, &pending));
  CHECK(pending == 0);
}

static void fds(void) {
  int p[2];
  CHECK(pipe(p) == 0);
  rec r = {0}, idle = {0};
  void *tok = h.event_add(p[0], VDE_EV_READ | VDE_EV_PERSIST, NULL, on_event, &r);
  CHECK(tok != NULL);
  size_t n = 0;
  CHECK_STATUS(CB_OK, cb_loop_run_once(lp, 0, &n)); /* nothing ready yet */
  CHECK(n == 0 && r.calls == 0);
  CHECK(write(p[1], "ab", 2) == 2);
  CHECK_STATUS(CB_OK, cb_loop_run_once(lp, 1000, &n));
  CHECK(n == 1 && r.calls == 1 && r.what == VDE_EV_READ && r.fd == p[0]);
  CHECK_STATUS(CB_OK, cb_loop_run_once(lp, 1000, &n)); /* level-triggered: the second byte */
  CHECK(r.calls == 2);
  /* a one-shot read event with a timeout: idle, so it fires VDE_EV_TIMEOUT once */
  struct timeval t3 = {0, 3000};
  CHECK(h.event_add(p[0], VDE_EV_READ, &t3, on_event, &idle) != NULL);
  for (int i = 0; i < 100 && idle.calls == 0; i++) CHECK_STATUS(CB_OK, cb_loop_run_once(lp, 50, NULL));
  CHECK(idle.calls == 1 && idle.what == VDE_EV_TIMEOUT && idle.fd == p[0]);
  CHECK(write(p[1], "c", 1) == 1);
  CHECK_STATUS(CB_OK, cb_loop_run_once(lp, 1000, &n));
  CHECK(idle.calls == 1 && r.calls == 3); /* the one-shot is gone; the persistent one still reads */
  /* writable */
  rec w = {0};
  CHECK(h.event_add(p[1], VDE_EV_WRITE, NULL, on_event, &w) != NULL);
  CHECK_STATUS(CB_OK, cb_loop_run_once(lp, 1000, &n));
  CHECK(w.calls == 1 && w.what == VDE_EV_WRITE);
  h.event_del(tok);
  size_t pending = 1;
  CHECK_STATUS(CB_OK, cb_loop_pending(lp, &pending));
  CHECK(pending == 0);
  close(p[0]);
  close(p[1]);
}

static void *stopper(void *arg) {
  (void)arg;
  usleep(20000);
  CHECK_STATUS(CB_OK, cb_loop_stop(lp));
  return NULL;
}

static void stopping(void) {
  rec r = {0};
  struct timeval t1 = {0, 1000}, t10s = {10, 0};
  r.stop_after = 3;
  void *tok = h.timeout_add(&t1, VDE_EV_PERSIST, on_event, &r);
  CHECK_STATUS(CB_OK, cb_loop_run(lp)); /* stopped from the callback */
  CHECK(r.calls == 3);
  h.timeout_del(tok);
  /* from another thread, while the loop sleeps on a 10 s timer */
  rec slow = {0};
  void *tok2 = h.timeout_add(&t10s, 0, on_event, &slow);
  pthread_t t;
  double t0 = now_ms();
  CHECK(pthread_create(&t, NULL, stopper, NULL) == 0);
  CHECK_STATUS(CB_OK, cb_loop_run(lp));
  CHECK(pthread_join(t, NULL) == 0);
  CHECK(now_ms() - t0 < 5000 && slow.calls == 0);
  h.timeout_del(tok2);
}

static int stale;
static void on_stale(cb_fn entry, void *arg) {
  (void)entry;
  (void)arg;
  stale++;
}

static void bad_inputs_and_entries(void) {
  CHECK_STATUS(CB_ERR_NULL_ARG, cb_loop_new(NULL));
  CHECK_STATUS(CB_ERR_NULL_ARG, cb_loop_handler(lp, NULL));
  CHECK_STATUS(CB_ERR_NULL_ARG, cb_loop_pending(lp, NULL));
  CHECK_STATUS(CB_ERR_INVALID_ARG, cb_loop_run_once(lp, -2, NULL));
  cb_loop *garbage[] = {NULL, (cb_loop *)0x1, (cb_loop *)0xc5ffffff00000001ULL};
  vde_event_handler out;
  for (int i = 0; i < 3; i++) {
    CHECK_STATUS(CB_ERR_INVALID_ARG, cb_loop_handler(garbage[i], &out));
    CHECK_STATUS(CB_ERR_INVALID_ARG, cb_loop_run(garbage[i]));
    CHECK_STATUS(CB_ERR_INVALID_ARG, cb_loop_run_once(garbage[i], 0, NULL));
    CHECK_STATUS(CB_ERR_INVALID_ARG, cb_loop_stop(garbage[i]));
    if (garbage[i]) CHECK_STATUS(CB_ERR_INVALID_ARG, cb_loop_free(garbage[i]));
  }
  CHECK_LAST_ERROR("not a live cb_loop");
  CHECK_STATUS(CB_OK, cb_loop_free(NULL));
  /* the handler's functions refuse bad arguments through errno, and unknown tokens are ignored */
  rec r = {0};
  CHECK(h.timeout_add(NULL, 0, on_event, &r) == NULL);
  CHECK(h.event_add(3, VDE_EV_READ, NULL, NULL, &r) == NULL);
  CHECK(h.event_add(-5, VDE_EV_READ, NULL, on_event, &r) == NULL); /* epoll refuses it */
  h.event_del((void *)0x12345);

  /* the four functions are cbslot entries bound to this loop: free the loop and they are stale */
  cb_stats before, after;
  cb_loop *other = NULL;
  CHECK_STATUS(CB_OK, cb_get_stats(&before));
  CHECK_STATUS(CB_OK, cb_loop_new(&other));
  CHECK_STATUS(CB_OK, cb_get_stats(&after));
  CHECK(after.live == before.live + 4);
  vde_event_handler oh;
  CHECK_STATUS(CB_OK, cb_loop_handler(other, &oh));
  CHECK(oh.event_add != h.event_add && oh.timeout_del != h.timeout_del);
  CHECK_STATUS(CB_OK, cb_loop_free(other));
  CHECK_STATUS(CB_ERR_INVALID_ARG, cb_loop_free(other)); /* twice */
  CHECK_STATUS(CB_OK, cb_barrier());
  cb_set_stale_handler(on_stale, NULL);
  struct timeval t1 = {0, 1000};
  CHECK(oh.timeout_add(&t1, 0, on_event, &r) == NULL); /* a stale call returns 0 */
  CHECK(stale == 1 && r.calls == 0);
  cb_set_stale_handler(NULL, NULL);
}

static void *runner(void *arg) {
  (void)arg;
  cb_loop_run(lp);
  return NULL;
}

static void run_twice_and_free_while_running(void) {
  rec r = {0};
  struct timeval t1 = {0, 500};
  r.stop_after = 200;
  void *tok = h.timeout_add(&t1, VDE_EV_PERSIST, on_event, &r);
  pthread_t t;
  CHECK(pthread_create(&t, NULL, runner, NULL) == 0);
  while (r.calls == 0) usleep(100);
  CHECK_STATUS(CB_ERR_INVALID_ARG, cb_loop_run(lp));
  CHECK_LAST_ERROR("already running");
  CHECK_STATUS(CB_ERR_INVALID_ARG, cb_loop_free(lp));
  CHECK_LAST_ERROR("running");
  CHECK(pthread_join(t, NULL) == 0);
  h.timeout_del(tok);
}

int main(void) {
  check_require(CB_FEATURE_ENTRIES | CB_FEATURE_LOOP);
  CHECK_STATUS(CB_OK, cb_loop_new(&lp));
  CHECK_STATUS(CB_OK, cb_loop_handler(lp, &h));
  timers();
  fds();
  stopping();
  bad_inputs_and_entries();
  run_twice_and_free_while_running();
  CHECK_STATUS(CB_OK, cb_loop_free(lp));
  CHECK_DONE("test_loop");
}
