// A minimal test harness for the C++ unit tests (one executable per concept, run by ctest).
//   TEST(name) { CHECK(x == 1); CHECK_EQ(a, b); CHECK_THROWS(expr, rtcore::InvalidArgument); }
//   int main() { return rtcore_test::run_all(); }
#pragma once

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace rtcore_test {

struct Case {
  const char* name;
  std::function<void()> fn;
};

inline std::vector<Case>& registry() {
  static std::vector<Case> cases;
  return cases;
}

struct Register {
  Register(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};

inline int& failures() {
  static int n = 0;
  return n;
}

inline int run_all() {
  int failed_cases = 0;
  for (auto& c : registry()) {
    const int before = failures();
    std::printf("[ RUN  ] %s\n", c.name);
    std::fflush(stdout);
    try {
      c.fn();
    } catch (const std::exception& e) {
      std::printf("  unexpected exception: %s\n", e.what());
      ++failures();
    }
    const bool ok = failures() == before;
    failed_cases += !ok;
    std::printf("[ %s ] %s\n", ok ? " OK " : "FAIL", c.name);
  }
  std::printf("%zu passed, %d failed\n", registry().size() - failed_cases, failed_cases);
  return failed_cases == 0 ? 0 : 1;
}

}  // namespace rtcore_test

#define RTCORE_CAT2(a, b) a##b
#define RTCORE_CAT(a, b) RTCORE_CAT2(a, b)
#define TEST(name)                                                                   \
  static void name();                                                                \
  static ::rtcore_test::Register RTCORE_CAT(reg_, name)(#name, name);                \
  static void name()

#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      std::printf("  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);         \
      ++::rtcore_test::failures();                                                   \
    }                                                                                \
  } while (0)

#define CHECK_EQ(a, b)                                                               \
  do {                                                                               \
    auto va_ = (a);                                                                  \
    auto vb_ = (b);                                                                  \
    if (!(va_ == vb_)) {                                                             \
      std::ostringstream os_;                                                        \
      os_ << va_ << " != " << vb_;                                                   \
      std::printf("  %s:%d: CHECK_EQ(%s, %s) failed: %s\n", __FILE__, __LINE__, #a, #b, \
                  os_.str().c_str());                                                \
      ++::rtcore_test::failures();                                                   \
    }                                                                                \
  } while (0)

#define CHECK_THROWS(expr, type)                                                     \
  do {                                                                               \
    bool thrown_ = false;                                                            \
    try {                                                                            \
      (void)(expr);                                                                  \
    } catch (const type&) {                                                          \
      thrown_ = true;                                                                \
    }                                                                                \
    if (!thrown_) {                                                                  \
      std::printf("  %s:%d: %s did not throw %s\n", __FILE__, __LINE__, #expr, #type); \
      ++::rtcore_test::failures();                                                   \
    }                                                                                \
  } while (0)
