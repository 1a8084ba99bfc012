/* cbslot demo: a host runtime hands its objects to C code as 64-bit handles instead of raw pointers.
 *
 * The "C library" below keeps only integers. When the host drops its last reference, cbslot destroys the
 * object exactly once; a C caller that still holds the old handle gets an error code, never a crash and
 * never someone else's object. */
#include <cbslot.h>
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
  return 0;
}
