// Process-shared futex wait/wake on a 32-bit word in shared memory (Linux). Used by the boards so a
// reader can sleep until the writer publishes, without a lock and without the writer ever waiting.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdint>

#include "sched/clock.h"

namespace rtcore::board {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t), "futex word must be a plain 32-bit word");

// Sleeps while `*word == expected`, at most until `deadline_ns` (absolute, CLOCK_MONOTONIC). Returns on
// a wake, a changed value, a signal or the deadline; the caller re-checks its condition.
inline void futex_wait_until(const std::atomic<std::uint32_t>* word, std::uint32_t expected, std::int64_t deadline_ns) noexcept {
  timespec ts{static_cast<time_t>(deadline_ns / clock::kNsPerSec), static_cast<long>(deadline_ns % clock::kNsPerSec)};
  // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC timeout. Not FUTEX_PRIVATE: the word is shared
  // between processes.
  syscall(SYS_futex, reinterpret_cast<const std::uint32_t*>(word), FUTEX_WAIT_BITSET, expected, &ts, nullptr,
          FUTEX_BITSET_MATCH_ANY);
}

inline void futex_wake_all(std::atomic<std::uint32_t>* word) noexcept {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

}  // namespace rtcore::board
