// Tests of checked size arithmetic (csrc/common/checked.h).
#include <cstdint>
#include <limits>
#include <string>

#include "check.h"
#include "common/checked.h"

using rtcore::checked_add;
using rtcore::checked_mul;
using rtcore::checked_round_up;
using rtcore::InvalidArgument;
using rtcore::kMaxBytes;

TEST(in_range_results_are_exact) {
  CHECK_EQ(checked_mul(84 * 84, 1'000'000, "capacity"), std::uint64_t{7'056'000'000});
  CHECK_EQ(checked_add(kMaxBytes - 1, 1, "x"), kMaxBytes);
  CHECK_EQ(checked_mul(0, std::numeric_limits<std::uint64_t>::max(), "x"), 0u);
  CHECK_EQ(checked_round_up(65, 64, "x"), 128u);
  CHECK_EQ(checked_round_up(64, 64, "x"), 64u);
  CHECK_EQ(checked_round_up(0, 4096, "x"), 0u);
}

TEST(overflow_is_refused_naming_the_argument) {
  CHECK_THROWS(checked_mul(std::uint64_t{1} << 32, std::uint64_t{1} << 32, "obs_shape"), InvalidArgument);
  CHECK_THROWS(checked_mul(std::uint64_t{1} << 62, 32, "capacity"), InvalidArgument);
  CHECK_THROWS(checked_add(kMaxBytes, 1, "x"), InvalidArgument);                          // past off_t
  CHECK_THROWS(checked_add(std::numeric_limits<std::uint64_t>::max(), 1, "x"), InvalidArgument);  // wraps
  CHECK_THROWS(checked_round_up(kMaxBytes, 64, "x"), InvalidArgument);
  try {
    checked_mul(std::uint64_t{1} << 62, 8, "capacity");
    CHECK(false);
  } catch (const InvalidArgument& e) {
    CHECK(std::string(e.what()).find("capacity is too large") == 0);
  }
}

TEST(non_throwing_forms) {
  std::uint64_t r = 0;
  CHECK(rtcore::mul_ok(3, 5, &r) && r == 15);
  CHECK(!rtcore::mul_ok(std::uint64_t{1} << 40, std::uint64_t{1} << 40, &r));
  CHECK(rtcore::add_ok(1, 2, &r) && r == 3);
  CHECK(!rtcore::add_ok(kMaxBytes, 1, &r));
}

int main() { return rtcore_test::run_all(); }
