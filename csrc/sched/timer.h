// A periodic timer on absolute deadlines, for the environment's tick (and anything else that must run
// at a fixed rate on the wall clock).
//
// Tick k is due at `start + k * period` (CLOCK_MONOTONIC). `wait()` sleeps with
// clock_nanosleep(TIMER_ABSTIME) to `deadline - spin` and spins the last stretch, so the wake-up does
// not depend on the kernel's timer slack or the scheduler's wake-up latency. Deadlines never drift:
// a late tick does not move the next one.
//
// Overruns: when the caller comes back to wait() after the deadline of tick k+1 has passed, tick k was
// missed entirely. It is counted as an overrun and skipped, as is every later tick whose successor is
// also due; wait() returns the newest due tick at once (late) and the timer is back on its grid. It
// never returns several ticks in a burst to "catch up".
//
// Lateness (return time - deadline) of every returned tick goes into a fixed log-linear histogram
// (LatencyHistogram: 64 sub-buckets per power of two, under 1.6 % relative error, no allocation per
// tick) and an exact maximum and sum.
//
// Hand-off (`handoff_ns` > 0): wait() returns `handoff` before the deadline without recording anything,
// and the caller finishes the wait itself, then calls complete(k, now). The Python Timer does this:
// it spins the last stretch in the interpreter, so the code that runs at the deadline is already in
// cache (a return from a long sleep straight into Python starts on cold caches; bench/timer.py measures
// both).
//
// Threads: one thread calls wait() at a time (a second concurrent waiter is refused). stop() and
// stats() may be called from any thread at any time: the counters are single-writer relaxed atomics,
// so a concurrent stats() sees a slightly stale but well-defined snapshot.
//
// Progress: wait() blocks by design; it returns kStopped within `stop_poll_ns` (default 10 ms) of a
// stop() from another thread, and gives up at a caller-given limit (the Python binding uses that to
// wake every <= 50 ms and run signal handlers while the GIL is released).
#pragma once

#include <sched.h>
#include <sys/prctl.h>
#include <time.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#include "common/errors.h"
#include "common/seqlock.h"
#include "sched/clock.h"

namespace rtcore::sched {

// A fixed-size log-linear histogram of non-negative nanosecond values (HdrHistogram's bucketing).
// Values below 2^kSub are exact; above, each power of two [2^e, 2^(e+1)) is split into 2^kSub equal
// sub-buckets. One writer; readers on other threads see relaxed atomic snapshots.
class LatencyHistogram {
 public:
  static constexpr int kSub = 6;  // 64 sub-buckets per octave: relative error < 1/64
  static constexpr std::int64_t kSubCount = std::int64_t{1} << kSub;
  static constexpr int kBuckets = (63 - kSub) * kSubCount + kSubCount;  // up to INT64_MAX

  static int bucket_of(std::int64_t v) noexcept {
    if (v < 0) v = 0;
    if (v < kSubCount) return static_cast<int>(v);
    const int e = 63 - __builtin_clzll(static_cast<std::uint64_t>(v));  // e >= kSub
    const std::int64_t top = v >> (e - kSub);                            // in [2^kSub, 2^(kSub+1))
    return (e - kSub + 1) * static_cast<int>(kSubCount) + static_cast<int>(top - kSubCount);
  }
  // Smallest value that falls in bucket b.
  static std::int64_t bucket_low(int b) noexcept {
    if (b < kSubCount) return b;
    const int e = b / static_cast<int>(kSubCount) - 1 + kSub;
    const std::int64_t top = b % kSubCount + kSubCount;
    return top << (e - kSub);
  }
  // Largest value that falls in bucket b.
  static std::int64_t bucket_high(int b) noexcept {
    if (b < kSubCount) return b;
    const int e = b / static_cast<int>(kSubCount) - 1 + kSub;
    return bucket_low(b) + ((std::int64_t{1} << (e - kSub)) - 1);
  }

  void record(std::int64_t v) noexcept {
    if (v < 0) v = 0;
    auto& c = counts_[static_cast<std::size_t>(bucket_of(v))];
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // relaxed: single writer, stats only
    count_.store(count_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // relaxed: as above
    sum_.store(sum_.load(std::memory_order_relaxed) + v, std::memory_order_relaxed);        // relaxed: as above
    if (v > max_.load(std::memory_order_relaxed)) max_.store(v, std::memory_order_relaxed);  // relaxed: as above
  }

  void reset() noexcept {
    for (auto& c : counts_) c.store(0, std::memory_order_relaxed);  // relaxed: stats only
    count_.store(0, std::memory_order_relaxed);                      // relaxed: stats only
    sum_.store(0, std::memory_order_relaxed);                        // relaxed: stats only
    max_.store(0, std::memory_order_relaxed);                        // relaxed: stats only
  }

  std::uint64_t count() const noexcept { return count_.load(std::memory_order_relaxed); }  // relaxed: stats only
  std::int64_t max() const noexcept { return max_.load(std::memory_order_relaxed); }       // relaxed: stats only
  double mean() const noexcept {
    const auto n = count();
    return n ? static_cast<double>(sum_.load(std::memory_order_relaxed)) / static_cast<double>(n) : 0.0;  // relaxed: stats
  }

  // The q-quantile (0 <= q <= 1), as the midpoint of the bucket holding it, never above the maximum.
  // 0 when empty.
  std::int64_t quantile(double q) const noexcept {
    std::uint64_t n = 0;
    for (const auto& c : counts_) n += c.load(std::memory_order_relaxed);  // relaxed: stats only
    if (n == 0) return 0;
    if (q < 0) q = 0;
    if (q > 1) q = 1;
    // Rank of the quantile, 1-based (nearest-rank method).
    std::uint64_t rank = static_cast<std::uint64_t>(q * static_cast<double>(n) + 0.999999999);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    std::uint64_t seen = 0;
    for (int b = 0; b < kBuckets; ++b) {
      seen += counts_[static_cast<std::size_t>(b)].load(std::memory_order_relaxed);  // relaxed: stats only
      if (seen >= rank) {
        const std::int64_t mid = bucket_low(b) + (bucket_high(b) - bucket_low(b)) / 2;
        const std::int64_t mx = max();
        return mid < mx ? mid : mx;
      }
    }
    return max();
  }

 private:
  std::array<std::atomic<std::uint64_t>, kBuckets> counts_{};
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::int64_t> sum_{0};
  std::atomic<std::int64_t> max_{0};
};

struct TimerStats {
  std::uint64_t ticks = 0;     // ticks returned by wait()
  std::uint64_t overruns = 0;  // ticks missed entirely (skipped)
  std::uint64_t late = 0;      // ticks returned without sleeping, because the caller came back after the deadline
  std::int64_t lateness_p50_ns = 0;
  std::int64_t lateness_p99_ns = 0;
  std::int64_t lateness_max_ns = 0;
  double lateness_mean_ns = 0;
};

class PeriodicTimer {
 public:
  static constexpr std::int64_t kStopped = -1;   // wait() was stopped
  static constexpr std::int64_t kNotYet = -2;    // wait() reached its give-up limit before the deadline
  static constexpr std::int64_t kNoLimit = std::numeric_limits<std::int64_t>::max();

  PeriodicTimer(std::int64_t period_ns, std::int64_t spin_ns, std::int64_t start_ns,
                std::int64_t stop_poll_ns = 10000000, std::int64_t handoff_ns = 0)
      : period_(period_ns), spin_(spin_ns), start_(start_ns), stop_poll_(stop_poll_ns), handoff_(handoff_ns) {
    if (handoff_ns < 0) throw InvalidArgument("handoff must be >= 0 ns, got " + std::to_string(handoff_ns));
    if (period_ns <= 0) throw InvalidArgument("period must be > 0 ns, got " + std::to_string(period_ns));
    if (spin_ns < 0) throw InvalidArgument("spin must be >= 0 ns, got " + std::to_string(spin_ns));
    if (start_ns < 0) throw InvalidArgument("start must be >= 0 ns (CLOCK_MONOTONIC), got " + std::to_string(start_ns));
    if (stop_poll_ns <= 0) throw InvalidArgument("stop_poll must be > 0 ns");
  }

  PeriodicTimer(const PeriodicTimer&) = delete;
  PeriodicTimer& operator=(const PeriodicTimer&) = delete;

  std::int64_t period_ns() const noexcept { return period_; }
  std::int64_t spin_ns() const noexcept { return spin_; }
  std::int64_t start_ns() const noexcept { return start_; }
  std::int64_t deadline_ns(std::int64_t k) const noexcept { return start_ + k * period_; }
  // Index of the tick the next wait() aims for (before overrun accounting).
  std::int64_t next_tick() const noexcept { return next_.load(std::memory_order_relaxed); }  // relaxed: informational

  // Blocks until the deadline of the next tick and returns its index; kStopped after stop();
  // kNotYet if `give_up_ns` (absolute, CLOCK_MONOTONIC) comes first, in which case nothing is consumed
  // and the next call carries on. Calling it again with a later limit is how long waits are chunked.
  std::int64_t wait(std::int64_t give_up_ns = kNoLimit) {
    claim();
    struct Release {
      PeriodicTimer& t;
      ~Release() { t.unclaim(); }
    } release{*this};
    return wait_claimed(give_up_ns);
  }

  // One waiting thread at a time. A caller that chunks a long wait into several wait_claimed() calls
  // (the Python binding, to run signal handlers) claims once for the whole wait, so a second thread
  // cannot slip in between two chunks.
  void claim() {
    if (busy_.exchange(true, std::memory_order_acquire))  // acquire: pairs with unclaim() (one waiter)
      throw BusyError("Timer.wait() is already running in another thread; one thread waits on a timer");
  }
  void unclaim() noexcept { busy_.store(false, std::memory_order_release); }  // release: hands the timer state to the next waiter
  bool waiting() const noexcept { return busy_.load(std::memory_order_relaxed); }  // relaxed: informational

  // wait() for a caller that holds the claim.
  std::int64_t wait_claimed(std::int64_t give_up_ns = kNoLimit) {
    if (stopped()) return kStopped;
    std::int64_t k = next_.load(std::memory_order_relaxed);  // relaxed: only the waiter writes it
    std::int64_t now = clock::now_ns();
    // Missed ticks: every tick whose successor is already due is skipped and counted.
    if (now >= deadline_ns(k + 1)) {
      const std::int64_t newest_due = (now - start_) / period_;  // deadline(newest_due) <= now < deadline(newest_due+1)
      add(overruns_, static_cast<std::uint64_t>(newest_due - k));
      k = newest_due;
      next_.store(k, std::memory_order_relaxed);  // relaxed: only the waiter writes it
    }
    const std::int64_t deadline = deadline_ns(k);
    const std::int64_t wake = deadline - handoff_;  // == deadline without a hand-off
    if (now >= deadline) {
      add(late_, 1);
    } else if (wake > give_up_ns) {
      // Sleep to the limit (no spin: the caller comes back), unless stop() comes first.
      if (!sleep_coarse(give_up_ns)) return kStopped;
      return kNotYet;
    } else if (now < wake) {
      if (!clock::sleep_until(wake, spin_, &stop_, stop_poll_)) return kStopped;
      now = clock::now_ns();
    }
    next_.store(k + 1, std::memory_order_relaxed);  // relaxed: only the waiter writes it
    if (handoff_ == 0) complete(k, now);  // else the caller finishes the wait and calls complete()
    return k;
  }

  // Records tick k as reached at `now` (lateness = now - deadline(k)). wait() calls it itself unless
  // the timer hands off; with a hand-off the waiting thread calls it once it has reached the deadline.
  void complete(std::int64_t k, std::int64_t now) noexcept {
    const std::int64_t lateness = now - deadline_ns(k);
    hist_.record(lateness);
    last_lateness_.store(lateness, std::memory_order_relaxed);  // relaxed: stats only
    add(ticks_, 1);
  }

  // Makes a blocked (or any later) wait() return kStopped. Sticky until resume().
  void stop() noexcept { stop_.store(1, std::memory_order_relaxed); }  // relaxed: a flag, no data behind it
  void resume() noexcept { stop_.store(0, std::memory_order_relaxed); }  // relaxed: a flag
  bool stopped() const noexcept { return stop_.load(std::memory_order_relaxed) != 0; }  // relaxed: a flag

  // Lateness of the tick the last wait() returned (0 before the first).
  std::int64_t last_lateness_ns() const noexcept { return last_lateness_.load(std::memory_order_relaxed); }  // relaxed: stats

  TimerStats stats() const noexcept {
    TimerStats s;
    s.ticks = ticks_.load(std::memory_order_relaxed);        // relaxed: stats only
    s.overruns = overruns_.load(std::memory_order_relaxed);  // relaxed: stats only
    s.late = late_.load(std::memory_order_relaxed);          // relaxed: stats only
    s.lateness_p50_ns = hist_.quantile(0.50);
    s.lateness_p99_ns = hist_.quantile(0.99);
    s.lateness_max_ns = hist_.max();
    s.lateness_mean_ns = hist_.mean();
    return s;
  }

  // Not safe against a concurrent wait() (the counters are single-writer); call it between waits.
  void reset_stats() noexcept {
    ticks_.store(0, std::memory_order_relaxed);     // relaxed: stats only
    overruns_.store(0, std::memory_order_relaxed);  // relaxed: stats only
    late_.store(0, std::memory_order_relaxed);      // relaxed: stats only
    last_lateness_.store(0, std::memory_order_relaxed);  // relaxed: stats only
    hist_.reset();
  }

 private:
  static void add(std::atomic<std::uint64_t>& c, std::uint64_t d) noexcept {
    c.store(c.load(std::memory_order_relaxed) + d, std::memory_order_relaxed);  // relaxed: single writer, stats only
  }

  // clock_nanosleep to `until`, waking every stop_poll_ to check the stop flag. False if stopped.
  bool sleep_coarse(std::int64_t until) const noexcept {
    for (;;) {
      if (stopped()) return false;
      const std::int64_t now = clock::now_ns();
      if (now >= until) return true;
      const std::int64_t target = until - now > stop_poll_ ? now + stop_poll_ : until;
      timespec ts{static_cast<time_t>(target / clock::kNsPerSec), static_cast<long>(target % clock::kNsPerSec)};
      clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr);  // EINTR: loop re-checks
    }
  }

  const std::int64_t period_;
  const std::int64_t spin_;
  const std::int64_t start_;
  const std::int64_t stop_poll_;
  const std::int64_t handoff_;
  std::atomic<std::int64_t> next_{0};
  std::atomic<std::uint32_t> stop_{0};
  std::atomic<bool> busy_{false};
  std::atomic<std::uint64_t> ticks_{0};
  std::atomic<std::uint64_t> overruns_{0};
  std::atomic<std::uint64_t> late_{0};
  std::atomic<std::int64_t> last_lateness_{0};
  LatencyHistogram hist_;
};

// Realtime hardening of the calling thread: timer slack 1 ns (so clock_nanosleep wakes on time) and
// SCHED_FIFO at `priority` (so a runnable normal thread does not delay the wake-up). Returns a line
// for the user: "on (SCHED_FIFO prio N, timerslack 1 ns)" or "refused: <reason>". Each part that
// fails is named; what succeeded stays applied.
inline std::string apply_realtime(int priority) {
  std::string refused;
  const bool slack_ok = prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL) == 0;
  if (!slack_ok) refused += std::string("prctl(PR_SET_TIMERSLACK, 1): ") + std::strerror(errno);
  const int lo = sched_get_priority_min(SCHED_FIFO), hi = sched_get_priority_max(SCHED_FIFO);
  if (priority < lo || priority > hi)
    throw InvalidArgument("realtime priority must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                          std::to_string(priority));
  sched_param sp{};
  sp.sched_priority = priority;
  if (sched_setscheduler(0, SCHED_FIFO, &sp) != 0) {
    const int e = errno;
    if (!refused.empty()) refused += "; ";
    refused += "sched_setscheduler(SCHED_FIFO, " + std::to_string(priority) + "): " + std::strerror(e);
    if (e == EPERM) refused += " (needs CAP_SYS_NICE or RLIMIT_RTPRIO >= " + std::to_string(priority) + ")";
    if (slack_ok) refused += "; timerslack 1 ns applied";
    return "refused: " + refused;
  }
  if (!slack_ok) return "refused: " + refused + "; SCHED_FIFO prio " + std::to_string(priority) + " applied";
  return "on (SCHED_FIFO prio " + std::to_string(priority) + ", timerslack 1 ns)";
}

}  // namespace rtcore::sched
