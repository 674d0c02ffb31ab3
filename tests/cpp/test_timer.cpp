#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "check.h"
#include "sched/timer.h"

using rtcore::clock::now_ns;
using rtcore::sched::LatencyHistogram;
using rtcore::sched::PeriodicTimer;

TEST(ticks_are_never_early_and_account_for_every_index) {
  PeriodicTimer t(1000000, 200000, now_ns());  // 1 kHz
  std::int64_t prev = -1;
  std::uint64_t prev_overruns = 0;
  for (int i = 0; i < 100; ++i) {
    const std::int64_t k = t.wait();
    const std::int64_t after = now_ns();
    CHECK(k >= 0);
    CHECK(after >= t.deadline_ns(k));  // never early
    const auto st = t.stats();
    // Every index is either returned or counted as an overrun: nothing lost, nothing returned twice.
    CHECK_EQ(static_cast<std::uint64_t>(k - prev - 1), st.overruns - prev_overruns);
    prev = k;
    prev_overruns = st.overruns;
  }
  const auto st = t.stats();
  CHECK_EQ(st.ticks, 100u);
  CHECK(st.lateness_p50_ns <= st.lateness_p99_ns);
  CHECK(st.lateness_p99_ns <= st.lateness_max_ns);
  CHECK(st.lateness_mean_ns >= 0.0);
}

TEST(handoff_returns_early_and_records_only_on_complete) {
  const std::int64_t handoff = 300000;  // 300 us
  PeriodicTimer t(2000000, 100000, now_ns() + 2000000, 10000000, handoff);  // 500 Hz, first tick in 2 ms
  for (int i = 0; i < 20; ++i) {
    const std::int64_t k = t.wait();
    const std::int64_t back = now_ns();
    CHECK(k >= 0);
    CHECK(back >= t.deadline_ns(k) - handoff);  // never earlier than the hand-off point
    CHECK_EQ(t.stats().ticks, static_cast<std::uint64_t>(i));  // nothing recorded before complete()
    std::int64_t now = back;
    while (now < t.deadline_ns(k)) now = now_ns();  // the caller finishes the wait
    t.complete(k, now);
    CHECK_EQ(t.last_lateness_ns(), now - t.deadline_ns(k));
  }
  CHECK_EQ(t.stats().ticks, 20u);
  CHECK(t.stats().lateness_max_ns >= 0);
  CHECK_THROWS(PeriodicTimer(1000, 0, 0, 10000000, -1), rtcore::InvalidArgument);
}

TEST(sleeping_past_ticks_counts_overruns_and_does_not_burst) {
  const std::int64_t period = 2000000;  // 2 ms
  PeriodicTimer t(period, 100000, now_ns());
  const std::int64_t k0 = t.wait();
  std::this_thread::sleep_for(std::chrono::microseconds(7000));  // 3.5 periods: ticks k0+1, k0+2 are missed
  const std::int64_t before = now_ns();
  const std::int64_t k1 = t.wait();
  const std::int64_t missed_at_least = (before - t.deadline_ns(k0)) / period - 1;
  CHECK(missed_at_least >= 2);
  CHECK(k1 - k0 - 1 >= missed_at_least);
  CHECK_EQ(t.stats().overruns, static_cast<std::uint64_t>(k1 - k0 - 1));
  CHECK(t.stats().late >= 1u);
  // The late tick came back at once, and the next one waits for its own deadline: no burst.
  const std::int64_t k2 = t.wait();
  CHECK(now_ns() >= t.deadline_ns(k2));
  CHECK(k2 >= k1 + 1);
  CHECK_EQ(t.stats().ticks, 3u);
}

TEST(first_tick_is_at_start_and_start_can_be_in_the_future) {
  const std::int64_t start = now_ns() + 3000000;
  PeriodicTimer t(1000000, 200000, start);
  // 0 and then 1, unless this process is descheduled past a whole tick (then counted as overruns).
  CHECK_EQ(t.wait(), static_cast<std::int64_t>(t.stats().overruns));
  CHECK(now_ns() >= start);
  const std::int64_t k = t.wait();
  CHECK_EQ(k, 1 + static_cast<std::int64_t>(t.stats().overruns));
  CHECK(now_ns() >= t.deadline_ns(k));
}

TEST(give_up_limit_returns_not_yet_without_consuming_the_tick) {
  PeriodicTimer t(1000000000, 200000, now_ns() + 1000000000);  // first tick in 1 s
  CHECK_EQ(t.wait(now_ns() + 2000000), PeriodicTimer::kNotYet);
  CHECK_EQ(t.stats().ticks, 0u);
  CHECK_EQ(t.stats().overruns, 0u);
  CHECK_EQ(t.next_tick(), 0);
}

TEST(stop_from_another_thread_ends_a_blocked_wait) {
  PeriodicTimer t(1000000000LL * 60, 200000, now_ns() + 1000000000LL * 60);  // a tick a minute away
  std::atomic<std::int64_t> got{-100};
  std::thread waiter([&] { got.store(t.wait(), std::memory_order_relaxed); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  t.stop();
  waiter.join();
  CHECK_EQ(got.load(), PeriodicTimer::kStopped);
  CHECK_EQ(t.wait(), PeriodicTimer::kStopped);  // sticky
  t.resume();
  CHECK_EQ(t.wait(now_ns() + 1000000), PeriodicTimer::kNotYet);
}

TEST(a_second_concurrent_waiter_is_refused) {
  PeriodicTimer t(1000000000LL * 60, 200000, now_ns() + 1000000000LL * 60);
  std::thread waiter([&] { t.wait(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK_THROWS(t.wait(), rtcore::BusyError);
  t.stop();
  waiter.join();
}

TEST(reset_stats_clears_counts) {
  PeriodicTimer t(500000, 100000, now_ns());
  for (int i = 0; i < 5; ++i) t.wait();
  CHECK_EQ(t.stats().ticks, 5u);
  t.reset_stats();
  CHECK_EQ(t.stats().ticks, 0u);
  CHECK_EQ(t.stats().lateness_max_ns, 0);
}

TEST(invalid_arguments_are_refused) {
  CHECK_THROWS(PeriodicTimer(0, 0, 0), rtcore::InvalidArgument);
  CHECK_THROWS(PeriodicTimer(-5, 0, 0), rtcore::InvalidArgument);
  CHECK_THROWS(PeriodicTimer(1000, -1, 0), rtcore::InvalidArgument);
  CHECK_THROWS(PeriodicTimer(1000, 0, -1), rtcore::InvalidArgument);
}

TEST(histogram_buckets_cover_values_with_bounded_error) {
  for (std::int64_t v : {0LL, 1LL, 63LL, 64LL, 65LL, 127LL, 128LL, 1000LL, 12345LL, 999999LL, 1LL << 40, (1LL << 62) + 7, static_cast<long long>(INT64_MAX)}) {
    const int b = LatencyHistogram::bucket_of(v);
    CHECK(b >= 0 && b < LatencyHistogram::kBuckets);
    CHECK(LatencyHistogram::bucket_low(b) <= v);
    CHECK(v <= LatencyHistogram::bucket_high(b));
    const double width = static_cast<double>(LatencyHistogram::bucket_high(b) - LatencyHistogram::bucket_low(b));
    CHECK(width <= static_cast<double>(v) / 64.0 + 1.0);
  }
  for (int b = 1; b < LatencyHistogram::kBuckets; ++b) CHECK_EQ(LatencyHistogram::bucket_low(b), LatencyHistogram::bucket_high(b - 1) + 1);
  CHECK_EQ(LatencyHistogram::bucket_of(INT64_MAX), LatencyHistogram::kBuckets - 1);
  CHECK_EQ(LatencyHistogram::bucket_high(LatencyHistogram::kBuckets - 1), INT64_MAX);
}

TEST(histogram_quantiles_match_the_data) {
  auto h = std::make_unique<LatencyHistogram>();
  for (std::int64_t v = 1; v <= 10000; ++v) h->record(v * 100);  // 100 ns .. 1 ms
  CHECK_EQ(h->count(), 10000u);
  CHECK_EQ(h->max(), 1000000);
  CHECK(std::abs(static_cast<double>(h->quantile(0.5)) - 500000.0) <= 500000.0 / 64);
  CHECK(std::abs(static_cast<double>(h->quantile(0.99)) - 990000.0) <= 990000.0 / 64);
  CHECK_EQ(h->quantile(1.0), 1000000);
  CHECK(std::abs(h->mean() - 500050.0) < 1e-6);
}

TEST(realtime_hardening_reports_on_or_refused) {
  std::string status;
  std::thread th([&] { status = rtcore::sched::apply_realtime(10); });  // its own thread: leaves this one alone
  th.join();
  CHECK(status.rfind("on (SCHED_FIFO prio 10", 0) == 0 || status.rfind("refused: ", 0) == 0);
  CHECK_THROWS(rtcore::sched::apply_realtime(1000), rtcore::InvalidArgument);
}

int main() { return rtcore_test::run_all(); }
