// Round-robin turns for M learner processes ("Slow learners are fast": each learner applies its delayed
// update only on its own turn, then passes the turn on).
//
// One 64-bit word holds the turn: (turn number u << 16) | holder. Learner j may apply only while it
// holds the turn; it was handed turn u with u mod M_live == rank(j) among the live learners (by id).
// pass_turn(j) hands the turn to the next live learner after j (cyclically by id) with the next turn
// number that keeps that congruence (u + 1 when nobody joined or left). Learners claim and release
// slots like the stagger schedule's workers (a (generation, alive) word per slot).
//
// Dead learners: a holder whose heartbeat is older than heartbeat_timeout is dropped (its slot freed)
// and skipped by whoever waits next; a dropped learner that calls again is taken back in if its slot
// is still free. Every wait takes a timeout and fails with a message naming the holder.
// Each slot also records its holder's process (pid + start time, common/liveness.h): a slot whose
// process has exited is reclaimed at once (by a join of that slot, or by a waiter when it holds the
// turn), whatever it was doing, once its heartbeat is older than kDeadCheckNs (a fresh claim has a
// fresh heartbeat, so it is never mistaken for the previous, dead holder before it writes its token).
// A stopped (SIGSTOP) process is alive: it is dropped by the heartbeat timeout only.
//
// Progress: join/leave/pass/skip are CAS on single words (lock-free; a CAS retries only when another
// learner changed the word in between). Waiting is a futex sleep on a wake counter with a deadline;
// it waits for the holder, which is the point of a turnstile, but never for a dead one (skipped after
// heartbeat_timeout) and never past the caller's timeout. A learner killed at any instruction leaves
// every word consistent.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include "board/futex.h"
#include "common/errors.h"
#include "common/liveness.h"
#include "common/seqlock.h"
#include "sched/clock.h"
#include "sched/stagger.h"

namespace rtcore::sched {

struct TurnstileParams {
  std::uint32_t n_learners;
  std::uint32_t reserved;
  std::int64_t heartbeat_timeout_ns;
};
static_assert(std::is_trivially_copyable_v<TurnstileParams>);

class Turnstile {
 public:
  static constexpr std::uint32_t kLayoutVersion = 2;  // 2: Slot::owner (holder's pid + start time)
  static constexpr std::uint32_t kMaxLearners = 4096;
  static constexpr std::uint64_t kNone = 0xFFFF;  // no holder
  static constexpr std::int64_t kPollNs = 50000000;
  static constexpr std::int64_t kDeadCheckNs = 100000000;  // heartbeat age before the holder's process is looked up

  struct alignas(kCacheLine) Shared {
    std::atomic<std::uint64_t> turn;    // u << 16 | holder
    std::atomic<std::uint32_t> wake;    // futex word: bumped on every change of `turn`
    std::atomic<std::uint32_t> stop;    // non-zero: waits return kStopped
    std::atomic<std::uint64_t> passes;  // turns completed
    std::atomic<std::uint64_t> skips;   // turns taken from dead holders
  };
  struct alignas(kCacheLine) Slot {
    std::atomic<std::uint64_t> state;        // generation << 1 | alive
    std::atomic<std::int64_t> heartbeat_ns;  // last call from the owner
    std::atomic<std::uint64_t> owner;        // proc token (pid, start time) of the last claimer; 0: none yet
  };
  static_assert(sizeof(Slot) == kCacheLine && sizeof(Shared) == kCacheLine);
  static_assert(std::is_standard_layout_v<Slot> && std::is_standard_layout_v<Shared>, "lives in shared memory");
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<std::uint32_t>::is_always_lock_free);

  static void validate(const TurnstileParams& p) {
    if (p.n_learners < 1 || p.n_learners > kMaxLearners)
      throw InvalidArgument("n_learners must be in [1, " + std::to_string(kMaxLearners) + "], got " + std::to_string(p.n_learners));
    if (p.heartbeat_timeout_ns <= 0) throw InvalidArgument("heartbeat_timeout must be > 0 seconds");
  }
  static std::size_t bytes_needed(const TurnstileParams& p) { return sizeof(Shared) + sizeof(Slot) * p.n_learners; }

  Turnstile(void* base, std::size_t size, const TurnstileParams& p, bool init) : p_(p), gens_(p.n_learners, 0) {
    validate(p);
    if (size < bytes_needed(p))
      throw LayoutMismatch("turnstile needs " + std::to_string(bytes_needed(p)) + " bytes, got " + std::to_string(size));
    sh_ = static_cast<Shared*>(base);
    slots_ = reinterpret_cast<Slot*>(static_cast<unsigned char*>(base) + sizeof(Shared));
    if (init) {
      new (sh_) Shared{};
      sh_->turn.store(kNone, std::memory_order_relaxed);  // relaxed: published by the segment's ready flag
      for (std::uint32_t i = 0; i < p.n_learners; ++i) new (&slots_[i]) Slot{};
    }
  }

  int n_learners() const noexcept { return static_cast<int>(p_.n_learners); }

  int join(std::int64_t now, int learner = -1) {
    if (learner >= 0) {
      check_id(learner);
      if (!claim(learner, now) && !(reclaim_dead(learner, now) && claim(learner, now)))
        throw SlotError("learner slot " + std::to_string(learner) + " is taken by a live learner; pass learner=None for a free one");
      return learner;
    }
    for (std::uint32_t i = 0; i < p_.n_learners; ++i)
      if (claim(static_cast<int>(i), now)) return static_cast<int>(i);
    for (std::uint32_t i = 0; i < p_.n_learners; ++i)
      if (reclaim_dead(static_cast<int>(i), now) && claim(static_cast<int>(i), now)) return static_cast<int>(i);
    throw SlotError("all " + std::to_string(p_.n_learners) + " learner slots are taken; create the turnstile with a larger n_learners");
  }

  void leave(int j, std::int64_t now) {
    check_id(j);
    (void)now;
    if (gens_[j] == 0) return;
    std::uint64_t t = sh_->turn.load(std::memory_order_acquire);  // acquire: see the current turn
    std::uint64_t mine = (gens_[j] << 1) | 1;
    if (!slots_[j].state.compare_exchange_strong(mine, gens_[j] << 1, std::memory_order_acq_rel,  // acq_rel: release the slot after our last turn
                                                 std::memory_order_relaxed))
      return;  // dropped already
    // Leaving while holding the turn: hand it on, computed over the learners left (so the next turn
    // number is congruent to the next holder's rank among them). A waiter may have done it first.
    while (holder_of(t) == static_cast<std::uint64_t>(j)) {
      if (sh_->turn.compare_exchange_weak(t, advance(t, j), std::memory_order_acq_rel,  // release: our last update happens-before the next holder's
                                          std::memory_order_acquire)) {
        sh_->passes.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
        break;
      }
    }
    wake_all();
  }

  void heartbeat(int j, std::int64_t now) {
    own(j, now);
    slots_[j].heartbeat_ns.store(now, std::memory_order_relaxed);  // relaxed: a timestamp, read for staleness only
  }

  // One non-blocking look: the turn number if j holds the turn, else -1. Repairs the turn word when its
  // holder is dead, gone, or nobody holds it.
  std::int64_t try_turn(int j, std::int64_t now) {
    heartbeat(j, now);
    for (;;) {
      std::uint64_t t = sh_->turn.load(std::memory_order_acquire);  // acquire: the previous holder's update happens-before our turn
      const std::uint64_t h = holder_of(t);
      if (h == static_cast<std::uint64_t>(j)) return static_cast<std::int64_t>(t >> 16);
      if (h != kNone && live(static_cast<int>(h))) {
        const std::int64_t hb = slots_[h].heartbeat_ns.load(std::memory_order_relaxed);  // relaxed: staleness only
        if (now - hb > p_.heartbeat_timeout_ns)
          drop(static_cast<int>(h));
        else if (!reclaim_dead(static_cast<int>(h), now))  // its process has not exited: wait for it
          return -1;
      }
      // Holder dead, gone or none: hand the turn to the next live learner after h.
      const std::uint64_t next = advance(t, h == kNone ? -1 : static_cast<int>(h));
      if (sh_->turn.compare_exchange_strong(t, next, std::memory_order_acq_rel,  // acq_rel: as pass_turn
                                            std::memory_order_acquire)) {
        if (h != kNone) sh_->skips.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
        wake_all();
      }
    }
  }

  // j hands the turn to the next live learner. Throws if j does not hold it.
  void pass_turn(int j, std::int64_t now) {
    heartbeat(j, now);
    std::uint64_t t = sh_->turn.load(std::memory_order_relaxed);  // relaxed: validated by the CAS
    if (holder_of(t) != static_cast<std::uint64_t>(j))
      throw SlotError("learner " + std::to_string(j) + " passed a turn it does not hold (turn " + std::to_string(t >> 16) +
                      " is held by " + holder_str(holder_of(t)) + ")");
    // Only the holder or a skipper (after the holder's heartbeat went stale) changes a held word.
    if (!sh_->turn.compare_exchange_strong(t, advance(t, j), std::memory_order_acq_rel,  // release: our update happens-before the next holder's
                                           std::memory_order_relaxed))
      throw SlotError("learner " + std::to_string(j) + " lost turn " + std::to_string(t >> 16) +
                      " (skipped as dead: no heartbeat for longer than heartbeat_timeout) before passing it");
    sh_->passes.fetch_add(1, std::memory_order_relaxed);  // relaxed: a statistic
    wake_all();
  }

  // Sleeps until j holds the turn; returns its number, or -1 on timeout, -2 when stopped.
  std::int64_t wait_turn(int j, std::int64_t deadline_ns) {
    for (;;) {
      const std::uint32_t w = sh_->wake.load(std::memory_order_acquire);  // acquire: read before the turn, so no wake is lost
      if (stopped()) return -2;
      const std::int64_t now = clock::now_ns();
      const std::int64_t u = try_turn(j, now);
      if (u >= 0) return u;
      if (now >= deadline_ns) return -1;
      board::futex_wait_until(&sh_->wake, w, std::min(deadline_ns, now + kPollNs));
    }
  }

  std::int64_t turn() const { return static_cast<std::int64_t>(sh_->turn.load(std::memory_order_relaxed) >> 16); }  // relaxed: a snapshot
  int holder() const {
    const std::uint64_t h = holder_of(sh_->turn.load(std::memory_order_relaxed));  // relaxed: a snapshot
    return h == kNone ? -1 : static_cast<int>(h);
  }
  std::vector<int> learners() const {
    std::vector<int> out;
    for (std::uint32_t i = 0; i < p_.n_learners; ++i)
      if (live(static_cast<int>(i))) out.push_back(static_cast<int>(i));
    return out;
  }
  int live_count() const { return static_cast<int>(learners().size()); }
  std::int64_t last_heartbeat_ns(int j) const {
    check_id(j);
    return slots_[j].heartbeat_ns.load(std::memory_order_relaxed);  // relaxed: a snapshot
  }
  std::uint64_t passes() const { return sh_->passes.load(std::memory_order_relaxed); }  // relaxed: a statistic
  std::uint64_t skips() const { return sh_->skips.load(std::memory_order_relaxed); }    // relaxed: a statistic
  void set_stop(bool on) {
    sh_->stop.store(on ? 1u : 0u, std::memory_order_relaxed);  // relaxed: a flag
    wake_all();
  }
  bool stopped() const { return sh_->stop.load(std::memory_order_relaxed) != 0; }  // relaxed: a flag

  static std::string holder_str(std::uint64_t h) { return h == kNone ? std::string("nobody") : "learner " + std::to_string(h); }

 private:
  static std::uint64_t holder_of(std::uint64_t t) { return t & 0xFFFF; }

  void check_id(int j) const {
    if (j < 0 || j >= static_cast<int>(p_.n_learners))
      throw OutOfRange("learner " + std::to_string(j) + " is out of range [0, " + std::to_string(p_.n_learners) + ")");
  }
  bool live(int i) const { return slots_[i].state.load(std::memory_order_acquire) & 1; }  // acquire: pairs with claim (heartbeat)

  bool claim(int j, std::int64_t now) {
    Slot& s = slots_[j];
    std::uint64_t st = s.state.load(std::memory_order_relaxed);  // relaxed: validated by the CAS
    if (st & 1) return false;
    const std::uint64_t gen = (st >> 1) + 1;
    s.heartbeat_ns.store(now, std::memory_order_relaxed);  // relaxed: published by the CAS release
    if (!s.state.compare_exchange_strong(st, (gen << 1) | 1, std::memory_order_acq_rel,  // acq_rel: publishes the heartbeat
                                         std::memory_order_relaxed))
      return false;
    gens_[j] = gen;
    s.owner.store(proc::self_token(), std::memory_order_relaxed);  // relaxed: read for liveness only, after kDeadCheckNs
    wake_all();
    return true;
  }

  // Drops j if it is claimed by a process that has exited (heartbeat older than kDeadCheckNs, so a
  // claim in progress is never taken for its dead predecessor). True if j is free now.
  bool reclaim_dead(int j, std::int64_t now) {
    Slot& s = slots_[j];
    std::uint64_t st = s.state.load(std::memory_order_acquire);  // acquire: the owner and heartbeat of this claim or newer
    if (!(st & 1)) return true;
    if (now - s.heartbeat_ns.load(std::memory_order_relaxed) <= kDeadCheckNs) return false;  // relaxed: staleness only
    const std::uint64_t owner = s.owner.load(std::memory_order_relaxed);  // relaxed: ordered by the state acquire
    if (owner == 0 || proc::process_alive(owner)) return false;
    return s.state.compare_exchange_strong(st, st & ~std::uint64_t{1}, std::memory_order_acq_rel,  // acq_rel: as leave
                                           std::memory_order_relaxed) ||
           !(s.state.load(std::memory_order_relaxed) & 1);  // relaxed: someone else dropped it first
  }

  void own(int j, std::int64_t now) {
    check_id(j);
    const std::uint64_t st = slots_[j].state.load(std::memory_order_relaxed);  // relaxed: validated below / by the CAS
    if (gens_[j] != 0 && st == ((gens_[j] << 1) | 1)) return;
    if (gens_[j] == 0)
      throw SlotError("learner " + std::to_string(j) + " has not joined this turnstile through this handle; call join() first");
    if (st == (gens_[j] << 1) && claim(j, now)) return;
    throw SlotError("learner " + std::to_string(j) + " was dropped from the turnstile (no heartbeat for longer than "
                    "heartbeat_timeout) and its slot was taken by another learner; call join() again");
  }

  void drop(int i) {
    std::uint64_t st = slots_[i].state.load(std::memory_order_relaxed);  // relaxed: validated by the CAS
    if (st & 1)
      slots_[i].state.compare_exchange_strong(st, st & ~std::uint64_t{1}, std::memory_order_acq_rel,  // acq_rel: as leave
                                              std::memory_order_relaxed);
  }

  // The turn word after `t` moves on from `after` (-1: from before learner 0): the next live learner
  // (cyclically by id) and the smallest later turn number u with u mod M_live == its rank.
  std::uint64_t advance(std::uint64_t t, int after) const {
    const std::uint64_t u = t >> 16;
    const std::uint64_t start = holder_of(t) == kNone ? u : u + 1;
    int m = 0, rank = -1, next = -1, first = -1;
    for (std::uint32_t i = 0; i < p_.n_learners; ++i) {
      if (!live(static_cast<int>(i))) continue;
      if (first < 0) first = static_cast<int>(i);
      if (next < 0 && static_cast<int>(i) > after) {
        next = static_cast<int>(i);
        rank = m;
      }
      ++m;
    }
    if (m == 0) return (u << 16) | kNone;
    if (next < 0) {
      next = first;
      rank = 0;
    }
    const std::uint64_t mm = static_cast<std::uint64_t>(m);
    const std::uint64_t r = static_cast<std::uint64_t>(rank);
    const std::uint64_t v = start + ((r + mm - start % mm) % mm);
    return (v << 16) | static_cast<std::uint64_t>(next);
  }

  void wake_all() {
    sh_->wake.fetch_add(1, std::memory_order_release);  // release: the turn change is visible to whoever sees the new count
    board::futex_wake_all(&sh_->wake);
  }

  TurnstileParams p_;
  Shared* sh_ = nullptr;
  Slot* slots_ = nullptr;
  std::vector<std::uint64_t> gens_;
};

}  // namespace rtcore::sched
