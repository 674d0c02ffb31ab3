// ActionBoard: the newest action posted by any inference worker, with the env step of the observation
// it was computed from and the worker's id, taken by the environment at most once.
//
// Every post gets a global sequence number (a fetch_add at post time); "newest" means the highest
// sequence number, never the highest obs_step. Layout (a view over caller memory, zeroed = empty):
//   Control   next_seq (posts so far), latest (packed: seq << 16 | record index of the newest
//             published post; 0 = none), last_taken (seq of the newest taken post), taken, superseded.
//   Workers   one cache line per worker id: a claim word and two records {state = seq << 1 | writing,
//             action, obs_step}. A worker alternates between its two records, so the record that
//             `latest` names is overwritten only by the worker's post after next, and by then `latest`
//             has moved past it (the post in between ran its publish step first).
//
// post(): claim the worker's line (CAS; refuses a second concurrent poster with the same id, and
// steals the claim of a poster whose process died), take a sequence number, write the record under
// its seqlock, then raise `latest` to this post with a CAS-max loop. A post that finds a newer one
// already published stays unpublished: it is superseded at birth.
// take(): load `latest`; if its seq is not above last_taken, nothing new. Otherwise read the named
// record (seqlock, checked to carry that seq), then CAS last_taken from its old value to that seq; the
// winner owns the post and counts the seqs skipped in between as superseded. So:
//   - each post is taken at most once (the CAS on last_taken moves forward only, past each seq once);
//   - the post taken is the newest published when `latest` was loaded, and take() returns nothing
//     only if no published post is newer than the last one taken;
//   - superseded is exact: every seq between two consecutive takes was posted (or is still being
//     posted) and can never be taken. At rest, posted == taken + superseded + (1 if a post is pending).
// peek(): what take() would return now, without taking it (the pending post; readers of an action
// history, board/action_history.h). Lock-free; loads only.
// Progress: post() is lock-free (the CAS-max loop retries only when another post was published, and
// never waits for the taker or another worker); it never blocks. take() is lock-free (it retries only
// when a newer post was published or another taker won) and never waits for a poster.
// Several takers are safe (each post still goes to at most one), though the design has one (the env).
#pragma once

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "common/errors.h"
#include "common/seqlock.h"

namespace rtcore::board {

// getpid() is a system call in current glibc; post() needs the pid on every call, so it is cached per
// process and refreshed in the child after fork().
inline pid_t cached_pid() noexcept {
  static std::atomic<pid_t> pid{0};
  static const int registered = [] {
    pthread_atfork(nullptr, nullptr, [] { pid.store(getpid(), std::memory_order_relaxed); });  // relaxed: one value per process
    return 0;
  }();
  (void)registered;
  pid_t p = pid.load(std::memory_order_relaxed);  // relaxed: one value per process
  if (p == 0) {
    p = getpid();
    pid.store(p, std::memory_order_relaxed);  // relaxed: idempotent
  }
  return p;
}

struct Taken {
  std::int64_t action;
  std::int64_t obs_step;
  std::int32_t worker;
  std::uint64_t seq;  // global post sequence number (1 = first post)
};

class ActionBoardView {
 public:
  static constexpr std::uint32_t kLayoutVersion = 1;
  static constexpr std::uint32_t kMaxWorkers = 1u << 15;  // record index (2 per worker) fits 16 bits
  static constexpr int kIndexBits = 16;
  static constexpr std::uint64_t kMaxSeq = (std::uint64_t{1} << (64 - kIndexBits)) - 1;

  struct alignas(kCacheLine) Control {
    alignas(kCacheLine) std::atomic<std::uint64_t> next_seq;    // posts started so far (= posted)
    alignas(kCacheLine) std::atomic<std::uint64_t> latest;      // seq << 16 | record index; 0 = none
    alignas(kCacheLine) std::atomic<std::uint64_t> last_taken;  // seq of the newest taken post
    std::atomic<std::uint64_t> taken;
    std::atomic<std::uint64_t> superseded;
  };
  struct Record {
    std::atomic<std::uint64_t> state;  // seq << 1 | 1 while being written
    std::atomic<std::int64_t> action;
    std::atomic<std::int64_t> obs_step;
  };
  struct alignas(kCacheLine) Worker {
    std::atomic<std::uint64_t> claim;  // bit 0: a post in progress; bit 1: record of the next post; bits 32..: poster pid
    Record rec[2];
  };
  static_assert(std::is_standard_layout_v<Control> && std::is_standard_layout_v<Worker>, "shared-memory layout");
  static_assert(sizeof(Control) == 3 * kCacheLine && sizeof(Worker) == kCacheLine, "shared-memory layout");
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<std::int64_t>::is_always_lock_free,
                "shared atomics must be lock-free");

  static std::size_t bytes_needed(std::uint32_t max_workers) noexcept {
    return sizeof(Control) + static_cast<std::size_t>(max_workers) * sizeof(Worker);
  }

  // `base` must be 64-byte aligned and zeroed on first use.
  ActionBoardView(void* base, std::size_t size, std::uint32_t max_workers)
      : base_(static_cast<unsigned char*>(base)), max_workers_(max_workers) {
    if (max_workers < 1 || max_workers > kMaxWorkers)
      throw InvalidArgument("max_workers must be in [1, " + std::to_string(kMaxWorkers) + "], got " +
                            std::to_string(max_workers));
    if (reinterpret_cast<std::uintptr_t>(base) % kCacheLine)
      throw InvalidArgument("ActionBoard memory must be 64-byte aligned");
    if (size < bytes_needed(max_workers))
      throw LayoutMismatch("ActionBoard memory of " + std::to_string(size) + " bytes, expected at least " +
                           std::to_string(bytes_needed(max_workers)));
  }

  std::uint32_t max_workers() const noexcept { return max_workers_; }
  // relaxed: counters for monitoring; a snapshot taken during a post or take may be one step behind.
  std::uint64_t posted() const noexcept { return control().next_seq.load(std::memory_order_relaxed); }
  std::uint64_t taken() const noexcept { return control().taken.load(std::memory_order_relaxed); }
  std::uint64_t superseded() const noexcept { return control().superseded.load(std::memory_order_relaxed); }
  std::uint64_t last_taken_seq() const noexcept { return control().last_taken.load(std::memory_order_relaxed); }
  // True if a published post is newer than the last one taken.
  bool pending() const noexcept {
    return (control().latest.load(std::memory_order_relaxed) >> kIndexBits) >  // relaxed: a snapshot
           control().last_taken.load(std::memory_order_relaxed);              // relaxed: a snapshot
  }

  // Posts an action. Returns its sequence number. `*published` (if given) tells whether it became the
  // newest post (false: a newer post was already published, so this one is superseded at birth).
  std::uint64_t post(std::int64_t action, std::int64_t obs_step, std::int32_t worker, bool* published = nullptr) {
    if (worker < 0 || static_cast<std::uint32_t>(worker) >= max_workers_)
      throw InvalidArgument("worker must be in [0, " + std::to_string(max_workers_) + "), got " + std::to_string(worker));
    Worker& w = workers()[worker];
    const pid_t my_pid = cached_pid();
    const std::uint64_t me = static_cast<std::uint64_t>(static_cast<std::uint32_t>(my_pid)) << 32;
    std::uint64_t c = w.claim.load(std::memory_order_relaxed);  // relaxed: the CAS below decides
    unsigned r;
    for (;;) {
      r = (c >> 1) & 1;
      if (c & 1) {
        const pid_t owner = static_cast<pid_t>(c >> 32);
        if (owner == my_pid)  // another thread of this process
          throw BusyError("worker " + std::to_string(worker) + " is already posting from another thread of this process; "
                          "each worker id must post from one thread at a time");
        if (owner <= 0 || kill(owner, 0) == 0 || errno != ESRCH)
          throw SlotError("worker " + std::to_string(worker) + " is already posting (pid " + std::to_string(owner) +
                          "); each worker id must post from one thread at a time");
        // The claimer's process is gone and its post will never finish: take the line over, writing the
        // other record, so a record the dead poster may have published stays intact.
        r ^= 1;
      }
      // acquire: the previous post with this worker id (records and publish step) happens-before this one.
      if (w.claim.compare_exchange_weak(c, me | (std::uint64_t{r} << 1) | 1, std::memory_order_acquire,
                                        std::memory_order_relaxed))
        break;
    }
    const std::uint64_t seq = control().next_seq.fetch_add(1, std::memory_order_relaxed) + 1;  // relaxed: uniqueness only
    if (seq > kMaxSeq) {
      w.claim.store(std::uint64_t{r} << 1, std::memory_order_release);  // release: as at the end of a post
      throw OutOfRange("ActionBoard sequence numbers exhausted");
    }
    Record& rec = w.rec[r];
    // release: everything this worker did before (its previous publish step) is visible to a taker that
    // sees this odd state; the fence keeps the field stores after the odd state (seqlock writer).
    rec.state.store((seq << 1) | 1, std::memory_order_release);
    std::atomic_thread_fence(std::memory_order_release);
    rec.action.store(action, std::memory_order_relaxed);      // relaxed: inside the record's seqlock
    rec.obs_step.store(obs_step, std::memory_order_relaxed);  // relaxed: inside the record's seqlock
    rec.state.store(seq << 1, std::memory_order_release);     // release: the record is complete

    const std::uint64_t packed = (seq << kIndexBits) | (2 * static_cast<std::uint64_t>(worker) + r);
    std::uint64_t cur = control().latest.load(std::memory_order_relaxed);  // relaxed: the CAS below decides
    bool won = false;
    while (cur < packed) {
      // release: the complete record happens-before a taker that loads this `latest`.
      if (control().latest.compare_exchange_weak(cur, packed, std::memory_order_release, std::memory_order_relaxed)) {
        won = true;
        break;
      }
    }
    // release: this post, publish step included, happens-before the next post with this worker id,
    // which writes the other record.
    w.claim.store(static_cast<std::uint64_t>(r ^ 1) << 1, std::memory_order_release);
    if (published) *published = won;
    return seq;
  }

  // The newest published post not taken yet, without taking it; false if there is none. A reader that
  // sees a post taken here (last_taken moved past it) also sees every store the taker made before its
  // take: last_taken is loaded with acquire, pairing with the taker's acq_rel CAS.
  bool peek(Taken* out) const noexcept {
    const Control& c = control();
    for (;;) {
      const std::uint64_t last = c.last_taken.load(std::memory_order_acquire);  // acquire: see above
      const std::uint64_t packed = c.latest.load(std::memory_order_acquire);  // acquire: the named record is complete
      if ((packed >> kIndexBits) <= last) return false;
      if (read_post(packed, out)) return true;  // else the worker has moved on twice since: `latest` has moved past it
    }
  }

  // Takes the newest published post not taken yet. Returns false if there is none.
  bool take(Taken* out) noexcept {
    Control& c = control();
    for (;;) {
      std::uint64_t last = c.last_taken.load(std::memory_order_relaxed);  // relaxed: the CAS below decides
      const std::uint64_t packed = c.latest.load(std::memory_order_acquire);  // acquire: the named record is complete
      const std::uint64_t seq = packed >> kIndexBits;
      if (seq <= last) return false;
      Taken t;
      if (!read_post(packed, &t)) {
        // The worker has moved on twice since: `latest` has moved past `seq`, so retry.
        std::atomic_thread_fence(std::memory_order_acquire);  // acquire: see the `latest` that the overwrite implies
        continue;
      }
      // acq_rel: one taker wins each seq; later takers see the counters it updated.
      if (!c.last_taken.compare_exchange_strong(last, seq, std::memory_order_acq_rel, std::memory_order_relaxed)) continue;
      c.taken.fetch_add(1, std::memory_order_relaxed);                   // relaxed: a counter
      c.superseded.fetch_add(seq - last - 1, std::memory_order_relaxed);  // relaxed: a counter
      *out = t;
      return true;
    }
  }

 private:
  // Reads the post `packed` (seq and record index, as in `latest`) whole into *out; false if its worker
  // has overwritten that record since (a seqlock read: state, fields, state again).
  bool read_post(std::uint64_t packed, Taken* out) const noexcept {
    const std::uint64_t seq = packed >> kIndexBits;
    const std::uint64_t index = packed & ((std::uint64_t{1} << kIndexBits) - 1);
    const Record& rec = workers()[index / 2].rec[index % 2];
    const std::uint64_t s0 = rec.state.load(std::memory_order_acquire);  // acquire: the fields below are at least this new
    const std::int64_t action = rec.action.load(std::memory_order_relaxed);      // relaxed: validated below
    const std::int64_t obs_step = rec.obs_step.load(std::memory_order_relaxed);  // relaxed: validated below
    std::atomic_thread_fence(std::memory_order_acquire);  // acquire: the field loads complete before the re-read
    const std::uint64_t s1 = rec.state.load(std::memory_order_relaxed);  // relaxed: ordered by the fence above
    if (s0 != (seq << 1) || s1 != s0) return false;
    out->action = action;
    out->obs_step = obs_step;
    out->worker = static_cast<std::int32_t>(index / 2);
    out->seq = seq;
    return true;
  }

  Control& control() const noexcept { return *reinterpret_cast<Control*>(base_); }
  Worker* workers() const noexcept { return reinterpret_cast<Worker*>(base_ + sizeof(Control)); }

  unsigned char* base_;
  std::uint32_t max_workers_;
};

}  // namespace rtcore::board
