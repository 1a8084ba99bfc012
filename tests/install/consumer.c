/* A program built against the *installed* cbslot (pkg-config or find_package). */
#include <cbslot.h>
#include <stdio.h>
#include <string.h>

static int destroyed;
static void on_destroy(void *p) { destroyed += *(int *)p; }

int main(void) {
  int value = 42;
  cb_handle h;
  void *p = NULL;
  if (strcmp(cb_version(), CBSLOT_VERSION) != 0) return 1;
  if (cb_handle_new(&value, on_destroy, &h) != CB_OK) return 2;
  if (cb_handle_get(h, &p) != CB_OK || p != &value) return 3;
  if (cb_handle_release(h) != CB_OK || destroyed != 42) return 4;
  if (cb_handle_get(h, &p) != CB_ERR_INVALID_HANDLE) return 5;
  printf("consumer ok (cbslot %s)\n", cb_version());
  return 0;
}
