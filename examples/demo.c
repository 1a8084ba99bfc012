/* cbslot demo: what the library is for, in one minute of reading.
 *
 * 1. A VDE3 context is initialised from a vde_event_handler struct that is wiped and freed right after
 *    init -- what a garbage collector may do to a Go-allocated struct. The context kept its own copy.
 * 2. cbslot's built-in event loop runs a pipe and two timers through the context.
 * 3. An "old C library" keeps subscribers as bare `void (*)(const char *line)` pointers, with no user
 *    data. cbslot gives each subscriber (a C function plus its own context) a unique pointer of that type.
 * 4. Mid-run one subscriber is unregistered while the old library still holds its pointer; the next call
 *    through it is caught as a stale call instead of running freed code.
 * It ends by itself after about a second and prints cbslot's counters. On a platform without callback entries
 * (see cb_features), it says what it skipped and why, and shows what works everywhere: a handle. */
#include <cbslot.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the "old C library": bare callbacks, no user data ---- */
typedef void (*line_fn)(const char *line);
static line_fn subscribers[4];
static int nsubscribers;
static void publish(const char *line) {
  for (int i = 0; i < nsubscribers; i++) subscribers[i](line);
}

/* ---- our subscribers: a function plus its own context, bound by cbslot ---- */
typedef struct subscriber {
  const char *name;
  int lines;
  cb_handle handle;
} subscriber;

static void on_line(void *ud, const char *line) {
  subscriber *s = ud;
  s->lines++;
  printf("  %-6s got %s", s->name, line);
}
static void subscriber_gone(void *ud) { printf("  destroy: %s's context released\n", ((subscriber *)ud)->name); }
static void on_stale(cb_fn entry, void *arg) {
  (void)arg;
  printf("  stale call through %#lx caught: the freed subscriber was not run\n", (unsigned long)(uintptr_t)entry);
}

static subscriber alice = {"alice", 0, 0}, bob = {"bob", 0, 0};

static line_fn subscribe(subscriber *s) {
  cb_fn entry;
  if (cb_register((cb_fn)on_line, s, subscriber_gone, &s->handle, &entry) != CB_OK) {
    fprintf(stderr, "cb_register: %s\n", cb_last_error());
    exit(1);
  }
  return (line_fn)entry;
}

/* ---- events, through the VDE3 context ---- */
static int pipefd[2], ticks;
static cb_loop *lp;
static vde_context *ctx;

static void on_tick(int fd, short what, void *arg) {
  (void)fd;
  (void)what;
  (void)arg;
  char line[64];
  int n = snprintf(line, sizeof line, "tick %d\n", ++ticks);
  if (write(pipefd[1], line, (size_t)n) != n) exit(1);
}

static void on_readable(int fd, short what, void *arg) {
  (void)what;
  (void)arg;
  char line[64];
  ssize_t n = read(fd, line, sizeof line - 1);
  if (n <= 0) return;
  line[n] = 0;
  publish(line);
  if (ticks == 3) {
    printf("  (unregistering bob; the old library still holds his pointer)\n");
    cb_unregister(bob.handle);
  }
  if (ticks == 4) nsubscribers = 1; /* the library finally drops bob's stale pointer */
}

static void on_done(int fd, short what, void *arg) {
  (void)fd;
  (void)what;
  (void)arg;
  printf("  one-shot timer: finishing the context (its events end here) and stopping the loop\n");
  vde_context_fini(ctx);
  cb_loop_stop(lp);
}

/* ---- what works everywhere: a handle C code can pass around, with an exactly-once destroy ---- */
static int handles_only(void) {
  cb_handle h;
  void *p = NULL;
  if (cb_handle_new(&alice, subscriber_gone, &h) != CB_OK || cb_handle_get(h, &p) != CB_OK) {
    fprintf(stderr, "handles: %s\n", cb_last_error());
    return 1;
  }
  printf("handle %#llx names %s's context\n", (unsigned long long)h, ((subscriber *)p)->name);
  cb_handle_release(h);
  cb_status st = cb_handle_get(h, &p);
  printf("after release, cb_handle_get says %s\n  (%s)\n", cb_status_str(st), cb_last_error());
  return 0;
}

int main(void) {
  printf("cbslot %s demo\n\n", cb_version());
  uint32_t missing = (CB_FEATURE_ENTRIES | CB_FEATURE_LOOP) & ~cb_features();
  if (missing) {
    if (cb_loop_new(&lp) != CB_OK) printf("%s\n", cb_last_error());
    printf("skipped: the tour of the built-in loop and callback entries (not on this platform)\n\n");
    return handles_only();
  }
  cb_set_stale_handler(on_stale, NULL);
  if (cb_loop_new(&lp) != CB_OK || pipe(pipefd) != 0) {
    fprintf(stderr, "cb_loop_new or pipe: %s\n", cb_last_error());
    return 1;
  }

  vde_event_handler *handler = malloc(sizeof *handler);
  if (!handler || cb_loop_handler(lp, handler) != CB_OK) return 1;
  char *paths[] = {"/usr/lib/vde3/modules", NULL};
  if (vde_context_new(&ctx) != 0 || vde_context_init(ctx, handler, paths) != 0) return 1;
  memset(handler, 0xAB, sizeof *handler); /* the caller's struct is wiped and freed ... */
  free(handler);
  printf("1. context initialised; the handler struct it came from is wiped and freed (module path kept: %s)\n",
         vde_context_module_path(ctx, 0));

  subscribers[nsubscribers++] = subscribe(&alice);
  subscribers[nsubscribers++] = subscribe(&bob);
  printf("2. two subscribers, each a bare void (*)(const char *) with its own context: %#lx, %#lx\n",
         (unsigned long)(uintptr_t)subscribers[0], (unsigned long)(uintptr_t)subscribers[1]);

  struct timeval every = {0, 150000}, after = {1, 0};
  vde_context_event_add(ctx, pipefd[0], VDE_EV_READ | VDE_EV_PERSIST, NULL, on_readable, NULL);
  vde_context_timeout_add(ctx, VDE_EV_PERSIST, &every, on_tick, NULL);
  vde_context_timeout_add(ctx, 0, &after, on_done, NULL);
  printf("3. running the built-in loop: a timer writes to a pipe, the pipe's reader publishes each line\n");
  cb_loop_run(lp);

  vde_context_delete(ctx);
  cb_unregister(alice.handle);
  cb_loop_free(lp); /* unregisters the loop's own four entries */
  cb_barrier();     /* the destroys run on their own within ~10 ms; this makes the counts below final now */
  cb_stats st;
  cb_get_stats(&st);
  printf("\nalice got %d lines, bob %d. cbslot: %llu callbacks registered (2 subscribers + the loop's 4), "
         "%llu destroyed, %llu live, %llu stale call(s) caught\n",
         alice.lines, bob.lines, (unsigned long long)st.registered_total, (unsigned long long)st.destroyed_total,
         (unsigned long long)st.live, (unsigned long long)st.stale_calls);
  return 0;
}
