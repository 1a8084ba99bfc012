// The README's C++ example (compiled and run by CTest): qsort with a capturing lambda.
#include <cbslot.hpp>

#include <cstdio>
#include <cstdlib>
#include <vector>

int main() {
  std::vector<int> v{5, 3, 9, 1, 7};
  int comparisons = 0;
  bool descending = true;
  cbslot::callback<int(const void *, const void *)> cmp([&](const void *a, const void *b) {
    ++comparisons;
    int x = *static_cast<const int *>(a), y = *static_cast<const int *>(b);
    return descending ? (y > x) - (y < x) : (x > y) - (x < y);
  });
  std::qsort(v.data(), v.size(), sizeof(int), cmp.get());  // a plain int (*)(const void *, const void *)
  std::printf("%d %d %d %d %d after %d comparisons\n", v[0], v[1], v[2], v[3], v[4], comparisons);
  return v.front() == 9 && v.back() == 1 ? 0 : 1;
}  // cmp unregisters here; the lambda is destroyed once no call is in flight
