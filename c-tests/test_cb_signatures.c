/* Every supported signature shape: calling entry(a1..an) runs fn(userdata, a1..an) and returns its result.
 * Integer/pointer arguments 0..5, float/double arguments up to 8 in any mix with them, returns of void,
 * integers, pointers, float, double and 16-byte structs in registers, variadic callees, and two entries for
 * the same fn. */
#include "check.h"

#include <stdarg.h>
#include <stdint.h>

typedef struct ctx {
  int id;
  int calls;
} ctx;

static cb_fn reg(cb_fn fn, void *ud) {
  cb_handle h;
  cb_fn entry = NULL;
  CHECK_STATUS(CB_OK, cb_register(fn, ud, NULL, &h, &entry));
  CHECK(entry != NULL && entry != fn);
  return entry;
}

/* ---- integer / pointer arguments: 0..5 ---- */
static long i0(void *ud) { return ((ctx *)ud)->id; }
static long i1(void *ud, long a) { return ((ctx *)ud)->id * 10 + a; }
static long i2(void *ud, long a, long b) { return ((ctx *)ud)->id * 100 + a * 10 + b; }
static long i3(void *ud, long a, long b, long c) { return ((ctx *)ud)->id * 1000 + a * 100 + b * 10 + c; }
static long i4(void *ud, int a, short b, char c, long d) {
  return ((ctx *)ud)->id * 10000 + a * 1000 + b * 100 + c * 10 + d;
}
static long i5(void *ud, long a, long b, long c, long d, long e) {
  return ((ctx *)ud)->id * 100000 + a * 10000 + b * 1000 + c * 100 + d * 10 + e;
}
static void *ptr_ret(void *ud, void *p, size_t off) { return (char *)p + off + ((ctx *)ud)->id; }
static unsigned long long u64_ret(void *ud, unsigned long long x) { return x ^ (unsigned long long)((ctx *)ud)->id; }
static void void_ret(void *ud, int add) { ((ctx *)ud)->calls += add; }

static void integers(void) {
  ctx c = {7, 0};
  CHECK(((long (*)(void))reg((cb_fn)i0, &c))() == 7);
  CHECK(((long (*)(long))reg((cb_fn)i1, &c))(3) == 73);
  CHECK(((long (*)(long, long))reg((cb_fn)i2, &c))(3, 4) == 734);
  CHECK(((long (*)(long, long, long))reg((cb_fn)i3, &c))(3, 4, 5) == 7345);
  CHECK(((long (*)(int, short, char, long))reg((cb_fn)i4, &c))(3, 4, 5, 6) == 73456);
  CHECK(((long (*)(long, long, long, long, long))reg((cb_fn)i5, &c))(1, 2, 3, 4, 5) == 712345);
  CHECK(((long (*)(long, long, long, long, long))reg((cb_fn)i5, &c))(-1, -2, -3, -4, -5) == 700000 - 12345);
  char buf[16];
  CHECK(((void *(*)(void *, size_t))reg((cb_fn)ptr_ret, &c))(buf, 2) == buf + 9);
  CHECK(((unsigned long long (*)(unsigned long long))reg((cb_fn)u64_ret, &c))(0xffffffff00000000ULL) ==
        0xffffffff00000007ULL);
  ((void (*)(int))reg((cb_fn)void_ret, &c))(5);
  CHECK(c.calls == 5);
}

/* ---- floating point, alone and mixed with integers ---- */
static double d1(void *ud, double x) { return x * ((ctx *)ud)->id; }
static float f2(void *ud, float x, float y) { return x + y + (float)((ctx *)ud)->id; }
static double d8(void *ud, double a, double b, double c, double d, double e, double f, double g, double h) {
  return ((ctx *)ud)->id + a + 2 * b + 3 * c + 4 * d + 5 * e + 6 * f + 7 * g + 8 * h;
}
static double mixed(void *ud, int a, double x, long b, float y, char *s, double z) {
  return ((ctx *)ud)->id + a + x + b + y + (s[0] - '0') + z;
}
static double all13(void *ud, long a, double x1, long b, double x2, long c, double x3, long d, double x4, long e,
                    double x5, double x6, double x7, double x8) {
  return ((ctx *)ud)->id + a + b + c + d + e + x1 + x2 + x3 + x4 + x5 + x6 + x7 + x8;
}
static float int_to_float(void *ud, int a) { return (float)a / 2.0f + (float)((ctx *)ud)->id; }

static void floats(void) {
  ctx c = {3, 0};
  CHECK(((double (*)(double))reg((cb_fn)d1, &c))(1.5) == 4.5);
  CHECK(((float (*)(float, float))reg((cb_fn)f2, &c))(0.25f, 0.5f) == 3.75f);
  CHECK(((double (*)(double, double, double, double, double, double, double, double))reg((cb_fn)d8, &c))(
            1, 1, 1, 1, 1, 1, 1, 1) == 3 + 36);
  CHECK(((double (*)(int, double, long, float, char *, double))reg((cb_fn)mixed, &c))(1, 0.5, 10, 0.25f, "4",
                                                                                      100.0) == 118.75);
  CHECK(((double (*)(long, double, long, double, long, double, long, double, long, double, double, double,
                     double))reg((cb_fn)all13, &c))(1, 0.5, 2, 0.5, 3, 0.5, 4, 0.5, 5, 0.5, 0.5, 0.5, 0.5) ==
        3 + 15 + 4.0);
  CHECK(((float (*)(int))reg((cb_fn)int_to_float, &c))(5) == 5.5f);
}

/* ---- 16-byte structs in registers, as arguments and results ---- */
typedef struct pair {
  long a, b;
} pair;
typedef struct dpair {
  double x, y;
} dpair;
typedef struct mix {
  long n;
  double x;
} mix;
static pair pair_fn(void *ud, pair p, long k) { return (pair){p.a + k, p.b + ((ctx *)ud)->id}; }
static dpair dpair_fn(void *ud, dpair p) { return (dpair){p.y, p.x + ((ctx *)ud)->id}; }
static mix mix_fn(void *ud, mix m, int k) { return (mix){m.n * k, m.x + ((ctx *)ud)->id}; }

static void structs(void) {
  ctx c = {2, 0};
  pair p = ((pair (*)(pair, long))reg((cb_fn)pair_fn, &c))((pair){10, 20}, 5);
  CHECK(p.a == 15 && p.b == 22);
  dpair d = ((dpair (*)(dpair))reg((cb_fn)dpair_fn, &c))((dpair){1.5, 2.5});
  CHECK(d.x == 2.5 && d.y == 3.5);
  mix m = ((mix (*)(mix, int))reg((cb_fn)mix_fn, &c))((mix){7, 0.5}, 3);
  CHECK(m.n == 21 && m.x == 2.5);
}

/* ---- variadic: at most 5 integer-class arguments in the call; doubles pass in vector registers ---- */
static double vsum(void *ud, int n, ...) {
  va_list ap;
  va_start(ap, n);
  double s = ((ctx *)ud)->id;
  for (int i = 0; i < n; i++) s += (i % 2) ? va_arg(ap, double) : (double)va_arg(ap, long);
  va_end(ap);
  return s;
}

static void variadic(void) {
  ctx c = {1, 0};
  double (*f)(int, ...) = (double (*)(int, ...))reg((cb_fn)vsum, &c);
  CHECK(f(0) == 1);
  CHECK(f(2, 10L, 0.5) == 11.5);
  CHECK(f(6, 10L, 0.5, 20L, 0.25, 30L, 0.125) == 61.875);
  CHECK(f(8, 1L, 0.5, 2L, 0.5, 3L, 0.5, 4L, 0.5) == 13);
}

/* ---- the same fn twice: two entries, each with its own userdata ---- */
static void twice(void) {
  ctx a = {1, 0}, b = {2, 0};
  cb_fn ea = reg((cb_fn)i1, &a), eb = reg((cb_fn)i1, &b);
  CHECK(ea != eb);
  CHECK(((long (*)(long))ea)(5) == 15);
  CHECK(((long (*)(long))eb)(5) == 25);
}

int main(void) {
  check_require(CB_FEATURE_ENTRIES);
  integers();
  floats();
  structs();
  variadic();
  twice();
  CHECK_DONE("test_cb_signatures");
}
