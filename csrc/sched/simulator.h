// A deterministic discrete-event simulation of an environment that ticks every tau_M and N inference
// workers, on a virtual clock, driving the same StaggerSchedule code the wall-clock workers run.
//
// The environment: tick k happens at k * tau_M (integer nanoseconds). At each tick it applies the
// newest posted action not applied yet, else the default action (inaction), and publishes frame k.
// A worker that starts inferring at time t reads the newest frame (step floor(t / tau_M); events at the
// same instant as a tick come after it) and posts its action when the schedule lets it. An action
// posted while an older one is still unapplied supersedes it (a wasted action). Delay of an applied
// action = tick it is applied at - step of the frame it was computed from.
//
// Modes: kMax / kMean (Algorithms 1 / 2 through StaggerSchedule: wait turn -> infer -> report ->
// wait publish -> post); kNone (N workers free-running from time 0, no staggering: infer -> post ->
// infer ...); kSequential (one worker: infer tau_theta -> post -> learn tau_L -> infer ...).
//
// Inference times: constant, normal (mean tau_theta, std, truncated at 1 us), lognormal (mean
// tau_theta, log-space sigma), or drawn uniformly from given samples. The random source is a seeded
// mt19937_64 with hand-written transforms (no std:: distributions, whose output differs between
// standard libraries), so a seed gives the same result everywhere.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <queue>
#include <random>
#include <string>
#include <vector>

#include "common/errors.h"
#include "sched/clock.h"
#include "sched/stagger.h"

namespace rtcore::sched {

enum class SimMode : int { kMax = 0, kMean = 1, kNone = 2, kSequential = 3 };
enum class SimDist : int { kConstant = 0, kNormal = 1, kLognormal = 2, kSamples = 3 };

struct SimConfig {
  std::int64_t tau_m_ns = 16742706;      // env period
  std::int64_t tau_theta_ns = 100000000;  // inference time (mean for the random distributions)
  std::int64_t tau_l_ns = 0;              // learning time (sequential mode)
  std::int64_t tau_seed_ns = 0;           // schedule's tau_max seed; 0: tau_theta
  int workers = 1;
  SimMode mode = SimMode::kMax;
  SimDist dist = SimDist::kConstant;
  double dist_param = 0.0;                // normal: std (s); lognormal: sigma
  std::vector<std::int64_t> samples_ns;   // kSamples
  std::int64_t steps = 10000;
  std::uint64_t seed = 0;
  int window = 32;
  StaggerPushback pushback = StaggerPushback::kLattice;
  std::int64_t min_interval_ns = 0;       // the schedule's min_interval (mean mode's publish slots; the env period or 0)
  int tau_window = 0;                     // schedule's tau_max forgetting window (0: all-time maximum, the paper)
  std::int64_t outlier_at = -1;           // >= 0: the outlier_at-th inference started (0-based, all workers) takes
  std::int64_t outlier_ns = 0;            //   outlier_ns instead of its draw (a deterministic stall)
};

struct SimStats {
  double mean = 0, std = 0, p99 = 0, max = 0;
};

struct SimResult {
  std::int64_t steps = 0, inaction_steps = 0, posted = 0, applied = 0, wasted = 0;
  double inaction_fraction = 0;
  double late_inaction_fraction = 0;  // over the second half of the steps (the steady state after transients)
  SimStats action_interval;  // seconds between consecutive posts
  SimStats delay;            // steps between the frame used and the tick applied
  SimStats applied_gap;      // ticks between consecutive applied actions
  double tau_max_final = 0, mean_tau_final = 0, target_interval = 0;
  std::int64_t pushbacks = 0, restaggers = 0, stalls = 0;
  double sim_seconds = 0;
};

namespace detail {

inline SimStats stats_of(std::vector<double>& v) {
  SimStats s;
  if (v.empty()) return s;
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  double ss = 0;
  for (double x : v) ss += (x - s.mean) * (x - s.mean);
  s.std = std::sqrt(ss / static_cast<double>(v.size()));
  // p99: nearest rank.
  const std::size_t k = std::min(v.size() - 1, static_cast<std::size_t>(std::ceil(0.99 * static_cast<double>(v.size()))) - 1);
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  s.p99 = v[k];
  s.max = *std::max_element(v.begin(), v.end());
  return s;
}

class Sampler {
 public:
  explicit Sampler(const SimConfig& c) : c_(c), rng_(c.seed) {}
  std::int64_t operator()() {
    const double tau = static_cast<double>(c_.tau_theta_ns);
    switch (c_.dist) {
      case SimDist::kConstant:
        return c_.tau_theta_ns;
      case SimDist::kNormal:
        return std::max<std::int64_t>(1000, std::llround(tau + c_.dist_param * 1e9 * normal()));
      case SimDist::kLognormal:
        return std::max<std::int64_t>(1000, std::llround(tau * std::exp(c_.dist_param * normal() - 0.5 * c_.dist_param * c_.dist_param)));
      case SimDist::kSamples:
        return c_.samples_ns[static_cast<std::size_t>(rng_() % c_.samples_ns.size())];
    }
    return c_.tau_theta_ns;
  }

 private:
  double uniform() { return (static_cast<double>(rng_() >> 11) + 0.5) * (1.0 / 9007199254740992.0); }  // (0, 1)
  double normal() {  // Box-Muller
    if (have_spare_) {
      have_spare_ = false;
      return spare_;
    }
    const double r = std::sqrt(-2.0 * std::log(uniform())), th = 6.283185307179586 * uniform();
    spare_ = r * std::sin(th);
    have_spare_ = true;
    return r * std::cos(th);
  }
  const SimConfig& c_;
  std::mt19937_64 rng_;
  double spare_ = 0;
  bool have_spare_ = false;
};

}  // namespace detail

inline void validate(const SimConfig& c) {
  if (c.tau_m_ns <= 0) throw InvalidArgument("tau_m must be > 0 seconds");
  if (c.tau_theta_ns <= 0) throw InvalidArgument("tau_theta must be > 0 seconds");
  if (c.tau_l_ns < 0) throw InvalidArgument("tau_l must be >= 0 seconds");
  if (c.steps < 1) throw InvalidArgument("steps must be >= 1");
  if (c.workers < 1 || c.workers > static_cast<int>(StaggerSchedule::kMaxWorkers))
    throw InvalidArgument("workers must be in [1, " + std::to_string(StaggerSchedule::kMaxWorkers) + "]");
  if (c.mode == SimMode::kSequential && c.workers != 1)
    throw InvalidArgument("sequential mode has exactly one worker (it infers and learns in turn), got workers=" + std::to_string(c.workers));
  if (c.dist == SimDist::kSamples && c.samples_ns.empty()) throw InvalidArgument("samples distribution needs at least one sample");
  for (auto s : c.samples_ns)
    if (s <= 0) throw InvalidArgument("inference time samples must be > 0 seconds");
  if (c.tau_window < 0 || c.tau_window > static_cast<int>(StaggerSchedule::kMaxTauWindow))
    throw InvalidArgument("tau_window must be in [0, " + std::to_string(StaggerSchedule::kMaxTauWindow) + "] (0: all-time maximum), got " +
                          std::to_string(c.tau_window));
  if (c.min_interval_ns < 0) throw InvalidArgument("min_interval must be >= 0 seconds (0: none)");
  if (c.outlier_at >= 0 && c.outlier_ns <= 0) throw InvalidArgument("an outlier's inference time must be > 0 seconds");
  if (c.dist_param < 0 || !std::isfinite(c.dist_param)) throw InvalidArgument("distribution parameter must be finite and >= 0");
}

inline SimResult simulate(const SimConfig& c) {
  validate(c);
  const bool staggered = c.mode == SimMode::kMax || c.mode == SimMode::kMean;
  const int n = c.workers;
  StaggerParams sp{static_cast<std::uint32_t>(n), c.mode == SimMode::kMean ? 1u : 0u, static_cast<std::uint32_t>(c.window),
                   static_cast<std::uint32_t>(c.pushback),
                   c.tau_seed_ns > 0 ? c.tau_seed_ns : c.tau_theta_ns, std::numeric_limits<std::int64_t>::max() / 4,
                   static_cast<std::uint32_t>(c.tau_window), 0, c.min_interval_ns};
  std::unique_ptr<void, void (*)(void*)> mem(nullptr, std::free);
  std::unique_ptr<StaggerSchedule> sched;
  if (staggered) {
    const std::size_t bytes = (StaggerSchedule::bytes_needed(sp) + 63) / 64 * 64;
    mem.reset(std::aligned_alloc(64, bytes));
    if (!mem) throw SystemError("out of memory for the simulated schedule", ENOMEM);
    sched = std::make_unique<StaggerSchedule>(mem.get(), bytes, sp, true);
  }
  clock::VirtualClock vc;
  detail::Sampler sample(c);

  // Worker events: (time, sequence) order; phase 0 wait turn, 1 inferring, 2 waiting to publish, 3 learning.
  struct Event {
    std::int64_t t;
    std::uint64_t seq;
    int w;
    bool operator>(const Event& o) const { return t != o.t ? t > o.t : seq > o.seq; }
  };
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> q;
  std::uint64_t seq = 0;
  std::vector<int> phase(n, 0);
  std::vector<std::int64_t> dur(n, 0), obs(n, -1);
  std::int64_t started = 0;  // inferences started (the outlier's index)
  if (staggered)
    for (int i = 0; i < n; ++i) sched->join(0, i);
  for (int i = 0; i < n; ++i) q.push({0, seq++, i});

  SimResult r;
  r.steps = c.steps;
  std::int64_t last_frame = -1;  // newest published frame (step)
  bool pending = false;
  std::int64_t pending_obs = -1;
  std::int64_t last_post_t = -1, last_applied = -1, late_inaction = 0;
  std::vector<double> intervals, delays, gaps;
  intervals.reserve(static_cast<std::size_t>(c.steps));
  delays.reserve(static_cast<std::size_t>(c.steps));

  const bool authors = staggered && c.pushback == StaggerPushback::kAuthors;
  std::vector<char> have_obs(n, 0);  // kAuthors: the frame of this turn was read (before the delay sleep)
  auto start_inference = [&](int w, std::int64_t now) {
    phase[w] = 1;
    if (!authors) obs[w] = last_frame;
    have_obs[w] = 0;
    dur[w] = sample();  // drawn even for the outlier, so the outlier does not shift the random stream
    if (started++ == c.outlier_at) dur[w] = c.outlier_ns;
    q.push({now + dur[w], seq++, w});
  };
  auto post = [&](int w, std::int64_t now) {
    ++r.posted;
    if (pending) ++r.wasted;
    pending = true;
    pending_obs = obs[w];
    if (last_post_t >= 0) intervals.push_back(clock::to_sec(now - last_post_t));
    last_post_t = now;
  };

  for (std::int64_t k = 0; k < c.steps; ++k) {
    const std::int64_t tick = k * c.tau_m_ns;
    // Worker events strictly before this tick (an event at the tick's instant comes after it).
    while (!q.empty() && q.top().t < tick) {
      const Event e = q.top();
      q.pop();
      const int w = e.w;
      vc.advance_to(e.t);
      const std::int64_t now = vc.now();
      if (staggered) {
        if (phase[w] == 0) {
          // kAuthors: the worker reads the frame before it sleeps its push-back (the authors' loop).
          const bool top = authors && !have_obs[w] && sched->pending_delay_ns(w) > 0;
          const std::int64_t t = sched->poll_turn(w, now);
          if (top || (t <= now && authors && !have_obs[w])) {
            obs[w] = last_frame;
            have_obs[w] = 1;
          }
          if (t <= now)
            start_inference(w, now);
          else
            q.push({t, seq++, w});
        } else if (phase[w] == 1) {
          const std::int64_t p = sched->report(w, dur[w], now);
          phase[w] = 2;
          q.push({std::max(p, now), seq++, w});
        } else {
          post(w, now);
          phase[w] = 0;
          q.push({now, seq++, w});
        }
      } else {
        if (phase[w] == 0) {
          start_inference(w, now);
        } else if (phase[w] == 1) {
          post(w, now);
          if (c.mode == SimMode::kSequential && c.tau_l_ns > 0) {
            phase[w] = 3;
            q.push({now + c.tau_l_ns, seq++, w});
          } else {
            phase[w] = 0;
            q.push({now, seq++, w});
          }
        } else {  // learning done
          phase[w] = 0;
          q.push({now, seq++, w});
        }
      }
    }
    vc.advance_to(tick);
    // The tick: newest unapplied action, else the default; then frame k.
    if (pending) {
      ++r.applied;
      delays.push_back(static_cast<double>(k - pending_obs));
      if (last_applied >= 0) gaps.push_back(static_cast<double>(k - last_applied));
      last_applied = k;
      pending = false;
    } else {
      ++r.inaction_steps;
      if (k >= c.steps / 2) ++late_inaction;
    }
    last_frame = k;
  }
  r.inaction_fraction = static_cast<double>(r.inaction_steps) / static_cast<double>(c.steps);
  r.late_inaction_fraction = static_cast<double>(late_inaction) / static_cast<double>(c.steps - c.steps / 2);
  r.action_interval = detail::stats_of(intervals);
  r.delay = detail::stats_of(delays);
  r.applied_gap = detail::stats_of(gaps);
  r.sim_seconds = clock::to_sec(vc.now());
  if (staggered) {
    r.tau_max_final = clock::to_sec(sched->tau_max_ns());
    r.mean_tau_final = clock::to_sec(sched->mean_tau_ns());
    r.target_interval = clock::to_sec(sched->action_interval_ns());
    r.pushbacks = static_cast<std::int64_t>(sched->pushbacks());
    r.restaggers = static_cast<std::int64_t>(sched->epoch());
    r.stalls = static_cast<std::int64_t>(sched->stalls());
  }
  return r;
}

}  // namespace rtcore::sched
