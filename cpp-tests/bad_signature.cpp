// Must NOT compile: CTest checks that each case fails with its readable static_assert message.
#include <cbslot.hpp>

struct big {
  long a, b, c;
};

int main() {
#if defined(SIX_INTS)
  cbslot::callback<int(int, int, int, int, int, int)> cb([](int, int, int, int, int, int) { return 0; });
#elif defined(STRUCT_ARG)
  cbslot::callback<int(big)> cb([](big) { return 0; });
#elif defined(NINE_DOUBLES)
  cbslot::callback<void(double, double, double, double, double, double, double, double, double)> cb(
      [](double, double, double, double, double, double, double, double, double) {});
#elif defined(STRUCT_RESULT)
  cbslot::callback<big()> cb([] { return big{}; });
#endif
  return 0;
}
