/* AAPCS64 shapes through entries (aarch64 only): 7 integer arguments, 8 doubles, a struct returned through
 * x8 (indirect result), a homogeneous floating-point aggregate returned in v0..v3, mixed; tracked and
 * untracked. On a CPU with BTI, entries are guarded pages: a call to an entry's landing pad works, a call
 * past it faults (SIGILL). */
#include "../../c-tests/check.h"

#if defined(__aarch64__)
#include <sys/auxv.h>
#endif

typedef struct { long a, b, c, d; } big; /* 32 bytes: returned through memory (x8) */
typedef struct { double a, b, c, d; } hfa4; /* returned in v0..v3 */

static long seven(void *ud, long a, long b, long c, long d, long e, long f, long g) {
  return (long)ud + a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g;
}
static double eight(void *ud, double a, double b, double c, double d, double e, double f, double g, double h) {
  return (double)(long)ud + a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h;
}
static big ret_big(void *ud, long x) { return (big){(long)ud, x, x * 2, x * 3}; }
static hfa4 ret_hfa(void *ud, double x) { return (hfa4){(double)(long)ud, x, x / 2, x * 4}; }
static double mixed(void *ud, long a, double b, long c, double d, long e, double f, long g, double h) {
  return (double)(long)ud + (double)a + b + (double)c * d + (double)e * f + (double)g * h;
}

static void run(unsigned flags) {
  cb_handle h[5];
  cb_fn e[5];
  CHECK_STATUS(CB_OK, cb_register_ex((cb_fn)seven, (void *)1000, NULL, flags, &h[0], &e[0]));
  CHECK_STATUS(CB_OK, cb_register_ex((cb_fn)eight, (void *)1000, NULL, flags, &h[1], &e[1]));
  CHECK_STATUS(CB_OK, cb_register_ex((cb_fn)ret_big, (void *)7, NULL, flags, &h[2], &e[2]));
  CHECK_STATUS(CB_OK, cb_register_ex((cb_fn)ret_hfa, (void *)9, NULL, flags, &h[3], &e[3]));
  CHECK_STATUS(CB_OK, cb_register_ex((cb_fn)mixed, (void *)5, NULL, flags, &h[4], &e[4]));
  CHECK(((long (*)(long, long, long, long, long, long, long))e[0])(1, 2, 3, 4, 5, 6, 7) ==
        1000 + 1 + 4 + 9 + 16 + 25 + 36 + 49);
  CHECK(((double (*)(double, double, double, double, double, double, double, double))e[1])(
            1, 2, 3, 4, 5, 6, 7, 8) == 1000 + 1 + 4 + 9 + 16 + 25 + 36 + 49 + 64);
  big b = ((big(*)(long))e[2])(11);
  CHECK(b.a == 7 && b.b == 11 && b.c == 22 && b.d == 33);
  hfa4 f = ((hfa4(*)(double))e[3])(8.0);
  CHECK(f.a == 9.0 && f.b == 8.0 && f.c == 4.0 && f.d == 32.0);
  CHECK(((double (*)(long, double, long, double, long, double, long, double))e[4])(1, 0.5, 2, 1.5, 3, 2.0, 4,
                                                                                  0.25) ==
        5 + 1 + 0.5 + 3.0 + 6.0 + 1.0);
  for (int i = 0; i < 5; i++) CHECK_STATUS(CB_OK, cb_unregister(h[i]));
  CHECK_STATUS(CB_OK, cb_barrier());
}

#if defined(__aarch64__)
static long plus_one(void *ud, long x) { return (long)ud + x + 1; }

static void bti_guards_entries(void) {
  if (!(getauxval(AT_HWCAP2) & (1UL << 17))) { /* HWCAP2_BTI */
    puts("SKIP bti_guards_entries: this CPU has no BTI");
    return;
  }
  for (unsigned flags = 0; flags <= CB_REGISTER_UNTRACKED; flags += CB_REGISTER_UNTRACKED) {
    cb_handle h;
    cb_fn e;
    CHECK_STATUS(CB_OK, cb_register_ex((cb_fn)plus_one, (void *)10, NULL, flags, &h, &e));
    long (*entry)(long) = (long (*)(long))e;
    CHECK(entry(1) == 12); /* through the landing pad */
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) { /* past it: a branch (blr) to the stub's second instruction */
      long (*past)(long) = (long (*)(long))((char *)e + 4);
      _exit(past(1) == 12 ? 0 : 3);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGILL);
    CHECK_STATUS(CB_OK, cb_unregister(h));
  }
}
#endif

int main(void) {
#if defined(__aarch64__)
  run(0);
  run(CB_REGISTER_UNTRACKED);
  bti_guards_entries();
  CHECK_DONE("test_aapcs64");
#else
  puts("SKIPPED: AAPCS64 shapes are tested on aarch64 only");
  return 77;
#endif
}
