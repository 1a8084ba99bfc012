// C++ RAII layer: capturing lambdas as plain function pointers for qsort and nftw, from two threads at
// once; moves; destruction order; handle<T> refcounting; the wrappers' error paths.
#define _XOPEN_SOURCE 700
#include <cbslot.hpp>

#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

static int checks;
#define CHECK(cond)                                                                 \
  do {                                                                              \
    ++checks;                                                                       \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (0)

template <class F>
static void expect_error(cb_status want, F &&f) {
  try {
    f();
  } catch (const cbslot::error &e) {
    CHECK(e.status() == want);
    CHECK(std::string(e.what()).find(cb_status_str(want)) != std::string::npos);
    return;
  }
  CHECK(!"expected cbslot::error");
}

static void qsort_two_threads() {
  auto worker = [](bool descending, bool *ok) {
    for (int round = 0; round < 20; ++round) {
      std::vector<int> v(5000);
      unsigned seed = 7u + (unsigned)round;
      for (auto &x : v) x = (int)(seed = seed * 1103515245u + 12345u) % 100000;
      long comparisons = 0;
      cbslot::callback<int(const void *, const void *)> cmp([&](const void *a, const void *b) {
        ++comparisons;
        int x = *static_cast<const int *>(a), y = *static_cast<const int *>(b);
        return descending ? (y > x) - (y < x) : (x > y) - (x < y);
      });
      std::qsort(v.data(), v.size(), sizeof(int), cmp.get());
      for (size_t i = 1; i < v.size(); ++i)
        if (descending ? v[i - 1] < v[i] : v[i - 1] > v[i]) return;
      if (comparisons < 5000) return;
    }
    *ok = true;
  };
  bool a = false, b = false;
  std::thread ta(worker, false, &a), tb(worker, true, &b);
  ta.join();
  tb.join();
  CHECK(a && b);
}

static void nftw_with_lambda() {
  char root[] = "/tmp/cbslot-cpp-XXXXXX";
  if (!mkdtemp(root)) std::exit(1);
  std::string sub = std::string(root) + "/d";
  CHECK(mkdir(sub.c_str(), 0700) == 0);
  for (int i = 0; i < 3; ++i) {
    FILE *f = std::fopen((sub + "/f" + std::to_string(i)).c_str(), "w");
    CHECK(f != nullptr);
    std::fclose(f);
  }
  // two threads walk at once, each through its own lambda (and so its own entry)
  std::vector<std::string> seen[2];
  std::thread walkers[2];
  for (int t = 0; t < 2; ++t)
    walkers[t] = std::thread([&, t] {
      for (int round = 0; round < 50; ++round) {
        cbslot::callback<int(const char *, const struct stat *, int, struct FTW *)> visit(
            [&, t](const char *path, const struct stat *, int type, struct FTW *) {
              if (type == FTW_F) seen[t].emplace_back(path);
              return 0;
            });
        if (nftw(root, visit.get(), 8, FTW_PHYS) != 0) return;
      }
    });
  for (auto &w : walkers) w.join();
  CHECK(seen[0].size() == 150 && seen[1].size() == 150);
  cbslot::callback<int(const char *, const struct stat *, int, struct FTW *)> remove_all(
      [](const char *path, const struct stat *, int, struct FTW *) { return std::remove(path); });
  CHECK(nftw(root, remove_all.get(), 8, FTW_DEPTH | FTW_PHYS) == 0);
}

struct tracker {
  std::atomic<int> *destroyed;
  int value;
  tracker(std::atomic<int> *d, int v) : destroyed(d), value(v) {}
  tracker(tracker &&o) noexcept : destroyed(std::exchange(o.destroyed, nullptr)), value(o.value) {}
  ~tracker() {
    if (destroyed) ++*destroyed;
  }
  int operator()(int x) const { return value + x; }
};

static void moves_and_destruction_order() {
  std::atomic<int> destroyed{0};
  using cb = cbslot::callback<int(int)>;
  cb a{tracker(&destroyed, 10)};
  auto fa = a.get();
  CHECK(fa(1) == 11);
  cb b = std::move(a);  // the registration moves; the same pointer stays valid
  CHECK(!a && a.get() == nullptr && b.get() == fa && fa(2) == 12);
  cb c{tracker(&destroyed, 20)};
  c = std::move(b);  // c's old registration is unregistered; c now owns fa
  CHECK(c.get() == fa && fa(3) == 13);
  CHECK(cb_barrier() == CB_OK);
  CHECK(destroyed == 1);  // the callable of c's old registration, after its grace period
  {
    cb d = std::move(c);
  }  // unregistered here ...
  CHECK(destroyed == 1);  // ... and its callable destroyed at the next grace period, not before
  CHECK(cb_barrier() == CB_OK);
  CHECK(destroyed == 2);
  // a callable that captures by move (std::function works too)
  std::function<int(int)> f = [](int x) { return x * 3; };
  cbslot::callback<int(int)> viaf(f);
  CHECK(viaf.get()(4) == 12);
  // double and mixed signatures
  cbslot::callback<double(double, int, float)> mix([](double x, int n, float y) { return x * n + y; });
  CHECK(mix.get()(1.5, 2, 0.5f) == 3.5);
}

static void handles() {
  std::atomic<int> destroyed{0};
  struct obj {
    std::atomic<int> *d;
    int v;
    ~obj() { ++*d; }
  };
  auto h = cbslot::handle<obj>::make(std::unique_ptr<obj>(new obj{&destroyed, 42}));
  CHECK(h->v == 42);
  {
    auto copy = h;  // retain
    auto again = cbslot::handle<obj>::retain(h.raw());
    CHECK(copy.raw() == h.raw() && again->v == 42);
  }  // two releases
  CHECK(destroyed == 0);
  cb_handle raw = h.raw();
  h = cbslot::handle<obj>();  // the last release
  CHECK(destroyed == 1);
  expect_error(CB_ERR_INVALID_HANDLE, [&] { cbslot::handle<obj>::retain(raw); });
  expect_error(CB_ERR_INVALID_HANDLE, [&] { (void)h.value(); });
}

static void wrappers_and_errors() {
  cbslot::loop lp;
  cbslot::context ctx(lp.handler());
  int fired = 0;
  struct timeval tv = {0, 1000};
  ctx.timeout_add(&tv, 0, [](int, short, void *arg) { ++*static_cast<int *>(arg); }, &fired);
  lp.run();
  CHECK(fired == 1);
  expect_error(CB_ERR_INVALID_ARG, [&] { ctx.timeout_add(nullptr, 0, nullptr, nullptr); });
  expect_error(CB_ERR_INVALID_ARG, [&] { ctx.event_del(reinterpret_cast<void *>(0x1234)); });
  vde_event_handler broken = lp.handler();
  broken.event_del = nullptr;
  expect_error(CB_ERR_INVALID_ARG, [&] { cbslot::context bad(broken); });

  cbslot::queue q(16);
  std::vector<std::string> got;
  cb_handle s = q.sink([&](const void *data, size_t len) { got.emplace_back(static_cast<const char *>(data), len); });
  cbslot::queue::post(s, "hello", 5);
  std::thread([s] { cbslot::queue::post(s, "from a thread", 13); }).join();
  CHECK(q.drain(10) == 2 && got.size() == 2 && got[0] == "hello" && got[1] == "from a thread");
  q.close(true);
  expect_error(CB_ERR_INVALID_HANDLE, [&] { cbslot::queue::post(s, "x", 1); });
  expect_error(CB_ERR_CLOSED, [&] { q.close(true); });
  expect_error(CB_ERR_INVALID_ARG, [] { cbslot::queue bad(0); });
  expect_error(CB_ERR_NULL_ARG, [] { cbslot::queue::post(1, nullptr, 3); });
}

int main() {
  if (!(cb_features() & CB_FEATURE_ENTRIES)) {
    cb_handle h;
    cb_fn e;
    cb_register(reinterpret_cast<cb_fn>(&std::abort), nullptr, nullptr, &h, &e);
    std::printf("SKIPPED: %s\n", cb_last_error());
    return 77;
  }
  qsort_two_threads();
  nftw_with_lambda();
  moves_and_destruction_order();
  handles();
  wrappers_and_errors();
  std::printf("test_cpp: %d checks passed\n", checks);
  return 0;
}
