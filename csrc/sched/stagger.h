// The stagger schedule: when each of N inference workers may start inferring and when it may publish,
// so that one action is ready every tau / N seconds (paper, Algorithm 1 "max" and 2 "mean").
// docs/design/stagger.md has the reasoning and the measurements behind each construct below.
//
// Invariant: in max mode, a worker's turns are the points of one lattice, tau_max / N_live apart,
// from which it publishes at turn + max(tau_max, t); in mean mode, consecutive publishes are at least
// max(mean / N_live, min_interval) apart. Every operation takes `now` (ns), so the wall-clock waits and
// the simulator (sched/simulator.h, virtual clock) run this same code.
//
// - Absolute deadlines (next_turn, publish = turn_start + max(tau, t)): a cycle does not drift by the
//   wake-up latency; a deadline in the past is "at once" (the paper's negative sleep, clamped).
// - Push-back (max mode, StaggerPushback): kPaper is the paper's rule; kLattice re-staggers everyone on
//   the lattice anchored at the late worker's publish, so the spacing is exact again within one cycle;
//   kAuthors is kPaper as the authors' code runs it (a push-back that arrives during a delay sleep is lost).
// - Publish queue (mean mode): an overrun delays only its own action; re-staggering everyone on each
//   overrun made each worker's cycle 4x the model's time under 10 % jitter.
// - tau_window: forgets old maxima so one stall does not widen the spacing for good; a fall smaller than
//   a quarter of an interval is ignored so jitter does not re-stagger at every report. The window is
//   bounded in time as well (each sample's report time is kept): a sample older than the horizon
//   H = max(1 s, 16 * tau_seed) no longer counts, since after a slow pass the reports come slowly and
//   W of them could take minutes.
// - Stalls (tau_window > 0): a pass longer than H (a SIGSTOPped or descheduled worker) is not an
//   inference time: counted (`stalls`), kept out of the window and the mean, it raises nothing and
//   pushes no one back; the late worker publishes at once and everyone re-staggers around it. A second
//   stall within H is taken as the model's real pace (so a seed far too small still adapts); both are
//   forgotten H later. Paper mode (tau_window = 0) keeps every time, as the paper does.
// - Membership (join / leave / heartbeat drop) bumps `epoch`; each live worker re-staggers on the lattice
//   at `base` at its next turn, never moving earlier than half an interval, so no cycle collapses. A slot
//   records its claimer's process (pid + start time, common/liveness.h): a worker silent for longer than
//   max(kDeadCheckNs, tau_max + kPollNs) whose process has exited is dropped then, not at the timeout.
// - Progress: no locks; CAS on slot words, tau_max and the queue head, fetch_add on delays and ring
//   indices; every operation is lock-free, O(n_workers + window + tau_window), and a process killed at any
//   instruction leaves every word consistent (its own slot is released by the heartbeat drop).
#pragma once

#include <algorithm>
#include <cstdlib>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "common/errors.h"
#include "common/liveness.h"
#include "common/seqlock.h"
#include "sched/clock.h"

namespace rtcore::sched {

enum class StaggerMode : std::uint32_t { kMax = 0, kMean = 1 };

// kPaper: delay[j] += dist(j, i) * (t - tau) / N, as the paper (and DESIGN.md) state it.
// kLattice: re-stagger everyone on the lattice anchored at the overshooting worker's publish instant
// with the new tau: worker j's next turn moves to the first point of publish_i + tau' * (k + (rank_j -
// rank_i) mod N) / N not earlier than its own next turn by more than half an interval. Exact spacing
// tau' / N after one cycle, whatever the overshoot (see the simulator's comparison in bench/stagger.py).
// kAuthors: kPaper as the authors' code runs it (CERC-AAI/realtime_rl, run_realtime_pokemon.py): a worker
// sleeps its pending delay and then zeroes it, so a push-back that arrives during that sleep is lost.
enum class StaggerPushback : std::uint32_t { kPaper = 0, kLattice = 1, kAuthors = 2 };

// Layout parameters, stored in the segment header.
struct StaggerParams {
  std::uint32_t n_workers;  // slot capacity
  std::uint32_t mode;       // StaggerMode
  std::uint32_t window;     // mean estimator window (inference times)
  std::uint32_t pushback;   // StaggerPushback: how a new maximum moves the others
  std::int64_t tau_seed_ns;           // the user's seed for tau_max
  std::int64_t heartbeat_timeout_ns;  // silence after which a worker is dropped (see the grace above)
  std::uint32_t tau_window;           // 0: tau_max is the all-time maximum (paper); W: max of the last W reports
  std::uint32_t reserved;             // zero
  std::int64_t min_interval_ns;       // mean mode: publish slots at least this far apart (the env period; 0: none)
};
static_assert(sizeof(StaggerParams) == 48, "segment header params: no hidden padding");
static_assert(std::is_trivially_copyable_v<StaggerParams>);

enum class WaitResult { kReady, kTimeout, kStopped };

class StaggerSchedule {
 public:
  static constexpr std::uint32_t kLayoutVersion = 4;  // 3: mean mode's publish queue; 4: tau window times, slot owners, Faults
  static constexpr std::uint32_t kMaxWorkers = 4096;
  static constexpr std::uint32_t kMaxWindow = 65536;
  static constexpr std::uint32_t kMaxTauWindow = 1024;  // each report rescans the window: keep it O(1 us)
  static constexpr std::int64_t kPollNs = 50000000;  // waits re-check (heartbeat, stop, delays) every 50 ms
  static constexpr std::int64_t kDeadCheckNs = 100000000;   // silence after which a worker's process is looked up
  static constexpr std::int64_t kMinHorizonNs = 1000000000;  // the tau window's time bound: at least 1 s ...
  static constexpr std::int64_t kHorizonSeeds = 16;          // ... and at least 16 seeded inference times

  struct alignas(kCacheLine) Shared {
    std::atomic<std::int64_t> tau_max_ns;   // running maximum (CAS max)
    std::atomic<std::uint64_t> epoch;       // bumped on every membership change
    std::atomic<std::int64_t> base_ns;      // lattice origin of the newest re-stagger
    std::atomic<std::uint64_t> samples;     // inference times reported (mean ring write index)
    std::atomic<std::uint64_t> pushbacks;   // reports that pushed the others back
    std::atomic<std::uint64_t> drops;       // workers dropped for silence
    std::atomic<std::uint32_t> stop;        // non-zero: every wait returns kStopped
    std::uint32_t reserved;
    std::atomic<std::int64_t> slot_next_ns;  // mean mode: the publish queue's next free slot
  };
  struct alignas(kCacheLine) Slot {
    std::atomic<std::uint64_t> state;          // generation << 1 | alive; a claim bumps the generation
    std::atomic<std::int64_t> heartbeat_ns;    // last call from the owner
    std::atomic<std::int64_t> delay_ns;        // pending push-back, consumed at the next turn
    std::atomic<std::int64_t> next_turn_ns;    // owner-written: when the next turn starts (before delay)
    std::atomic<std::int64_t> turn_start_ns;   // owner-written: start of the current turn
    std::atomic<std::int64_t> publish_ns;      // owner-written: when the current action may be published
    std::atomic<std::int64_t> last_ns;         // owner-written: last inference time
    std::atomic<std::uint64_t> epoch_seen;     // owner-written: epoch of its last re-stagger
  };
  // After the rings (layout v3): what the stall rule needs.
  struct Faults {
    std::atomic<std::uint64_t> stalls;        // passes reported as stalls
    std::atomic<std::int64_t> last_stall_ns;  // report time of the newest stall (0: none)
  };
  static_assert(sizeof(Faults) == 16 && std::is_standard_layout_v<Faults>, "lives in shared memory");
  static_assert(sizeof(Slot) == kCacheLine, "one slot per cache line");
  static_assert(sizeof(Shared) == kCacheLine, "shared words on their own line");
  static_assert(std::is_standard_layout_v<Slot> && std::is_standard_layout_v<Shared>, "lives in shared memory");
  static_assert(std::atomic<std::int64_t>::is_always_lock_free && std::atomic<std::uint64_t>::is_always_lock_free &&
                    std::atomic<std::uint32_t>::is_always_lock_free,
                "shared atomics must be lock-free");

  static void validate(const StaggerParams& p) {
    if (p.n_workers < 1 || p.n_workers > kMaxWorkers)
      throw InvalidArgument("n_workers must be in [1, " + std::to_string(kMaxWorkers) + "], got " + std::to_string(p.n_workers));
    if (p.mode > 1) throw InvalidArgument("mode must be 0 (max) or 1 (mean), got " + std::to_string(p.mode));
    if (p.pushback > 2) throw InvalidArgument("pushback must be 0 (paper), 1 (lattice) or 2 (authors), got " + std::to_string(p.pushback));
    if (p.window < 1 || p.window > kMaxWindow)
      throw InvalidArgument("window must be in [1, " + std::to_string(kMaxWindow) + "], got " + std::to_string(p.window));
    if (p.tau_window > kMaxTauWindow)
      throw InvalidArgument("tau_window must be in [0, " + std::to_string(kMaxTauWindow) + "] (0: all-time maximum), got " +
                            std::to_string(p.tau_window));
    if (p.tau_seed_ns <= 0) throw InvalidArgument("tau_max must be > 0 seconds");
    if (p.heartbeat_timeout_ns <= 0) throw InvalidArgument("heartbeat_timeout must be > 0 seconds");
    if (p.min_interval_ns < 0) throw InvalidArgument("min_interval must be >= 0 seconds (0: none)");
  }
  static std::size_t bytes_needed(const StaggerParams& p) {
    // rings: mean (window), tau window samples and their times (2 * tau_window), slot owners (n_workers)
    return sizeof(Shared) + sizeof(Slot) * p.n_workers +
           sizeof(std::atomic<std::int64_t>) * (std::size_t{p.window} + 2 * std::size_t{p.tau_window} + p.n_workers) +
           sizeof(Faults);
  }

  // A view over `size` bytes at `base` (64-byte aligned). `init`: the memory is fresh (zeroed or not)
  // and this call initialises it; otherwise it is attached as it is.
  StaggerSchedule(void* base, std::size_t size, const StaggerParams& p, bool init) : p_(p), gens_(p.n_workers, 0), in_delay_(p.n_workers, 0) {
    validate(p);
    if (size < bytes_needed(p))
      throw LayoutMismatch("stagger schedule needs " + std::to_string(bytes_needed(p)) + " bytes, got " + std::to_string(size));
    auto* b = static_cast<unsigned char*>(base);
    sh_ = reinterpret_cast<Shared*>(b);
    slots_ = reinterpret_cast<Slot*>(b + sizeof(Shared));
    ring_ = reinterpret_cast<std::atomic<std::int64_t>*>(b + sizeof(Shared) + sizeof(Slot) * p.n_workers);
    tau_ring_ = ring_ + p.window;
    tau_time_ = tau_ring_ + p.tau_window;
    owner_ = reinterpret_cast<std::atomic<std::uint64_t>*>(tau_time_ + p.tau_window);
    faults_ = reinterpret_cast<Faults*>(owner_ + p.n_workers);
    if (init) {
      new (sh_) Shared{};
      sh_->tau_max_ns.store(p.tau_seed_ns, std::memory_order_relaxed);      // relaxed: published by the segment's ready flag
      sh_->slot_next_ns.store(std::numeric_limits<std::int64_t>::min(), std::memory_order_relaxed);  // relaxed: as above
      for (std::uint32_t i = 0; i < p.n_workers; ++i) new (&slots_[i]) Slot{};
      for (std::uint32_t i = 0; i < p.window; ++i) new (&ring_[i]) std::atomic<std::int64_t>(0);
      for (std::uint32_t i = 0; i < p.tau_window; ++i) new (&tau_ring_[i]) std::atomic<std::int64_t>(0);
      for (std::uint32_t i = 0; i < p.tau_window; ++i) new (&tau_time_[i]) std::atomic<std::int64_t>(0);
      for (std::uint32_t i = 0; i < p.n_workers; ++i) new (&owner_[i]) std::atomic<std::uint64_t>(0);
      new (faults_) Faults{};
    }
  }

  const StaggerParams& params() const noexcept { return p_; }
  int n_workers() const noexcept { return static_cast<int>(p_.n_workers); }
  StaggerMode mode() const noexcept { return static_cast<StaggerMode>(p_.mode); }
  int tau_window() const noexcept { return static_cast<int>(p_.tau_window); }

  // ---- membership ------------------------------------------------------------------------------

  // Claims slot `worker`, or the lowest free slot if worker < 0. Throws if it is taken / none is free.
  int join(std::int64_t now, int worker = -1) {
    reap(now);
    if (worker >= 0) {
      check_id(worker);
      if (!claim(worker, now))
        throw SlotError("worker slot " + std::to_string(worker) + " is taken by a live worker; pass worker=None for a free one");
      return worker;
    }
    for (std::uint32_t i = 0; i < p_.n_workers; ++i)
      if (claim(static_cast<int>(i), now)) return static_cast<int>(i);
    throw SlotError("all " + std::to_string(p_.n_workers) + " worker slots are taken; create the schedule with a larger n_workers");
  }

  // Gives the slot back (no error if it was dropped meanwhile).
  void leave(int w, std::int64_t now) {
    check_id(w);
    std::uint64_t mine = (gens_[w] << 1) | 1;
    if (slots_[w].state.compare_exchange_strong(mine, gens_[w] << 1, std::memory_order_acq_rel,  // acq_rel: the slot's words are settled before it can be reclaimed
                                                std::memory_order_relaxed))
      restagger(now);
  }

  void heartbeat(int w, std::int64_t now) {
    own(w, now);
    slots_[w].heartbeat_ns.store(now, std::memory_order_relaxed);  // relaxed: a timestamp, read only for staleness
  }

  // Drops every live worker whose heartbeat is older than the grace (see the header). Returns how many.
  int reap(std::int64_t now) {
    const std::int64_t grace = std::max<std::int64_t>(p_.heartbeat_timeout_ns, 2 * tau_max_ns());
    // a live worker is silent for a whole pass (~tau_max): look its process up only past that, so the
    // /proc reads (every waiter, every poll) are for the dead and the stopped, not for every pass
    const std::int64_t dead_check = std::max(kDeadCheckNs, tau_max_ns() + kPollNs);
    int dropped = 0;
    for (std::uint32_t i = 0; i < p_.n_workers; ++i) {
      Slot& s = slots_[i];
      std::uint64_t st = s.state.load(std::memory_order_acquire);  // acquire: the heartbeat read below is the claimer's or newer
      if (!(st & 1)) continue;
      const std::int64_t silent = now - s.heartbeat_ns.load(std::memory_order_relaxed);  // relaxed: staleness check only
      if (silent <= dead_check) continue;
      // relaxed: the owner of this claim or a newer one (ordered by the state acquire); a claim in
      // progress has a fresh heartbeat, so its predecessor's token is never read for it
      if (silent <= grace && proc::process_alive(owner_[i].load(std::memory_order_relaxed))) continue;
      if (s.state.compare_exchange_strong(st, st & ~std::uint64_t{1}, std::memory_order_acq_rel,  // acq_rel: as leave
                                          std::memory_order_relaxed)) {
        ++dropped;
        sh_->drops.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
      }
    }
    if (dropped) restagger(now);
    return dropped;
  }

  bool alive(int w) const {
    check_id(w);
    return slots_[w].state.load(std::memory_order_relaxed) & 1;  // relaxed: a snapshot
  }
  // Live worker ids, ascending.
  std::vector<int> workers() const {
    std::vector<int> out;
    for (std::uint32_t i = 0; i < p_.n_workers; ++i)
      if (slots_[i].state.load(std::memory_order_relaxed) & 1) out.push_back(static_cast<int>(i));  // relaxed: a snapshot
    return out;
  }
  int live_count() const {
    int n = 0;
    for (std::uint32_t i = 0; i < p_.n_workers; ++i) n += slots_[i].state.load(std::memory_order_relaxed) & 1;  // relaxed: a snapshot
    return n;
  }

  // ---- the schedule ----------------------------------------------------------------------------

  // When w's next turn starts (ns). Consumes pending delay and re-staggers after a membership change.
  // If the result is <= now, the turn has started: it is recorded as the turn's start (the scheduled
  // instant, so lateness does not accumulate; `now` if the worker is more than a cycle late).
  std::int64_t poll_turn(int w, std::int64_t now) {
    own(w, now);
    Slot& s = slots_[w];
    s.heartbeat_ns.store(now, std::memory_order_relaxed);  // relaxed: staleness only
    std::int64_t next = s.next_turn_ns.load(std::memory_order_relaxed);  // relaxed: owner-written
    const std::uint64_t ep = sh_->epoch.load(std::memory_order_acquire);  // acquire: pairs with restagger's release (base)
    if (ep != s.epoch_seen.load(std::memory_order_relaxed)) {              // relaxed: owner-written
      const std::int64_t base = sh_->base_ns.load(std::memory_order_relaxed);  // relaxed: ordered by the epoch acquire
      int rank = 0, n = 0;
      ranks(w, &rank, &n);
      const std::int64_t tau = tau_ns();
      // The first lattice point not earlier than max(next, now) by more than half an interval (so a
      // worker that re-staggers microseconds after its point takes it instead of waiting a cycle).
      const std::int64_t from = std::max(next, now) - tau / (2 * std::max(n, 1));
      const std::int64_t origin = base + tau * rank / std::max(n, 1);
      std::int64_t k = from > origin ? (from - origin + tau - 1) / tau : -((origin - from) / tau);
      next = origin + k * tau;
      s.delay_ns.exchange(0, std::memory_order_relaxed);  // relaxed: superseded by the new lattice
      s.epoch_seen.store(ep, std::memory_order_relaxed);  // relaxed: owner-only
    }
    const std::int64_t d = s.delay_ns.exchange(0, std::memory_order_relaxed);  // relaxed: a plain counter of ns, no data behind it
    if (static_cast<StaggerPushback>(p_.pushback) != StaggerPushback::kAuthors) {
      next += d;
    } else if (!in_delay_[w] && d > 0) {
      next += d;
      in_delay_[w] = 1;
    }  // else: lost, as in the authors' code (sleep(delay[i]); delay[i] = 0)
    s.next_turn_ns.store(next, std::memory_order_relaxed);  // relaxed: owner-written, others read a snapshot
    if (next <= now) {
      in_delay_[w] = 0;
      const std::int64_t tau = tau_ns();
      s.turn_start_ns.store(now - next < tau ? next : now, std::memory_order_relaxed);  // relaxed: owner-written
    }
    return next;
  }

  // w's inference took `duration_ns`, ending at `now`. Applies the algorithm's update; returns the
  // instant (ns) at which w may publish (<= now: at once). That instant is also w's next turn.
  std::int64_t report(int w, std::int64_t duration_ns, std::int64_t now) {
    own(w, now);
    if (duration_ns < 0) duration_ns = 0;
    Slot& s = slots_[w];
    s.heartbeat_ns.store(now, std::memory_order_relaxed);  // relaxed: staleness only
    s.last_ns.store(duration_ns, std::memory_order_relaxed);  // relaxed: a statistic
    if (p_.tau_window && duration_ns > horizon_ns()) {
      faults_->stalls.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
      const std::int64_t prev = faults_->last_stall_ns.exchange(now, std::memory_order_relaxed);  // relaxed: a timestamp
      if (prev == 0 || now - prev > horizon_ns()) {
        // An isolated stall (see the header): not an inference time. Publish at once and let every
        // live worker re-stagger around the late one.
        restagger(now);
        s.publish_ns.store(now, std::memory_order_relaxed);    // relaxed: owner-written
        s.next_turn_ns.store(now, std::memory_order_relaxed);  // relaxed: owner-written
        return now;
      }
    }
    // The mean estimator (both modes; it spaces the workers in mean mode) and the tau window.
    const std::uint64_t idx = sh_->samples.fetch_add(1, std::memory_order_relaxed);  // relaxed: a ring index
    ring_[idx % p_.window].store(duration_ns, std::memory_order_relaxed);           // relaxed: a sample, read approximately
    if (p_.tau_window) {
      tau_ring_[idx % p_.tau_window].store(duration_ns, std::memory_order_relaxed);  // relaxed: published by the CAS below
      tau_time_[idx % p_.tau_window].store(now, std::memory_order_relaxed);          // relaxed: as the sample
    }
    // Running maximum (both modes). The window's samples are written before tau_max moves, and tau_max
    // is read with acquire, so a reporter that sees a maximum also sees the sample that set it and
    // cannot lower tau_max past it.
    std::int64_t old_max = sh_->tau_max_ns.load(std::memory_order_acquire);  // acquire: the window samples behind this value
    while (duration_ns > old_max &&
           !sh_->tau_max_ns.compare_exchange_weak(old_max, duration_ns, std::memory_order_acq_rel,  // acq_rel: publishes the sample
                                                  std::memory_order_acquire)) {                     // acquire: as the load
    }
    bool lowered = false;
    if (p_.tau_window && duration_ns <= old_max) {
      const std::int64_t wmax = window_max_ns(now);
      const std::int64_t n = std::max(live_count(), 1);
      if ((old_max - wmax) * 4 * n > old_max &&
          sh_->tau_max_ns.compare_exchange_strong(old_max, wmax, std::memory_order_acq_rel,  // acq_rel: as the raise
                                                  std::memory_order_relaxed)) {               // relaxed: lost, not retried
        lowered = true;
        old_max = wmax;  // this worker's tau from now on
        if (mode() == StaggerMode::kMax) restagger(now);
      }
    }
    if (mode() == StaggerMode::kMean) {
      // Publish queue: slots max(mean / N_live, min_interval) apart; the action takes the first free
      // slot not before now. No push-back: a slow inference delays only its own action.
      const std::int64_t iv = std::max(mean_tau_ns() / std::max(live_count(), 1), p_.min_interval_ns);
      std::int64_t slot = sh_->slot_next_ns.load(std::memory_order_relaxed);  // relaxed: a value, validated by the CAS
      std::int64_t at = std::max(slot, now);
      while (!sh_->slot_next_ns.compare_exchange_weak(slot, at + iv, std::memory_order_relaxed)) at = std::max(slot, now);  // relaxed: no data behind it
      s.publish_ns.store(at, std::memory_order_relaxed);    // relaxed: owner-written
      s.next_turn_ns.store(at, std::memory_order_relaxed);  // relaxed: owner-written
      return at;
    }
    const std::int64_t tau = old_max;  // the tau this worker was scheduled with (the lowered one if it just lowered it)
    const std::int64_t over = duration_ns > old_max && !lowered ? duration_ns - old_max : 0;  // only the CAS winner's own overshoot
    const std::int64_t start = s.turn_start_ns.load(std::memory_order_relaxed);  // relaxed: owner-written
    const std::int64_t publish = start + std::max(tau, duration_ns);
    if (over > 0) {
      if (static_cast<StaggerPushback>(p_.pushback) == StaggerPushback::kLattice) {
        int rank = 0, n = 0;
        ranks(w, &rank, &n);
        restagger(publish - duration_ns * rank / std::max(n, 1));  // laid with the new tau_max
        sh_->pushbacks.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
      } else {
        push_back(w, over);
      }
    }
    s.publish_ns.store(publish, std::memory_order_relaxed);    // relaxed: owner-written
    s.next_turn_ns.store(publish, std::memory_order_relaxed);  // relaxed: owner-written
    return publish;
  }

  std::int64_t publish_at(int w) const {
    check_id(w);
    return slots_[w].publish_ns.load(std::memory_order_relaxed);  // relaxed: owner-written
  }
  std::int64_t pending_delay_ns(int w) const {
    check_id(w);
    return slots_[w].delay_ns.load(std::memory_order_relaxed);  // relaxed: a snapshot
  }
  std::int64_t last_ns(int w) const {
    check_id(w);
    return slots_[w].last_ns.load(std::memory_order_relaxed);  // relaxed: a snapshot
  }

  // ---- what the schedule believes --------------------------------------------------------------

  std::int64_t tau_max_ns() const { return sh_->tau_max_ns.load(std::memory_order_relaxed); }  // relaxed: a value
  // Mean of the last `window` inference times; the seed before the first report.
  std::int64_t mean_tau_ns() const {
    const std::uint64_t n = std::min<std::uint64_t>(sh_->samples.load(std::memory_order_relaxed), p_.window);  // relaxed: approximate by design
    if (n == 0) return p_.tau_seed_ns;
    std::int64_t sum = 0;
    for (std::uint64_t i = 0; i < n; ++i) sum += ring_[i].load(std::memory_order_relaxed);  // relaxed: as above
    return sum / static_cast<std::int64_t>(n);
  }
  // Maximum of the last min(samples, tau_window) reported times, of those reported within the horizon
  // before `now` (all of them when now is omitted); tau_max_ns() if tau_window is 0 or none counts.
  std::int64_t window_max_ns(std::int64_t now = std::numeric_limits<std::int64_t>::max()) const {
    const std::uint64_t reported = sh_->samples.load(std::memory_order_relaxed);  // relaxed: approximate by design
    const std::uint64_t n = std::min<std::uint64_t>(reported, p_.tau_window);
    const std::int64_t oldest = now == std::numeric_limits<std::int64_t>::max() ? std::numeric_limits<std::int64_t>::min()
                                                                                : now - horizon_ns();
    std::int64_t m = -1;
    for (std::uint64_t i = 0; i < n; ++i)
      if (tau_time_[i].load(std::memory_order_relaxed) >= oldest)     // relaxed: approximate, as the samples
        m = std::max(m, tau_ring_[i].load(std::memory_order_relaxed));  // relaxed: ordered by report's acquire
    return m < 0 ? tau_max_ns() : m;
  }
  // The tau window's time bound (see the header): max(1 s, 16 * tau_seed).
  std::int64_t horizon_ns() const { return std::max(kMinHorizonNs, kHorizonSeeds * std::min(p_.tau_seed_ns, kMinHorizonNs * 3600)); }
  // Passes reported as stalls (longer than the horizon; tau_window > 0 only).
  std::uint64_t stalls() const { return faults_->stalls.load(std::memory_order_relaxed); }  // relaxed: a statistic
  // The spacing tau of the mode: tau_max (max) or the mean (mean).
  std::int64_t tau_ns() const { return mode() == StaggerMode::kMax ? tau_max_ns() : mean_tau_ns(); }
  // The target interval between actions: tau / N_live (tau if nobody is live); mean mode: at least min_interval.
  std::int64_t action_interval_ns() const {
    const std::int64_t iv = tau_ns() / std::max(live_count(), 1);
    return mode() == StaggerMode::kMean ? std::max(iv, p_.min_interval_ns) : iv;  // mean: the publish slots' spacing
  }
  std::uint64_t epoch() const { return sh_->epoch.load(std::memory_order_relaxed); }          // relaxed: a statistic
  std::uint64_t drops() const { return sh_->drops.load(std::memory_order_relaxed); }          // relaxed: a statistic
  std::uint64_t pushbacks() const { return sh_->pushbacks.load(std::memory_order_relaxed); }  // relaxed: a statistic
  std::uint64_t samples() const { return sh_->samples.load(std::memory_order_relaxed); }      // relaxed: a statistic

  void set_stop(bool on) { sh_->stop.store(on ? 1u : 0u, std::memory_order_relaxed); }  // relaxed: a flag
  bool stopped() const { return sh_->stop.load(std::memory_order_relaxed) != 0; }          // relaxed: a flag
  const std::atomic<std::uint32_t>* stop_word() const { return &sh_->stop; }

  // dist(j, i) of the paper (ranks among the live workers, N live).
  static int dist(int j, int i, int n) { return i >= j ? i - j : n - (j - i); }

  // ---- blocking waits on the wall clock ---------------------------------------------------------

  // Sleeps until w's turn (re-checking delays, re-staggers, dead peers and the stop flag at least every
  // 50 ms, heart-beating meanwhile), or until `deadline_ns`. spin_ns: spin the last stretch.
  WaitResult wait_turn(int w, std::int64_t deadline_ns, std::int64_t spin_ns = 0) {
    for (;;) {
      if (stopped()) return WaitResult::kStopped;
      const std::int64_t now = clock::now_ns();
      reap(now);
      const std::int64_t t = poll_turn(w, now);
      if (t <= now) return WaitResult::kReady;
      if (now >= deadline_ns) return WaitResult::kTimeout;
      const std::int64_t target = std::min({t, deadline_ns, now + kPollNs});
      clock::sleep_until(target, target == t ? spin_ns : 0, stop_word(), kPollNs);
    }
  }
  // Sleeps until w may publish (heart-beating at least every 50 ms), or until `deadline_ns`.
  WaitResult wait_publish(int w, std::int64_t deadline_ns, std::int64_t spin_ns = 0) {
    for (;;) {
      if (stopped()) return WaitResult::kStopped;
      const std::int64_t now = clock::now_ns();
      heartbeat(w, now);
      const std::int64_t t = publish_at(w);
      if (t <= now) return WaitResult::kReady;
      if (now >= deadline_ns) return WaitResult::kTimeout;
      const std::int64_t target = std::min({t, deadline_ns, now + kPollNs});
      clock::sleep_until(target, target == t ? spin_ns : 0, stop_word(), kPollNs);
    }
  }

 private:
  void check_id(int w) const {
    if (w < 0 || w >= static_cast<int>(p_.n_workers))
      throw OutOfRange("worker " + std::to_string(w) + " is out of range [0, " + std::to_string(p_.n_workers) + ")");
  }

  bool claim(int w, std::int64_t now) {
    Slot& s = slots_[w];
    std::uint64_t st = s.state.load(std::memory_order_relaxed);  // relaxed: validated by the CAS
    if (st & 1) return false;
    const std::uint64_t gen = (st >> 1) + 1;
    // Heartbeat first so a reaper never sees the new claim with the old, stale heartbeat.
    s.heartbeat_ns.store(now, std::memory_order_relaxed);  // relaxed: published by the CAS release below
    if (!s.state.compare_exchange_strong(st, (gen << 1) | 1, std::memory_order_acq_rel,  // acq_rel: publishes the heartbeat; sees the last owner's words
                                         std::memory_order_relaxed))
      return false;
    gens_[w] = gen;
    in_delay_[w] = 0;
    owner_[w].store(proc::self_token(), std::memory_order_relaxed);  // relaxed: read for liveness only, after kDeadCheckNs
    s.delay_ns.store(0, std::memory_order_relaxed);       // relaxed: owner's from now on
    s.next_turn_ns.store(now, std::memory_order_relaxed);  // relaxed: owner-written
    s.turn_start_ns.store(now, std::memory_order_relaxed);
    s.publish_ns.store(now, std::memory_order_relaxed);
    s.epoch_seen.store(~std::uint64_t{0}, std::memory_order_relaxed);  // relaxed: forces a re-stagger at the first turn
    restagger(now);
    return true;
  }

  // Checks that w is ours; a dropped w whose slot is still free is claimed back.
  void own(int w, std::int64_t now) {
    check_id(w);
    const std::uint64_t st = slots_[w].state.load(std::memory_order_relaxed);  // relaxed: validated below / by the CAS
    if (gens_[w] != 0 && st == ((gens_[w] << 1) | 1)) return;
    if (gens_[w] == 0)
      throw SlotError("worker " + std::to_string(w) + " has not joined this schedule through this handle; call join() first");
    if (st == (gens_[w] << 1) && claim(w, now)) return;  // dropped, slot still free: back in
    throw SlotError("worker " + std::to_string(w) + " was dropped from the schedule (silent for longer than the heartbeat "
                    "timeout) and its slot was taken by another worker; call join() again");
  }

  void restagger(std::int64_t base) {
    sh_->base_ns.store(base, std::memory_order_relaxed);   // relaxed: published by the epoch release
    sh_->epoch.fetch_add(1, std::memory_order_release);  // release: base is visible to whoever sees the new epoch
  }

  // w's rank among the live workers (by id) and their number; w counts as live.
  void ranks(int w, int* rank, int* n) const {
    int r = 0, c = 0;
    for (std::uint32_t i = 0; i < p_.n_workers; ++i) {
      const bool live = (slots_[i].state.load(std::memory_order_relaxed) & 1) || static_cast<int>(i) == w;  // relaxed: a snapshot
      if (!live) continue;
      if (static_cast<int>(i) < w) ++r;
      ++c;
    }
    *rank = r;
    *n = c;
  }

  // delay[j] += dist(j, i) * over / N for every live j != i (paper, Algorithm 1).
  void push_back(int w, std::int64_t over) {
    int i = 0, n = 0;
    ranks(w, &i, &n);
    if (n <= 1) return;
    int j = 0;
    for (std::uint32_t id = 0; id < p_.n_workers; ++id) {
      const bool live = (slots_[id].state.load(std::memory_order_relaxed) & 1) || static_cast<int>(id) == w;  // relaxed: a snapshot
      if (!live) continue;
      if (static_cast<int>(id) != w) {
        const std::int64_t d = static_cast<std::int64_t>(dist(j, i, n)) * over / n;
        slots_[id].delay_ns.fetch_add(d, std::memory_order_relaxed);  // relaxed: a counter of ns the owner consumes
      }
      ++j;
    }
    sh_->pushbacks.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
  }

  StaggerParams p_;
  Shared* sh_ = nullptr;
  Slot* slots_ = nullptr;
  std::atomic<std::int64_t>* ring_ = nullptr;
  std::atomic<std::int64_t>* tau_ring_ = nullptr;  // tau_window samples (none if tau_window is 0)
  std::atomic<std::int64_t>* tau_time_ = nullptr;  // their report times
  std::atomic<std::uint64_t>* owner_ = nullptr;    // per slot: proc token of the last claimer (0: none yet)
  Faults* faults_ = nullptr;
  std::vector<std::uint64_t> gens_;  // this handle's claim generation per slot (0: not claimed here)
  std::vector<char> in_delay_;       // kAuthors: the owner is sleeping a push-back (owner-only, so per handle)
};

// ceil(tau_theta_max / tau_m), robust to float error: a ratio within 1e-9 (relative) of an integer is
// that integer, so 0.1 / (1 / 59.7275) = 5.97275 -> 6 and 0.1 / 0.02 = 5.000000000000001 -> 5.
inline std::int64_t n_star(double tau_theta_max, double tau_m) {
  if (!(tau_theta_max > 0) || !(tau_m > 0))
    throw InvalidArgument("n_star needs tau_theta_max > 0 and tau_m > 0 seconds");
  const double r = tau_theta_max / tau_m;
  const double nearest = static_cast<double>(static_cast<std::int64_t>(r + 0.5));
  if (nearest >= 1 && (r - nearest) <= 1e-9 * nearest && (nearest - r) <= 1e-9 * nearest) return static_cast<std::int64_t>(nearest);
  const auto c = static_cast<std::int64_t>(r);
  return std::max<std::int64_t>(1, static_cast<double>(c) < r ? c + 1 : c);
}

}  // namespace rtcore::sched
