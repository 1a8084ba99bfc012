// Unwinding through cbslot entries (the CFI registered for every mapped block of entries):
//  - pthread_exit() inside a callback runs the destructors of the C++ frames that called it (forced unwind);
//  - a C++ exception thrown inside a callback passes through tracked and untracked entries and is caught by
//    the caller, and the in-flight record is restored: the same thread can cb_unregister_wait afterwards
//    (also after 70 nested throws-through, and when it is caught half-way down);
//  - _Unwind_Backtrace() inside a callback reaches the caller and main (symbols by dladdr: linked -rdynamic).
// Every case runs in its own fork()ed child with alarm(60): a broken unwind aborts or hangs that case only.
// `./test_unwind NAME` runs one case in-process.
#include <cbslot.h>

#include "../c-tests/check.h"
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <unwind.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>

static bool wait_for(const std::atomic<int> &flag, int value, double ms = 5000) {
  double end = check_mono_ms() + ms;
  while (flag.load() < value) {
    if (check_mono_ms() > end) return false;
    usleep(1000);
  }
  return true;
}

struct Obj {
  int id = 0;
  Obj *next = nullptr; // chain_fn calls next's entry, or throws at the end of the chain
  std::atomic<int> destroyed{0};
  cb_handle h = 0;
  cb_fn e = nullptr;
};
static void destroy_obj(void *ud) { static_cast<Obj *>(ud)->destroyed++; }

template <class Fn>
static void reg(Obj &o, Fn *fn, uint32_t flags = 0) {
  CHECK_STATUS(CB_OK, cb_register_ex(reinterpret_cast<cb_fn>(fn), &o, destroy_obj, flags, &o.h, &o.e));
}
static int call(const Obj &o, int x) { return reinterpret_cast<int (*)(int)>(o.e)(x); }

static std::atomic<int> dtors;
struct Counted {
  Counted() = default;
  Counted(const Counted &) = delete;
  Counted &operator=(const Counted &) = delete;
  ~Counted() { dtors++; }
};

struct Boom : std::runtime_error {
  int at;
  explicit Boom(int at_) : std::runtime_error("boom"), at(at_) {}
};

// ==== 6. pthread_exit inside a callback runs the caller's destructors ====

static std::mutex exit_mutex;
static std::atomic<int> exit_flag;
struct SetsFlag {
  SetsFlag() = default;
  SetsFlag(const SetsFlag &) = delete;
  SetsFlag &operator=(const SetsFlag &) = delete;
  ~SetsFlag() { exit_flag.store(1); }
};

// each level holds an RAII object; the last one exits the thread
static int exit_chain_fn(void *ud, int depth) {
  Obj *o = static_cast<Obj *>(ud);
  Counted c;
  if (!o->next) pthread_exit(nullptr);
  return call(*o->next, depth + 1) + 1;
}

__attribute__((noinline)) static void exit_caller(const Obj *first) {
  std::lock_guard<std::mutex> g(exit_mutex);
  SetsFlag f;
  Counted c;
  call(*first, 0);
  std::fprintf(stderr, "pthread_exit returned\n");
  std::abort();
}
static void *exit_thread(void *arg) {
  exit_caller(static_cast<const Obj *>(arg));
  return nullptr;
}

// levels[i] chained; flags[i] says tracked (0) or untracked
static void pthread_exit_through(const uint32_t *flags, int n) {
  static Obj levels[8];
  for (int i = 0; i < n; i++) {
    levels[i].next = i + 1 < n ? &levels[i + 1] : nullptr;
    reg(levels[i], exit_chain_fn, flags[i]);
  }
  dtors = 0;
  exit_flag = 0;
  pthread_t t;
  CHECK(pthread_create(&t, nullptr, exit_thread, &levels[0]) == 0);
  CHECK(pthread_join(t, nullptr) == 0);
  CHECK(exit_flag.load() == 1);   // the caller's destructor ran
  CHECK(dtors.load() == n + 1);   // and every level's
  CHECK(exit_mutex.try_lock());   // the lock_guard unlocked it
  exit_mutex.unlock();
  // the thread's in-flight record went with it: nothing waits for it
  for (int i = 0; i < n; i++) {
    CHECK_STATUS(CB_OK, cb_unregister_wait(levels[i].h));
    CHECK(levels[i].destroyed.load() == 1);
  }
}
static void pthread_exit_tracked() {
  const uint32_t f[] = {0};
  pthread_exit_through(f, 1);
}
static void pthread_exit_tracked_nested() {
  const uint32_t f[] = {0, 0, 0, 0};
  pthread_exit_through(f, 4);
}
static void pthread_exit_untracked() {
  const uint32_t f[] = {CB_REGISTER_UNTRACKED};
  pthread_exit_through(f, 1);
}
static void pthread_exit_mixed() {
  const uint32_t f[] = {0, CB_REGISTER_UNTRACKED, 0, CB_REGISTER_UNTRACKED};
  pthread_exit_through(f, 4);
}

// ==== 7. C++ exceptions through entries ====

static int throw_fn(void *ud, int x) {
  Obj *o = static_cast<Obj *>(ud);
  if (x > 0) throw Boom(x);
  return o->id;
}

static void exception_tracked() {
  static Obj o;
  o.id = 5;
  reg(o, throw_fn);
  bool caught = false;
  try {
    call(o, 3);
  } catch (const Boom &b) {
    caught = b.at == 3 && std::string(b.what()) == "boom";
  }
  CHECK(caught);
  CHECK(call(o, 0) == 5); // works again
  int n = 0;
  for (int i = 1; i <= 1000; i++) {
    try {
      call(o, i);
    } catch (const Boom &b) {
      n += b.at == i;
    }
  }
  CHECK(n == 1000);
  // the record is back to "not inside anything": no false WOULD_DEADLOCK
  CHECK_STATUS(CB_OK, cb_barrier());
  CHECK_STATUS(CB_OK, cb_unregister_wait(o.h));
  CHECK(o.destroyed.load() == 1);
}

// 70 levels, each its own tracked registration, each with an RAII object; the last one throws
enum { TDEPTH = 70 };
static Obj tl[TDEPTH];
static int catch_level = -1; // the level that catches (-1: the caller does)
static cb_status waits[3];
static int tlevel_fn(void *ud, int d) {
  (void)ud;
  Counted c;
  if (d == TDEPTH - 1) throw Boom(d);
  if (d != catch_level) return call(tl[d + 1], d + 1) + 1;
  try {
    call(tl[d + 1], d + 1);
    CHECK(!"not reached");
  } catch (const Boom &b) {
    CHECK(b.at == TDEPTH - 1);
  }
  // this thread is inside tl[0..d] now, and no longer inside the levels below
  waits[0] = cb_unregister_wait(tl[50].h);
  waits[1] = cb_unregister_wait(tl[20].h);
  waits[2] = cb_unregister_wait(tl[d].h);
  return -1;
}
static void exception_depth_70() {
  for (int i = 0; i < TDEPTH; i++) reg(tl[i], tlevel_fn);
  for (int round = 0; round < 3; round++) {
    dtors = 0;
    bool caught = false;
    try {
      call(tl[0], 0);
    } catch (const Boom &b) {
      caught = b.at == TDEPTH - 1;
    }
    CHECK(caught);
    CHECK(dtors.load() == TDEPTH);
    CHECK_STATUS(CB_OK, cb_barrier());
  }
  // caught half-way: the record is restored to exactly the levels still running
  catch_level = 35;
  dtors = 0;
  CHECK(call(tl[0], 0) == -1 + 35);
  CHECK(dtors.load() == TDEPTH);
  CHECK_STATUS(CB_OK, waits[0]);
  CHECK(tl[50].destroyed.load() == 1);
  CHECK_STATUS(CB_ERR_WOULD_DEADLOCK, waits[1]);
  CHECK_STATUS(CB_ERR_WOULD_DEADLOCK, waits[2]);
  CHECK(tl[20].destroyed.load() == 0 && tl[35].destroyed.load() == 0);
  for (int i = 0; i < TDEPTH; i++) {
    if (i == 50) continue;
    CHECK_STATUS(CB_OK, cb_unregister_wait(tl[i].h));
    CHECK(tl[i].destroyed.load() == 1);
  }
}

static int chain_fn(void *ud, int x) {
  Obj *o = static_cast<Obj *>(ud);
  Counted c;
  if (!o->next) throw Boom(x);
  return call(*o->next, x + 1);
}
static void exception_untracked() {
  static Obj u;
  u.id = 4;
  reg(u, throw_fn, CB_REGISTER_UNTRACKED);
  bool caught = false;
  try {
    call(u, 2);
  } catch (const Boom &b) {
    caught = b.at == 2;
  }
  CHECK(caught);
  CHECK(call(u, 0) == 4);
  CHECK_STATUS(CB_OK, cb_unregister(u.h));
  CHECK(u.destroyed.load() == 1);

  // tracked -> untracked -> tracked -> untracked -> throw
  static Obj m[4];
  for (int i = 0; i < 4; i++) {
    m[i].next = i + 1 < 4 ? &m[i + 1] : nullptr;
    reg(m[i], chain_fn, i % 2 ? CB_REGISTER_UNTRACKED : 0);
  }
  dtors = 0;
  caught = false;
  try {
    call(m[0], 10);
  } catch (const Boom &b) {
    caught = b.at == 13;
  }
  CHECK(caught && dtors.load() == 4);
  for (int i = 0; i < 4; i++) {
    CHECK_STATUS(CB_OK, cb_unregister_wait(m[i].h));
    CHECK(m[i].destroyed.load() == 1);
  }
}

// Another thread throws through an entry and catches; it then waits outside any callback, and this thread's
// cb_unregister_wait of that entry completes (it would wait forever for a record left "inside").
static Obj other;
static std::atomic<int> other_thrown, other_release;
static void *throwing_thread(void *) {
  for (int i = 1; i <= 10; i++) {
    try {
      call(other, i);
    } catch (const Boom &) {
    }
  }
  other_thrown = 1;
  while (!other_release.load()) usleep(1000);
  return nullptr;
}
static std::atomic<int> waited;
static cb_status waited_st;
static void *unregister_wait_thread(void *) {
  waited_st = cb_unregister_wait(other.h);
  waited = 1;
  return nullptr;
}
static void exception_other_thread() {
  reg(other, throw_fn);
  pthread_t t, w;
  CHECK(pthread_create(&t, nullptr, throwing_thread, nullptr) == 0);
  CHECK(wait_for(other_thrown, 1));
  CHECK(pthread_create(&w, nullptr, unregister_wait_thread, nullptr) == 0);
  if (!wait_for(waited, 1)) {
    std::fprintf(stderr, "cb_unregister_wait still waits for a thread that threw through the entry and left\n");
    std::exit(1);
  }
  CHECK_STATUS(CB_OK, waited_st);
  CHECK(other.destroyed.load() == 1);
  other_release = 1;
  CHECK(pthread_join(t, nullptr) == 0 && pthread_join(w, nullptr) == 0);
}

// ==== 8. _Unwind_Backtrace from inside a callback ====

struct Trace {
  uintptr_t ip[256];
  int n;
};
static Trace trace;
static _Unwind_Reason_Code trace_step(_Unwind_Context *ctx, void *arg) {
  Trace *t = static_cast<Trace *>(arg);
  if (t->n >= 256) return _URC_END_OF_STACK;
  t->ip[t->n++] = _Unwind_GetIP(ctx);
  return _URC_NO_REASON;
}

// names of the frames, by dladdr (the test is linked -rdynamic, so these extern "C" ones are found)
static const char *frame_name(uintptr_t ip) {
  Dl_info info;
  if (ip && dladdr(reinterpret_cast<void *>(ip - 1), &info) && info.dli_sname) return info.dli_sname;
  return "?";
}
static void print_trace() {
  for (int i = 0; i < trace.n; i++) std::fprintf(stderr, "  #%d %#lx %s\n", i, (unsigned long)trace.ip[i], frame_name(trace.ip[i]));
}
static int find_frame(const char *name, int from) {
  for (int i = from; i < trace.n; i++)
    if (std::strcmp(frame_name(trace.ip[i]), name) == 0) return i;
  return -1;
}
static int count_frames(const char *name) {
  int n = 0;
  for (int i = 0; i < trace.n; i++) n += std::strcmp(frame_name(trace.ip[i]), name) == 0;
  return n;
}

extern "C" __attribute__((noinline)) int cbslot_test_bt_fn(void *ud, int x) {
  Obj *o = static_cast<Obj *>(ud);
  if (o->next) return call(*o->next, x) + 1;
  trace.n = 0;
  _Unwind_Backtrace(trace_step, &trace);
  return x + 1;
}
extern "C" __attribute__((noinline)) int cbslot_test_bt_caller(const Obj *o) {
  int r = call(*o, 1);
  __asm__ __volatile__("" ::: "memory");
  return r + 1;
}

static void backtrace_through(const uint32_t *flags, int n) {
  static Obj levels[16];
  for (int i = 0; i < n; i++) {
    levels[i].next = i + 1 < n ? &levels[i + 1] : nullptr;
    reg(levels[i], cbslot_test_bt_fn, flags[i]);
  }
  int (*volatile caller)(const Obj *) = cbslot_test_bt_caller;
  CHECK(caller(&levels[0]) == 1 + 1 + (n - 1) + 1);
  int fn0 = find_frame("cbslot_test_bt_fn", 0);
  int at_caller = find_frame("cbslot_test_bt_caller", 0);
  int at_main = find_frame("main", 0);
  if (fn0 != 0 || at_caller < 0 || at_main < at_caller || count_frames("cbslot_test_bt_fn") != n) {
    std::fprintf(stderr, "backtrace from inside the callback (%d levels):\n", n);
    print_trace();
  }
  CHECK(fn0 == 0);                                  // it starts in the callback
  CHECK(count_frames("cbslot_test_bt_fn") == n);    // every level, through every entry
  CHECK(at_caller > 0);                             // reaches the caller ...
  CHECK(at_main > at_caller);                       // ... and beyond it
  for (int i = 0; i < n; i++) {
    CHECK_STATUS(CB_OK, cb_unregister_wait(levels[i].h));
    CHECK(levels[i].destroyed.load() == 1);
  }
}
static void unwind_backtrace_tracked() {
  const uint32_t f[] = {0};
  backtrace_through(f, 1);
}
static void unwind_backtrace_tracked_nested() {
  const uint32_t f[] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  backtrace_through(f, 10);
}
static void unwind_backtrace_untracked() {
  const uint32_t f[] = {CB_REGISTER_UNTRACKED};
  backtrace_through(f, 1);
}
static void unwind_backtrace_mixed() {
  const uint32_t f[] = {0, CB_REGISTER_UNTRACKED, 0, CB_REGISTER_UNTRACKED, 0};
  backtrace_through(f, 5);
}

// ---- the cases, each in its own fork()ed child (check.h's runner) ----
static const check_case cases[] = {
    CHECK_CASE(pthread_exit_tracked),
    CHECK_CASE(pthread_exit_tracked_nested),
    CHECK_CASE(pthread_exit_untracked),
    CHECK_CASE(pthread_exit_mixed),
    CHECK_CASE(exception_tracked),
    CHECK_CASE(exception_depth_70),
    CHECK_CASE(exception_untracked),
    CHECK_CASE(exception_other_thread),
    CHECK_CASE(unwind_backtrace_tracked),
    CHECK_CASE(unwind_backtrace_tracked_nested),
    CHECK_CASE(unwind_backtrace_untracked),
    CHECK_CASE(unwind_backtrace_mixed),
};

int main(int argc, char **argv) {
  check_require(CB_FEATURE_ENTRIES);
  return check_run_cases("test_unwind", cases, sizeof cases / sizeof *cases, argc, argv, 60);
}
