/* cbslot demo.
 *
 * Part 1: a host runtime hands its objects to C code as 64-bit handles instead of raw pointers. The "C
 * library" keeps only integers. When the host drops its last reference, cbslot destroys the object exactly
 * once; a C caller that still holds the old handle gets an error code, never a crash and never someone
 * else's object.
 *
 * Part 2: qsort takes a comparator with no user data; cbslot gives each sort order its own bare function
 * pointer carrying its context, frees it, and catches a late call through the freed pointer. */
#include <cbslot.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct session {
  char user[32];
  int requests;
} session;

static void session_destroy(void *p) {
  session *s = p;
  printf("  destroy: session of %s freed after %d requests\n", s->user, s->requests);
  free(s);
}

/* --- a C library that stores opaque 64-bit tokens and calls back with them later --- */
static uint64_t pending[4];
static int npending;
static void lib_enqueue(uint64_t token) { pending[npending++] = token; }

static int handle_request(uint64_t token) {
  void *p;
  cb_status st = cb_handle_get(token, &p);
  if (st != CB_OK) {
    printf("  request for %#018llx refused: %s\n", (unsigned long long)token, cb_last_error());
    return -1;
  }
  session *s = p;
  s->requests++;
  printf("  request served for %s (%d so far)\n", s->user, s->requests);
  return 0;
}

static cb_handle new_session(const char *user) {
  session *s = calloc(1, sizeof *s);
  if (!s) exit(1);
  snprintf(s->user, sizeof s->user, "%s", user);
  cb_handle h;
  if (cb_handle_new(s, session_destroy, &h) != CB_OK) {
    fprintf(stderr, "cb_handle_new: %s\n", cb_last_error());
    exit(1);
  }
  return h;
}

/* --- part 2: context for a C API that has no user-data argument --- */
typedef struct sort_order {
  const char *name;
  int descending;
  int comparisons;
} sort_order;

static int compare(void *ctx, const void *a, const void *b) {
  sort_order *o = ctx;
  o->comparisons++;
  int x = *(const int *)a, y = *(const int *)b;
  return o->descending ? (y > x) - (y < x) : (x > y) - (x < y);
}

static void order_done(void *ctx) { printf("  destroy: sort order \"%s\" released\n", ((sort_order *)ctx)->name); }

static void on_stale(cb_fn entry, void *arg) {
  (void)arg;
  printf("  stale call through %#lx caught: it returned 0 instead of running freed code\n",
         (unsigned long)(uintptr_t)entry);
}

static void callbacks_demo(void) {
  printf("\nqsort with context, through bare function pointers:\n");
  sort_order up = {"ascending", 0, 0}, down = {"descending", 1, 0};
  cb_handle hup, hdown;
  cb_fn cmp_up, cmp_down;
  if (cb_register((cb_fn)compare, &up, order_done, &hup, &cmp_up) != CB_OK ||
      cb_register((cb_fn)compare, &down, order_done, &hdown, &cmp_down) != CB_OK) {
    fprintf(stderr, "cb_register: %s\n", cb_last_error());
    exit(1);
  }
  int v[] = {5, 3, 9, 1, 7};
  qsort(v, 5, sizeof *v, (int (*)(const void *, const void *))cmp_up);
  printf("  %s: %d %d %d %d %d (%d comparisons)\n", up.name, v[0], v[1], v[2], v[3], v[4], up.comparisons);
  qsort(v, 5, sizeof *v, (int (*)(const void *, const void *))cmp_down);
  printf("  %s: %d %d %d %d %d (%d comparisons)\n", down.name, v[0], v[1], v[2], v[3], v[4], down.comparisons);
  cb_unregister_wait(hup);
  cb_unregister_wait(hdown);
  cb_set_stale_handler(on_stale, NULL);
  int a = 1, b = 2;
  ((int (*)(const void *, const void *))cmp_up)(&a, &b); /* a bug: calling a freed entry */
  cb_stats st;
  cb_get_stats(&st);
  printf("  stats: %llu live, %llu registered, %llu destroyed, %llu stale call(s)\n", (unsigned long long)st.live,
         (unsigned long long)st.registered_total, (unsigned long long)st.destroyed_total,
         (unsigned long long)st.stale_calls);
}

int main(void) {
  printf("cbslot %s demo: handles for host objects\n", cb_version());
  cb_handle alice = new_session("alice"), bob = new_session("bob");
  printf("alice = %#018llx, bob = %#018llx\n", (unsigned long long)alice, (unsigned long long)bob);

  /* the library keeps a reference of its own while a request is pending */
  cb_handle_retain(alice);
  lib_enqueue(alice);
  lib_enqueue(bob);
  printf("the host drops alice and bob while requests are still queued:\n");
  cb_handle_release(alice); /* the library's reference keeps alice alive */
  cb_handle_release(bob);   /* bob had no other reference: destroyed now */

  printf("the library serves its queue:\n");
  for (int i = 0; i < npending; i++) handle_request(pending[i]);
  cb_handle_release(alice); /* the library is done with alice */

  printf("a new session reuses a slot; the stale handles still fail:\n");
  cb_handle carol = new_session("carol");
  handle_request(bob);
  handle_request(carol);
  printf("double release: %s\n", cb_status_str(cb_handle_release(bob)));
  cb_handle_release(carol);
  callbacks_demo();
  return 0;
}
