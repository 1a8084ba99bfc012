/* Interop with a real event library: a vde_event_handler on top of libevent 2, driven through a cbslot
 * context with a real pipe and real timers, including deleting events and timeouts inside their own
 * callbacks (VDE3's libevent backend broke there) and fini with events pending. Every libevent event the
 * adapter creates must be freed exactly once (counted here; valgrind would catch a double free). */
#include "../check.h"

#include <event2/event.h>
#include <stdint.h>
#include <unistd.h>

static struct event_base *base;
static int created, freed;

/* VDE_EV_* and libevent's EV_* have the same values: the adapter passes flags and callbacks through. */
_Static_assert(VDE_EV_TIMEOUT == EV_TIMEOUT && VDE_EV_READ == EV_READ && VDE_EV_WRITE == EV_WRITE &&
                   VDE_EV_PERSIST == EV_PERSIST,
               "flag values");

static void *le_event_add(int fd, short events, const struct timeval *tv, vde_event_cb cb, void *arg) {
  struct event *ev = event_new(base, fd, events, cb, arg);
  if (!ev) return NULL;
  if (event_add(ev, tv) != 0) {
    event_free(ev);
    return NULL;
  }
  created++;
  return ev;
}
static void le_event_del(void *ev) {
  event_free(ev);
  freed++;
}
static void *le_timeout_add(const struct timeval *tv, short events, vde_event_cb cb, void *arg) {
  return le_event_add(-1, (short)(events & EV_PERSIST), tv, cb, arg);
}

typedef struct user {
  vde_context *ctx;
  void *self;
  int calls, del_at, is_timeout, read_fd;
} user;

static void on_event(int fd, short what, void *arg) {
  user *u = arg;
  u->calls++;
  if ((what & EV_READ) && u->read_fd >= 0) {
    char c;
    CHECK(read(fd, &c, 1) == 1);
  }
  if (u->del_at && u->calls == u->del_at) {
    if (u->is_timeout)
      vde_context_timeout_del(u->ctx, u->self);
    else
      vde_context_event_del(u->ctx, u->self);
  }
}

static int writes_left;
static int wfd;
static void writer(int fd, short what, void *arg) {
  (void)fd;
  (void)what;
  (void)arg;
  if (writes_left-- > 0) CHECK(write(wfd, "x", 1) == 1);
}

int main(void) {
  base = event_base_new();
  CHECK(base != NULL);
  vde_event_handler *h = malloc(sizeof *h);
  *h = (vde_event_handler){le_event_add, le_event_del, le_timeout_add, le_event_del};
  vde_context *ctx = NULL;
  CHECK(vde_context_new(&ctx) == 0 && vde_context_init(ctx, h, NULL) == 0);
  memset(h, 0, sizeof *h); /* the context has its own copy */
  free(h);

  int p[2];
  CHECK(pipe(p) == 0);
  wfd = p[1];
  user reader = {ctx, NULL, 0, 5, 0, p[0]};          /* persistent read event, deletes itself on the 5th */
  user ticker = {ctx, NULL, 0, 3, 1, -1};            /* persistent timeout, deletes itself on the 3rd */
  user once = {ctx, NULL, 0, 0, 1, -1};              /* one-shot timeout */
  user once_self = {ctx, NULL, 0, 1, 1, -1};         /* one-shot that deletes itself inside */
  struct timeval ms1 = {0, 1000}, ms2 = {0, 2000}, ms5 = {0, 5000};
  reader.self = vde_context_event_add(ctx, p[0], VDE_EV_READ | VDE_EV_PERSIST, NULL, on_event, &reader);
  ticker.self = vde_context_timeout_add(ctx, VDE_EV_PERSIST, &ms2, on_event, &ticker);
  once.self = vde_context_timeout_add(ctx, 0, &ms5, on_event, &once);
  once_self.self = vde_context_timeout_add(ctx, 0, &ms5, on_event, &once_self);
  writes_left = 8;
  void *wt = vde_context_timeout_add(ctx, VDE_EV_PERSIST, &ms1, writer, NULL);
  CHECK(reader.self && ticker.self && once.self && once_self.self && wt);

  for (int i = 0; i < 2000 && (reader.calls < 5 || ticker.calls < 3 || once.calls < 1 || once_self.calls < 1); i++)
    event_base_loop(base, EVLOOP_ONCE);
  CHECK(reader.calls == 5 && ticker.calls == 3 && once.calls == 1 && once_self.calls == 1);
  CHECK(freed == 4); /* reader, ticker (deleted inside), once, once_self (ended after firing) */

  /* fini with events pending: the writer timer and a fresh read event */
  user pending = {ctx, NULL, 0, 0, 0, p[0]};
  CHECK(vde_context_event_add(ctx, p[0], VDE_EV_READ | VDE_EV_PERSIST, NULL, on_event, &pending));
  vde_context_fini(ctx);
  CHECK(created == freed && created == 6);
  CHECK(write(p[1], "y", 1) == 1);
  for (int i = 0; i < 20; i++) event_base_loop(base, EVLOOP_NONBLOCK); /* nothing left to fire */
  CHECK(pending.calls == 0);
  vde_context_delete(ctx);
  CHECK(created == freed);
  event_base_free(base);
  close(p[0]);
  close(p[1]);
  printf("libevent %s: %d events created and freed exactly once\n", event_get_version(), created);
  CHECK_DONE("test_vde_libevent");
}
