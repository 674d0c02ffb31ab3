// Clocks. The scheduler logic takes "now" as a value and never reads a clock itself, so the same code
// runs on the wall clock (MonotonicClock) and on a virtual clock (VirtualClock, for deterministic
// discrete-event simulation). Only the blocking waits touch the real clock.
#pragma once

#include <time.h>

#include <atomic>
#include <cerrno>
#include <cstdint>

#include "common/seqlock.h"

namespace rtcore::clock {

constexpr std::int64_t kNsPerSec = 1000000000LL;

inline std::int64_t to_ns(double seconds) noexcept { return static_cast<std::int64_t>(seconds * 1e9 + (seconds >= 0 ? 0.5 : -0.5)); }
inline double to_sec(std::int64_t ns) noexcept { return static_cast<double>(ns) * 1e-9; }

// CLOCK_MONOTONIC in nanoseconds: the one time base shared by every rtcore process on a machine.
inline std::int64_t now_ns() noexcept {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * kNsPerSec + ts.tv_nsec;
}

// Sleeps until `deadline_ns` (CLOCK_MONOTONIC): clock_nanosleep(TIMER_ABSTIME) to `deadline - spin_ns`,
// then spins the last stretch. Returns early (false) if `stop` becomes non-zero; checks it at least
// every `poll_ns` while sleeping. Returns true when the deadline was reached.
inline bool sleep_until(std::int64_t deadline_ns, std::int64_t spin_ns = 200000,
                        const std::atomic<std::uint32_t>* stop = nullptr,
                        std::int64_t poll_ns = 50000000) noexcept {
  for (;;) {
    if (stop && stop->load(std::memory_order_relaxed)) return false;  // relaxed: a flag, no data behind it
    const std::int64_t now = now_ns();
    const std::int64_t coarse = deadline_ns - spin_ns;
    if (now >= coarse) break;
    std::int64_t target = coarse;
    if (stop && target - now > poll_ns) target = now + poll_ns;
    timespec ts{static_cast<time_t>(target / kNsPerSec), static_cast<long>(target % kNsPerSec)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
      if (stop && stop->load(std::memory_order_relaxed)) return false;  // relaxed: as above
    }
  }
  while (now_ns() < deadline_ns) {
    if (stop && stop->load(std::memory_order_relaxed)) return false;  // relaxed: as above
    cpu_relax();
  }
  return true;
}

// The real clock, for code templated on a clock.
struct MonotonicClock {
  std::int64_t now() const noexcept { return now_ns(); }
};

// A clock that moves only when told to: discrete-event simulation and deterministic tests.
struct VirtualClock {
  std::int64_t t = 0;
  std::int64_t now() const noexcept { return t; }
  void advance_to(std::int64_t when) noexcept {
    if (when > t) t = when;
  }
};

}  // namespace rtcore::clock
