#include "check.h"
#include "sched/clock.h"

using namespace rtcore::clock;

TEST(sleep_until_reaches_deadline_and_never_early) {
  for (int i = 0; i < 20; ++i) {
    const auto deadline = now_ns() + 2000000;  // 2 ms
    CHECK(sleep_until(deadline, 200000));
    CHECK(now_ns() >= deadline);
  }
}

TEST(sleep_until_returns_false_on_stop) {
  std::atomic<std::uint32_t> stop{1};
  CHECK(!sleep_until(now_ns() + 10 * kNsPerSec, 200000, &stop));
}

TEST(virtual_clock_only_moves_forward) {
  VirtualClock c;
  c.advance_to(100);
  c.advance_to(50);
  CHECK_EQ(c.now(), 100);
}

int main() { return rtcore_test::run_all(); }
