// The stagger schedule on the virtual clock: offsets, push-backs, clamping, join/leave/drop re-staggering,
// mean mode; plus a multi-thread stress for the sanitizers.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#include "check.h"
#include "sched_rig.h"
#include "sched/stagger.h"

using namespace rtcore;
using namespace rtcore::sched;

namespace {

using rtcore_test::Created;
using rtcore_test::join_n;
using rtcore_test::kGarbage;
using rtcore_test::kMs;
using rtcore_test::on_threads;

StaggerParams params(int n, std::int64_t tau, StaggerMode mode = StaggerMode::kMax, int window = 32,
                     std::int64_t hb = 1000 * kMs, int tau_window = 0) {
  return StaggerParams{static_cast<std::uint32_t>(n), static_cast<std::uint32_t>(mode), static_cast<std::uint32_t>(window), 0,
                       tau, hb, static_cast<std::uint32_t>(tau_window), 0};
}

// Drives workers through the paper's loop on a virtual clock (wait turn -> infer -> report -> wait
// publish -> publish), every worker with inference time infer(w, k). Records (time, worker) of each
// publish. Workers in `silent` make no calls (they are "killed"). Everyone reaps at each event, like the
// wall-clock waits.
struct Driver {
  StaggerSchedule& s;
  std::vector<int> phase, workers;
  std::vector<std::int64_t> at, dur;
  std::vector<char> silent;
  std::vector<std::pair<std::int64_t, int>> published;
  std::int64_t now = 0;

  Driver(StaggerSchedule& sched, std::vector<int> ws) : s(sched), workers(std::move(ws)) {
    phase.assign(s.n_workers(), 0);
    at.assign(s.n_workers(), 0);
    dur.assign(s.n_workers(), 0);
    silent.assign(s.n_workers(), 0);
  }
  template <class F>
  void run_until(std::int64_t end, F infer) {
    for (;;) {
      int w = -1;
      for (int x : workers)
        if (!silent[x] && (w < 0 || at[x] < at[w])) w = x;
      if (w < 0 || at[w] > end) {
        now = end;
        return;
      }
      now = std::max(now, at[w]);
      s.reap(now);
      if (phase[w] == 0) {
        const std::int64_t t = s.poll_turn(w, now);
        if (t <= now) {
          phase[w] = 1;
          dur[w] = infer(w);  // drawn once per inference
          at[w] = now + dur[w];
        } else {
          at[w] = t;
        }
      } else if (phase[w] == 1) {
        const std::int64_t p = s.report(w, dur[w], now);
        phase[w] = 2;
        at[w] = std::max(p, now);
      } else {
        published.push_back({now, w});
        phase[w] = 0;
      }
    }
  }
  // Intervals between consecutive publishes that happened at or after `from`.
  std::vector<std::int64_t> intervals(std::int64_t from) const {
    std::vector<std::int64_t> out;
    for (std::size_t i = 1; i < published.size(); ++i)
      if (published[i - 1].first >= from) out.push_back(published[i].first - published[i - 1].first);
    return out;
  }
};

}  // namespace

TEST(layout_and_validation) {
  CHECK_THROWS(StaggerSchedule::validate(params(0, 10)), InvalidArgument);
  CHECK_THROWS(StaggerSchedule::validate(params(5, 0)), InvalidArgument);
  CHECK_THROWS(StaggerSchedule::validate(params(5, 10, StaggerMode::kMax, 0)), InvalidArgument);
  auto p = params(4, 100 * kMs);
  rtcore_test::HeapMem m(StaggerSchedule::bytes_needed(p), kGarbage);
  CHECK_THROWS(StaggerSchedule(m.p, StaggerSchedule::bytes_needed(p) - 1, p, true), LayoutMismatch);
  StaggerSchedule s(m.p, m.size, p, true);
  CHECK_EQ(s.tau_max_ns(), 100 * kMs);
  CHECK_EQ(s.live_count(), 0);
  CHECK_THROWS(s.poll_turn(0, 0), SlotError);  // not joined
  CHECK_THROWS(s.poll_turn(4, 0), OutOfRange);
}

TEST(start_offsets_are_tau_i_over_n) {
  for (int n : {1, 2, 3, 6, 7}) {
    auto p = params(8, 120 * kMs);
    Created<StaggerSchedule> s(p);
    for (int i = 0; i < n; ++i) CHECK_EQ(s.join(0), i);
    for (int i = 0; i < n; ++i) CHECK_EQ(s.poll_turn(i, 0), 120 * kMs * i / n);
    CHECK_EQ(s.action_interval_ns(), 120 * kMs / n);
  }
}

TEST(pushback_is_dist_times_overshoot_over_n) {
  // N = 5, tau = 100 ms: worker 2 starts at 40 ms and takes 130 ms (30 ms over).
  auto p = params(5, 100 * kMs);
  Created<StaggerSchedule> s(p);
  for (int i = 0; i < 5; ++i) s.join(0);
  CHECK_EQ(s.poll_turn(0, 0), 0);  // everyone has taken its start offset
  CHECK_EQ(s.poll_turn(1, 20 * kMs), 20 * kMs);
  CHECK_EQ(s.poll_turn(3, 40 * kMs), 60 * kMs);
  CHECK_EQ(s.poll_turn(4, 40 * kMs), 80 * kMs);
  CHECK_EQ(s.poll_turn(2, 40 * kMs), 40 * kMs);
  const std::int64_t publish = s.report(2, 130 * kMs, 170 * kMs);
  CHECK_EQ(publish, 170 * kMs);  // no sleep after a new maximum
  CHECK_EQ(s.tau_max_ns(), 130 * kMs);
  // dist(j, 2) = 2 - j for j <= 2, else 5 - (j - 2).
  const int expect_dist[5] = {2, 1, 0, 4, 3};
  for (int j = 0; j < 5; ++j) {
    CHECK_EQ(StaggerSchedule::dist(j, 2, 5), expect_dist[j]);
    CHECK_EQ(s.pending_delay_ns(j), expect_dist[j] * 30 * kMs / 5);
  }
  CHECK_EQ(s.pushbacks(), 1u);
  // Worker 0 (turn at 0) finishes in 50 ms: it publishes tau_max after its turn started, with the new tau_max.
  CHECK_EQ(s.report(0, 50 * kMs, 50 * kMs), 130 * kMs);
  // Its next turn: the publish instant plus its pending delay, consumed once.
  CHECK_EQ(s.poll_turn(0, 130 * kMs), 130 * kMs + 12 * kMs);
  CHECK_EQ(s.pending_delay_ns(0), 0);
  CHECK_EQ(s.poll_turn(0, 135 * kMs), 142 * kMs);
  // A report below the maximum pushes nobody.
  CHECK_EQ(s.poll_turn(1, 21 * kMs), 20 * kMs + 6 * kMs);
  CHECK_EQ(s.poll_turn(1, 26 * kMs), 26 * kMs);
  s.report(1, 10 * kMs, 36 * kMs);
  CHECK_EQ(s.pushbacks(), 1u);
  CHECK_EQ(s.pending_delay_ns(3), 24 * kMs);
}

TEST(negative_sleep_is_clamped_to_publish_at_once) {
  // The action is ready later than turn start + tau (slow read of the observation): publish at once.
  auto p = params(2, 100 * kMs);
  Created<StaggerSchedule> s(p);
  s.join(0);
  CHECK_EQ(s.poll_turn(0, 0), 0);
  const std::int64_t pub = s.report(0, 90 * kMs, 150 * kMs);  // 90 ms inference, 60 ms of other delays
  CHECK(pub <= 150 * kMs);
  CHECK_EQ(s.tau_max_ns(), 100 * kMs);
  // The next turn is right away; a worker more than a cycle late restarts its cycle from now.
  CHECK_EQ(s.poll_turn(0, 150 * kMs), 100 * kMs);
  s.report(0, 90 * kMs, 400 * kMs);
  CHECK(s.poll_turn(0, 400 * kMs) <= 400 * kMs);
  CHECK_EQ(s.report(0, 10 * kMs, 410 * kMs), 500 * kMs);
}

TEST(steady_state_interval_is_tau_over_n) {
  auto p = params(8, 100 * kMs);
  Created<StaggerSchedule> s(p);
  Driver d(s, join_n(s, 6));
  d.run_until(2000 * kMs, [](int) { return 70 * kMs; });
  auto iv = d.intervals(0);
  CHECK(iv.size() > 100);
  for (auto x : iv) CHECK(x >= 100 * kMs / 6 - 1 && x <= 100 * kMs / 6 + 1);
  CHECK_EQ(s.tau_max_ns(), 100 * kMs);
}

TEST(new_maximum_restores_spacing_with_the_new_tau) {
  // Every worker takes 100 ms but the seed is 60 ms: the first reports push back, then spacing settles.
  auto p = params(4, 60 * kMs);
  Created<StaggerSchedule> s(p);
  Driver d(s, join_n(s, 4));
  d.run_until(3000 * kMs, [](int) { return 100 * kMs; });
  CHECK_EQ(s.tau_max_ns(), 100 * kMs);
  CHECK(s.pushbacks() >= 1);
  auto iv = d.intervals(1500 * kMs);
  CHECK(iv.size() > 40);
  std::int64_t total = 0;
  for (auto x : iv) total += x;
  // One action per tau / N on average, every worker publishing once per tau.
  const double mean = static_cast<double>(total) / static_cast<double>(iv.size());
  CHECK(mean > 24.9 * kMs && mean < 25.1 * kMs);
}

TEST(lattice_pushback_restores_exact_spacing_after_any_overshoot) {
  // Seed 60 ms, every inference 100 ms, plus one 180 ms outlier (the 40th inference, near 1 s): the
  // spacing is tau_max / N = 45 ms exactly once the new lattice is taken up.
  auto p = params(4, 60 * kMs);
  p.pushback = static_cast<std::uint32_t>(StaggerPushback::kLattice);
  Created<StaggerSchedule> s(p);
  Driver d(s, join_n(s, 4));
  int k = 0;
  d.run_until(4000 * kMs, [&](int) { return ++k == 40 ? 180 * kMs : 100 * kMs; });
  CHECK_EQ(s.tau_max_ns(), 180 * kMs);
  CHECK(s.pushbacks() >= 2);
  // The outlier lands near 1 s; within about one 180 ms cycle the lattice is exact.
  auto iv = d.intervals(2500 * kMs);
  CHECK(iv.size() > 10);
  for (auto x : iv) CHECK(x >= 45 * kMs - 1 && x <= 45 * kMs + 1);
}

TEST(leave_restaggers_survivors_over_n_live) {
  auto p = params(8, 90 * kMs);
  Created<StaggerSchedule> s(p);
  Driver d(s, join_n(s, 4));
  d.run_until(1000 * kMs, [](int) { return 50 * kMs; });
  const auto ep = s.epoch();
  s.leave(1, d.now);
  CHECK(s.epoch() > ep);
  CHECK_EQ(s.live_count(), 3);
  d.workers = {0, 2, 3};
  d.run_until(2500 * kMs, [](int) { return 50 * kMs; });
  for (auto x : d.intervals(1200 * kMs)) CHECK(x >= 30 * kMs - 1 && x <= 30 * kMs + 1);
  // A new worker joins and is staggered in: interval tau / 4 again.
  const int w = s.join(d.now);
  CHECK_EQ(w, 1);
  d.workers = {0, 1, 2, 3};
  d.phase[1] = 0;
  d.at[1] = d.now;
  const std::int64_t joined = d.now;
  d.run_until(joined + 1500 * kMs, [](int) { return 50 * kMs; });
  auto iv = d.intervals(joined + 300 * kMs);
  CHECK(iv.size() > 20);
  for (auto x : iv) CHECK(x >= 90 * kMs / 4 - 1 && x <= 90 * kMs / 4 + 1);
}

TEST(silent_worker_is_dropped_and_survivors_restaggered) {
  const std::int64_t hb = 300 * kMs;  // > 2 * tau_max
  auto p = params(6, 100 * kMs, StaggerMode::kMax, 32, hb);
  Created<StaggerSchedule> s(p);
  Driver d(s, join_n(s, 5));
  d.run_until(1000 * kMs, [](int) { return 80 * kMs; });
  d.silent[3] = 1;  // killed
  const std::int64_t killed = d.now;
  d.run_until(killed + 250 * kMs, [](int) { return 80 * kMs; });
  CHECK_EQ(s.live_count(), 5);  // not yet: within the heartbeat timeout
  d.run_until(killed + 2000 * kMs, [](int) { return 80 * kMs; });
  CHECK_EQ(s.live_count(), 4);
  CHECK_EQ(s.drops(), 1u);
  CHECK_EQ(s.action_interval_ns(), 25 * kMs);
  auto iv = d.intervals(killed + 1000 * kMs);
  CHECK(iv.size() > 30);
  for (auto x : iv) CHECK(x >= 25 * kMs - 1 && x <= 25 * kMs + 1);
  // The dropped worker comes back while its slot is free: it is taken back in.
  CHECK(!s.alive(3));
  s.poll_turn(3, d.now);
  CHECK(s.alive(3));
  CHECK_EQ(s.live_count(), 5);
}

TEST(dropped_worker_whose_slot_was_taken_gets_an_error) {
  auto p = params(2, 10 * kMs, StaggerMode::kMax, 32, 50 * kMs);
  Created<StaggerSchedule> a(p);
  StaggerSchedule b(a.mem().p, a.mem().size, p, false);  // another process's handle
  CHECK_EQ(a.join(0), 0);
  CHECK_EQ(b.join(0), 1);
  CHECK_THROWS(b.join(0, 0), SlotError);  // taken
  CHECK_EQ(b.reap(1000 * kMs), 2);                 // both silent
  CHECK_EQ(b.join(1000 * kMs, 0), 0);             // b takes slot 0
  CHECK_THROWS(a.poll_turn(0, 1001 * kMs), SlotError);
  CHECK_EQ(a.join(1001 * kMs), 1);                      // the other dropped slot is free
}

TEST(mean_mode_spaces_by_the_window_mean) {
  auto p = params(4, 200 * kMs, StaggerMode::kMean, 4);
  Created<StaggerSchedule> s(p);
  CHECK_EQ(s.mean_tau_ns(), 200 * kMs);  // the seed before any report
  Driver d(s, join_n(s, 3));
  d.run_until(3000 * kMs, [](int) { return 60 * kMs; });
  CHECK_EQ(s.mean_tau_ns(), 60 * kMs);
  CHECK_EQ(s.tau_max_ns(), 200 * kMs);  // the seed stays the running max
  CHECK_EQ(s.action_interval_ns(), 20 * kMs);
  auto iv = d.intervals(2000 * kMs);
  CHECK(iv.size() > 30);
  for (auto x : iv) CHECK(x >= 20 * kMs - 1 && x <= 20 * kMs + 1);
}

TEST(tau_window_validation_and_layout) {
  auto p = params(4, 100 * kMs, StaggerMode::kMax, 32, 1000 * kMs, static_cast<int>(StaggerSchedule::kMaxTauWindow) + 1);
  CHECK_THROWS(StaggerSchedule::validate(p), InvalidArgument);
  p.tau_window = StaggerSchedule::kMaxTauWindow;
  StaggerSchedule::validate(p);
  // the samples and their report times
  CHECK_EQ(StaggerSchedule::bytes_needed(p), StaggerSchedule::bytes_needed(params(4, 100 * kMs)) + 16 * StaggerSchedule::kMaxTauWindow);
}

TEST(tau_window_forgets_an_outlier_and_respaces_at_tau_over_n) {
  // 4 workers, every inference 50 ms except one 400 ms stall (the 20th). W = 16: the stall raises
  // tau_max at once; 16 reports later it has left the window, tau_max comes back to 50 ms and the
  // workers are re-staggered 12.5 ms apart (on the lattice of the lowering).
  constexpr int kW = 16;
  auto p = params(4, 50 * kMs, StaggerMode::kMax, 32, 1000 * kMs, kW);
  p.pushback = static_cast<std::uint32_t>(StaggerPushback::kLattice);
  Created<StaggerSchedule> s(p);
  CHECK_EQ(s.tau_window(), kW);
  Driver d(s, join_n(s, 4));
  int k = 0;
  std::vector<std::int64_t> tau_after;  // tau_max after each report (sampled at the next inference start)
  d.run_until(4000 * kMs, [&](int) {
    tau_after.push_back(s.tau_max_ns());
    return ++k == 20 ? 400 * kMs : 50 * kMs;
  });
  CHECK(k > 100);
  // Raised by the stall (the paper's rule up to here).
  CHECK_EQ(*std::max_element(tau_after.begin(), tau_after.end()), 400 * kMs);
  CHECK(s.pushbacks() >= 1);
  // Back to the normal level; the stall was the only report above it.
  CHECK_EQ(s.tau_max_ns(), 50 * kMs);
  CHECK_EQ(s.window_max_ns(), 50 * kMs);
  // Lowered by the window: once, no later than W + N inferences after the stall's report (reports lag
  // starts by at most one per worker), and never raised again.
  const auto first = [&](std::size_t from, std::int64_t v) {
    return static_cast<std::size_t>(std::find(tau_after.begin() + static_cast<std::ptrdiff_t>(from), tau_after.end(), v) -
                                    tau_after.begin());
  };
  const std::size_t raised = first(0, 400 * kMs), lowered = first(raised, 50 * kMs);
  CHECK(raised > 20 && lowered > raised && lowered <= raised + kW + 4);
  const std::size_t lowered_at = lowered;
  for (std::size_t i = lowered_at; i < tau_after.size(); ++i) CHECK_EQ(tau_after[i], 50 * kMs);
  // While tau_max is 400 ms the reports come N per 400 ms, so the stall (reported near 0.65 s) leaves
  // the window after 16 * 400 / 4 ms = 1.6 s; the lowering re-staggers at once: 12.5 ms from 2.6 s on.
  auto iv = d.intervals(2600 * kMs);
  CHECK(iv.size() > 100);
  for (auto x : iv) CHECK(x >= 12500000 - 1 && x <= 12500000 + 1);
}

TEST(tau_window_zero_keeps_the_all_time_maximum) {
  // The same run with W = 0 (the paper): tau_max stays at the stall, spacing 100 ms.
  auto p = params(4, 50 * kMs);
  p.pushback = static_cast<std::uint32_t>(StaggerPushback::kLattice);
  Created<StaggerSchedule> s(p);
  CHECK_EQ(s.tau_window(), 0);
  Driver d(s, join_n(s, 4));
  int k = 0;
  d.run_until(6000 * kMs, [&](int) { return ++k == 20 ? 400 * kMs : 50 * kMs; });
  CHECK_EQ(s.tau_max_ns(), 400 * kMs);
  auto iv = d.intervals(3000 * kMs);
  CHECK(iv.size() > 20);
  for (auto x : iv) CHECK(x >= 100 * kMs - 1 && x <= 100 * kMs + 1);
}

TEST(tau_window_ignores_small_falls) {
  // Times alternate 50 / 49 ms in runs of 40: the window max falls by 1 ms < tau / (4 N) = 3.1 ms, so
  // tau_max stays at 50 ms and nothing re-staggers after the joins.
  auto p = params(4, 50 * kMs, StaggerMode::kMax, 32, 1000 * kMs, 8);
  Created<StaggerSchedule> s(p);
  std::vector<int> ws = join_n(s, 4);
  const std::uint64_t epoch0 = s.epoch();
  Driver d(s, ws);
  int k = 0;
  d.run_until(3000 * kMs, [&](int) { return (k++ / 40) % 2 ? 49 * kMs : 50 * kMs; });
  CHECK(k > 150);
  CHECK_EQ(s.tau_max_ns(), 50 * kMs);
  CHECK_EQ(s.epoch(), epoch0);
}

TEST(n_star_is_a_robust_ceiling) {
  CHECK_EQ(n_star(0.1, 1 / 59.7275), 6);
  CHECK_EQ(n_star(0.1, 0.02), 5);
  CHECK_EQ(n_star(0.3, 0.1), 3);
  CHECK_EQ(n_star(0.01, 0.1), 1);
  CHECK_EQ(n_star(6 / 59.7275, 1 / 59.7275), 6);
  CHECK_EQ(n_star(20 / 59.7275, 1 / 59.7275), 20);
  CHECK_EQ(n_star(0.10001, 0.1), 2);
  CHECK_THROWS(n_star(0, 1), InvalidArgument);
}

TEST(concurrent_workers_on_shared_memory) {
  // Threads with their own handles join, run the loop with racing reports, and leave; the state stays
  // consistent (run under TSan/ASan in CI).
  auto p = params(16, 5 * kMs, StaggerMode::kMax, 32, 1000000 * kMs);
  Created<StaggerSchedule> owner(p);
  std::atomic<std::int64_t> vclock{0};
  on_threads(owner, p, 8, [&](StaggerSchedule& s, int t) {
    for (int round = 0; round < 20; ++round) {
      const int w = s.join(vclock.fetch_add(1, std::memory_order_relaxed));
      for (int k = 0; k < 50; ++k) {
        const std::int64_t now = vclock.fetch_add(1000, std::memory_order_relaxed);
        s.poll_turn(w, now);
        s.report(w, (t + 1) * 1000 + k * 100, now + 10);
      }
      s.leave(w, vclock.load(std::memory_order_relaxed));
    }
  });
  CHECK_EQ(owner.live_count(), 0);
  CHECK_EQ(owner.tau_max_ns(), 5 * kMs);  // nobody exceeded the seed (max report 8000 + 4900 ns)
  CHECK_EQ(owner.samples(), 8u * 20u * 50u);
}

TEST(concurrent_reports_with_a_tau_window) {
  // Racing reports raise and lower tau_max through the window (TSan/ASan in CI); at the end, after
  // one quiet thread reports W small times alone, tau_max is the window's maximum again.
  constexpr int kW = 64;
  auto p = params(16, 5 * kMs, StaggerMode::kMax, 32, 1000000 * kMs, kW);
  Created<StaggerSchedule> owner(p);
  std::atomic<std::int64_t> vclock{0};
  on_threads(owner, p, 8, [&](StaggerSchedule& s, int t) {
    const int w = s.join(vclock.fetch_add(1, std::memory_order_relaxed));
    for (int k = 0; k < 400; ++k) {
      const std::int64_t now = vclock.fetch_add(1000, std::memory_order_relaxed);
      s.poll_turn(w, now);
      s.report(w, (k % 50 == t) ? 9 * kMs : (t + 1) * 1000, now + 10);
    }
    s.leave(w, vclock.load(std::memory_order_relaxed));
  });
  CHECK_EQ(owner.samples(), 8u * 400u);
  const int w = owner.join(vclock.load(std::memory_order_relaxed));
  for (int k = 0; k < kW; ++k) {
    const std::int64_t now = vclock.fetch_add(1000, std::memory_order_relaxed);
    owner.poll_turn(w, now);
    owner.report(w, 2000, now + 10);
  }
  CHECK_EQ(owner.window_max_ns(), 2000);
  CHECK_EQ(owner.tau_max_ns(), 2000);
}

int main() { return rtcore_test::run_all(); }

TEST(a_pass_longer_than_the_horizon_is_a_stall_not_a_new_maximum) {
  auto p = params(3, 42 * kMs, StaggerMode::kMax, 32, 600000 * kMs, 64);
  Created<StaggerSchedule> s(p);
  CHECK_EQ(s.horizon_ns(), 1000 * kMs);  // max(1 s, 16 * 42 ms)
  for (int w = 0; w < 3; ++w) s.join(0, w);
  CHECK(s.poll_turn(0, 0) <= 0);
  const auto ep = s.epoch();
  // worker 0 was stopped for 3.1 s in its pass: it publishes at once, everyone re-staggers, nothing widens
  CHECK_EQ(s.report(0, 3100 * kMs, 3100 * kMs), 3100 * kMs);
  CHECK_EQ(s.tau_max_ns(), 42 * kMs);
  CHECK_EQ(s.stalls(), 1u);
  CHECK_EQ(s.pushbacks(), 0u);
  CHECK(s.epoch() > ep);
  CHECK_EQ(s.samples(), 0u);  // not an inference time: not in the window, not in the mean
  // a second stall within the horizon is the model's real pace: it raises tau_max
  s.report(1, 3000 * kMs, 3200 * kMs);
  CHECK_EQ(s.stalls(), 2u);
  CHECK_EQ(s.tau_max_ns(), 3000 * kMs);
  // ... and the time bound forgets it one horizon later, however few reports came since
  s.report(2, 42 * kMs, 4300 * kMs);
  CHECK_EQ(s.tau_max_ns(), 42 * kMs);
  CHECK_EQ(s.window_max_ns(4300 * kMs), 42 * kMs);
  CHECK_EQ(s.window_max_ns(), 3000 * kMs);  // without the time bound it would still count
}

TEST(paper_mode_has_no_stalls) {
  auto p = params(2, 42 * kMs);
  Created<StaggerSchedule> s(p);
  s.join(0, 0);
  s.poll_turn(0, 0);
  s.report(0, 3100 * kMs, 3100 * kMs);
  CHECK_EQ(s.stalls(), 0u);
  CHECK_EQ(s.tau_max_ns(), 3100 * kMs);  // the paper's all-time maximum
}

TEST(a_dead_workers_slot_is_dropped_by_liveness_before_the_heartbeat_timeout) {
  auto p = params(2, 50 * kMs, StaggerMode::kMax, 32, 600000 * kMs);
  const std::size_t bytes = (StaggerSchedule::bytes_needed(p) + 4095) / 4096 * 4096;
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  CHECK(mem != MAP_FAILED);
  StaggerSchedule s(mem, bytes, p, true);
  s.join(0, 0);
  const pid_t child = fork();
  if (child == 0) {  // another process claims slot 1 and exits without leaving
    StaggerSchedule c(mem, bytes, p, false);
    c.join(0, 1);
    _exit(0);
  }
  int status = 0;
  CHECK_EQ(waitpid(child, &status, 0), child);
  CHECK(s.workers() == (std::vector<int>{0, 1}));
  CHECK_EQ(s.reap(50 * kMs), 0);   // silent for less than kDeadCheckNs: not looked up yet
  CHECK_EQ(s.reap(200 * kMs), 1);  // its process has exited: dropped long before the 600 s timeout
  CHECK(s.workers() == (std::vector<int>{0}));  // worker 0 (this live process) is as silent, and stays
  CHECK_EQ(s.join(300 * kMs, 1), 1);
  munmap(mem, bytes);
}

namespace {
StaggerParams with_pushback(StaggerParams p, StaggerPushback pb) {
  p.pushback = static_cast<std::uint32_t>(pb);
  return p;
}
}  // namespace

TEST(authors_pushback_loses_a_push_back_that_arrives_during_the_delay_sleep) {
  // Hand-worked trace, N = 3, tau seed 90 ms (ms below). Start offsets 0, 30, 60.
  //  w0: turn 0, infers 150 -> report at 150, over 60: w1 += dist 2 * 60 / 3 = 40, w2 += 1 * 60 / 3 = 20.
  //  w1: turn 30, infers 80 -> report at 110, publishes at 30 + 90 = 120; turn 120, infers 80 -> report
  //      at 200, publishes at 120 + tau_max 150 = 270; at 270 it sleeps its 40 ms push-back: to 310.
  //  w2: turn 60, infers 230 -> report at 290 (inside w1's sleep), over 230 - 150 = 80: w1 += 1 * 80 / 3.
  // Paper rule: w1's turn is 310 + 26.67 ms. The authors' code (sleep(delay[i]); delay[i] = 0): 310.
  for (auto pb : {StaggerPushback::kPaper, StaggerPushback::kAuthors}) {
    auto p = with_pushback(params(3, 90 * kMs), pb);
    Created<StaggerSchedule> s(p);
    for (int i = 0; i < 3; ++i) s.join(0);
    CHECK_EQ(s.poll_turn(0, 0), 0);
    CHECK_EQ(s.poll_turn(1, 0), 30 * kMs);
    CHECK_EQ(s.poll_turn(2, 0), 60 * kMs);
    CHECK_EQ(s.poll_turn(1, 30 * kMs), 30 * kMs);
    CHECK_EQ(s.poll_turn(2, 60 * kMs), 60 * kMs);
    CHECK_EQ(s.report(1, 80 * kMs, 110 * kMs), 120 * kMs);
    CHECK_EQ(s.poll_turn(1, 120 * kMs), 120 * kMs);
    CHECK_EQ(s.report(0, 150 * kMs, 150 * kMs), 150 * kMs);
    CHECK_EQ(s.pending_delay_ns(1), 40 * kMs);
    CHECK_EQ(s.pending_delay_ns(2), 20 * kMs);
    CHECK_EQ(s.report(1, 80 * kMs, 200 * kMs), 270 * kMs);
    CHECK_EQ(s.poll_turn(1, 270 * kMs), 310 * kMs);  // sleeping the 40 ms push-back
    CHECK_EQ(s.report(2, 230 * kMs, 290 * kMs), 290 * kMs);
    CHECK_EQ(s.pending_delay_ns(1), 80 * kMs / 3);
    CHECK_EQ(s.pending_delay_ns(0), 2 * 80 * kMs / 3);
    const std::int64_t turn = s.poll_turn(1, 310 * kMs);
    CHECK_EQ(turn, pb == StaggerPushback::kPaper ? 310 * kMs + 80 * kMs / 3 : 310 * kMs);
    CHECK_EQ(s.pending_delay_ns(1), 0);
    // w0 was not sleeping a push-back when w2's arrived: kept under both rules (its loop top is 150).
    CHECK_EQ(s.poll_turn(0, 150 * kMs), 150 * kMs + 2 * 80 * kMs / 3);
  }
}

TEST(mean_mode_publish_queue_a_slow_inference_delays_only_its_own_action) {
  // N = 4, constant 100 ms except one 160 ms inference: the others publish on their slots, 25 ms apart.
  auto p = params(4, 100 * kMs, StaggerMode::kMean, 8);
  Created<StaggerSchedule> s(p);
  std::vector<int> ws;
  for (int i = 0; i < 4; ++i) ws.push_back(s.join(0));
  Driver d(s, ws);
  int k = 0;
  d.run_until(3000 * kMs, [&](int) { return k++ == 40 ? 160 * kMs : 100 * kMs; });
  CHECK_EQ(s.pushbacks(), 0u);  // no push-back in mean mode
  // Every publish is at least one slot (mean / N) after the previous one, and the queue absorbs the outlier:
  // the spacing is back to exactly 25 ms (the mean of the last 8 is 100 again) by the end.
  auto all = d.intervals(0);
  for (auto x : all) CHECK(x >= 25 * kMs - 1);
  auto late = d.intervals(2000 * kMs);
  CHECK(late.size() > 30);
  for (auto x : late) CHECK(x >= 25 * kMs - 1 && x <= 25 * kMs + 1);
}

TEST(mean_mode_min_interval_floors_the_publish_slots) {
  // 4 workers at 100 ms would publish every 25 ms; with min_interval 40 ms the slots are 40 ms apart and
  // each worker waits for its slot (its cycle becomes 160 ms).
  auto p = params(4, 100 * kMs, StaggerMode::kMean, 8);
  p.min_interval_ns = 40 * kMs;
  Created<StaggerSchedule> s(p);
  std::vector<int> ws;
  for (int i = 0; i < 4; ++i) ws.push_back(s.join(0));
  Driver d(s, ws);
  d.run_until(3000 * kMs, [](int) { return 100 * kMs; });
  auto iv = d.intervals(500 * kMs);
  CHECK(iv.size() > 30);
  for (auto x : iv) CHECK_EQ(x, 40 * kMs);
  p.min_interval_ns = -1;
  CHECK_THROWS(StaggerSchedule::validate(p), InvalidArgument);
}

TEST(mean_mode_publish_queue_hands_out_distinct_slots_under_racing_reports) {
  // 8 threads report concurrently; every report takes its own slot, so the publish instants, sorted,
  // are at least min_interval apart (min_interval dominates mean / N here).
  auto p = params(8, 5 * kMs, StaggerMode::kMean, 32, 1000000 * kMs);
  p.min_interval_ns = 10 * kMs;
  Created<StaggerSchedule> owner(p);
  std::vector<std::vector<std::int64_t>> got(8);
  on_threads(owner, p, 8, [&](StaggerSchedule& s, int t) {
    const int w = s.join(0, t);
    for (int k = 0; k < 200; ++k) got[t].push_back(s.report(w, 1000 + k, k * kMs));
  });
  std::vector<std::int64_t> all;
  for (auto& g : got) all.insert(all.end(), g.begin(), g.end());
  std::sort(all.begin(), all.end());
  CHECK_EQ(all.size(), 1600u);
  for (std::size_t i = 1; i < all.size(); ++i) CHECK(all[i] - all[i - 1] >= 10 * kMs);
}
