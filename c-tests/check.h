/* Tiny assertion helpers shared by the C tests: every failed check prints where and why, then exits 1. */
#ifndef CBSLOT_CHECK_H
#define CBSLOT_CHECK_H

#include <cbslot.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static unsigned long check_count;

#define CHECK(cond)                                                                           \
  do {                                                                                        \
    check_count++;                                                                            \
    if (!(cond)) {                                                                            \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                \
      exit(1);                                                                                \
    }                                                                                         \
  } while (0)

/* The call must return `want`; on a mismatch print both statuses and the thread's last error. */
#define CHECK_STATUS(want, call)                                                              \
  do {                                                                                        \
    cb_status got_ = (call);                                                                  \
    check_count++;                                                                            \
    if (got_ != (want)) {                                                                     \
      fprintf(stderr, "%s:%d: %s\n  returned %s\n  expected %s\n  cb_last_error: %s\n",       \
              __FILE__, __LINE__, #call, cb_status_str(got_), cb_status_str(want),            \
              cb_last_error());                                                               \
      exit(1);                                                                                \
    }                                                                                         \
  } while (0)

/* This thread's last error must mention `text`. */
#define CHECK_LAST_ERROR(text)                                                                \
  do {                                                                                        \
    check_count++;                                                                            \
    if (!strstr(cb_last_error(), (text))) {                                                   \
      fprintf(stderr, "%s:%d: cb_last_error() is \"%s\", expected it to mention \"%s\"\n",    \
              __FILE__, __LINE__, cb_last_error(), (text));                                   \
      exit(1);                                                                                \
    }                                                                                         \
  } while (0)

#define CHECK_DONE(name)                                                                      \
  do {                                                                                        \
    printf("%s: %lu checks passed\n", (name), check_count);                                   \
    return 0;                                                                                 \
  } while (0)

/* xorshift64*: a small, seedable generator for garbage handles and random schedules. */
static inline uint64_t check_rand(uint64_t *state) {
  uint64_t x = *state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545F4914F6CDD1DULL;
}

/* Milliseconds on the monotonic clock. */
static inline double check_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

#endif
