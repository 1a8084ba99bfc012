/* The callback core: destroys run by the reclaimer thread without a user call (and the delay knob, also
 * across fork), no self-wait from inside destroy notifications, nesting 100 deep tracked precisely,
 * CB_ERR_SYSTEM when no descriptor is free, and untracked entries (CB_REGISTER_UNTRACKED: stack-passed
 * arguments, destroy inside cb_unregister, stale calls, bad flags).
 *
 * Every case runs in its own fork()ed child with alarm(60), so a crash, abort or hang fails that case only,
 * and every case starts from a process in which cbslot has not been used yet (the runner never calls it).
 * `./test_cb_core NAME` runs one case in-process, for gdb or valgrind. Bounds are generous on purpose
 * (something that must happen gets 2 s, 20 s under valgrind; "has not happened" is checked after 200-300 ms):
 * latency is the benchmark's business, not the tests'. */
#define _GNU_SOURCE
#include "check.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

enum { ALARM_S = 60, ALARM_CHILD_S = 50 };


/* How long something that must happen may take (generous: valgrind runs one thread at a time). */
static double long_ms(void) { return check_under_valgrind() ? 20000 : 2000; }

/* Polls until *flag >= value; 1 if it got there within `ms`. */
static int wait_for(atomic_int *flag, int value, double ms) {
  double end = check_mono_ms() + ms;
  while (atomic_load(flag) < value) {
    if (check_mono_ms() > end) return 0;
    usleep(1000);
  }
  return 1;
}
static void wait_flag(atomic_int *flag, int value) {
  while (atomic_load(flag) < value) usleep(200);
}

/* Threads of this process whose name is `name` (from /proc/self/task/N/comm). */
static int threads_named(const char *name) {
  DIR *d = opendir("/proc/self/task");
  CHECK(d != NULL);
  int n = 0;
  struct dirent *ent;
  while ((ent = readdir(d)) != NULL) {
    if (ent->d_name[0] == '.') continue;
    char path[300], comm[64] = {0};
    snprintf(path, sizeof path, "/proc/self/task/%s/comm", ent->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    if (fgets(comm, sizeof comm, f)) {
      comm[strcspn(comm, "\n")] = 0;
      if (strcmp(comm, name) == 0) n++;
    }
    fclose(f);
  }
  closedir(d);
  return n;
}

static cb_stats stats(void) {
  cb_stats s;
  CHECK_STATUS(CB_OK, cb_get_stats(&s));
  return s;
}

/* ---- a registration that records where and when its destroy ran ---- */
typedef struct obj {
  int id;
  atomic_int calls, destroyed, in_call, destroyed_during_call;
  atomic_int entered, release, returned; /* for block_fn */
  atomic_int unregistering;              /* set by the test around a cb_unregister call */
  int destroyed_in_unregister;
  int signals_blocked; /* the destroy ran with (at least) these signals blocked */
  int result;
  pthread_t destroy_thread;
  char destroy_name[17];
  cb_handle h;
  cb_fn e;
} obj;

static pthread_t main_thread;

static void destroy_obj(void *ud) {
  obj *o = ud;
  o->destroy_thread = pthread_self();
  prctl(PR_GET_NAME, o->destroy_name);
  o->destroyed_in_unregister = atomic_load(&o->unregistering);
  sigset_t mask;
  pthread_sigmask(SIG_BLOCK, NULL, &mask);
  o->signals_blocked = sigismember(&mask, SIGINT) && sigismember(&mask, SIGTERM) && sigismember(&mask, SIGALRM) &&
                       sigismember(&mask, SIGCHLD) && sigismember(&mask, SIGUSR1) && sigismember(&mask, SIGPIPE);
  if (atomic_load(&o->in_call)) atomic_fetch_add(&o->destroyed_during_call, 1);
  atomic_fetch_add(&o->destroyed, 1); /* last: publishes the fields above */
}

static void slow_destroy(void *ud) {
  usleep(2000);
  destroy_obj(ud);
}

static int add_fn(void *ud, int x) {
  obj *o = ud;
  atomic_fetch_add(&o->calls, 1);
  return o->id + x;
}

/* Signals `entered`, then waits inside the callback until the test sets `release`. */
static int block_fn(void *ud, int x) {
  obj *o = ud;
  atomic_fetch_add(&o->in_call, 1);
  atomic_store(&o->entered, 1);
  wait_flag(&o->release, 1);
  atomic_fetch_sub(&o->in_call, 1);
  return o->id + x;
}

static void init_obj(obj *o, int id) {
  memset(o, 0, sizeof *o);
  o->id = id;
}

static void reg_with(obj *o, int id, cb_fn fn, cb_destroy_fn destroy, uint32_t flags) {
  init_obj(o, id);
  CHECK_STATUS(CB_OK, cb_register_ex(fn, o, destroy, flags, &o->h, &o->e));
}
static void reg(obj *o, int id, cb_fn fn) {
  init_obj(o, id);
  CHECK_STATUS(CB_OK, cb_register(fn, o, destroy_obj, &o->h, &o->e));
}
static int call(obj *o, int x) { return ((int (*)(int))o->e)(x); }

/* The caller side of block_fn, on its own thread. */
static void *call_thread(void *arg) {
  obj *o = arg;
  o->result = call(o, 1);
  atomic_store(&o->returned, 1);
  return NULL;
}
static pthread_t start_blocked_call(obj *o) {
  pthread_t t;
  CHECK(pthread_create(&t, NULL, call_thread, o) == 0);
  CHECK(wait_for(&o->entered, 1, long_ms()));
  return t;
}

/* Runs fn(arg) on a helper thread; fails the case if it has not returned within long_ms(). */
typedef struct timed_call {
  cb_status (*fn)(void *);
  void *arg;
  cb_status st;
  atomic_int done;
} timed_call;
static void *timed_thread(void *p) {
  timed_call *t = p;
  t->st = t->fn(t->arg);
  atomic_store(&t->done, 1);
  return NULL;
}
static cb_status run_timed(cb_status (*fn)(void *), void *arg, const char *what) {
  static timed_call t; /* static: a hung helper must not point into a dead frame */
  memset(&t, 0, sizeof t);
  t.fn = fn;
  t.arg = arg;
  pthread_t th;
  CHECK(pthread_create(&th, NULL, timed_thread, &t) == 0);
  if (!wait_for(&t.done, 1, long_ms())) {
    fprintf(stderr, "%s: %s did not complete within %.0f ms\n", check_case_name, what, long_ms());
    exit(1);
  }
  CHECK(pthread_join(th, NULL) == 0);
  return t.st;
}
static cb_status do_barrier(void *arg) {
  (void)arg;
  return cb_barrier();
}
static cb_status do_unregister_wait(void *arg) { return cb_unregister_wait(((obj *)arg)->h); }

/* ==== 1. destroys without asking: the reclaimer thread ==== */

static void reclaimer_runs_destroy(void) {
  static obj o, more[20];
  reg(&o, 40, (cb_fn)add_fn);
  CHECK(call(&o, 2) == 42);
  CHECK(threads_named("cbslot-reclaim") == 0); /* started lazily, on the first cb_unregister */
  CHECK_STATUS(CB_OK, cb_unregister(o.h));
  /* no cb_barrier, no other cbslot call: it just happens */
  CHECK(wait_for(&o.destroyed, 1, long_ms()));
  CHECK(!pthread_equal(o.destroy_thread, main_thread));
  CHECK(strcmp(o.destroy_name, "cbslot-reclaim") == 0);
  CHECK(o.signals_blocked); /* the reclaimer takes no signal meant for the program's threads */
  CHECK(threads_named("cbslot-reclaim") == 1);
  cb_stats s = stats();
  CHECK(s.live == 0 && s.unregistered_total == 1 && s.destroyed_total == 1 && s.pending_destroy == 0);

  /* a batch, and then one by one */
  for (int i = 0; i < 10; i++) reg(&more[i], i, (cb_fn)add_fn);
  for (int i = 0; i < 10; i++) CHECK_STATUS(CB_OK, cb_unregister(more[i].h));
  for (int i = 0; i < 10; i++) CHECK(wait_for(&more[i].destroyed, 1, long_ms()));
  for (int i = 10; i < 20; i++) {
    reg(&more[i], i, (cb_fn)add_fn);
    CHECK(call(&more[i], 1) == i + 1);
    CHECK_STATUS(CB_OK, cb_unregister(more[i].h));
    CHECK(wait_for(&more[i].destroyed, 1, long_ms()));
  }
  for (int i = 0; i < 20; i++) CHECK(strcmp(more[i].destroy_name, "cbslot-reclaim") == 0);
  CHECK(threads_named("cbslot-reclaim") == 1); /* one thread, reused */
  CHECK(stats().pending_destroy == 0);
  usleep(50000);
  CHECK_STATUS(CB_OK, cb_barrier());
  CHECK(o.destroyed == 1);
  for (int i = 0; i < 20; i++) CHECK(more[i].destroyed == 1 && more[i].destroyed_during_call == 0);
}

/* Delay 0: no thread; destroys only in a grace period (every CB_GRACE_BATCH unregisters) or a barrier. */
static void delay_zero_no_thread(void) {
  static obj b[CB_GRACE_BATCH], o;
  CHECK_STATUS(CB_OK, cb_set_reclaim_delay(0)); /* first thing: the unregister count starts at 0 */
  for (int i = 0; i < CB_GRACE_BATCH; i++) reg(&b[i], i, (cb_fn)add_fn);
  for (int i = 0; i < CB_GRACE_BATCH - 1; i++) CHECK_STATUS(CB_OK, cb_unregister(b[i].h));
  usleep(200000);
  for (int i = 0; i < CB_GRACE_BATCH - 1; i++) CHECK(b[i].destroyed == 0);
  CHECK(stats().pending_destroy == CB_GRACE_BATCH - 1);
  CHECK_STATUS(CB_OK, cb_unregister(b[CB_GRACE_BATCH - 1].h)); /* the batch's last: a grace period */
  for (int i = 0; i < CB_GRACE_BATCH; i++) {
    CHECK(b[i].destroyed == 1);
    CHECK(pthread_equal(b[i].destroy_thread, main_thread));
  }

  reg(&o, 7, (cb_fn)add_fn);
  CHECK(call(&o, 1) == 8);
  CHECK_STATUS(CB_OK, cb_unregister(o.h));
  usleep(200000);
  CHECK(o.destroyed == 0);
  CHECK(stats().pending_destroy == 1);
  CHECK(threads_named("cbslot-reclaim") == 0);
  CHECK_STATUS(CB_OK, cb_barrier());
  CHECK(o.destroyed == 1 && pthread_equal(o.destroy_thread, main_thread));
  CHECK(stats().pending_destroy == 0);
  CHECK(threads_named("cbslot-reclaim") == 0);
}

/* CBSLOT_RECLAIM_DELAY_MS is read at first use. */
static void delay_zero_from_env(void) {
  CHECK(setenv("CBSLOT_RECLAIM_DELAY_MS", "0", 1) == 0);
  static obj o;
  reg(&o, 1, (cb_fn)add_fn);
  CHECK_STATUS(CB_OK, cb_unregister(o.h));
  usleep(200000);
  CHECK(o.destroyed == 0);
  CHECK(threads_named("cbslot-reclaim") == 0);
  CHECK_STATUS(CB_OK, cb_barrier());
  CHECK(o.destroyed == 1 && pthread_equal(o.destroy_thread, main_thread));
  /* cb_set_reclaim_delay overrides it */
  CHECK_STATUS(CB_OK, cb_set_reclaim_delay(CB_RECLAIM_DELAY_DEFAULT_MS));
  reg(&o, 1, (cb_fn)add_fn);
  CHECK_STATUS(CB_OK, cb_unregister(o.h));
  CHECK(wait_for(&o.destroyed, 1, long_ms()));
  CHECK(strcmp(o.destroy_name, "cbslot-reclaim") == 0);
}

static void delay_range(void) {
  static obj a, b, c;
  CHECK(CB_RECLAIM_DELAY_DEFAULT_MS == 10);
  CHECK_STATUS(CB_ERR_INVALID_ARG, cb_set_reclaim_delay(3600001));
  CHECK_LAST_ERROR("cb_set_reclaim_delay");
  CHECK_STATUS(CB_ERR_INVALID_ARG, cb_set_reclaim_delay(UINT32_MAX));
  /* nothing changed: still the default (not clamped to an hour: then this would not run in time) */
  reg(&a, 1, (cb_fn)add_fn);
  CHECK_STATUS(CB_OK, cb_unregister(a.h));
  CHECK(wait_for(&a.destroyed, 1, long_ms()));

  /* 0 with the reclaimer already running: it runs nothing more */
  CHECK_STATUS(CB_OK, cb_set_reclaim_delay(0));
  CHECK_STATUS(CB_ERR_INVALID_ARG, cb_set_reclaim_delay(3600001)); /* and this leaves it at 0 */
  reg(&b, 2, (cb_fn)add_fn);
  CHECK_STATUS(CB_OK, cb_unregister(b.h));
  usleep(200000);
  CHECK(b.destroyed == 0);
  CHECK_STATUS(CB_OK, cb_barrier());
  CHECK(b.destroyed == 1 && pthread_equal(b.destroy_thread, main_thread));

  CHECK_STATUS(CB_OK, cb_set_reclaim_delay(3600000)); /* the top of the range */
  CHECK_STATUS(CB_OK, cb_set_reclaim_delay(CB_RECLAIM_DELAY_DEFAULT_MS));
  reg(&c, 3, (cb_fn)add_fn);
  CHECK_STATUS(CB_OK, cb_unregister(c.h));
  CHECK(wait_for(&c.destroyed, 1, long_ms()));
  CHECK(!pthread_equal(c.destroy_thread, main_thread));
}

/* A destroy left pending at delay 0 runs without a user call once the delay is raised again. */
static void delay_raised_runs_pending(void) {
  static obj a;
  CHECK_STATUS(CB_OK, cb_set_reclaim_delay(0));
  reg(&a, 1, (cb_fn)add_fn);
  CHECK_STATUS(CB_OK, cb_unregister(a.h));
  usleep(100000);
  CHECK(a.destroyed == 0);
  CHECK_STATUS(CB_OK, cb_set_reclaim_delay(5));
  CHECK(wait_for(&a.destroyed, 1, long_ms()));
  CHECK(!pthread_equal(a.destroy_thread, main_thread));
}

/* A call in flight delays the destroy; when it returns, the destroy runs with no user call. */
static void inflight_delays_destroy(void) {
  static obj o;
  reg(&o, 5, (cb_fn)block_fn);
  pthread_t t = start_blocked_call(&o);
  CHECK_STATUS(CB_OK, cb_unregister(o.h));
  usleep(300000);
  CHECK(o.destroyed == 0);
  CHECK(stats().pending_destroy == 1);
  atomic_store(&o.release, 1);
  CHECK(pthread_join(t, NULL) == 0);
  CHECK(o.result == 6); /* the call in flight finished normally */
  CHECK(wait_for(&o.destroyed, 1, long_ms()));
  CHECK(o.destroyed_during_call == 0);
  CHECK(!pthread_equal(o.destroy_thread, main_thread) && !pthread_equal(o.destroy_thread, t));
  CHECK(strcmp(o.destroy_name, "cbslot-reclaim") == 0);
  CHECK(stats().pending_destroy == 0);
}

/* cb_barrier still means every destroy due before it has run: also one waiting for a call in flight, and
 * those the reclaimer is running right then. */
static void *release_later(void *arg) {
  usleep(200000);
  atomic_store(&((obj *)arg)->release, 1);
  return NULL;
}
static void barrier_still_complete(void) {
  enum { N = 50 };
  static obj o[N], b;
  for (int i = 0; i < N; i++) reg_with(&o[i], i, (cb_fn)add_fn, slow_destroy, 0);
  for (int i = 0; i < N; i++) CHECK_STATUS(CB_OK, cb_unregister(o[i].h));
  usleep(15000); /* the reclaimer is likely in the middle of them now */
  CHECK_STATUS(CB_OK, cb_barrier());
  for (int i = 0; i < N; i++) CHECK(o[i].destroyed == 1);
  CHECK(stats().pending_destroy == 0);

  reg(&b, 1, (cb_fn)block_fn);
  pthread_t t = start_blocked_call(&b);
  CHECK_STATUS(CB_OK, cb_unregister(b.h));
  pthread_t r;
  CHECK(pthread_create(&r, NULL, release_later, &b) == 0);
  CHECK_STATUS(CB_OK, cb_barrier()); /* waits for the call, then for the destroy */
  CHECK(b.destroyed == 1 && b.destroyed_during_call == 0);
  CHECK(pthread_join(t, NULL) == 0 && pthread_join(r, NULL) == 0);
  usleep(50000);
  for (int i = 0; i < N; i++) CHECK(o[i].destroyed == 1);
  CHECK(b.destroyed == 1);
}

/* A fork child's verdict goes through a pipe. Under valgrind the child then waits for the parent to kill
 * it: its exit would run valgrind's leak check, which counts what the parent's other threads (the
 * reclaimer: its spawn closure, its thread-locals) own as lost, since those threads do not exist in the
 * child (a SIGKILL the child sent itself would still run it). A failing CHECK in the child exits, status 1. */
static int verdict_pipe[2];
static pid_t fork_with_verdict(void) {
  CHECK(pipe(verdict_pipe) == 0);
  fflush(NULL);
  pid_t pid = fork();
  CHECK(pid >= 0);
  close(verdict_pipe[pid == 0 ? 0 : 1]);
  if (pid == 0) alarm(ALARM_CHILD_S);
  return pid;
}
static void child_passed(void) {
  char ok = 1;
  fflush(NULL);
  if (write(verdict_pipe[1], &ok, 1) != 1) _exit(3);
  if (check_under_valgrind())
    for (;;) pause();
  _exit(0);
}
static void check_child_passed(pid_t pid) {
  char ok = 0;
  ssize_t n = read(verdict_pipe[0], &ok, 1); /* 0 (end of file) if the child died first */
  close(verdict_pipe[0]);
  if (n == 1 && check_under_valgrind()) kill(pid, SIGKILL);
  int status;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(n == 1 && ok == 1);
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
        (check_under_valgrind() && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));
}

/* fork(): the child gets its own reclaimer; destroys pending in the parent at the fork never run there. */
static void fork_child_reclaimer(void) {
  static obj w, a, a2, b, c;
  /* the parent's reclaimer is running */
  reg(&w, 1, (cb_fn)add_fn);
  CHECK_STATUS(CB_OK, cb_unregister(w.h));
  CHECK(wait_for(&w.destroyed, 1, long_ms()));
  reg(&a, 10, (cb_fn)add_fn);
  reg(&a2, 20, (cb_fn)add_fn);

  /* (1) pending because a call is in flight on another thread of the parent */
  reg(&b, 30, (cb_fn)block_fn);
  pthread_t t = start_blocked_call(&b);
  CHECK_STATUS(CB_OK, cb_unregister(b.h));
  pid_t pid = fork_with_verdict();
  if (pid == 0) {
    main_thread = pthread_self();
    CHECK(threads_named("cbslot-reclaim") == 0); /* the parent's did not come along */
    CHECK(call(&a, 1) == 11);
    CHECK_STATUS(CB_OK, cb_unregister(a.h)); /* live at the fork: the child's own copy ends here */
    CHECK(wait_for(&a.destroyed, 1, long_ms()));
    CHECK(!pthread_equal(a.destroy_thread, main_thread));
    CHECK(strcmp(a.destroy_name, "cbslot-reclaim") == 0);
    static obj d;
    reg(&d, 40, (cb_fn)add_fn);
    CHECK(call(&d, 1) == 41);
    CHECK_STATUS(CB_OK, cb_unregister(d.h));
    CHECK(wait_for(&d.destroyed, 1, long_ms()));
    usleep(200000);
    CHECK_STATUS(CB_OK, cb_barrier()); /* the parent's thread inside b is not here: no wait */
    CHECK(b.destroyed == 0);           /* b's destroy belongs to the parent */
    child_passed();
  }
  check_child_passed(pid);
  CHECK(a.destroyed == 0 && call(&a, 1) == 11); /* still live here */
  CHECK(b.destroyed == 0);
  atomic_store(&b.release, 1);
  CHECK(pthread_join(t, NULL) == 0);
  CHECK(wait_for(&b.destroyed, 1, long_ms())); /* the parent's reclaimer still works after the fork */
  CHECK(b.destroyed_during_call == 0);

  /* (2) pending because the delay is 0 */
  CHECK_STATUS(CB_OK, cb_set_reclaim_delay(0));
  reg(&c, 50, (cb_fn)add_fn);
  CHECK_STATUS(CB_OK, cb_unregister(c.h));
  pid = fork_with_verdict();
  if (pid == 0) {
    main_thread = pthread_self();
    CHECK_STATUS(CB_OK, cb_set_reclaim_delay(CB_RECLAIM_DELAY_DEFAULT_MS));
    CHECK_STATUS(CB_OK, cb_unregister(a2.h));
    CHECK(wait_for(&a2.destroyed, 1, long_ms()));
    CHECK(!pthread_equal(a2.destroy_thread, main_thread));
    usleep(200000);
    CHECK_STATUS(CB_OK, cb_barrier());
    CHECK(c.destroyed == 0); /* c's destroy belongs to the parent */
    child_passed();
  }
  check_child_passed(pid);
  CHECK(c.destroyed == 0 && a2.destroyed == 0 && call(&a2, 1) == 21);
  CHECK_STATUS(CB_OK, cb_barrier());
  CHECK(c.destroyed == 1);
  CHECK_STATUS(CB_OK, cb_unregister_wait(a.h));
  CHECK_STATUS(CB_OK, cb_unregister_wait(a2.h));
  CHECK(a.destroyed == 1 && a2.destroyed == 1);
}

/* Destroys still pending when the process exits are not run, and exit does not wait for the reclaimer. */
static int exit_pipe[2];
static void destroy_writes(void *ud) {
  (void)ud;
  char c = 'D';
  if (write(exit_pipe[1], &c, 1) != 1) _exit(4);
}
static void exit_with_pending_destroys(void) {
  CHECK(pipe(exit_pipe) == 0);
  fflush(NULL);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    close(exit_pipe[0]);
    alarm(ALARM_CHILD_S);
    static obj w, x;
    reg(&w, 1, (cb_fn)add_fn); /* the reclaimer is running (and idle) */
    CHECK_STATUS(CB_OK, cb_unregister(w.h));
    CHECK(wait_for(&w.destroyed, 1, long_ms()));
    CHECK_STATUS(CB_OK, cb_set_reclaim_delay(check_under_valgrind() ? 20000 : 2000));
    init_obj(&x, 2);
    CHECK_STATUS(CB_OK, cb_register((cb_fn)add_fn, &x, destroy_writes, &x.h, &x.e));
    CHECK(call(&x, 1) == 3);
    CHECK_STATUS(CB_OK, cb_unregister(x.h));
    exit(0); /* x's destroy is pending, its delay far off */
  }
  close(exit_pipe[1]);
  double t0 = check_mono_ms();
  int status;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(check_mono_ms() - t0 < long_ms()); /* exit did not sit out the delay */
  char c;
  CHECK(read(exit_pipe[0], &c, 1) == 0); /* the destroy never ran */
  close(exit_pipe[0]);
}

/* ==== 2. no self-wait from inside a destroy notification ==== */

typedef struct dctx {
  obj o; /* first: add_fn and block_fn see a dctx as its obj */
  obj *other;
  atomic_int entered, done;
  atomic_int other_unregistered; /* set by the test once cb_unregister(other) has returned */
  int other_was_unregistered;     /* ... as seen when this destroy started */
  cb_status st;
  int other_seen;
  pthread_t thread;
} dctx;

static void destroy_calls_barrier(void *ud) {
  dctx *d = ud;
  d->thread = pthread_self();
  d->other_was_unregistered = atomic_load(&d->other_unregistered);
  atomic_store(&d->entered, 1);
  d->st = cb_barrier();
  d->other_seen = atomic_load(&d->other->destroyed);
  destroy_obj(&d->o);
  atomic_store(&d->done, 1);
}

static void destroy_calls_unregister_wait(void *ud) {
  dctx *d = ud;
  d->thread = pthread_self();
  atomic_store(&d->entered, 1);
  d->st = cb_unregister_wait(d->other->h);
  d->other_seen = atomic_load(&d->other->destroyed);
  destroy_obj(&d->o);
  atomic_store(&d->done, 1);
}

static void reg_dctx(dctx *d, obj *other, cb_destroy_fn destroy) {
  memset(d, 0, sizeof *d);
  d->other = other;
  CHECK_STATUS(CB_OK, cb_register((cb_fn)add_fn, d, destroy, &d->o.h, &d->o.e));
}

/* With the reclaimer: cb_barrier() inside a destroy running on the reclaimer thread waits for the other
 * due destroy (y), whichever of the two comes first, then says it cannot wait for itself. */
static void barrier_in_destroy_reclaimer(void) {
  enum { ROUNDS = 4 };
  static dctx x[ROUNDS];
  static obj y[ROUNDS];
  for (int round = 0; round < ROUNDS; round++) {
    if (round % 2 == 0) { /* both slot orders */
      reg(&y[round], 1, (cb_fn)add_fn);
      reg_dctx(&x[round], &y[round], destroy_calls_barrier);
    } else {
      reg_dctx(&x[round], &y[round], destroy_calls_barrier);
      reg(&y[round], 1, (cb_fn)add_fn);
    }
    if (round < 2) { /* y unregistered first */
      CHECK_STATUS(CB_OK, cb_unregister(y[round].h));
      atomic_store(&x[round].other_unregistered, 1);
      CHECK_STATUS(CB_OK, cb_unregister(x[round].o.h));
    } else { /* x first: the reclaimer (10 ms later) normally finds both due, x's destroy first */
      CHECK_STATUS(CB_OK, cb_unregister(x[round].o.h));
      CHECK_STATUS(CB_OK, cb_unregister(y[round].h));
      atomic_store(&x[round].other_unregistered, 1);
    }
    CHECK(wait_for(&x[round].done, 1, long_ms())); /* never hangs */
    CHECK_STATUS(CB_ERR_WOULD_DEADLOCK, x[round].st);
    if (x[round].other_was_unregistered) /* (else this thread was so slow that x's destroy came before it) */
      CHECK(x[round].other_seen == 1);   /* it waited for the other due destroy first */
    CHECK(!pthread_equal(x[round].thread, main_thread));
    CHECK(strcmp(x[round].o.destroy_name, "cbslot-reclaim") == 0);
  }
  CHECK_STATUS(CB_OK, cb_barrier());
  for (int i = 0; i < ROUNDS; i++) CHECK(x[i].o.destroyed == 1 && y[i].destroyed == 1);
  CHECK(stats().pending_destroy == 0);
}

/* The barrier inside a destroy also waits for a destroy that waits for a call in flight elsewhere. */
static void barrier_in_destroy_waits_for_inflight(void) {
  static dctx x;
  static obj z;
  reg(&z, 1, (cb_fn)block_fn);
  pthread_t t = start_blocked_call(&z);
  CHECK_STATUS(CB_OK, cb_unregister(z.h));
  reg_dctx(&x, &z, destroy_calls_barrier);
  CHECK_STATUS(CB_OK, cb_unregister(x.o.h));
  CHECK(wait_for(&x.entered, 1, long_ms()));
  usleep(200000);
  CHECK(x.done == 0 && z.destroyed == 0);
  atomic_store(&z.release, 1);
  CHECK(pthread_join(t, NULL) == 0);
  CHECK(wait_for(&x.done, 1, long_ms()));
  CHECK_STATUS(CB_ERR_WOULD_DEADLOCK, x.st);
  CHECK(x.other_seen == 1 && z.destroyed_during_call == 0);
}

/* With delay 0: the destroy runs inside the main thread's cb_barrier, and calls cb_barrier itself. */
static void barrier_in_destroy_delay0(void) {
  static dctx x[2];
  static obj y[2];
  CHECK_STATUS(CB_OK, cb_set_reclaim_delay(0));
  for (int order = 0; order < 2; order++) {
    reg(&y[order], 1, (cb_fn)add_fn);
    reg_dctx(&x[order], &y[order], destroy_calls_barrier);
    if (order == 0) {
      CHECK_STATUS(CB_OK, cb_unregister(x[order].o.h));
      CHECK_STATUS(CB_OK, cb_unregister(y[order].h));
    } else {
      CHECK_STATUS(CB_OK, cb_unregister(y[order].h));
      CHECK_STATUS(CB_OK, cb_unregister(x[order].o.h));
    }
    usleep(50000);
    CHECK(x[order].entered == 0); /* no thread runs it at delay 0 */
    CHECK_STATUS(CB_OK, run_timed(do_barrier, NULL, "cb_barrier (running a destroy that calls cb_barrier)"));
    CHECK(x[order].done == 1);
    CHECK_STATUS(CB_ERR_WOULD_DEADLOCK, x[order].st);
    CHECK(x[order].other_seen == 1);
    CHECK(y[order].destroyed == 1 && x[order].o.destroyed == 1);
  }
  /* and on the main thread itself */
  static dctx m;
  static obj my;
  reg(&my, 1, (cb_fn)add_fn);
  reg_dctx(&m, &my, destroy_calls_barrier);
  CHECK_STATUS(CB_OK, cb_unregister(m.o.h));
  CHECK_STATUS(CB_OK, cb_unregister(my.h));
  CHECK_STATUS(CB_OK, cb_barrier());
  CHECK(m.done == 1 && pthread_equal(m.thread, main_thread));
  CHECK_STATUS(CB_ERR_WOULD_DEADLOCK, m.st);
  CHECK(m.other_seen == 1);
}

/* With the reclaimer: cb_unregister_wait(other) inside a destroy completes. */
static void unregister_wait_in_destroy_reclaimer(void) {
  static dctx x, x2;
  static obj o, o2;
  reg(&o, 1, (cb_fn)add_fn);
  CHECK(call(&o, 1) == 2);
  reg_dctx(&x, &o, destroy_calls_unregister_wait);
  CHECK_STATUS(CB_OK, cb_unregister(x.o.h));
  CHECK(wait_for(&x.done, 1, long_ms()));
  CHECK_STATUS(CB_OK, x.st);
  CHECK(x.other_seen == 1 && o.destroyed == 1);
  CHECK(!pthread_equal(x.thread, main_thread));

  /* the other one is in flight on another thread: the wait (on the reclaimer) lasts until it returns */
  reg(&o2, 2, (cb_fn)block_fn);
  pthread_t t = start_blocked_call(&o2);
  reg_dctx(&x2, &o2, destroy_calls_unregister_wait);
  CHECK_STATUS(CB_OK, cb_unregister(x2.o.h));
  CHECK(wait_for(&x2.entered, 1, long_ms()));
  usleep(200000);
  CHECK(x2.done == 0 && o2.destroyed == 0);
  atomic_store(&o2.release, 1);
  CHECK(pthread_join(t, NULL) == 0);
  CHECK(o2.result == 3);
  CHECK(wait_for(&x2.done, 1, long_ms()));
  CHECK_STATUS(CB_OK, x2.st);
  CHECK(x2.other_seen == 1 && o2.destroyed_during_call == 0);
  CHECK_STATUS(CB_OK, cb_barrier());
}

/* With delay 0: the same, run by cb_barrier / cb_unregister_wait on the main thread; and the one refusal:
 * waiting for a callback this very thread is inside. */
static dctx inside_x;
static cb_status inside_barrier_st;
static int barrier_inside_fn(void *ud, int x) {
  obj *o = ud;
  atomic_fetch_add(&o->in_call, 1);
  inside_barrier_st = cb_barrier(); /* runs inside_x's destroy here, which waits for this callback */
  atomic_fetch_sub(&o->in_call, 1);
  return o->id + x;
}
static void unregister_wait_in_destroy_delay0(void) {
  static dctx x, x2;
  static obj o, o2, o3;
  CHECK_STATUS(CB_OK, cb_set_reclaim_delay(0));
  reg(&o, 1, (cb_fn)add_fn);
  reg_dctx(&x, &o, destroy_calls_unregister_wait);
  CHECK_STATUS(CB_OK, cb_unregister(x.o.h));
  usleep(50000);
  CHECK(x.entered == 0);
  CHECK_STATUS(CB_OK, run_timed(do_barrier, NULL, "cb_barrier (running a destroy that calls cb_unregister_wait)"));
  CHECK(x.done == 1);
  CHECK_STATUS(CB_OK, x.st);
  CHECK(x.other_seen == 1 && o.destroyed == 1);

  reg(&o2, 2, (cb_fn)add_fn);
  reg_dctx(&x2, &o2, destroy_calls_unregister_wait);
  CHECK_STATUS(CB_OK, run_timed(do_unregister_wait, &x2.o, "cb_unregister_wait (its destroy calls cb_unregister_wait)"));
  CHECK(x2.done == 1);
  CHECK_STATUS(CB_OK, x2.st);
  CHECK(x2.other_seen == 1 && o2.destroyed == 1);

  /* the destroy runs on a thread that is inside `other`: refused, and `other` is left alone */
  reg(&o3, 3, (cb_fn)barrier_inside_fn);
  reg_dctx(&inside_x, &o3, destroy_calls_unregister_wait);
  CHECK_STATUS(CB_OK, cb_unregister(inside_x.o.h));
  CHECK(call(&o3, 1) == 4);
  CHECK_STATUS(CB_OK, inside_barrier_st);
  CHECK(inside_x.done == 1 && pthread_equal(inside_x.thread, main_thread));
  CHECK_STATUS(CB_ERR_WOULD_DEADLOCK, inside_x.st);
  CHECK(inside_x.other_seen == 0 && o3.destroyed == 0);
  CHECK(stats().live == 1);      /* o3 */
  CHECK(call(&o3, 2) == 5);      /* still registered */
  CHECK_STATUS(CB_OK, cb_unregister_wait(o3.h));
  CHECK(o3.destroyed == 1 && o3.destroyed_during_call == 0);
}

/* ==== 3. nesting 100 deep is tracked precisely ==== */

enum { DEPTH = 100 };
static obj lv[DEPTH];
static atomic_int deep_reached, deep_release;
static int deep_result;

static void deep_bottom_checks(void) {
  /* nothing this thread is inside has been unregistered: no reason to refuse */
  CHECK_STATUS(CB_OK, cb_barrier());
  static obj in;
  reg(&in, 9, (cb_fn)add_fn);
  CHECK(call(&in, 1) == 10);
  CHECK_STATUS(CB_OK, cb_unregister_wait(in.h));
  CHECK(in.destroyed == 1);
  /* but it knows exactly which ones it is inside, at any depth */
  uint64_t live = stats().live;
  CHECK_STATUS(CB_ERR_WOULD_DEADLOCK, cb_unregister_wait(lv[0].h));
  CHECK_STATUS(CB_ERR_WOULD_DEADLOCK, cb_unregister_wait(lv[50].h));
  CHECK_STATUS(CB_ERR_WOULD_DEADLOCK, cb_unregister_wait(lv[DEPTH - 1].h));
  CHECK(stats().live == live); /* nothing changed */
}

static int level_fn(void *ud, int d) {
  obj *o = ud;
  atomic_fetch_add(&o->in_call, 1);
  int r;
  if (d + 1 < DEPTH) {
    r = call(&lv[d + 1], d + 1);
  } else {
    deep_bottom_checks();
    atomic_store(&deep_reached, 1);
    wait_flag(&deep_release, 1);
    r = 1000;
  }
  atomic_fetch_sub(&o->in_call, 1);
  return r + 1;
}
static void *deep_thread(void *arg) {
  (void)arg;
  deep_result = call(&lv[0], 0);
  return NULL;
}

static void sink_nop(void *ud, const void *data, size_t len) { (void)ud, (void)data, (void)len; }
static cb_status queue_round_trip(void *arg) {
  (void)arg;
  cb_queue *q;
  cb_handle s;
  cb_fn e;
  cb_status st = cb_queue_new(8, &q);
  if (st) return st;
  if ((st = cb_queue_sink_register(q, sink_nop, NULL, NULL, &s))) return st;
  if ((st = cb_queue_post(s, "x", 1))) return st;
  if ((st = cb_queue_sink_entry(s, CB_QUEUE_LEN_SIZE_T, &e))) return st;
  if (((int (*)(const void *, size_t))e)("yz", 2) != 1) return CB_ERR_PANIC;
  return cb_queue_free(q);
}

typedef struct waiter {
  obj *target;
  cb_status st;
  atomic_int done;
} waiter;
static void *waiter_thread(void *arg) {
  waiter *w = arg;
  w->st = cb_unregister_wait(w->target->h);
  atomic_store(&w->done, 1);
  return NULL;
}

static void depth_100(void) {
  for (int i = 0; i < DEPTH; i++) reg(&lv[i], i, (cb_fn)level_fn);
  pthread_t d;
  CHECK(pthread_create(&d, NULL, deep_thread, NULL) == 0);
  CHECK(wait_for(&deep_reached, 1, long_ms()));

  /* meanwhile, on this thread: nothing unrelated waits for the deep thread */
  CHECK_STATUS(CB_OK, run_timed(queue_round_trip, NULL, "cb_queue_new + cb_queue_free"));
  static obj u, u2, u3;
  reg(&u, 1, (cb_fn)add_fn);
  CHECK(call(&u, 1) == 2);
  CHECK_STATUS(CB_OK, run_timed(do_unregister_wait, &u, "cb_unregister_wait of an unrelated callback"));
  CHECK(u.destroyed == 1);
  reg(&u2, 2, (cb_fn)add_fn);
  CHECK_STATUS(CB_OK, cb_unregister(u2.h));
  CHECK_STATUS(CB_OK, run_timed(do_barrier, NULL, "cb_barrier"));
  CHECK(u2.destroyed == 1);
  reg(&u3, 3, (cb_fn)add_fn);
  CHECK_STATUS(CB_OK, cb_unregister(u3.h));
  CHECK(wait_for(&u3.destroyed, 1, long_ms())); /* the reclaimer is not stalled either */

  /* what the deep thread IS inside waits for it */
  static waiter w;
  w.target = &lv[79];
  pthread_t wt;
  CHECK(pthread_create(&wt, NULL, waiter_thread, &w) == 0);
  CHECK_STATUS(CB_OK, cb_unregister(lv[30].h));
  usleep(300000);
  CHECK(w.done == 0);
  CHECK(lv[79].destroyed == 0 && lv[30].destroyed == 0);

  atomic_store(&deep_release, 1);
  CHECK(pthread_join(d, NULL) == 0);
  CHECK(deep_result == 1000 + DEPTH);
  CHECK(wait_for(&w.done, 1, long_ms()));
  CHECK(pthread_join(wt, NULL) == 0);
  CHECK_STATUS(CB_OK, w.st);
  CHECK(lv[79].destroyed == 1);
  CHECK(wait_for(&lv[30].destroyed, 1, long_ms())); /* no user call */
  for (int i = 0; i < DEPTH; i++)
    if (i != 30 && i != 79) CHECK_STATUS(CB_OK, cb_unregister(lv[i].h));
  for (int i = 0; i < DEPTH; i++) CHECK(wait_for(&lv[i].destroyed, 1, long_ms()));
  usleep(50000);
  CHECK_STATUS(CB_OK, cb_barrier());
  for (int i = 0; i < DEPTH; i++) CHECK(lv[i].destroyed == 1 && lv[i].destroyed_during_call == 0);
  cb_stats s = stats();
  CHECK(s.live == 0 && s.pending_destroy == 0);
}

/* The same entry, recursively, 100 deep. */
static obj same;
static atomic_int same_reached, same_release;
static int same_result;
static int same_fn(void *ud, int d) {
  obj *o = ud;
  atomic_fetch_add(&o->in_call, 1);
  int r;
  if (d < DEPTH) {
    r = call(o, d + 1);
  } else {
    CHECK_STATUS(CB_OK, cb_barrier());
    CHECK_STATUS(CB_ERR_WOULD_DEADLOCK, cb_unregister_wait(o->h));
    atomic_store(&same_reached, 1);
    wait_flag(&same_release, 1);
    r = 0;
  }
  atomic_fetch_sub(&o->in_call, 1);
  return r + 1;
}
static void *same_thread(void *arg) {
  (void)arg;
  same_result = call(&same, 1);
  return NULL;
}
static void depth_100_same_entry(void) {
  reg(&same, 0, (cb_fn)same_fn);
  pthread_t d;
  CHECK(pthread_create(&d, NULL, same_thread, NULL) == 0);
  CHECK(wait_for(&same_reached, 1, long_ms()));
  CHECK_STATUS(CB_OK, run_timed(queue_round_trip, NULL, "cb_queue_new + cb_queue_free"));
  static obj u;
  reg(&u, 1, (cb_fn)add_fn);
  CHECK_STATUS(CB_OK, run_timed(do_unregister_wait, &u, "cb_unregister_wait of an unrelated callback"));
  CHECK(u.destroyed == 1);
  CHECK_STATUS(CB_OK, cb_unregister(same.h));
  usleep(300000);
  CHECK(same.destroyed == 0);
  atomic_store(&same_release, 1);
  CHECK(pthread_join(d, NULL) == 0);
  CHECK(same_result == DEPTH);
  CHECK(wait_for(&same.destroyed, 1, long_ms()));
  CHECK(same.destroyed_during_call == 0);
}

/* ==== 4. CB_ERR_SYSTEM: no free descriptor at the first cb_register ==== */

static void no_fds_case(const char *trampolines) {
  if (trampolines) CHECK(setenv("CBSLOT_TRAMPOLINES", trampolines, 1) == 0);
  CHECK(CB_ERR_SYSTEM == 11);
  CHECK(strncmp(cb_status_str(CB_ERR_SYSTEM), "CB_ERR_SYSTEM", 13) == 0);
  struct rlimit old, tight;
  CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0);
  int lowest = open("/dev/null", O_RDONLY); /* the lowest free descriptor: every one below is in use */
  CHECK(lowest >= 0);
  close(lowest);
  tight = old;
  tight.rlim_cur = (rlim_t)lowest;
  CHECK(setrlimit(RLIMIT_NOFILE, &tight) == 0);
  int probe = open("/dev/null", O_RDONLY);
  CHECK(probe < 0 && errno == EMFILE); /* the premise: no descriptor is free */

  static obj o, u;
  for (int attempt = 0; attempt < 2; attempt++) {
    cb_handle h = 77;
    cb_fn e = (cb_fn)add_fn;
    CHECK_STATUS(CB_ERR_SYSTEM, cb_register((cb_fn)add_fn, &o, destroy_obj, &h, &e));
    CHECK_LAST_ERROR("cb_register");
    CHECK_LAST_ERROR("Too many open files");
    CHECK(h == 77 && e == (cb_fn)add_fn);
    CHECK_STATUS(CB_ERR_SYSTEM, cb_register_ex((cb_fn)add_fn, &u, destroy_obj, CB_REGISTER_UNTRACKED, &h, &e));
    CHECK_LAST_ERROR("Too many open files");
    CHECK(h == 77 && e == (cb_fn)add_fn);
  }
  cb_stats s = stats();
  CHECK(s.live == 0 && s.registered_total == 0);

  CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0);
  reg(&o, 3, (cb_fn)add_fn);
  CHECK(call(&o, 4) == 7);
  reg_with(&u, 5, (cb_fn)add_fn, destroy_obj, CB_REGISTER_UNTRACKED);
  CHECK(call(&u, 4) == 9);
  CHECK_STATUS(CB_OK, cb_unregister(u.h));
  CHECK(u.destroyed == 1);
  CHECK_STATUS(CB_OK, cb_unregister_wait(o.h));
  CHECK(o.destroyed == 1);
}
static void system_error_no_fds(void) { no_fds_case(NULL); }
static void system_error_no_fds_memfd(void) { no_fds_case("memfd"); }
static void system_error_no_fds_file(void) { no_fds_case("file"); }

/* ==== 5. untracked entries ==== */

static long u_ints(void *ud, long a, long b, long c, long d, long e) {
  return ((obj *)ud)->id + a + 10 * b + 100 * c + 1000 * d + 10000 * e;
}
static double u_dbls(void *ud, double a, double b, double c, double d, double e, double f, double g, double h) {
  return ((obj *)ud)->id + a + 2 * b + 4 * c + 8 * d + 16 * e + 32 * f + 64 * g + 128 * h;
}
static double u_mixed(void *ud, int a, double x, long b, float y, const char *s, double z, unsigned char c) {
  return ((obj *)ud)->id + a + 2 * x + 4 * b + 8 * y + 16 * (double)strlen(s) + 32 * z + 64 * c;
}
/* 5 integers and 10 doubles: the 9th and 10th double are on the stack */
static double u_stack_dbls(void *ud, long i1, long i2, long i3, long i4, long i5, double d1, double d2, double d3,
                           double d4, double d5, double d6, double d7, double d8, double d9, double d10) {
  return ((obj *)ud)->id + i1 + 2 * i2 + 4 * i3 + 8 * i4 + 16 * i5 + 32 * d1 + 64 * d2 + 128 * d3 + 256 * d4 +
         512 * d5 + 1024 * d6 + 2048 * d7 + 4096 * d8 + 8192 * d9 + 16384 * d10;
}
typedef double (*stack_dbls_t)(long, long, long, long, long, double, double, double, double, double, double,
                               double, double, double, double);
static double want_stack_dbls(int id) {
  return id + 1 + 2 * 2 + 4 * 3 + 8 * 4 + 16 * 5 + 32 * 1.5 + 64 * 2.5 + 128 * 3.5 + 256 * 4.5 + 512 * 5.5 +
         1024 * 6.5 + 2048 * 7.5 + 4096 * 8.5 + 8192 * 9.5 + 16384 * 10.5;
}
static double call_stack_dbls(cb_fn e) {
  return ((stack_dbls_t)e)(1, 2, 3, 4, 5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5, 10.5);
}
/* a 32-byte struct by value (memory class: on the stack) after 5 integers, and one before them */
typedef struct big32 {
  long a, b, c, d;
} big32;
static long u_big_after(void *ud, long i1, long i2, long i3, long i4, long i5, big32 s) {
  return ((obj *)ud)->id + i1 + 2 * i2 + 3 * i3 + 4 * i4 + 5 * i5 + 100 * s.a + 1000 * s.b + 10000 * s.c +
         100000 * s.d;
}
static long u_big_before(void *ud, big32 s, long i1, double x) {
  return ((obj *)ud)->id + s.a + 10 * s.b + 100 * s.c + 1000 * s.d + 10000 * i1 + (long)(100000 * x);
}
/* long double: an argument on the stack, and the result in st(0) */
static long double u_ld(void *ud, long double x, int k) { return x * k + ((obj *)ud)->id; }
/* variadic, with the 9th and 10th double on the stack (and %al counting the vector registers) */
static double u_var(void *ud, int n, ...) {
  va_list ap;
  va_start(ap, n);
  double r = ((obj *)ud)->id, w = 1;
  for (int i = 0; i < n; i++, w *= 2) r += w * va_arg(ap, double);
  va_end(ap);
  return r;
}
/* the entry jumps: fn returns straight into the caller */
static uintptr_t seen_return;
__attribute__((noinline)) static long u_ret(void *ud, long x) {
  (void)ud;
  seen_return = (uintptr_t)__builtin_return_address(0);
  return x;
}
__attribute__((noinline)) static long ret_caller(cb_fn e) {
  long r = ((long (*)(long))e)(7);
  __asm__ volatile("" ::: "memory");
  return r + 1;
}

static void untracked_shapes(void) {
  static obj o[10];
  reg_with(&o[0], 3, (cb_fn)u_ints, destroy_obj, CB_REGISTER_UNTRACKED);
  CHECK(((long (*)(long, long, long, long, long))o[0].e)(1, 2, 3, 4, 5) == 3 + 54321);

  reg_with(&o[1], 1, (cb_fn)u_dbls, destroy_obj, CB_REGISTER_UNTRACKED);
  CHECK(((double (*)(double, double, double, double, double, double, double, double))o[1].e)(
            1, 1, 1, 1, 1, 1, 1, 1) == 1 + 255);

  reg_with(&o[2], 2, (cb_fn)u_mixed, destroy_obj, CB_REGISTER_UNTRACKED);
  CHECK(((double (*)(int, double, long, float, const char *, double, unsigned char))o[2].e)(
            1, 0.5, 3, 0.25f, "abcd", 2.0, 5) == 2 + 1 + 1 + 12 + 2 + 64 + 64 + 320);

  reg_with(&o[3], 7, (cb_fn)u_stack_dbls, destroy_obj, CB_REGISTER_UNTRACKED);
  CHECK(call_stack_dbls(o[3].e) == want_stack_dbls(7));

  reg_with(&o[4], 1, (cb_fn)u_big_after, destroy_obj, CB_REGISTER_UNTRACKED);
  big32 s = {1, 2, 3, 4};
  CHECK(((long (*)(long, long, long, long, long, big32))o[4].e)(1, 1, 1, 1, 1, s) == 1 + 15 + 432100);

  reg_with(&o[5], 2, (cb_fn)u_big_before, destroy_obj, CB_REGISTER_UNTRACKED);
  CHECK(((long (*)(big32, long, double))o[5].e)(s, 5, 0.5) == 2 + 4321 + 50000 + 50000);

  reg_with(&o[6], 1, (cb_fn)u_ld, destroy_obj, CB_REGISTER_UNTRACKED);
  long double x = 1.0L + 0x1p-60L; /* not representable as a double */
  long double r = ((long double (*)(long double, int))o[6].e)(x, 3);
  CHECK(r == x * 3 + 1);
  CHECK(r - 4.0L == 3 * 0x1p-60L);

  reg_with(&o[7], 1, (cb_fn)u_var, destroy_obj, CB_REGISTER_UNTRACKED);
  double (*var)(int, ...) = (double (*)(int, ...))o[7].e;
  CHECK(var(10, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0) == 1 + 1023);
  CHECK(var(3, 1.0, 2.0, 4.0) == 1 + 1 + 4 + 16);

  reg_with(&o[8], 0, (cb_fn)u_ret, destroy_obj, CB_REGISTER_UNTRACKED);
  long (*volatile caller)(cb_fn) = ret_caller; /* through a pointer: the very function, not a clone */
  CHECK(caller(o[8].e) == 8);
  CHECK(seen_return > (uintptr_t)ret_caller && seen_return < (uintptr_t)ret_caller + 4096);

  reg_with(&o[9], 4, (cb_fn)add_fn, destroy_obj, CB_REGISTER_UNTRACKED);
  CHECK(call(&o[9], 1) == 5 && o[9].calls == 1);

  for (int i = 0; i < 10; i++) {
    CHECK_STATUS(CB_OK, cb_unregister(o[i].h));
    CHECK(o[i].destroyed == 1);
  }
}

/* destroy runs inside cb_unregister, on the calling thread, before it returns */
static void *unregister_on_thread(void *arg) {
  obj *o = arg;
  atomic_store(&o->unregistering, 1);
  CHECK_STATUS(CB_OK, cb_unregister(o->h));
  atomic_store(&o->unregistering, 0);
  CHECK(o->destroyed == 1 && o->destroyed_in_unregister == 1 && pthread_equal(o->destroy_thread, pthread_self()));
  return NULL;
}
typedef struct chain {
  obj o;
  obj *next_to_unregister;
  obj fresh;
} chain;
static void destroy_chain(void *ud) {
  chain *c = ud;
  if (c->next_to_unregister) {
    atomic_store(&c->next_to_unregister->unregistering, 1);
    CHECK_STATUS(CB_OK, cb_unregister(c->next_to_unregister->h)); /* nested: its destroy runs in here */
    CHECK(c->next_to_unregister->destroyed == 1);
  }
  reg_with(&c->fresh, 77, (cb_fn)add_fn, destroy_obj, CB_REGISTER_UNTRACKED);
  destroy_obj(&c->o);
}
static void untracked_destroy_in_unregister(void) {
  static obj a, b, c, d;
  reg_with(&a, 1, (cb_fn)add_fn, destroy_obj, CB_REGISTER_UNTRACKED);
  CHECK(call(&a, 1) == 2);
  atomic_store(&a.unregistering, 1);
  CHECK_STATUS(CB_OK, cb_unregister(a.h));
  atomic_store(&a.unregistering, 0);
  CHECK(a.destroyed == 1 && a.destroyed_in_unregister == 1 && pthread_equal(a.destroy_thread, main_thread));

  reg_with(&b, 2, (cb_fn)add_fn, destroy_obj, CB_REGISTER_UNTRACKED);
  CHECK(call(&b, 1) == 3);
  pthread_t t;
  CHECK(pthread_create(&t, NULL, unregister_on_thread, &b) == 0);
  CHECK(pthread_join(t, NULL) == 0);
  CHECK(b.destroyed == 1);

  reg_with(&c, 3, (cb_fn)add_fn, destroy_obj, CB_REGISTER_UNTRACKED);
  CHECK_STATUS(CB_OK, cb_unregister_wait(c.h));
  CHECK(c.destroyed == 1);
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_unregister(c.h));
  CHECK(c.destroyed == 1);

  /* also at delay 0, and while tracked destroys are pending */
  CHECK_STATUS(CB_OK, cb_set_reclaim_delay(0));
  static obj tr;
  reg(&tr, 4, (cb_fn)add_fn);
  CHECK_STATUS(CB_OK, cb_unregister(tr.h));
  reg_with(&d, 5, (cb_fn)add_fn, destroy_obj, CB_REGISTER_UNTRACKED);
  atomic_store(&d.unregistering, 1);
  CHECK_STATUS(CB_OK, cb_unregister(d.h));
  CHECK(d.destroyed == 1 && d.destroyed_in_unregister == 1 && pthread_equal(d.destroy_thread, main_thread));
  CHECK(tr.destroyed == 0);

  /* a destroy that unregisters (nested, synchronously) and registers */
  static chain c1, c2;
  memset(&c1, 0, sizeof c1);
  memset(&c2, 0, sizeof c2);
  CHECK_STATUS(CB_OK, cb_register_ex((cb_fn)add_fn, &c2, destroy_chain, CB_REGISTER_UNTRACKED, &c2.o.h, &c2.o.e));
  c1.next_to_unregister = &c2.o;
  CHECK_STATUS(CB_OK, cb_register_ex((cb_fn)add_fn, &c1, destroy_chain, CB_REGISTER_UNTRACKED, &c1.o.h, &c1.o.e));
  CHECK_STATUS(CB_OK, cb_unregister(c1.o.h));
  CHECK(c1.o.destroyed == 1 && c2.o.destroyed == 1);
  CHECK(call(&c1.fresh, 1) == 78 && call(&c2.fresh, 2) == 79);
  CHECK_STATUS(CB_OK, cb_unregister(c1.fresh.h));
  CHECK_STATUS(CB_OK, cb_unregister(c2.fresh.h));
  CHECK(c1.fresh.destroyed == 1 && c2.fresh.destroyed == 1);
  CHECK_STATUS(CB_OK, cb_barrier());
  CHECK(tr.destroyed == 1);
  cb_stats s = stats();
  CHECK(s.live == 0 && s.pending_destroy == 0 && s.registered_total == s.destroyed_total);
}

static int stale_seen;
static cb_fn stale_entry;
static void *stale_arg;
static void on_stale(cb_fn entry, void *arg) {
  stale_seen++;
  stale_entry = entry;
  stale_arg = arg;
}
static void untracked_stale(void) {
  static obj a, b;
  int marker;
  cb_set_stale_handler(on_stale, &marker);
  reg_with(&a, 1, (cb_fn)add_fn, destroy_obj, CB_REGISTER_UNTRACKED);
  reg_with(&b, 7, (cb_fn)u_stack_dbls, destroy_obj, CB_REGISTER_UNTRACKED);
  CHECK(call(&a, 1) == 2);
  CHECK(call_stack_dbls(b.e) == want_stack_dbls(7));
  uint64_t before = stats().stale_calls;
  CHECK_STATUS(CB_OK, cb_unregister(a.h));
  CHECK_STATUS(CB_OK, cb_unregister(b.h));
  CHECK(call(&a, 1) == 0);
  CHECK(stale_seen == 1 && stale_entry == a.e && stale_arg == &marker);
  CHECK(call_stack_dbls(b.e) == 0.0); /* stack arguments: the caller cleans up, as for any call */
  CHECK(stale_seen == 2 && stale_entry == b.e);
  CHECK(a.calls == 1);
  CHECK(stats().stale_calls == before + 2);
  CHECK(a.destroyed == 1 && b.destroyed == 1);
  cb_set_stale_handler(NULL, NULL);
}

static void register_ex_bad_args(void) {
  static obj o;
  init_obj(&o, 1);
  cb_stats before = stats();
  const uint32_t bad[] = {2, 3, 0x80000000u, 0x80000001u, 0xffffffffu, 0x100u};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    cb_handle h = 77;
    cb_fn e = (cb_fn)add_fn;
    CHECK_STATUS(CB_ERR_INVALID_ARG, cb_register_ex((cb_fn)add_fn, &o, destroy_obj, bad[i], &h, &e));
    CHECK_LAST_ERROR("cb_register");
    CHECK(h == 77 && e == (cb_fn)add_fn);
  }
  cb_stats after = stats();
  CHECK(after.live == before.live && after.registered_total == before.registered_total);

  for (uint32_t flags = 0; flags < 2; flags++) {
    cb_handle h = 77;
    cb_fn e = (cb_fn)add_fn;
    CHECK_STATUS(CB_ERR_NULL_ARG, cb_register_ex(NULL, &o, destroy_obj, flags, &h, &e));
    CHECK_LAST_ERROR("`fn`");
    CHECK_STATUS(CB_ERR_NULL_ARG, cb_register_ex((cb_fn)add_fn, &o, destroy_obj, flags, NULL, &e));
    CHECK_LAST_ERROR("`out_handle`");
    CHECK_STATUS(CB_ERR_NULL_ARG, cb_register_ex((cb_fn)add_fn, &o, destroy_obj, flags, &h, NULL));
    CHECK_LAST_ERROR("`out_entry`");
    CHECK(h == 77 && e == (cb_fn)add_fn);
  }
  /* a NULL pointer is reported before the flags are looked at */
  cb_fn e = (cb_fn)add_fn;
  CHECK_STATUS(CB_ERR_NULL_ARG, cb_register_ex((cb_fn)add_fn, &o, destroy_obj, 2, NULL, &e));
  CHECK_STATUS(CB_ERR_NULL_ARG, cb_register_ex(NULL, &o, destroy_obj, 0x80000000u, NULL, NULL));
  after = stats();
  CHECK(after.live == before.live && after.registered_total == before.registered_total);
  CHECK(o.destroyed == 0);
  /* NULL destroy is fine untracked too */
  cb_handle h;
  CHECK_STATUS(CB_OK, cb_register_ex((cb_fn)add_fn, &o, NULL, CB_REGISTER_UNTRACKED, &h, &e));
  CHECK(((int (*)(int))e)(1) == 2);
  CHECK_STATUS(CB_OK, cb_unregister(h));
  CHECK(stats().pending_destroy == 0);
}

/* flags 0 is cb_register: tracked (knows it is in flight), destroy deferred */
static cb_status self_wait_st;
static int self_wait_fn(void *ud, int x) {
  obj *o = ud;
  self_wait_st = cb_unregister_wait(o->h);
  return o->id + x;
}
static void register_ex_flags0_is_tracked(void) {
  static obj a, b;
  CHECK_STATUS(CB_OK, cb_set_reclaim_delay(0));
  reg_with(&a, 5, (cb_fn)self_wait_fn, destroy_obj, 0);
  CHECK(call(&a, 1) == 6);
  CHECK_STATUS(CB_ERR_WOULD_DEADLOCK, self_wait_st);
  CHECK(stats().live == 1);
  CHECK_STATUS(CB_OK, cb_unregister(a.h));
  CHECK(a.destroyed == 0); /* not inside cb_unregister: tracked destroys wait for a grace period */
  usleep(100000);
  CHECK(a.destroyed == 0);
  CHECK_STATUS(CB_OK, cb_barrier());
  CHECK(a.destroyed == 1);

  /* unregister while a call is in flight elsewhere: the destroy waits for it */
  reg_with(&b, 1, (cb_fn)block_fn, destroy_obj, 0);
  pthread_t t = start_blocked_call(&b);
  CHECK_STATUS(CB_OK, cb_unregister(b.h));
  pthread_t r;
  CHECK(pthread_create(&r, NULL, release_later, &b) == 0);
  CHECK_STATUS(CB_OK, cb_barrier());
  CHECK(b.destroyed == 1 && b.destroyed_during_call == 0);
  CHECK(pthread_join(t, NULL) == 0 && pthread_join(r, NULL) == 0);
  CHECK(b.result == 2);
}

static int cmp_uptr(const void *a, const void *b) {
  uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
  return (x > y) - (x < y);
}
static void interleaved_many(void) {
  enum { N = 5000 }; /* more than one block of entries */
  static obj o[N];
  static uintptr_t addr[N];
  static cb_handle hs[N];
  CHECK_STATUS(CB_OK, cb_set_reclaim_delay(0)); /* tracked destroys wait for the barrier below */
  for (int i = 0; i < N; i++) {
    int untracked = i % 3 != 0;
    cb_fn fn = i % 7 == 1 ? (cb_fn)u_stack_dbls : (cb_fn)add_fn;
    if (!untracked && fn == (cb_fn)u_stack_dbls) fn = (cb_fn)add_fn; /* stack arguments: untracked only */
    reg_with(&o[i], i, fn, destroy_obj, untracked ? CB_REGISTER_UNTRACKED : 0);
    addr[i] = (uintptr_t)o[i].e;
    hs[i] = o[i].h;
  }
  CHECK(stats().live == N);
  qsort(addr, N, sizeof *addr, cmp_uptr);
  for (int i = 1; i < N; i++) CHECK(addr[i] != addr[i - 1]);
  qsort(hs, N, sizeof *hs, cmp_uptr);
  for (int i = 1; i < N; i++) CHECK(hs[i] != hs[i - 1]);
  for (int round = 0; round < 2; round++)
    for (int i = 0; i < N; i++) {
      if (i % 7 == 1 && i % 3 != 0)
        CHECK(call_stack_dbls(o[i].e) == want_stack_dbls(i));
      else
        CHECK(call(&o[i], 1) == i + 1);
    }
  for (int i = 0; i < N; i++) {
    CHECK_STATUS(CB_OK, cb_unregister(o[i].h));
    if (i % 3 != 0) CHECK(o[i].destroyed == 1); /* untracked: at once */
  }
  CHECK_STATUS(CB_OK, cb_barrier());
  for (int i = 0; i < N; i++) CHECK(o[i].destroyed == 1);
  cb_stats s = stats();
  CHECK(s.live == 0 && s.pending_destroy == 0 && s.destroyed_total == N);
}

/* ---- the cases, run by check_run_cases (check.h): one fork()ed child per case ---- */
#define CASE(f) CHECK_CASE(f)
/* A callback that unregistered itself may still wait for another callback that is in flight on ANOTHER
 * thread: its own pending slot is not what it waits for. */
static obj self_c, other_c;
static cb_status self_then_wait_status;
static void *release_other_later(void *arg) {
  obj *o = arg;
  usleep(100000);
  atomic_store(&o->release, 1);
  return NULL;
}
static int self_then_wait_fn(void *ud, int x) {
  obj *o = ud;
  CHECK_STATUS(CB_OK, cb_unregister(o->h));
  pthread_t r;
  CHECK(pthread_create(&r, NULL, release_other_later, &other_c) == 0);
  self_then_wait_status = cb_unregister_wait(other_c.h);
  CHECK(pthread_join(r, NULL) == 0);
  return x;
}
static void self_unregistered_waits_for_other(void) {
  reg(&self_c, 1, (cb_fn)self_then_wait_fn);
  reg(&other_c, 2, (cb_fn)block_fn);
  pthread_t t;
  CHECK(pthread_create(&t, NULL, call_thread, &other_c) == 0);
  wait_flag(&other_c.entered, 1);
  CHECK(call(&self_c, 5) == 5);
  CHECK_STATUS(CB_OK, self_then_wait_status);
  CHECK(atomic_load(&other_c.destroyed) == 1);
  CHECK(pthread_join(t, NULL) == 0);
  CHECK_STATUS(CB_OK, cb_barrier());
  CHECK(atomic_load(&self_c.destroyed) == 1);
}

static const struct check_case cases[] = {
    CASE(reclaimer_runs_destroy),
    CASE(delay_zero_no_thread),
    CASE(delay_zero_from_env),
    CASE(delay_range),
    CASE(delay_raised_runs_pending),
    CASE(inflight_delays_destroy),
    CASE(barrier_still_complete),
    CASE(fork_child_reclaimer),
    CASE(exit_with_pending_destroys),
    CASE(barrier_in_destroy_reclaimer),
    CASE(barrier_in_destroy_waits_for_inflight),
    CASE(barrier_in_destroy_delay0),
    CASE(unregister_wait_in_destroy_reclaimer),
    CASE(unregister_wait_in_destroy_delay0),
    CASE(depth_100),
    CASE(depth_100_same_entry),
    CASE(system_error_no_fds),
    CASE(system_error_no_fds_memfd),
    CASE(system_error_no_fds_file),
    CASE(untracked_shapes),
    CASE(untracked_destroy_in_unregister),
    CASE(untracked_stale),
    CASE(register_ex_bad_args),
    CASE(register_ex_flags0_is_tracked),
    CASE(interleaved_many),
    CASE(self_unregistered_waits_for_other),
};
enum { NCASES = sizeof cases / sizeof *cases };

int main(int argc, char **argv) {
  check_require(CB_FEATURE_ENTRIES);
  main_thread = pthread_self();
  return check_run_cases("test_cb_core", cases, NCASES, argc, argv, ALARM_S);
}
