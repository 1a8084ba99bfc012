/* VDE3 source compatibility: a program written against VDE3's declarations only (<vde3.h>,
 * <vde3/context.h>, `event_cb`, VDE3's argument order for vde_context_timeout_add), built with cbslot's
 * compatibility directory first on the include path and nothing else changed.
 *
 * - The context cases of VDE3's own context test: new, init with each handler member NULL (EINVAL), init,
 *   fini, delete.
 * - A vde_event_handler over libevent 2 written the way VDE3's libevent backend is (an event allocated per
 *   add, persistent timeouts re-armed by a wrapper after the user's callback), driving a pipe event, a
 *   one-shot timeout and a persistent timeout through the context. The persistent timeout is stopped the
 *   safe way with such a handler: its callback does not delete it (the wrapper touches it after the
 *   callback returns); it is deleted from the one-shot timeout's callback instead.
 * This file deliberately does not include <cbslot.h> or check.h. */
#include <vde3.h>
#include <vde3/context.h>

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int checks;
#define EXPECT(cond)                                                                                      \
  do {                                                                                                    \
    checks++;                                                                                             \
    if (!(cond)) {                                                                                        \
      fprintf(stderr, "%s:%d: EXPECT failed: %s (errno %d)\n", __FILE__, __LINE__, #cond, errno);          \
      exit(1);                                                                                            \
    }                                                                                                     \
  } while (0)

/* ---- a libevent handler in the style of VDE3's ---- */
static struct event_base *base;
static int allocated, released;

struct rtimeout { /* a timeout token: the event, and for persistent ones the user's callback to re-arm */
  struct event *ev;
  struct timeval every;
  event_cb cb;
  void *arg;
};

static void *le_event_add(int fd, short events, const struct timeval *timeout, event_cb cb, void *arg) {
  struct event *ev = event_new(base, fd, events, cb, arg);
  if (!ev) {
    errno = ENOMEM;
    return NULL;
  }
  event_add(ev, timeout);
  allocated++;
  return ev;
}

static void le_event_del(void *token) {
  event_free(token); /* event_free deletes it first */
  released++;
}

static void rtimeout_cb(int fd, short events, void *arg) {
  struct rtimeout *rt = arg;
  rt->cb(fd, events, rt->arg);
  evtimer_add(rt->ev, &rt->every); /* re-arm: touches rt after the user's callback, as VDE3's does */
}

static void *le_timeout_add(const struct timeval *timeout, short events, event_cb cb, void *arg) {
  struct rtimeout *rt = calloc(1, sizeof *rt);
  if (!rt) {
    errno = ENOMEM;
    return NULL;
  }
  if (events & VDE_EV_PERSIST) {
    rt->every = *timeout;
    rt->cb = cb;
    rt->arg = arg;
    rt->ev = evtimer_new(base, rtimeout_cb, rt);
  } else {
    rt->ev = evtimer_new(base, cb, arg);
  }
  if (!rt->ev) {
    free(rt);
    errno = ENOMEM;
    return NULL;
  }
  evtimer_add(rt->ev, timeout);
  allocated++;
  return rt;
}

static void le_timeout_del(void *token) {
  struct rtimeout *rt = token;
  event_free(rt->ev);
  free(rt);
  released++;
}

static vde_event_handler libevent_eh = {
    .event_add = le_event_add,
    .event_del = le_event_del,
    .timeout_add = le_timeout_add,
    .timeout_del = le_timeout_del,
};

/* ---- the context cases of VDE3's context test ---- */
static void context_cases(void) {
  vde_context *ctx = NULL;
  EXPECT(vde_context_new(&ctx) == 0 && ctx != NULL);
  vde_event_handler broken;
  for (int member = 0; member < 4; member++) {
    broken = libevent_eh;
    if (member == 0) broken.event_add = NULL;
    if (member == 1) broken.event_del = NULL;
    if (member == 2) broken.timeout_add = NULL;
    if (member == 3) broken.timeout_del = NULL;
    errno = 0;
    EXPECT(vde_context_init(ctx, &broken, NULL) == -1 && errno == EINVAL);
  }
  EXPECT(vde_context_init(ctx, &libevent_eh, NULL) == 0);
  vde_context_fini(ctx);
  vde_context_delete(ctx);
}

/* ---- events and timeouts through the libevent handler ---- */
static vde_context *ctx;
static void *ticker;
static int reads, ticks, onces;

static void on_read(int fd, short events, void *arg) {
  char c;
  (void)arg;
  EXPECT(events & VDE_EV_READ);
  EXPECT(read(fd, &c, 1) == 1);
  reads++;
}

static void on_tick(int fd, short events, void *arg) {
  (void)fd;
  EXPECT(events & VDE_EV_TIMEOUT);
  EXPECT(arg == &ticks);
  ticks++; /* does not delete itself: the handler re-arms it after this returns */
}

static void on_once(int fd, short events, void *arg) {
  (void)fd;
  (void)arg;
  EXPECT(events & VDE_EV_TIMEOUT);
  if (ticks < 3) { /* a busy machine ran it early in ticks: wait until the persistent one has repeated */
    struct timeval later = {0, 30000};
    EXPECT(vde_context_timeout_add(ctx, 0, &later, on_once, NULL) != NULL);
    return;
  }
  onces++;
  vde_context_timeout_del(ctx, ticker); /* the safe place to stop the persistent timeout */
  ticker = NULL;
}

static void event_cases(void) {
  int p[2];
  EXPECT(pipe(p) == 0);
  base = event_base_new();
  EXPECT(base != NULL);
  EXPECT(vde_context_new(&ctx) == 0);
  EXPECT(vde_context_init(ctx, &libevent_eh, NULL) == 0);
  void *reader = vde_context_event_add(ctx, p[0], VDE_EV_READ | VDE_EV_PERSIST, NULL, on_read, NULL);
  struct timeval every = {0, 2000}, later = {0, 30000};
  ticker = vde_context_timeout_add(ctx, VDE_EV_PERSIST, &every, on_tick, &ticks); /* VDE3's order */
  void *once = vde_context_timeout_add(ctx, 0, &later, on_once, NULL);
  EXPECT(reader != NULL && ticker != NULL && once != NULL);
  EXPECT(write(p[1], "ab", 2) == 2);
  for (int i = 0; i < 5000 && (reads < 2 || onces < 1); i++) event_base_loop(base, EVLOOP_ONCE);
  EXPECT(reads == 2 && onces == 1 && ticks >= 3 && ticker == NULL);
  int ticks_at_delete = ticks;
  for (int i = 0; i < 10; i++) event_base_loop(base, EVLOOP_NONBLOCK);
  EXPECT(ticks == ticks_at_delete); /* deleted: no more ticks */
  vde_context_event_del(ctx, reader);
  vde_context_fini(ctx);
  vde_context_delete(ctx);
  EXPECT(allocated == 3 && released == 3); /* every host event freed exactly once */
  event_base_free(base);
  close(p[0]);
  close(p[1]);
}

int main(void) {
  context_cases();
  event_cases();
  printf("test_vde3_source: %d checks passed (%d ticks)\n", checks, ticks);
  return 0;
}
