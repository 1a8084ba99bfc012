/* The delivery queue: delivery contents and order, multi-producer exactly-once with per-producer order,
 * backpressure and timeouts, unregister-before-delivery drops, close both ways, eventfd readiness (also in
 * the built-in loop), bare-entry posting from C threads, re-entrant sinks, and every bad input. */
#include "check.h"

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int readable(cb_queue *q) {
  int fd = -1;
  CHECK_STATUS(CB_OK, cb_queue_fd(q, &fd));
  struct pollfd p = {fd, POLLIN, 0};
  return poll(&p, 1, 0) == 1;
}

/* ---- a recording sink ---- */
typedef struct rec {
  int n;
  size_t lens[64];
  char data[64][256];
  int destroyed;
} rec;
static void record(void *ud, const void *data, size_t len) {
  rec *r = ud;
  if (r->n < 64) {
    r->lens[r->n] = len;
    memcpy(r->data[r->n], data, len < 256 ? len : 256);
  }
  r->n++;
}
static void rec_destroy(void *ud) { ((rec *)ud)->destroyed++; }

static void basics(void) {
  cb_queue *q = NULL;
  CHECK_STATUS(CB_OK, cb_queue_new(10, &q));
  cb_queue_stats st;
  CHECK_STATUS(CB_OK, cb_queue_get_stats(q, &st));
  CHECK(st.capacity == 16 && st.pending == 0);
  rec a = {0}, b = {0};
  cb_handle sa, sb;
  CHECK_STATUS(CB_OK, cb_queue_sink_register(q, record, &a, rec_destroy, &sa));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(q, record, &b, rec_destroy, &sb));
  CHECK(!readable(q));
  char big[200];
  for (int i = 0; i < 200; i++) big[i] = (char)i;
  char small[] = "hello";
  CHECK_STATUS(CB_OK, cb_queue_post(sa, small, 5));
  CHECK(readable(q));
  small[0] = 'J'; /* the caller's buffer is free again: the queue has its own copy */
  CHECK_STATUS(CB_OK, cb_queue_post(sb, big, sizeof big)); /* larger than the inline cell */
  CHECK_STATUS(CB_OK, cb_queue_post(sa, NULL, 0));
  size_t n = 0;
  CHECK_STATUS(CB_OK, cb_queue_drain(q, 100, 0, &n));
  CHECK(n == 3 && a.n == 2 && b.n == 1);
  CHECK(a.lens[0] == 5 && memcmp(a.data[0], "hello", 5) == 0 && a.lens[1] == 0);
  CHECK(b.lens[0] == 200 && memcmp(b.data[0], big, 200) == 0);
  CHECK(!readable(q)); /* drained to empty */
  CHECK_STATUS(CB_OK, cb_queue_get_stats(q, &st));
  CHECK(st.posted == 3 && st.delivered == 3 && st.dropped == 0 && st.high_water == 3);
  /* drain with a max */
  for (int i = 0; i < 5; i++) CHECK_STATUS(CB_OK, cb_queue_post(sb, &i, sizeof i));
  CHECK_STATUS(CB_OK, cb_queue_drain(q, 2, 0, &n));
  CHECK(n == 2 && readable(q));
  CHECK_STATUS(CB_OK, cb_queue_drain(q, 100, 0, &n));
  CHECK(n == 3 && !readable(q));
  for (int i = 0; i < 5; i++) CHECK(*(int *)b.data[1 + i] == i); /* in order */
  CHECK_STATUS(CB_OK, cb_queue_free(q));
  CHECK(a.destroyed == 1 && b.destroyed == 1);
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_queue_post(sa, "x", 1)); /* its queue is gone */
}

/* ---- many producers: exactly once, in order per producer ---- */
enum { PRODUCERS = 4, PER = 100000 };
typedef struct msg {
  uint32_t producer, seq;
} msg;
static cb_handle mp_sink;
static uint32_t next_seq[PRODUCERS];
static atomic_long mp_errors;
static void mp_record(void *ud, const void *data, size_t len) {
  (void)ud;
  msg m;
  if (len != sizeof m) {
    atomic_fetch_add(&mp_errors, 1);
    return;
  }
  memcpy(&m, data, sizeof m);
  if (m.producer >= PRODUCERS || m.seq != next_seq[m.producer]++) atomic_fetch_add(&mp_errors, 1);
}
static void *producer(void *arg) {
  uint32_t id = (uint32_t)(uintptr_t)arg;
  for (uint32_t i = 0; i < PER; i++) {
    msg m = {id, i};
    cb_status s;
    while ((s = cb_queue_post(mp_sink, &m, sizeof m)) == CB_ERR_CAPACITY) sched_yield();
    if (s != CB_OK) atomic_fetch_add(&mp_errors, 1);
  }
  return NULL;
}

static void many_producers(void) {
  cb_queue *q = NULL;
  CHECK_STATUS(CB_OK, cb_queue_new(1024, &q));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(q, mp_record, NULL, NULL, &mp_sink));
  pthread_t t[PRODUCERS];
  for (uintptr_t i = 0; i < PRODUCERS; i++) CHECK(pthread_create(&t[i], NULL, producer, (void *)i) == 0);
  long total = 0;
  while (total < (long)PRODUCERS * PER) {
    size_t n = 0;
    CHECK_STATUS(CB_OK, cb_queue_drain(q, 256, -1, &n)); /* no timeout: a lost wake-up would hang here */
    total += (long)n;
  }
  for (int i = 0; i < PRODUCERS; i++) CHECK(pthread_join(t[i], NULL) == 0);
  CHECK(atomic_load(&mp_errors) == 0);
  for (int i = 0; i < PRODUCERS; i++) CHECK(next_seq[i] == PER);
  cb_queue_stats st;
  CHECK_STATUS(CB_OK, cb_queue_get_stats(q, &st));
  CHECK(st.posted == (uint64_t)PRODUCERS * PER && st.delivered == st.posted && st.pending == 0);
  CHECK(st.high_water <= 1024);
  printf("%d producers x %d events: delivered exactly once, in order; %llu full rejections, high water %llu\n",
         PRODUCERS, PER, (unsigned long long)st.full_rejections, (unsigned long long)st.high_water);
  CHECK_STATUS(CB_OK, cb_queue_free(q));
}

/* ---- backpressure and timeouts ---- */
static cb_queue *bp_q;
static void *late_drainer(void *arg) {
  (void)arg;
  usleep(30000);
  size_t n;
  CHECK_STATUS(CB_OK, cb_queue_drain(bp_q, 1, 0, &n));
  return NULL;
}
static void *late_poster(void *arg) {
  usleep(30000);
  CHECK_STATUS(CB_OK, cb_queue_post(*(cb_handle *)arg, "late", 4));
  return NULL;
}

static void backpressure_and_timeouts(void) {
  rec r = {0};
  cb_handle s;
  CHECK_STATUS(CB_OK, cb_queue_new(4, &bp_q));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(bp_q, record, &r, NULL, &s));
  for (int i = 0; i < 4; i++) CHECK_STATUS(CB_OK, cb_queue_post(s, &i, sizeof i));
  CHECK_STATUS(CB_ERR_CAPACITY, cb_queue_post(s, "x", 1));
  CHECK_LAST_ERROR("full");
  double t0 = now_ms();
  CHECK_STATUS(CB_ERR_TIMEOUT, cb_queue_post_wait(s, "x", 1, 40));
  CHECK(now_ms() - t0 >= 35);
  /* room appears while waiting */
  pthread_t t;
  CHECK(pthread_create(&t, NULL, late_drainer, NULL) == 0);
  CHECK_STATUS(CB_OK, cb_queue_post_wait(s, "y", 1, 5000));
  CHECK(pthread_join(t, NULL) == 0);
  cb_queue_stats st;
  CHECK_STATUS(CB_OK, cb_queue_get_stats(bp_q, &st));
  CHECK(st.full_rejections >= 2 && st.pending == 4 && st.high_water == 4);
  size_t n;
  CHECK_STATUS(CB_OK, cb_queue_drain(bp_q, 100, 0, &n));
  CHECK(n == 4 && r.n == 5 && r.data[4][0] == 'y');
  /* drain waits for the first event: times out, or gets it when it comes */
  t0 = now_ms();
  CHECK_STATUS(CB_OK, cb_queue_drain(bp_q, 10, 30, &n));
  CHECK(n == 0 && now_ms() - t0 >= 25);
  CHECK(pthread_create(&t, NULL, late_poster, &s) == 0);
  CHECK_STATUS(CB_OK, cb_queue_drain(bp_q, 10, -1, &n));
  CHECK(n == 1 && memcmp(r.data[5], "late", 4) == 0);
  CHECK(pthread_join(t, NULL) == 0);
  CHECK_STATUS(CB_OK, cb_queue_free(bp_q));

  /* the smallest queues hold what their capacity says (a ring needs two cells: 1 is rounded up to 2) */
  for (size_t cap = 1; cap <= 2; cap++) {
    cb_queue *q;
    CHECK_STATUS(CB_OK, cb_queue_new(cap, &q));
    CHECK_STATUS(CB_OK, cb_queue_sink_register(q, record, &r, NULL, &s));
    CHECK_STATUS(CB_OK, cb_queue_get_stats(q, &st));
    CHECK(st.capacity == 2);
    CHECK_STATUS(CB_OK, cb_queue_post(s, "1", 1));
    CHECK_STATUS(CB_OK, cb_queue_post(s, "2", 1));
    CHECK_STATUS(CB_ERR_CAPACITY, cb_queue_post(s, "3", 1));
    r.n = 0;
    CHECK_STATUS(CB_OK, cb_queue_drain(q, 10, 0, &n));
    CHECK(n == 2 && r.n == 2 && r.data[0][0] == '1' && r.data[1][0] == '2');
    CHECK_STATUS(CB_OK, cb_queue_free(q));
  }
}

/* ---- unregister before delivery, and close both ways ---- */
static void drops_and_close(void) {
  cb_queue *q;
  rec a = {0}, b = {0};
  cb_handle sa, sb;
  CHECK_STATUS(CB_OK, cb_queue_new(64, &q));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(q, record, &a, rec_destroy, &sa));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(q, record, &b, rec_destroy, &sb));
  for (int i = 0; i < 5; i++) CHECK_STATUS(CB_OK, cb_queue_post(sa, "a", 1));
  CHECK_STATUS(CB_OK, cb_queue_post(sb, "b", 1));
  CHECK_STATUS(CB_OK, cb_queue_sink_unregister(sa));
  CHECK(a.destroyed == 1);
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_queue_sink_unregister(sa)); /* twice */
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_queue_post(sa, "a", 1));
  CHECK_LAST_ERROR("not a live sink");
  size_t n;
  CHECK_STATUS(CB_OK, cb_queue_drain(q, 100, 0, &n));
  CHECK(n == 1 && a.n == 0 && b.n == 1); /* a's events dropped, never delivered to a destroyed sink */
  cb_queue_stats st;
  CHECK_STATUS(CB_OK, cb_queue_get_stats(q, &st));
  CHECK(st.dropped == 5 && st.delivered == 1);
  /* close delivering what is pending */
  for (int i = 0; i < 3; i++) CHECK_STATUS(CB_OK, cb_queue_post(sb, "c", 1));
  CHECK_STATUS(CB_OK, cb_queue_close(q, 1));
  CHECK(b.n == 4 && b.destroyed == 1);
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_queue_post(sb, "d", 1)); /* its sink went with the close */
  CHECK_STATUS(CB_ERR_CLOSED, cb_queue_close(q, 1));
  CHECK_STATUS(CB_ERR_CLOSED, cb_queue_sink_register(q, record, &a, NULL, &sa));
  CHECK(readable(q)); /* a closed queue's fd stays readable: consumers wake up and see it */
  CHECK_STATUS(CB_OK, cb_queue_drain(q, 10, -1, &n)); /* returns at once: closed and empty */
  CHECK(n == 0);
  CHECK_STATUS(CB_OK, cb_queue_free(q));
  CHECK(b.destroyed == 1);
  /* close dropping what is pending */
  rec c = {0};
  cb_handle sc;
  CHECK_STATUS(CB_OK, cb_queue_new(8, &q));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(q, record, &c, rec_destroy, &sc));
  for (int i = 0; i < 3; i++) CHECK_STATUS(CB_OK, cb_queue_post(sc, "e", 1));
  CHECK_STATUS(CB_OK, cb_queue_close(q, 0));
  CHECK(c.n == 0 && c.destroyed == 1);
  CHECK_STATUS(CB_OK, cb_queue_get_stats(q, &st));
  CHECK(st.dropped == 3 && st.pending == 0);
  CHECK_STATUS(CB_OK, cb_queue_free(q));
  CHECK(c.destroyed == 1);
}

/* ---- the fd in the built-in loop; posts from another thread ---- */
static cb_queue *loop_q;
static cb_loop *lp;
static int loop_got;
static void loop_record(void *ud, const void *data, size_t len) {
  (void)ud;
  (void)data;
  (void)len;
  loop_got++;
}
static void on_queue_fd(int fd, short what, void *arg) {
  (void)fd;
  (void)arg;
  CHECK(what & VDE_EV_READ);
  size_t n;
  CHECK_STATUS(CB_OK, cb_queue_drain(loop_q, 1000, 0, &n));
  if (loop_got == 1000) CHECK_STATUS(CB_OK, cb_loop_stop(lp));
}
static void *loop_producer(void *arg) {
  cb_handle s = *(cb_handle *)arg;
  for (int i = 0; i < 1000; i++) {
    while (cb_queue_post(s, &i, sizeof i) == CB_ERR_CAPACITY) usleep(100);
    if (i % 100 == 0) usleep(1000);
  }
  return NULL;
}

static void fd_in_builtin_loop(void) {
  if (!check_has(CB_FEATURE_LOOP, "fd_in_builtin_loop")) return;
  cb_handle s;
  int fd;
  CHECK_STATUS(CB_OK, cb_queue_new(64, &loop_q));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(loop_q, loop_record, NULL, NULL, &s));
  CHECK_STATUS(CB_OK, cb_queue_fd(loop_q, &fd));
  CHECK_STATUS(CB_OK, cb_loop_new(&lp));
  vde_event_handler h;
  CHECK_STATUS(CB_OK, cb_loop_handler(lp, &h));
  void *ev = h.event_add(fd, VDE_EV_READ | VDE_EV_PERSIST, NULL, on_queue_fd, NULL);
  CHECK(ev != NULL);
  pthread_t t;
  CHECK(pthread_create(&t, NULL, loop_producer, &s) == 0);
  CHECK_STATUS(CB_OK, cb_loop_run(lp));
  CHECK(pthread_join(t, NULL) == 0);
  CHECK(loop_got == 1000);
  h.event_del(ev);
  CHECK_STATUS(CB_OK, cb_loop_free(lp));
  CHECK_STATUS(CB_OK, cb_queue_free(loop_q));
}

/* ---- bare entries, called from a C thread ---- */
typedef void (*int_cb)(char *data, int len);
typedef int (*size_cb)(const void *data, size_t len);
static void *entry_thread(void *arg) {
  int_cb cb = (int_cb)(uintptr_t)arg;
  char line[32];
  for (int i = 0; i < 1000; i++) {
    int len = snprintf(line, sizeof line, "line %d", i);
    cb(line, len);
  }
  return NULL;
}
static int ordered_errors, ordered_next;
static void ordered(void *ud, const void *data, size_t len) {
  (void)ud;
  char want[32];
  int n = snprintf(want, sizeof want, "line %d", ordered_next++);
  if ((size_t)n != len || memcmp(want, data, len) != 0) ordered_errors++;
}
static int stale;
static void on_stale(cb_fn e, void *a) {
  (void)e;
  (void)a;
  stale++;
}

static void bare_entries(void) {
  if (!check_has(CB_FEATURE_ENTRIES, "bare_entries")) return;
  cb_queue *q;
  cb_handle s;
  cb_fn e_int, e_size;
  CHECK_STATUS(CB_OK, cb_queue_new(2048, &q));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(q, ordered, NULL, NULL, &s));
  CHECK_STATUS(CB_OK, cb_queue_sink_entry(s, CB_QUEUE_LEN_INT, &e_int));
  CHECK_STATUS(CB_OK, cb_queue_sink_entry(s, CB_QUEUE_LEN_SIZE_T, &e_size));
  pthread_t t;
  CHECK(pthread_create(&t, NULL, entry_thread, (void *)(uintptr_t)e_int) == 0);
  CHECK(pthread_join(t, NULL) == 0);
  size_t n;
  CHECK_STATUS(CB_OK, cb_queue_drain(q, 5000, 0, &n));
  CHECK(n == 1000 && ordered_errors == 0);
  CHECK(((size_cb)e_size)("line 1000", 9) == 1); /* 1: posted */
  CHECK(((int (*)(const void *, int))e_int)("x", -1) == 0); /* negative length refused: 0, not posted */
  CHECK_LAST_ERROR("negative length");
  CHECK(((size_cb)e_size)(NULL, 3) == 0);
  CHECK_STATUS(CB_OK, cb_queue_drain(q, 5000, 0, &n));
  CHECK(n == 1 && ordered_errors == 0);
  /* the entries die with the sink */
  CHECK_STATUS(CB_OK, cb_queue_sink_unregister(s));
  CHECK_STATUS(CB_OK, cb_barrier());
  cb_set_stale_handler(on_stale, NULL);
  CHECK(((size_cb)e_size)("y", 1) == 0); /* a stale call reports "not posted" too */
  CHECK(stale == 1);
  cb_set_stale_handler(NULL, NULL);
  CHECK_STATUS(CB_OK, cb_queue_free(q));
}

/* ---- re-entrant sinks: post, unregister, drain from inside ---- */
static cb_queue *re_q;
static cb_handle re_sink, re_other;
static int re_calls, re_nested_got;
static cb_status re_wait_status;
static void reentrant(void *ud, const void *data, size_t len) {
  (void)ud;
  (void)len;
  re_calls++;
  char c = *(const char *)data;
  if (c == 'p') CHECK_STATUS(CB_OK, cb_queue_post(re_sink, "n", 1)); /* post from inside */
  if (c == 'u') CHECK_STATUS(CB_OK, cb_queue_sink_unregister(re_other));
  if (c == 'd') {
    size_t n;
    CHECK_STATUS(CB_OK, cb_queue_drain(re_q, 100, 0, &n)); /* continues from the head */
    re_nested_got += (int)n;
  }
  if (c == 'w') re_wait_status = cb_queue_post_wait(re_sink, "z", 1, 1000);
}

static void reentrancy(void) {
  int other = 0;
  CHECK_STATUS(CB_OK, cb_queue_new(8, &re_q));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(re_q, reentrant, NULL, NULL, &re_sink));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(re_q, reentrant, &other, NULL, &re_other));
  CHECK_STATUS(CB_OK, cb_queue_post(re_sink, "p", 1));
  CHECK_STATUS(CB_OK, cb_queue_post(re_sink, "u", 1));
  CHECK_STATUS(CB_OK, cb_queue_post(re_other, "x", 1)); /* dropped: its sink goes first */
  CHECK_STATUS(CB_OK, cb_queue_post(re_sink, "d", 1));
  size_t n;
  CHECK_STATUS(CB_OK, cb_queue_drain(re_q, 100, 0, &n));
  /* p, u, d delivered by the outer drain; 'n' (posted by p) by the nested one; x dropped */
  CHECK(re_calls == 4 && re_nested_got == 1 && n == 3);
  CHECK_STATUS(CB_OK, cb_queue_free(re_q));
  /* a full queue and post_wait from its own consumer: refused instead of waiting for itself (a delivered
   * event's cell is handed back after its sink returns) */
  CHECK_STATUS(CB_OK, cb_queue_new(2, &re_q));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(re_q, reentrant, NULL, NULL, &re_sink));
  CHECK_STATUS(CB_OK, cb_queue_post(re_sink, "w", 1));
  CHECK_STATUS(CB_OK, cb_queue_post(re_sink, "q", 1));
  CHECK_STATUS(CB_OK, cb_queue_drain(re_q, 1, 0, &n));
  CHECK(re_wait_status == CB_ERR_WOULD_DEADLOCK);
  CHECK_STATUS(CB_OK, cb_queue_free(re_q));
}

static void bad_inputs(void) {
  cb_queue *q = NULL;
  cb_handle s;
  CHECK_STATUS(CB_ERR_NULL_ARG, cb_queue_new(8, NULL));
  CHECK_STATUS(CB_ERR_INVALID_ARG, cb_queue_new(0, &q));
  CHECK_LAST_ERROR("capacity");
  CHECK_STATUS(CB_ERR_INVALID_ARG, cb_queue_new((size_t)1 << 40, &q));
  CHECK(q == NULL);
  CHECK_STATUS(CB_OK, cb_queue_new(8, &q));
  CHECK_STATUS(CB_ERR_NULL_ARG, cb_queue_sink_register(q, NULL, NULL, NULL, &s));
  CHECK_STATUS(CB_ERR_NULL_ARG, cb_queue_sink_register(q, record, NULL, NULL, NULL));
  CHECK_STATUS(CB_OK, cb_queue_sink_register(q, record, NULL, NULL, &s));
  CHECK_STATUS(CB_ERR_NULL_ARG, cb_queue_post(s, NULL, 3));
  CHECK_STATUS(CB_ERR_NULL_ARG, cb_queue_fd(q, NULL));
  CHECK_STATUS(CB_ERR_NULL_ARG, cb_queue_get_stats(q, NULL));
  CHECK_STATUS(CB_ERR_NULL_ARG, cb_queue_sink_entry(s, CB_QUEUE_LEN_INT, NULL));
  cb_fn e;
  CHECK_STATUS(CB_ERR_INVALID_ARG, cb_queue_sink_entry(s, 7, &e));
  CHECK_STATUS(CB_ERR_INVALID_ARG, cb_queue_drain(q, 1, -2, NULL));
  CHECK_STATUS(CB_ERR_INVALID_ARG, cb_queue_post_wait(s, "x", 1, -5));
  cb_queue *garbage[] = {NULL, (cb_queue *)0x1, (cb_queue *)0xc6ffffff00000002ULL};
  int fd;
  cb_queue_stats st;
  for (int i = 0; i < 3; i++) {
    CHECK_STATUS(CB_ERR_INVALID_ARG, cb_queue_sink_register(garbage[i], record, NULL, NULL, &s));
    CHECK_STATUS(CB_ERR_INVALID_ARG, cb_queue_drain(garbage[i], 1, 0, NULL));
    CHECK_STATUS(CB_ERR_INVALID_ARG, cb_queue_fd(garbage[i], &fd));
    CHECK_STATUS(CB_ERR_INVALID_ARG, cb_queue_close(garbage[i], 0));
    CHECK_STATUS(CB_ERR_INVALID_ARG, cb_queue_get_stats(garbage[i], &st));
    if (garbage[i]) CHECK_STATUS(CB_ERR_INVALID_ARG, cb_queue_free(garbage[i]));
  }
  CHECK_LAST_ERROR("not a live cb_queue");
  cb_handle bad_sinks[] = {0, 1, UINT64_MAX, 0xc7ffffff00000003ULL, s ^ (1ULL << 32)};
  for (int i = 0; i < 5; i++) {
    CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_queue_post(bad_sinks[i], "x", 1));
    CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_queue_post_wait(bad_sinks[i], "x", 1, 0));
    CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_queue_sink_unregister(bad_sinks[i]));
    CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_queue_sink_entry(bad_sinks[i], CB_QUEUE_LEN_INT, &e));
  }
  /* a callback handle or an object handle is not a sink */
  cb_handle obj;
  CHECK_STATUS(CB_OK, cb_handle_new(NULL, NULL, &obj));
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_queue_post(obj, "x", 1));
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_handle_release(s));
  CHECK_STATUS(CB_OK, cb_handle_release(obj));
  CHECK_STATUS(CB_OK, cb_queue_free(NULL));
  CHECK_STATUS(CB_OK, cb_queue_free(q));
  CHECK_STATUS(CB_ERR_INVALID_ARG, cb_queue_free(q)); /* twice */
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_queue_post(s, "x", 1));
}

int main(void) {
  basics();
  many_producers();
  backpressure_and_timeouts();
  drops_and_close();
  fd_in_builtin_loop();
  bare_entries();
  reentrancy();
  bad_inputs();
  CHECK_DONE("test_queue");
}
