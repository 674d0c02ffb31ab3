// The discrete-event simulator: determinism for a seed, and the closed-form cases.
#include <cmath>

#include "check.h"
#include "sched/simulator.h"

using namespace rtcore;
using namespace rtcore::sched;

namespace {

constexpr std::int64_t kTauM = 16742706;  // 1 / 59.7275 s, rounded to ns

SimConfig config(SimMode mode, int workers, SimDist dist = SimDist::kConstant, double param = 0, std::uint64_t seed = 0) {
  SimConfig c;
  c.tau_m_ns = kTauM;
  c.tau_theta_ns = 100000000;
  c.mode = mode;
  c.workers = workers;
  c.dist = dist;
  c.dist_param = param;
  c.seed = seed;
  c.steps = 20000;
  return c;
}

bool same(const SimResult& a, const SimResult& b) {
  return a.inaction_steps == b.inaction_steps && a.posted == b.posted && a.applied == b.applied && a.wasted == b.wasted &&
         a.action_interval.mean == b.action_interval.mean && a.action_interval.std == b.action_interval.std &&
         a.delay.mean == b.delay.mean && a.delay.p99 == b.delay.p99 && a.tau_max_final == b.tau_max_final &&
         a.pushbacks == b.pushbacks;
}

}  // namespace

TEST(same_seed_same_result_other_seed_other_result) {
  for (auto mode : {SimMode::kMax, SimMode::kMean, SimMode::kNone}) {
    for (auto dist : {SimDist::kNormal, SimDist::kLognormal}) {
      const double param = dist == SimDist::kNormal ? 0.01 : 0.1;
      const SimResult a = simulate(config(mode, 6, dist, param, 7));
      const SimResult b = simulate(config(mode, 6, dist, param, 7));
      const SimResult c = simulate(config(mode, 6, dist, param, 8));
      CHECK(same(a, b));
      CHECK(!same(a, c));
    }
  }
}

TEST(samples_distribution_draws_only_given_values) {
  auto c = config(SimMode::kMax, 6, SimDist::kSamples);
  c.samples_ns = {90000000, 95000000};
  const SimResult r = simulate(c);
  CHECK(r.tau_max_final <= 0.1 + 1e-12);  // the seed (tau_theta) is the largest value ever seen
  c.samples_ns = {90000000, 120000000};
  CHECK(std::fabs(simulate(c).tau_max_final - 0.12) < 1e-12);
  c.samples_ns.clear();
  CHECK_THROWS(simulate(c), InvalidArgument);
}

TEST(constant_max_staggering_matches_theory) {
  // N = N* = 6: one action every 100/6 ms < tau_M: every tick after the first action has one.
  SimResult r = simulate(config(SimMode::kMax, 6));
  CHECK(r.inaction_steps <= 7);  // ticks before the first action (100 ms = 5.97 ticks) only
  CHECK(std::fabs(r.action_interval.mean - 0.1 / 6) < 1e-8);
  CHECK(r.action_interval.std < 1e-8);
  CHECK_EQ(r.pushbacks, 0);
  // N = 3: one action every 33.3 ms, two ticks per action.
  r = simulate(config(SimMode::kMax, 3));
  CHECK(std::fabs(r.inaction_fraction - (1 - (1.0 / 59.7275) / (0.1 / 3))) < 0.002);
  CHECK_EQ(r.wasted, 0);
}

TEST(unstaggered_workers_act_together) {
  // Free-running workers with a constant inference time all publish at the same instants: N - 1 of
  // every N actions are wasted and inaction is that of one worker.
  const SimResult r = simulate(config(SimMode::kNone, 6));
  const SimResult one = simulate(config(SimMode::kNone, 1));
  CHECK_EQ(r.inaction_steps, one.inaction_steps);
  CHECK_EQ(r.applied, one.applied);
  CHECK_EQ(r.posted, 6 * one.posted);
}

TEST(sequential_posts_every_inference_plus_learning) {
  auto c = config(SimMode::kSequential, 1);
  c.tau_l_ns = 50000000;
  const SimResult r = simulate(c);
  // Posts at m * 150 ms + 100 ms; tick k at k * tau_M applies the newest post strictly before it.
  std::int64_t expect = 0;
  for (std::int64_t m = 0;; ++m) {
    const std::int64_t t = m * 150000000 + 100000000;
    if (t >= (c.steps - 1) * kTauM) break;
    ++expect;
  }
  CHECK_EQ(r.applied, expect);
  CHECK_EQ(r.wasted, 0);
  CHECK_THROWS(simulate([] {
                 auto x = config(SimMode::kSequential, 2);
                 return x;
               }()),
               InvalidArgument);
}

TEST(hundred_thousand_steps_in_well_under_a_second) {
  // Not a timing assert: the event count is what bounds the run time (3 events per action).
  auto c = config(SimMode::kMax, 6, SimDist::kNormal, 0.005, 1);
  c.steps = 100000;
  const SimResult r = simulate(c);
  CHECK_EQ(r.steps, 100000);
  CHECK(r.posted > 50000);
}

TEST(tau_window_recovers_from_a_stall_on_the_virtual_clock) {
  // 50 ms inference, N* = 3 plus a spare, the 9th inference a 400 ms stall. W = 0 (paper): tau_max
  // stays 400 ms, one action per 100 ms, ~5 of 6 steps idle for good. W = 64: forgotten, no idle step
  // in the second half, the target back to 12.5 ms.
  SimConfig c = config(SimMode::kMax, 4);
  c.tau_theta_ns = 50000000;
  c.steps = 12000;
  c.outlier_at = 8;
  c.outlier_ns = 400000000;
  const SimResult paper = simulate(c);
  CHECK(std::abs(paper.tau_max_final - 0.4) < 1e-9);
  CHECK(std::abs(paper.late_inaction_fraction - (1 - 0.016742706 / 0.1)) < 0.01);
  c.tau_window = 64;
  const SimResult win = simulate(c);
  CHECK(std::abs(win.tau_max_final - 0.05) < 1e-9);
  CHECK(std::abs(win.target_interval - 0.0125) < 1e-9);
  CHECK_EQ(win.late_inaction_fraction, 0.0);
  CHECK(win.inaction_fraction < 0.04);
  CHECK(same(win, simulate(c)));  // deterministic
  c.tau_window = 1025;
  CHECK_THROWS(simulate(c), InvalidArgument);
  c.tau_window = 64;
  c.outlier_ns = 0;
  CHECK_THROWS(simulate(c), InvalidArgument);
}

int main() { return rtcore_test::run_all(); }
