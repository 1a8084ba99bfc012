/* The error model: fixed status numbers, status texts, per-thread cb_last_error, the version. */
#include "check.h"

#include <pthread.h>

_Static_assert(CB_OK == 0 && CB_ERR_NULL_ARG == 1 && CB_ERR_INVALID_HANDLE == 2 && CB_ERR_CAPACITY == 3 &&
                   CB_ERR_NO_MEMORY == 4 && CB_ERR_UNSUPPORTED == 5 && CB_ERR_INVALID_ARG == 6 &&
                   CB_ERR_WOULD_DEADLOCK == 7 && CB_ERR_PANIC == 8 && CB_ERR_CLOSED == 9 && CB_ERR_TIMEOUT == 10 &&
                   CB_ERR_SYSTEM == 11,
               "status numbers are part of the ABI");
_Static_assert(sizeof(cb_handle) == 8, "cb_handle is 64-bit");

static void *fresh_thread(void *arg) {
  (void)arg;
  /* a new thread has no error yet, whatever other threads did */
  CHECK(cb_last_error() != NULL);
  CHECK(strcmp(cb_last_error(), "") == 0);
  void *p;
  CHECK_STATUS(CB_ERR_INVALID_HANDLE, cb_handle_get(0, &p));
  CHECK_LAST_ERROR("cb_handle_get: handle 0x0000000000000000 is 0");
  return NULL;
}

/* cb_features() says what the configure step expects of this platform: tests that skip a missing part
 * (check_require, check_has) can then never skip a part that should work. */
static void features(void) {
  uint32_t all = CB_FEATURE_ENTRIES | CB_FEATURE_LOOP;
  CHECK((cb_features() & ~all) == 0);
#ifdef CBSLOT_EXPECTED_FEATURES
  CHECK(cb_features() == CBSLOT_EXPECTED_FEATURES);
#endif
  /* the built-in loop needs entries */
  CHECK(!(cb_features() & CB_FEATURE_LOOP) || (cb_features() & CB_FEATURE_ENTRIES));
}

int main(void) {
  features();
  const char *names[] = {"CB_OK", "CB_ERR_NULL_ARG", "CB_ERR_INVALID_HANDLE", "CB_ERR_CAPACITY",
                         "CB_ERR_NO_MEMORY", "CB_ERR_UNSUPPORTED", "CB_ERR_INVALID_ARG",
                         "CB_ERR_WOULD_DEADLOCK", "CB_ERR_PANIC", "CB_ERR_CLOSED", "CB_ERR_TIMEOUT",
                         "CB_ERR_SYSTEM"};
  for (int s = 0; s <= 11; s++) {
    const char *text = cb_status_str((cb_status)s);
    CHECK(text != NULL);
    CHECK(strncmp(text, names[s], strlen(names[s])) == 0);
    CHECK(text[strlen(names[s])] == ':');
    CHECK(cb_status_str((cb_status)s) == text); /* static: the same pointer every time */
  }
  int unknown[] = {-1, 12, 100, 0x7fffffff, (int)0x80000000};
  for (size_t i = 0; i < sizeof unknown / sizeof *unknown; i++) {
    const char *text = cb_status_str((cb_status)unknown[i]);
    CHECK(text != NULL);
    CHECK(strstr(text, "unknown") != NULL);
  }

  CHECK(strcmp(cb_version(), CBSLOT_VERSION) == 0);

  /* per-thread: this thread's error survives another thread's failure and a later success */
  CHECK(strcmp(cb_last_error(), "") == 0);
  CHECK_STATUS(CB_ERR_NULL_ARG, cb_handle_new(NULL, NULL, NULL));
  CHECK_LAST_ERROR("cb_handle_new: argument `out_handle` is NULL");
  pthread_t t;
  CHECK(pthread_create(&t, NULL, fresh_thread, NULL) == 0);
  CHECK(pthread_join(t, NULL) == 0);
  CHECK_LAST_ERROR("cb_handle_new: argument `out_handle` is NULL");
  cb_handle h;
  CHECK_STATUS(CB_OK, cb_handle_new(NULL, NULL, &h));
  CHECK_LAST_ERROR("cb_handle_new: argument `out_handle` is NULL"); /* success does not clear it */
  CHECK_STATUS(CB_OK, cb_handle_release(h));
  CHECK_DONE("test_status");
}
