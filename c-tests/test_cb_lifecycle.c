/* Registration lifecycle: unregister and destroy-exactly-once, stale calls and the stale handler (custom
 * and default), self-unregister, unregister_wait and barrier (including WOULD_DEADLOCK from inside),
 * nested register/call, destroy re-entering cbslot, stats, limit, watermark, and every bad input. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"

#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct obj {
  int id;
  int calls;
  int destroyed;
  int in_call; /* > 0 while fn runs */
  int destroyed_during_call;
  cb_handle self;
  cb_fn entry;
} obj;

static void destroy_obj(void *ud) {
  obj *o = ud;
  o->destroyed++;
  if (o->in_call) o->destroyed_during_call++;
}

static int plain(void *ud, int x) {
  obj *o = ud;
  o->calls++;
  return o->id + x;
}

static void reg(obj *o, cb_fn fn) {
  CHECK_STATUS(CB_OK, cb_register(fn, o, destroy_obj, &o->self, &o->entry));
}

static cb_stats stats(void) {
  cb_stats s;
  CHECK_STATUS(CB_OK, cb_get_stats(&s));
  return s;
}

/* ---- stale calls ---- */
static int stale_seen;
static cb_fn stale_entry;
static void *stale_arg;
static void on_stale(cb_fn entry, void *arg) {
  stale_seen++;
  stale_entry = entry;
  stale_arg = arg;
}

static double dplain(void *ud, double x) { return ((obj *)ud)->id + x; }

static void unregister_destroy_and_stale(void) {
  obj o = {40, 0, 0, 0, 0, 0, NULL};
  reg(&o, (cb_fn)plain);
  int (*f)(int) = (int (*)(int))o.entry;
  CHECK(f(2) == 42);
  cb_stats before = stats();
  CHECK_STATUS(CB_OK, cb_unregister(o.self));
  CHECK_STATUS(CB_OK, cb_barrier());
  CHECK(o.destroyed == 1);
  cb_stats after = stats();
  CHECK(after.unregistered_total == before.unregistered_total + 1);
  CHECK(after.destroyed_total == before.destroyed_total + 1);
  CHECK(after.live == before.live - 1);
  CHECK(after.pending_destroy == 0);

  /* a call after unregister never reaches fn: it reaches the stale handler and returns 0 */
  int marker;
  cb_set_stale_handler(on_stale, &marker);
  CHECK(f(2) == 0);
  CHECK(stale_seen == 1 && stale_entry == o.entry && stale_arg == &marker);
  CHECK(o.calls == 1);
  CHECK(stats().stale_calls == after.stale_calls + 1);

  obj d = {1, 0, 0, 0, 0, 0, NULL};
  reg(&d, (cb_fn)dplain);
  CHECK(((double (*)(double))d.entry)(0.5) == 1.5);
  CHECK_STATUS(CB_OK, cb_unregister_wait(d.self));
  CHECK(d.destroyed == 1);
  CHECK(((double (*)(double))d.entry)(0.5) == 0.0); /* stale: 0 in the floating-point register too */
  CHECK(stale_seen == 2);
  cb_set_stale_handler(NULL, NULL);
}

/* The default stale handler prints the entry and aborts: checked in a child process. */
static void default_stale_handler_aborts(void) {
  obj o = {1, 0, 0, 0, 0, 0, NULL};
  reg(&o, (cb_fn)plain);
  CHECK_STATUS(CB_OK, cb_unregister_wait(o.self));
  int pipefd[2];
  CHECK(pipe(pipefd) == 0);
  fflush(NULL);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    dup2(pipefd[1], 2);
    ((int (*)(int))o.entry)(1);
    _exit(0); /* not reached */
  }
  close(pipefd[1]);
  char msg[512] = {0};
  size_t got = 0;
  ssize_t n;
  while (got < sizeof msg - 1 && (n = read(pipefd[0], msg + got, sizeof msg - 1 - got)) > 0) got += (size_t)n;
  close(pipefd[0]);
  int status;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
  char want[64];
  snprintf(want, sizeof want, "%#lx", (unsigned long)(uintptr_t)o.entry);
  CHECK(strstr(msg, "stale call through callback entry") != NULL);
  CHECK(strstr(msg, want) != NULL);
}

/* ---- unregistering from inside the callback ---- */
static cb_status self_wait_status, self_unreg_status;
static int self_unregister(void *ud, int x) {
  obj *o = ud;
  o->in_call++;
  self_wait_status = cb_unregister_wait(o->self); /* would wait for itself */
  self_unreg_status = cb_unregister(o->self);     /* allowed: destroy after we return */
  CHECK_STATUS(CB_OK, cb_barrier() == CB_ERR_WOULD_DEADLOCK ? CB_OK : CB_ERR_PANIC);
  CHECK(o->destroyed == 0);
  o->in_call--;
  return x + 1;
}

static void unregister_from_inside(void) {
  obj o = {0, 0, 0, 0, 0, 0, NULL};
  reg(&o, (cb_fn)self_unregister);
  CHECK(((int (*)(int))o.entry)(1) == 2);
  CHECK(self_wait_status == CB_ERR_WOULD_DEADLOCK);
  CHECK(self_unreg_status == CB_OK);
  CHECK_STATUS(CB_OK, cb_barrier());
  CHECK(o.destroyed == 1 && o.destroyed_during_call == 0);
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_unregister(o.self));
}

/* ---- nested: a callback registers, calls and unregisters another, and recurses through itself ---- */
static int inner_fn(void *ud, int x) { return ((obj *)ud)->id * x; }
static obj inners[100]; /* not on the stack: a deferred destroy may run after the frame is gone */
static int outer_fn(void *ud, int depth) {
  obj *o = ud;
  if (depth == 0) return 1;
  obj *in = &inners[depth];
  *in = (obj){depth, 0, 0, 0, 0, 0, NULL};
  reg(in, (cb_fn)inner_fn);
  int r = ((int (*)(int))in->entry)(2);
  r += ((int (*)(int))o->entry)(depth - 1);
  CHECK_STATUS(CB_OK, cb_unregister(in->self));
  /* inner is not running any more, so its destroy runs now, at any nesting depth (past the record's own 61
   * cells, cbslot still knows which callbacks this thread is inside) */
  CHECK_STATUS(CB_OK, cb_barrier());
  CHECK(in->destroyed == 1);
  return r;
}

static void nested(int levels) {
  obj o = {0, 0, 0, 0, 0, 0, NULL};
  reg(&o, (cb_fn)outer_fn);
  int want = 1;
  for (int d = 1; d <= levels; d++) want += 2 * d;
  CHECK(((int (*)(int))o.entry)(levels) == want);
  CHECK_STATUS(CB_OK, cb_unregister_wait(o.self));
  CHECK(o.destroyed == 1);
  CHECK_STATUS(CB_OK, cb_barrier()); /* everything left over from the deep levels */
  for (int d = 1; d <= levels; d++) CHECK(inners[d].destroyed == 1);
}

/* ---- destroy may call cbslot: register a new callback, unregister another ---- */
typedef struct chain {
  obj o;
  cb_handle other;
  obj fresh;
} chain;
static void destroy_chain(void *ud) {
  chain *c = ud;
  c->o.destroyed++;
  if (c->other) CHECK_STATUS(CB_OK, cb_unregister(c->other));
  CHECK_STATUS(CB_OK, cb_register((cb_fn)plain, &c->fresh, destroy_obj, &c->fresh.self, &c->fresh.entry));
}

static void destroy_reenters(void) {
  static chain a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  CHECK_STATUS(CB_OK, cb_register((cb_fn)plain, &b, destroy_chain, &b.o.self, &b.o.entry));
  a.other = b.o.self;
  CHECK_STATUS(CB_OK, cb_register((cb_fn)plain, &a, destroy_chain, &a.o.self, &a.o.entry));
  CHECK_STATUS(CB_OK, cb_unregister_wait(a.o.self)); /* a's destroy unregisters b */
  CHECK_STATUS(CB_OK, cb_barrier());
  CHECK(a.o.destroyed == 1 && b.o.destroyed == 1);
  a.fresh.id = 5;
  CHECK(((int (*)(int))a.fresh.entry)(1) == 6); /* registered from inside a destroy */
  CHECK_STATUS(CB_OK, cb_unregister_wait(a.fresh.self));
  CHECK_STATUS(CB_OK, cb_unregister_wait(b.fresh.self));
  CHECK(a.fresh.destroyed == 1 && b.fresh.destroyed == 1);
}

/* ---- limit and watermark ---- */
static uint64_t wm_live[8];
static int wm_fired;
static void on_watermark(uint64_t live, void *arg) {
  CHECK(arg == (void *)wm_live);
  wm_live[wm_fired++ % 8] = live;
}

static void limit_and_watermark(void) {
  enum { N = 10 };
  obj o[N];
  memset(o, 0, sizeof o);
  uint64_t base = stats().live;
  CHECK_STATUS(CB_OK, cb_set_limit(base + 5));
  CHECK_STATUS(CB_OK, cb_set_watermark(base + 3, on_watermark, wm_live));
  for (int i = 0; i < 5; i++) reg(&o[i], (cb_fn)plain);
  CHECK(wm_fired == 1 && wm_live[0] == base + 3);
  cb_handle h = 0;
  cb_fn e = NULL;
  CHECK_STATUS(CB_ERR_CAPACITY, cb_register((cb_fn)plain, &o[5], destroy_obj, &h, &e));
  CHECK_LAST_ERROR("cb_set_limit");
  CHECK(h == 0 && e == NULL);
  /* below the threshold and back up: fires once more */
  for (int i = 0; i < 3; i++) CHECK_STATUS(CB_OK, cb_unregister(o[i].self));
  CHECK(wm_fired == 1);
  for (int i = 0; i < 3; i++) reg(&o[i], (cb_fn)plain);
  CHECK(wm_fired == 2 && wm_live[1] == base + 3);
  CHECK_STATUS(CB_OK, cb_set_limit(0)); /* unlimited again */
  for (int i = 5; i < N; i++) reg(&o[i], (cb_fn)plain);
  CHECK(wm_fired == 2);
  CHECK(stats().peak >= base + N);
  CHECK_STATUS(CB_ERR_INVALID_ARG, cb_set_watermark(0, on_watermark, NULL));
  CHECK_STATUS(CB_OK, cb_set_watermark(0, NULL, NULL)); /* removed */
  for (int i = 0; i < N; i++) CHECK_STATUS(CB_OK, cb_unregister(o[i].self));
  CHECK_STATUS(CB_OK, cb_barrier());
  for (int i = 0; i < N; i++) CHECK(o[i].destroyed == (i < 3 ? 2 : 1));
}

/* ---- bad input: clear errors, outputs untouched, nothing lost ---- */
static void bad_inputs(void) {
  obj o = {1, 0, 0, 0, 0, 0, NULL};
  cb_handle h = 77;
  cb_fn e = (cb_fn)plain;
  CHECK_STATUS(CB_ERR_NULL_ARG, cb_register(NULL, &o, destroy_obj, &h, &e));
  CHECK_LAST_ERROR("cb_register: argument `fn` is NULL");
  CHECK_STATUS(CB_ERR_NULL_ARG, cb_register((cb_fn)plain, &o, destroy_obj, NULL, &e));
  CHECK_LAST_ERROR("`out_handle`");
  CHECK_STATUS(CB_ERR_NULL_ARG, cb_register((cb_fn)plain, &o, destroy_obj, &h, NULL));
  CHECK_LAST_ERROR("`out_entry`");
  CHECK(h == 77 && e == (cb_fn)plain);
  CHECK_STATUS(CB_ERR_NULL_ARG, cb_get_stats(NULL));

  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_unregister(0));
  CHECK_LAST_ERROR("is 0");
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_unregister_wait(0));
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_unregister(0xc2ffffff00fffffeULL));
  CHECK_LAST_ERROR("never issued");
  uint64_t seed = 99;
  for (int i = 0; i < 100000; i++) {
    cb_handle g = check_rand(&seed);
    if (i & 1) g = (g & 0x00ffffffffffffffULL) | 0xc200000000000000ULL;
    CHECK(cb_unregister(g) == CB_ERR_INVALID_HANDLE);
  }

  /* stale and double (no reclaimer meanwhile, so the first unregister's destroy is still due) */
  CHECK_STATUS(CB_OK, cb_set_reclaim_delay(0));
  reg(&o, (cb_fn)plain);
  cb_handle old = o.self;
  CHECK_STATUS(CB_OK, cb_unregister(old));
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_unregister(old));
  CHECK_LAST_ERROR("already unregistered");
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_unregister_wait(old));
  CHECK_STATUS(CB_OK, cb_barrier());
  CHECK_STATUS(CB_OK, cb_set_reclaim_delay(CB_RECLAIM_DELAY_DEFAULT_MS));
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_unregister(old));
  CHECK_LAST_ERROR("is stale");
  CHECK(o.destroyed == 1);

  /* handles of the other kind are refused, and left alone */
  cb_handle objh;
  CHECK_STATUS(CB_OK, cb_handle_new(&o, NULL, &objh));
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_unregister(objh));
  CHECK_LAST_ERROR("is an object handle (cb_handle_new), not a callback");
  reg(&o, (cb_fn)plain);
  void *p = NULL;
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_handle_get(o.self, &p));
  CHECK_LAST_ERROR("is a callback handle (cb_register)");
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_handle_retain(o.self));
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_handle_release(o.self));
  CHECK(p == NULL);
  CHECK(((int (*)(int))o.entry)(1) == 2); /* still live */
  CHECK_STATUS(CB_OK, cb_handle_get(objh, &p));
  CHECK_STATUS(CB_OK, cb_handle_release(objh));
  CHECK_STATUS(CB_OK, cb_unregister_wait(o.self));
  CHECK(o.destroyed == 2);

  /* NULL destroy is fine */
  CHECK_STATUS(CB_OK, cb_register((cb_fn)plain, &o, NULL, &h, &e));
  CHECK_STATUS(CB_OK, cb_unregister_wait(h));
  CHECK(o.destroyed == 2);
}

/* ---- fork with a callback live: the child can call, register and unregister ---- */
static void fork_child_uses_cbslot(void) {
  obj o = {10, 0, 0, 0, 0, 0, NULL};
  reg(&o, (cb_fn)plain);
  fflush(NULL);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    obj c = {20, 0, 0, 0, 0, 0, NULL};
    int ok = ((int (*)(int))o.entry)(1) == 11;
    ok &= cb_register((cb_fn)plain, &c, destroy_obj, &c.self, &c.entry) == CB_OK;
    ok &= ((int (*)(int))c.entry)(1) == 21;
    ok &= cb_unregister_wait(c.self) == CB_OK && c.destroyed == 1;
    ok &= cb_unregister_wait(o.self) == CB_OK && o.destroyed == 1;
    _exit(ok ? 0 : 1);
  }
  int status;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(o.destroyed == 0); /* the child's unregister is the child's: the parent's registration is live */
  CHECK(((int (*)(int))o.entry)(1) == 11);
  CHECK_STATUS(CB_OK, cb_unregister_wait(o.self));
  CHECK(o.destroyed == 1);
}

int main(void) {
  check_require(CB_FEATURE_ENTRIES);
  fork_child_uses_cbslot();
  unregister_destroy_and_stale();
  default_stale_handler_aborts();
  unregister_from_inside();
  nested(40);
  nested(70);
  destroy_reenters();
  limit_and_watermark();
  bad_inputs();
  cb_stats s = stats();
  CHECK(s.live == 0 && s.pending_destroy == 0);
  CHECK(s.registered_total == s.unregistered_total && s.unregistered_total == s.destroyed_total);
  CHECK_DONE("test_cb_lifecycle");
}
