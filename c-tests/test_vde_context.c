/* The VDE3 context API against a recording fake host loop (and cbslot's built-in loop): the handler is
 * copied (the caller's struct is wiped after init), module paths are deep-copied, events are wrapped
 * (the host gets cbslot's callback and argument, the user's cb gets the user's arg), host tokens go back
 * to the host's del exactly once, delete inside a callback, late fires after delete/fini reach nothing,
 * fini with pending events, two contexts, and every bad input (errno + cb_last_error). */
#include "check.h"

#include <errno.h>
#include <stdint.h>
#include <sys/time.h>
#include <unistd.h>

/* ---- a fake host loop that records everything ---- */
typedef struct host_ev {
  int fd;
  short events;
  vde_event_cb cb;
  void *arg;
  int added, deleted;
} host_ev;

static host_ev host[256];
static int nhost;
static int host_fail_next;

static void *host_event_add(int fd, short events, const struct timeval *tv, vde_event_cb cb, void *arg) {
  (void)tv;
  if (host_fail_next) {
    host_fail_next = 0;
    errno = EMFILE;
    return NULL;
  }
  host_ev *h = &host[nhost++];
  *h = (host_ev){fd, events, cb, arg, 1, 0};
  return h;
}
static void *host_timeout_add(const struct timeval *tv, short events, vde_event_cb cb, void *arg) {
  return host_event_add(-1, (short)(events | VDE_EV_TIMEOUT), tv, cb, arg);
}
static void host_del(void *tok) {
  host_ev *h = tok;
  CHECK(h >= host && h < host + nhost); /* always the host's own token */
  h->deleted++;
}
/* the host fires event i (also "late", after cbslot deleted it) */
static void host_fire(int i, short what) { host[i].cb(host[i].fd, what, host[i].arg); }

static vde_event_handler fake_handler(void) {
  vde_event_handler h = {host_event_add, host_del, host_timeout_add, host_del};
  return h;
}

/* ---- user callbacks ---- */
typedef struct user {
  int calls;
  int last_fd;
  short last_what;
  vde_context *ctx;
  void *token; /* deleted from inside the callback when del_inside is set */
  int del_inside, is_timeout, drain;
} user;

static void user_cb(int fd, short what, void *arg) {
  user *u = arg;
  u->calls++;
  u->last_fd = fd;
  u->last_what = what;
  char c;
  if (u->drain) CHECK(read(fd, &c, 1) == 1);
  if (u->del_inside) {
    if (u->is_timeout)
      vde_context_timeout_del(u->ctx, u->token);
    else
      vde_context_event_del(u->ctx, u->token);
  }
}

static vde_context *new_ctx(vde_event_handler *h) {
  vde_context *ctx = NULL;
  CHECK(vde_context_new(&ctx) == 0 && ctx != NULL);
  CHECK(vde_context_init(ctx, h, NULL) == 0);
  return ctx;
}

#define CHECK_ERRNO(expr_is_failure, want)                                                              \
  do {                                                                                                \
    errno = 0;                                                                                        \
    CHECK(expr_is_failure);                                                                           \
    CHECK(errno == (want));                                                                           \
  } while (0)

static void handler_is_copied_and_paths_deep_copied(void) {
  vde_event_handler *h = malloc(sizeof *h);
  CHECK(h != NULL);
  *h = fake_handler();
  char **paths = malloc(3 * sizeof *paths);
  paths[0] = strdup("/usr/lib/vde3");
  paths[1] = strdup("/opt/modules");
  paths[2] = NULL;
  vde_context *ctx = NULL;
  CHECK(vde_context_new(&ctx) == 0);
  CHECK(vde_context_init(ctx, h, paths) == 0);
  /* the caller's memory is gone: wiped and freed, as a collected Go struct would be */
  memset(h, 0xAB, sizeof *h);
  free(h);
  memset(paths[0], 'x', strlen(paths[0]));
  free(paths[0]);
  free(paths[1]);
  free(paths);
  CHECK(strcmp(vde_context_module_path(ctx, 0), "/usr/lib/vde3") == 0);
  CHECK(strcmp(vde_context_module_path(ctx, 1), "/opt/modules") == 0);
  CHECK(vde_context_module_path(ctx, 2) == NULL);

  nhost = 0;
  user u = {0};
  int first = nhost;
  void *tok = vde_context_event_add(ctx, 5, VDE_EV_READ | VDE_EV_PERSIST, NULL, user_cb, &u);
  CHECK(tok != NULL);
  /* wrapped: the host got cbslot's callback and argument, not the user's */
  CHECK(host[first].cb != user_cb && host[first].arg != &u && host[first].fd == 5);
  CHECK(tok != (void *)&host[first]); /* the user's token is cbslot's, not the host's */
  host_fire(first, VDE_EV_READ);
  host_fire(first, VDE_EV_READ);
  CHECK(u.calls == 2 && u.last_fd == 5 && u.last_what == VDE_EV_READ);
  vde_context_event_del(ctx, tok);
  CHECK(host[first].deleted == 1);
  host_fire(first, VDE_EV_READ); /* late: must reach nothing */
  CHECK(u.calls == 2);
  vde_context_fini(ctx);
  CHECK(vde_context_module_path(ctx, 0) == NULL);
  vde_context_delete(ctx);
}

static void one_shot_timeouts_and_tokens_back_once(void) {
  vde_event_handler h = fake_handler();
  vde_context *ctx = new_ctx(&h);
  nhost = 0;
  user once = {0}, every = {0};
  struct timeval tv = {0, 1000};
  void *t1 = vde_context_timeout_add(ctx, 0, &tv, user_cb, &once);
  void *t2 = vde_context_timeout_add(ctx, VDE_EV_PERSIST, &tv, user_cb, &every);
  CHECK(t1 && t2 && t1 != t2);
  host_fire(0, VDE_EV_TIMEOUT);
  CHECK(once.calls == 1 && once.last_fd == -1 && once.last_what == VDE_EV_TIMEOUT);
  CHECK(host[0].deleted == 1); /* a one-shot ends after it fires: its host token goes back once */
  host_fire(0, VDE_EV_TIMEOUT); /* a host that fires it again reaches nothing */
  CHECK(once.calls == 1);
  CHECK_ERRNO((vde_context_timeout_del(ctx, t1), 1), EINVAL); /* already finished */
  CHECK_LAST_ERROR("not a live event token (deleted, finished or garbage)");
  CHECK(host[0].deleted == 1);
  for (int i = 0; i < 3; i++) host_fire(1, VDE_EV_TIMEOUT);
  CHECK(every.calls == 3 && host[1].deleted == 0);
  /* the wrong delete function for the kind is refused, and changes nothing */
  CHECK_ERRNO((vde_context_event_del(ctx, t2), 1), EINVAL);
  CHECK_LAST_ERROR("vde_context_timeout_del");
  vde_context_timeout_del(ctx, t2);
  CHECK(host[1].deleted == 1);
  vde_context_timeout_del(ctx, t2); /* twice: no-op */
  CHECK(host[1].deleted == 1);
  vde_context_delete(ctx);
}

static void delete_inside_callback(void) {
  vde_event_handler h = fake_handler();
  vde_context *ctx = new_ctx(&h);
  nhost = 0;
  user e = {0}, t = {0};
  e.ctx = t.ctx = ctx;
  e.del_inside = t.del_inside = 1;
  t.is_timeout = 1;
  struct timeval tv = {0, 1000};
  e.token = vde_context_event_add(ctx, 3, VDE_EV_READ | VDE_EV_PERSIST, NULL, user_cb, &e);
  t.token = vde_context_timeout_add(ctx, VDE_EV_PERSIST, &tv, user_cb, &t);
  host_fire(0, VDE_EV_READ);
  host_fire(1, VDE_EV_TIMEOUT);
  CHECK(e.calls == 1 && t.calls == 1);
  CHECK(host[0].deleted == 1 && host[1].deleted == 1);
  host_fire(0, VDE_EV_READ); /* late fires after delete-inside */
  host_fire(1, VDE_EV_TIMEOUT);
  CHECK(e.calls == 1 && t.calls == 1);
  /* a one-shot deleting itself inside its callback: the token still goes back exactly once */
  user o = {0};
  o.ctx = ctx;
  o.del_inside = 1;
  o.token = vde_context_event_add(ctx, 4, VDE_EV_READ, NULL, user_cb, &o);
  host_fire(2, VDE_EV_READ);
  CHECK(o.calls == 1 && host[2].deleted == 1);
  vde_context_delete(ctx);
}

static void fini_with_pending_events(void) {
  vde_event_handler h = fake_handler();
  vde_context *ctx = new_ctx(&h);
  nhost = 0;
  user u = {0};
  struct timeval tv = {1, 0};
  for (int i = 0; i < 10; i++) CHECK(vde_context_event_add(ctx, 10 + i, VDE_EV_READ | VDE_EV_PERSIST, &tv, user_cb, &u));
  for (int i = 0; i < 5; i++) CHECK(vde_context_timeout_add(ctx, VDE_EV_PERSIST, &tv, user_cb, &u));
  vde_context_fini(ctx);
  for (int i = 0; i < 15; i++) CHECK(host[i].deleted == 1);
  for (int i = 0; i < 15; i++) host_fire(i, VDE_EV_READ); /* nothing fires after fini */
  CHECK(u.calls == 0);
  CHECK_ERRNO(vde_context_event_add(ctx, 1, VDE_EV_READ, NULL, user_cb, &u) == NULL, EINVAL);
  CHECK_ERRNO((vde_context_fini(ctx), 1), EINVAL); /* twice */
  vde_context_delete(ctx);
  for (int i = 0; i < 15; i++) CHECK(host[i].deleted == 1);
  /* delete without fini: fini happens first */
  ctx = new_ctx(&h);
  nhost = 0;
  CHECK(vde_context_event_add(ctx, 3, VDE_EV_READ | VDE_EV_PERSIST, NULL, user_cb, &u));
  vde_context_delete(ctx);
  CHECK(host[0].deleted == 1);
  host_fire(0, VDE_EV_READ);
  CHECK(u.calls == 0);
}

static void two_contexts(void) {
  vde_event_handler h = fake_handler();
  vde_context *a = new_ctx(&h), *b = new_ctx(&h);
  nhost = 0;
  user ua = {0}, ub = {0};
  void *ta = vde_context_event_add(a, 1, VDE_EV_READ | VDE_EV_PERSIST, NULL, user_cb, &ua);
  void *tb = vde_context_event_add(b, 1, VDE_EV_READ | VDE_EV_PERSIST, NULL, user_cb, &ub);
  CHECK_ERRNO((vde_context_event_del(a, tb), 1), EINVAL); /* b's token through a */
  CHECK_LAST_ERROR("another context");
  host_fire(1, VDE_EV_READ);
  CHECK(ub.calls == 1 && ua.calls == 0);
  vde_context_delete(a);
  CHECK(host[0].deleted == 1 && host[1].deleted == 0); /* b untouched */
  host_fire(1, VDE_EV_READ);
  CHECK(ub.calls == 2);
  vde_context_event_del(b, tb);
  CHECK(host[1].deleted == 1);
  (void)ta;
  vde_context_delete(b);
}

static void bad_inputs(void) {
  vde_event_handler h = fake_handler();
  user u = {0};
  struct timeval tv = {0, 1};
  CHECK_ERRNO(vde_context_new(NULL) == -1, EINVAL);
  CHECK_LAST_ERROR("vde_context_new: argument `ctx` is NULL");
  vde_context *ctx = NULL;
  CHECK(vde_context_new(&ctx) == 0);
  CHECK_ERRNO(vde_context_init(NULL, &h, NULL) == -1, EINVAL);
  CHECK_ERRNO(vde_context_init(ctx, NULL, NULL) == -1, EINVAL);
  CHECK_LAST_ERROR("`handler`");
  vde_event_handler missing[4] = {h, h, h, h};
  missing[0].event_add = NULL;
  missing[1].event_del = NULL;
  missing[2].timeout_add = NULL;
  missing[3].timeout_del = NULL;
  for (int i = 0; i < 4; i++) CHECK_ERRNO(vde_context_init(ctx, &missing[i], NULL) == -1, EINVAL);
  CHECK_LAST_ERROR("all four functions are required");
  /* not initialised yet: adding is refused */
  CHECK_ERRNO(vde_context_event_add(ctx, 1, VDE_EV_READ, NULL, user_cb, &u) == NULL, EINVAL);
  CHECK_LAST_ERROR("not initialised");
  CHECK(vde_context_init(ctx, &h, NULL) == 0);
  CHECK_ERRNO(vde_context_init(ctx, &h, NULL) == -1, EINVAL); /* re-init */
  CHECK_LAST_ERROR("already initialised");
  CHECK_ERRNO(vde_context_event_add(ctx, 1, VDE_EV_READ, NULL, NULL, &u) == NULL, EINVAL);
  CHECK_ERRNO(vde_context_event_add(ctx, -1, VDE_EV_READ, NULL, user_cb, &u) == NULL, EINVAL);
  CHECK_ERRNO(vde_context_event_add(ctx, 1, 0x100, NULL, user_cb, &u) == NULL, EINVAL);
  CHECK_ERRNO(vde_context_timeout_add(ctx, 0, NULL, user_cb, &u) == NULL, EINVAL);
  CHECK_ERRNO(vde_context_timeout_add(ctx, 0, &tv, NULL, &u) == NULL, EINVAL);
  /* the host refuses: its errno comes through, and nothing is left registered */
  nhost = 0;
  host_fail_next = 1;
  CHECK_ERRNO(vde_context_event_add(ctx, 1, VDE_EV_READ, NULL, user_cb, &u) == NULL, EMFILE);
  CHECK_LAST_ERROR("host's event_add failed");
  /* garbage tokens and contexts */
  vde_context *garbage[] = {(vde_context *)0x1, (vde_context *)0x1234, (vde_context *)~(uintptr_t)0};
  for (size_t i = 0; i < sizeof garbage / sizeof *garbage; i++) {
    CHECK_ERRNO(vde_context_init(garbage[i], &h, NULL) == -1, EINVAL);
    CHECK_ERRNO(vde_context_event_add(garbage[i], 1, VDE_EV_READ, NULL, user_cb, &u) == NULL, EINVAL);
    CHECK_ERRNO((vde_context_fini(garbage[i]), 1), EINVAL);
    CHECK_ERRNO((vde_context_delete(garbage[i]), 1), EINVAL);
    CHECK_ERRNO((vde_context_event_del(ctx, (void *)garbage[i]), 1), EINVAL);
    CHECK_ERRNO((vde_context_timeout_del(ctx, (void *)garbage[i]), 1), EINVAL);
  }
  CHECK_ERRNO((vde_context_event_del(ctx, NULL), 1), EINVAL);
  CHECK_ERRNO(vde_context_module_path(NULL, 0) == NULL, EINVAL);
  errno = 0;
  vde_context_delete(NULL); /* a no-op */
  CHECK(errno == 0);
  vde_context_delete(ctx);
  /* deleted: every use is EINVAL, never a crash */
  CHECK_ERRNO((vde_context_delete(ctx), 1), EINVAL);
  CHECK_LAST_ERROR("vde_context_delete");
  CHECK_ERRNO(vde_context_init(ctx, &h, NULL) == -1, EINVAL);
  CHECK_ERRNO(vde_context_event_add(ctx, 1, VDE_EV_READ, NULL, user_cb, &u) == NULL, EINVAL);
}

/* The same context API on cbslot's built-in loop: a real pipe and a real timer. */
static void on_builtin_loop(void) {
  if (!check_has(CB_FEATURE_LOOP, "on_builtin_loop")) return;
  cb_loop *lp = NULL;
  CHECK_STATUS(CB_OK, cb_loop_new(&lp));
  vde_event_handler h;
  CHECK_STATUS(CB_OK, cb_loop_handler(lp, &h));
  vde_context *ctx = new_ctx(&h);
  int p[2];
  CHECK(pipe(p) == 0);
  user r = {0}, t = {0};
  r.ctx = t.ctx = ctx;
  t.del_inside = t.is_timeout = 1;
  r.drain = 1;
  void *rt = vde_context_event_add(ctx, p[0], VDE_EV_READ | VDE_EV_PERSIST, NULL, user_cb, &r);
  struct timeval tv = {0, 2000};
  t.token = vde_context_timeout_add(ctx, VDE_EV_PERSIST, &tv, user_cb, &t);
  CHECK(rt && t.token);
  CHECK(write(p[1], "x", 1) == 1);
  size_t n = 0, pending = 0;
  for (int i = 0; i < 50 && (r.calls == 0 || t.calls == 0); i++) CHECK_STATUS(CB_OK, cb_loop_run_once(lp, 100, &n));
  CHECK(r.calls == 1 && r.last_fd == p[0] && (r.last_what & VDE_EV_READ));
  CHECK(t.calls == 1); /* deleted itself inside its callback */
  CHECK_STATUS(CB_OK, cb_loop_pending(lp, &pending));
  CHECK(pending == 1);
  vde_context_fini(ctx);
  CHECK_STATUS(CB_OK, cb_loop_pending(lp, &pending));
  CHECK(pending == 0); /* fini took the pipe watch out of the loop */
  vde_context_delete(ctx);
  CHECK_STATUS(CB_OK, cb_loop_free(lp));
  close(p[0]);
  close(p[1]);
}

/* The lifecycle where VDE3 and cbslot could differ: each decision, as the README states it. */
static void lifecycle_as_in_vde3(void) {
  vde_event_handler h = fake_handler();
  vde_context *ctx = NULL;
  user u = {0};
  struct timeval tv = {1, 0};
  CHECK(vde_context_new(&ctx) == 0);
  /* fini of a never-initialised context: refused (EINVAL, as VDE3 logs it), and a later init works */
  CHECK_ERRNO((vde_context_fini(ctx), 1), EINVAL);
  CHECK_LAST_ERROR("never initialised");
  CHECK(vde_context_init(ctx, &h, NULL) == 0);
  /* init of an initialised context: EINVAL (VDE3 returns 0 and leaks the first init's state) */
  CHECK_ERRNO(vde_context_init(ctx, &h, NULL) == -1, EINVAL);
  CHECK_LAST_ERROR("already initialised");
  /* init after fini: works, as in VDE3, and the context is usable again */
  nhost = 0;
  CHECK(vde_context_timeout_add(ctx, VDE_EV_PERSIST, &tv, user_cb, &u) != NULL);
  vde_context_fini(ctx);
  CHECK(host[0].deleted == 1);
  char path[] = "/nonexistent/modules";
  char *paths[] = {path, NULL};
  CHECK(vde_context_init(ctx, &h, paths) == 0); /* paths are copied; no module is loaded */
  CHECK(strcmp(vde_context_module_path(ctx, 0), "/nonexistent/modules") == 0);
  host_fire(0, VDE_EV_TIMEOUT); /* the first init's host firing late reaches nothing in the second */
  CHECK(u.calls == 0);
  CHECK(vde_context_timeout_add(ctx, VDE_EV_PERSIST, &tv, user_cb, &u) != NULL);
  host_fire(1, VDE_EV_TIMEOUT);
  CHECK(u.calls == 1 && host[1].deleted == 0);
  /* delete of an initialised context: fini first (VDE3 refuses and leaks it) */
  vde_context_delete(ctx);
  CHECK(host[1].deleted == 1);
  host_fire(1, VDE_EV_TIMEOUT);
  CHECK(u.calls == 1);
}

int main(void) {
  lifecycle_as_in_vde3();
  handler_is_copied_and_paths_deep_copied();
  one_shot_timeouts_and_tokens_back_once();
  delete_inside_callback();
  fini_with_pending_events();
  two_contexts();
  bad_inputs();
  on_builtin_loop();
  CHECK_DONE("test_vde_context");
}
