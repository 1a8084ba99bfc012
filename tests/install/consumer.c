/* A program built against the *installed* cbslot (pkg-config or find_package). */
#include <cbslot.h>
#include <stdio.h>
#include <string.h>

static int destroyed;
static void on_destroy(void *p) { destroyed += *(int *)p; }
/* an entry's callee: userdata first, then the caller's arguments */
static int add(void *userdata, int x) { return *(int *)userdata + x; }

int main(void) {
  int value = 42;
  cb_handle h;
  void *p = NULL;
  if (strcmp(cb_version(), CBSLOT_VERSION) != 0) return 1;
  if (cb_handle_new(&value, on_destroy, &h) != CB_OK) return 2;
  if (cb_handle_get(h, &p) != CB_OK || p != &value) return 3;
  if (cb_handle_release(h) != CB_OK || destroyed != 42) return 4;
  if (cb_handle_get(h, &p) != CB_ERR_INVALID_HANDLE) return 5;
  if (cb_features() & CB_FEATURE_ENTRIES) {   /* an entry, from whichever trampoline source is in use */
    cb_fn entry;
    int (*plus)(int);
    if (cb_register((cb_fn)add, &value, on_destroy, &h, &entry) != CB_OK) return 6;
    plus = (int (*)(int))entry;
    if (plus(1) != 43) return 7;
    if (cb_unregister_wait(h) != CB_OK || destroyed != 84) return 8;
  }
  printf("consumer ok (cbslot %s)\n", cb_version());
  return 0;
}
