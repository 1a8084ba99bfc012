/* A callback called through an entry, for tests/gdb/backtrace.sh: gdb stops in the_callback and must show
 * the_caller and main below the entry's frame. */
#include "../../c-tests/check.h"

static int the_callback(void *userdata, int x) { return x + (int)(long)userdata; }

__attribute__((noinline)) static int the_caller(int (*entry)(int)) { return entry(41); }

int main(int argc, char **argv) {
  (void)argv;
  cb_handle h;
  cb_fn entry;
  check_require(CB_FEATURE_ENTRIES);
  /* any argument: an untracked entry (its frame is the callback's own) */
  if (cb_register_ex((cb_fn)the_callback, (void *)1, NULL, argc > 1 ? CB_REGISTER_UNTRACKED : 0, &h, &entry))
    return 1;
  return the_caller((int (*)(int))entry) == 42 ? 0 : 2;
}
