/* Tiny assertion helpers shared by the C tests: every failed check prints where and why, then exits 1. */
#ifndef CBSLOT_CHECK_H
#define CBSLOT_CHECK_H

#include <cbslot.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

/* True when running under valgrind (its preload library is mapped): timing bounds are relaxed there. */
static inline int check_under_valgrind(void) {
  static int cached = -1;
  if (cached < 0) {
    cached = 0;
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f))
      if (strstr(line, "vgpreload")) cached = 1;
    if (f) fclose(f);
  }
  return cached;
}

/* Milliseconds on the monotonic clock. */
static inline double check_mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- parts a platform may not have (cb_features) ----
 * check_require(F) exits 77 with "SKIPPED: <the library's own reason>" unless this build has every CB_FEATURE_*
 * bit in F: for programs that test only those parts. check_has(F, what) returns 1 if it has them; otherwise it
 * prints "SKIP what: <reason>" and returns 0, and inside a check_run_cases case the case counts as skipped. */
static void check_nop(void) {}

static inline const char *check_missing_reason(uint32_t features) {
  uint32_t missing = features & ~cb_features();
  if (missing & CB_FEATURE_ENTRIES) {
    cb_handle h;
    cb_fn e;
    if (cb_register(check_nop, NULL, NULL, &h, &e) == CB_OK) cb_unregister(h);
  } else if (missing & CB_FEATURE_LOOP) {
    struct cb_loop *lp;
    if (cb_loop_new(&lp) == CB_OK) cb_loop_free(lp);
  }
  return cb_last_error();
}

static inline void check_require(uint32_t features) {
  if ((cb_features() & features) == features) return;
  printf("SKIPPED: %s\n", check_missing_reason(features));
  exit(77);
}

static int check_skipped __attribute__((unused));

static inline int check_has(uint32_t features, const char *what) {
  if ((cb_features() & features) == features) return 1;
  printf("SKIP %s: %s\n", what, check_missing_reason(features));
  check_skipped = 1;
  return 0;
}

/* ---- a runner for programs made of independent cases ----
 * check_run_cases() runs every case in its own fork()ed child with alarm(alarm_seconds), so a crash, abort
 * or hang fails that case only; each child sends its check count back over a pipe. It prints "PASS name",
 * "FAIL name (...)" (a hang says how long it waited), then "PROG: N checks passed" or
 * "PROG: M of K cases FAILED", and returns main's exit status (0 or 1). With an argument, `PROG NAME` runs
 * that one case in this process (alarm(300): in gdb, `handle SIGALRM nopass` for longer sessions) and
 * returns 0, or lists the cases and returns 2 when there is no such case.
 * A case that cannot run here calls check_skip(why): it prints "SKIP name: why", and the case neither
 * passes nor fails (its child exits CHECK_SKIP_CODE; in-process, the program still exits 0). */
struct check_case {
  const char *name;
  void (*fn)(void);
};
#define CHECK_CASE(f) {#f, f}
enum { CHECK_SKIP_CODE = 77, CHECK_IN_PROCESS_ALARM_S = 300 };

/* The case running now (set before the case is called). */
static const char *check_case_name __attribute__((unused));

static inline void check_skip(const char *why) {
  printf("SKIP %s: %s\n", check_case_name, why);
  check_skipped = 1;
}

static inline int check_run_cases(const char *prog, const struct check_case *cases, int n, int argc,
                                  char **argv, unsigned alarm_seconds) {
  if (argc > 1) { /* one case, in this process */
    for (int i = 0; i < n; i++)
      if (strcmp(argv[1], cases[i].name) == 0) {
        check_case_name = cases[i].name;
        alarm(CHECK_IN_PROCESS_ALARM_S);
        cases[i].fn();
        CHECK_DONE(check_case_name);
      }
    fprintf(stderr, "unknown case %s; cases:\n", argv[1]);
    for (int i = 0; i < n; i++) fprintf(stderr, "  %s\n", cases[i].name);
    return 2;
  }
  int failed = 0;
  for (int i = 0; i < n; i++) {
    int fds[2];
    CHECK(pipe(fds) == 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
      close(fds[0]);
      check_count = 0;
      check_case_name = cases[i].name;
      alarm(alarm_seconds); /* a hang becomes a failure */
      cases[i].fn();
      CHECK(write(fds[1], &check_count, sizeof check_count) == (ssize_t)sizeof check_count);
      fflush(stdout);
      exit(check_skipped ? CHECK_SKIP_CODE : 0);
    }
    close(fds[1]);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    unsigned long checks = 0;
    int got_checks = read(fds[0], &checks, sizeof checks) == (ssize_t)sizeof checks;
    close(fds[0]);
    if (WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == CHECK_SKIP_CODE) &&
        got_checks) {
      if (WEXITSTATUS(status) == 0) printf("PASS %s\n", cases[i].name); /* a skip printed its own line */
      check_count += checks;
    } else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
      printf("FAIL %s (signal %d: %s, hung for %u s)\n", cases[i].name, SIGALRM, strsignal(SIGALRM),
             alarm_seconds);
      failed++;
    } else if (WIFSIGNALED(status)) {
      printf("FAIL %s (signal %d: %s)\n", cases[i].name, WTERMSIG(status), strsignal(WTERMSIG(status)));
      failed++;
    } else {
      printf("FAIL %s (exit %d)\n", cases[i].name, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
      failed++;
    }
  }
  if (failed) {
    printf("%s: %d of %d cases FAILED\n", prog, failed, n);
    return 1;
  }
  CHECK_DONE(prog);
}

#endif
