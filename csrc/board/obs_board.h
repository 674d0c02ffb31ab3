// ObsBoard: the newest observation (a stack of the newest `frame_stack` frames) and the env step it was
// taken at, handed from the environment (one writer) to the inference workers (many readers).
//
// Layout (a view over caller-provided memory: a shared-memory segment, or the heap in tests):
//   Control   one cache line: `head` = publish number of the newest complete frame (0: none yet), and
//             on its own line the futex word readers sleep on in wait_step().
//   Slots     a ring of S = 2 * frame_stack (at least 2) slots; publish number p lives in slot p % S.
//             Each slot is a 64-byte meta line (its own seqlock sequence, p, the env step, the publish
//             number of the frame that pads the stack after an episode start) followed by the frame.
//             With an action history of K, S = 2 * max(frame_stack, K + 1) and each meta line also holds
//             `applied`: the action the env applied at that step (written by the env at its next tick).
// Publishing frame p writes only slot p % S and then moves `head`; nothing is copied per stack.
// The stack for head p is the frames p-K+1 .. p (K = frame_stack), each one replaced by the episode's
// first frame where it comes before it (padding at an episode start; the first publish ever starts one).
//
// Readers copy the K frames into caller memory, each frame under its slot's seqlock and checked to be
// the expected publish number, so a returned stack is exactly the stack of one publish: never torn,
// never mixed. With S = 2K slots, publish p + i overwrites a slot of stack p only for i > K, so a
// read retries only when the writer publishes more than K times during one read.
//
// Action history (K > 0; the delay-aware observation, see rtcore/models/history.py): read() also returns
// the actions applied at steps p-K .. p-1 (each one the action that led to the next frame; the value is
// final once frame p is published, and read under each slot's seqlock with the stack), kNoAction before
// the episode start, and the head slot's `applied` word, from which board/action_history.h resolves the
// pending slot. `applied` = action << 2 | state, state 0: the env has not started the tick of this step,
// 1: it is taking its action (begin_apply), 2: it applied a posted action, 3: it applied its default.
// publish() zeroes it inside the slot's seqlock; begin_apply/end_apply store it outside (one writer).
//
// Progress: publish() is wait-free (a bounded copy, one atomic store, a futex wake only when a reader
// sleeps). read() is lock-free (it retries only when the writer made progress) but not wait-free: a
// writer publishing more than K frames per read starves it. wait_step() blocks (futex) until a newer
// step or its deadline. One publisher at a time (the environment); concurrent publishers are not
// detected. A writer that dies mid-publish leaves the previous stack readable, and a new writer that
// attaches carries on from it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "board/futex.h"
#include "common/checked.h"
#include "common/errors.h"
#include "common/seqlock.h"
#include "sched/clock.h"

namespace rtcore::board {

class ObsBoardView {
 public:
  static constexpr std::uint32_t kLayoutVersion = 2;  // 2: SlotMeta::applied, slots for the action history
  static constexpr std::uint32_t kMaxFrameStack = 1024;
  static constexpr std::uint32_t kMaxActionHistory = 1024;
  static constexpr std::int64_t kNoAction = -1;
  // States of SlotMeta::applied (its low two bits).
  static constexpr std::uint64_t kOpen = 0, kApplying = 1, kAppliedPosted = 2, kAppliedDefault = 3;

  struct alignas(kCacheLine) Control {
    alignas(kCacheLine) std::atomic<std::uint64_t> head;     // publish number of the newest complete frame
    alignas(kCacheLine) std::atomic<std::uint32_t> futex;    // bumped on every publish; readers sleep on it
    std::atomic<std::uint32_t> sleepers;                     // readers inside futex_wait
  };
  struct alignas(kCacheLine) SlotMeta {
    std::atomic<std::uint64_t> seq;       // seqlock sequence of this slot
    std::atomic<std::uint64_t> pubno;     // publish number of the frame in the slot
    std::atomic<std::int64_t> step;       // env step of that frame
    std::atomic<std::uint64_t> pad_from;  // publish number of the episode's first frame
    std::atomic<std::uint64_t> applied;   // action << 2 | state: what the env applied at this step (see above)
  };
  static_assert(std::is_standard_layout_v<Control> && std::is_standard_layout_v<SlotMeta>, "shared-memory layout");
  static_assert(sizeof(Control) == 2 * kCacheLine && sizeof(SlotMeta) == kCacheLine, "shared-memory layout");
  static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<std::int64_t>::is_always_lock_free &&
                    std::atomic<std::uint32_t>::is_always_lock_free,
                "shared atomics must be lock-free");

  static std::uint32_t slot_count(std::uint32_t frame_stack, std::uint32_t action_history = 0) noexcept {
    const std::uint32_t reach = frame_stack > action_history + 1 ? frame_stack : action_history + 1;
    return reach < 1 ? 2 : 2 * reach;
  }
  // Frame rows are padded to whole cache lines. Checked: a frame size near 2^64 is refused, not wrapped.
  static std::size_t frame_stride(std::uint64_t frame_bytes) {
    return static_cast<std::size_t>(checked_round_up(frame_bytes, kCacheLine, "obs_shape"));
  }
  static std::size_t bytes_needed(std::uint64_t frame_bytes, std::uint32_t frame_stack, std::uint32_t action_history = 0) {
    const std::uint64_t slot = checked_add(sizeof(SlotMeta), frame_stride(frame_bytes), "obs_shape");
    return static_cast<std::size_t>(checked_add(
        sizeof(Control), checked_mul(slot_count(frame_stack, action_history), slot, "obs_shape"), "obs_shape"));
  }

  // `base` must be 64-byte aligned and zeroed on first use (zeroed memory is an empty board).
  ObsBoardView(void* base, std::size_t size, std::uint64_t frame_bytes, std::uint32_t frame_stack,
               std::uint32_t action_history = 0)
      : base_(static_cast<unsigned char*>(base)),
        frame_bytes_(frame_bytes),
        stack_(frame_stack),
        history_(action_history),
        slots_(slot_count(frame_stack, action_history)),
        stride_(sizeof(SlotMeta) + frame_stride(frame_bytes)) {
    if (frame_stack < 1 || frame_stack > kMaxFrameStack)
      throw InvalidArgument("frame_stack must be in [1, " + std::to_string(kMaxFrameStack) + "], got " + std::to_string(frame_stack));
    if (action_history > kMaxActionHistory)
      throw InvalidArgument("action_history must be in [0, " + std::to_string(kMaxActionHistory) + "], got " +
                            std::to_string(action_history));
    if (frame_bytes < 1) throw InvalidArgument("a frame must have at least one byte");
    if (reinterpret_cast<std::uintptr_t>(base) % kCacheLine)
      throw InvalidArgument("ObsBoard memory must be 64-byte aligned");
    if (size < bytes_needed(frame_bytes, frame_stack, action_history))
      throw LayoutMismatch("ObsBoard memory of " + std::to_string(size) + " bytes, expected at least " +
                           std::to_string(bytes_needed(frame_bytes, frame_stack, action_history)));
  }

  std::uint64_t frame_bytes() const noexcept { return frame_bytes_; }
  std::uint32_t frame_stack() const noexcept { return stack_; }
  std::uint32_t action_history() const noexcept { return history_; }
  std::size_t stack_bytes() const noexcept { return static_cast<std::size_t>(frame_bytes_) * stack_; }
  // Frames published so far.
  std::uint64_t published() const noexcept { return control().head.load(std::memory_order_relaxed); }  // relaxed: a count

  // Publishes one frame (frame_bytes bytes, any alignment) taken at env step `step`. Steps must be
  // >= 0 and strictly increasing (the env's global step counter, monotone across episodes).
  // `episode_start`: the stack restarts, padded with this frame.
  void publish(const void* frame, std::int64_t step, bool episode_start) {
    Control& c = control();
    const std::uint64_t prev = c.head.load(std::memory_order_relaxed);  // relaxed: only the writer changes head
    std::uint64_t pad_from = prev + 1;
    if (prev != 0) {
      const SlotMeta& pm = meta(prev);
      const std::int64_t prev_step = pm.step.load(std::memory_order_relaxed);  // relaxed: written by this writer
      if (step <= prev_step)
        throw InvalidArgument("step " + std::to_string(step) + " is not after the last published step " +
                              std::to_string(prev_step) + " (steps must increase)");
      if (!episode_start) pad_from = pm.pad_from.load(std::memory_order_relaxed);  // relaxed: written by this writer
    } else if (step < 0) {
      throw InvalidArgument("step must be >= 0, got " + std::to_string(step));
    }
    const std::uint64_t p = prev + 1;
    SlotMeta& m = meta(p);
    // A writer that died mid-publish left this slot's sequence odd (no reader waits on it: the slot was
    // not in the published stack). Make it even again so the seqlock below works.
    const std::uint64_t s = m.seq.load(std::memory_order_relaxed);  // relaxed: only the writer changes seq
    if (s & 1) m.seq.store(s + 1, std::memory_order_relaxed);       // relaxed: the fences of seq_write_begin order it
    const std::uint64_t odd = seq_write_begin(m.seq);
    m.pubno.store(p, std::memory_order_relaxed);         // relaxed: inside the slot's seqlock
    m.step.store(step, std::memory_order_relaxed);       // relaxed: inside the slot's seqlock
    m.pad_from.store(pad_from, std::memory_order_relaxed);  // relaxed: inside the slot's seqlock
    m.applied.store(kOpen, std::memory_order_relaxed);     // relaxed: inside the slot's seqlock
    seq_store(frame_ptr(p), frame, frame_bytes_);
    seq_write_end(m.seq, odd);
    c.head.store(p, std::memory_order_release);  // release: slot p is complete before head names it
    // seq_cst on both sides of the sleeper handshake (Dekker): either the reader sees the new futex
    // value, or this writer sees the reader's sleepers increment and wakes it.
    c.futex.fetch_add(1, std::memory_order_seq_cst);
    if (c.sleepers.load(std::memory_order_seq_cst) != 0) futex_wake_all(&c.futex);
  }

  // The env's side of the action history, for the newest published step `step` (one writer): before it
  // takes the action of that step's tick, and once it knows what it applies. Throws InvalidArgument if
  // `step` is not the newest published step, or for a negative action.
  void begin_apply(std::int64_t step) { head_meta(step).applied.store(kApplying, std::memory_order_relaxed); }  // relaxed: the take that follows is a release (acq_rel CAS)
  void end_apply(std::int64_t step, std::int64_t action, bool was_default) {
    if (action < 0) throw InvalidArgument("action must be >= 0, got " + std::to_string(action));
    head_meta(step).applied.store((static_cast<std::uint64_t>(action) << 2) | (was_default ? kAppliedDefault : kAppliedPosted),
                                  std::memory_order_release);  // release: readers that see it see the take before it
  }

  // What read() returns besides the stack: the publish number of the newest frame and its slot's
  // `applied` word (read under its seqlock), for resolving the pending slot (board/action_history.h).
  struct ReadInfo {
    std::uint64_t pubno = 0;
    std::uint64_t applied = 0;
  };

  // Copies the newest stack (frame_stack frames, oldest first) into `out` (stack_bytes(), any
  // alignment) and returns the env step of its newest frame; -1 (and zeros) before the first publish.
  // With `hist` (action_history() entries), also the actions applied at the K steps before that frame
  // (oldest first; kNoAction before the episode start), from the same publish; `info` gets the rest.
  std::int64_t read(void* out, std::int64_t* hist = nullptr, ReadInfo* info = nullptr) const noexcept {
    auto* dst = static_cast<unsigned char*>(out);
    for (;;) {
      const std::uint64_t p = control().head.load(std::memory_order_acquire);  // acquire: slot p is complete
      if (p == 0) {
        std::memset(dst, 0, stack_bytes());
        if (hist)
          for (std::uint32_t i = 0; i < history_; ++i) hist[i] = kNoAction;
        if (info) *info = ReadInfo{};
        return -1;
      }
      std::int64_t step;
      std::uint64_t pad_from, applied;
      if (!read_meta(p, &step, &pad_from, &applied)) continue;
      bool ok = true;
      std::uint64_t copied_pad = 0;  // index+1 of the frame in `out` holding the padding frame
      for (std::uint32_t j = 0; j < stack_ && ok; ++j) {
        const std::uint64_t want = p + j + 1 >= stack_ + pad_from ? p + j + 1 - stack_ : pad_from;
        unsigned char* d = dst + static_cast<std::size_t>(j) * frame_bytes_;
        if (want == pad_from && copied_pad) {
          std::memcpy(d, dst + (copied_pad - 1) * frame_bytes_, frame_bytes_);  // our own memory: plain copy
          continue;
        }
        ok = read_frame(want, d);
        if (want == pad_from) copied_pad = j + 1;
      }
      if (ok && hist) ok = read_history(p, pad_from, hist);
      if (ok) {
        if (info) *info = ReadInfo{p, applied};
        return step;
      }
    }
  }

  // The `applied` word of publish p, if slot p still holds it (false once it has been overwritten).
  bool applied_word(std::uint64_t p, std::uint64_t* applied) const noexcept {
    std::int64_t step;
    std::uint64_t pad_from;
    return read_meta(p, &step, &pad_from, applied);
  }

  // Step of the newest frame; -1 before the first publish.
  std::int64_t step() const noexcept {
    for (;;) {
      const std::uint64_t p = control().head.load(std::memory_order_acquire);  // acquire: slot p is complete
      if (p == 0) return -1;
      std::int64_t step;
      std::uint64_t pad_from, applied;
      if (read_meta(p, &step, &pad_from, &applied)) return step;
    }
  }

  // Blocks until a frame with step > `after` is published, and returns that step; returns -1 if
  // `deadline_ns` (absolute, CLOCK_MONOTONIC) passes first. Spins for `spin_ns` before sleeping.
  std::int64_t wait_step(std::int64_t after, std::int64_t deadline_ns, std::int64_t spin_ns = 0) const noexcept {
    Control& c = control();
    const std::int64_t spin_until = clock::now_ns() + spin_ns;
    for (;;) {
      const std::int64_t s = step();
      if (s > after) return s;
      if (clock::now_ns() >= spin_until) break;
      cpu_relax();
    }
    for (;;) {
      c.sleepers.fetch_add(1, std::memory_order_seq_cst);  // seq_cst: the sleeper handshake (see publish)
      const std::uint32_t v = c.futex.load(std::memory_order_seq_cst);  // seq_cst: as above
      const std::int64_t s = step();
      if (s > after) {
        c.sleepers.fetch_sub(1, std::memory_order_relaxed);  // relaxed: only lets the writer skip a wake
        return s;
      }
      if (clock::now_ns() >= deadline_ns) {
        c.sleepers.fetch_sub(1, std::memory_order_relaxed);  // relaxed: as above
        return -1;
      }
      futex_wait_until(&c.futex, v, deadline_ns);
      c.sleepers.fetch_sub(1, std::memory_order_relaxed);  // relaxed: as above
    }
  }

 private:
  Control& control() const noexcept { return *reinterpret_cast<Control*>(base_); }
  SlotMeta& meta(std::uint64_t p) const noexcept {
    return *reinterpret_cast<SlotMeta*>(base_ + sizeof(Control) + (p % slots_) * stride_);
  }
  unsigned char* frame_ptr(std::uint64_t p) const noexcept {
    return base_ + sizeof(Control) + (p % slots_) * stride_ + sizeof(SlotMeta);
  }

  bool read_meta(std::uint64_t p, std::int64_t* step, std::uint64_t* pad_from, std::uint64_t* applied) const noexcept {
    const SlotMeta& m = meta(p);
    const std::uint64_t s0 = seq_read_begin(m.seq);
    const std::uint64_t got = m.pubno.load(std::memory_order_relaxed);  // relaxed: validated below
    *step = m.step.load(std::memory_order_relaxed);                     // relaxed: validated below
    *pad_from = m.pad_from.load(std::memory_order_relaxed);            // relaxed: validated below
    *applied = m.applied.load(std::memory_order_acquire);              // acquire: pairs with end_apply's release
    return seq_read_valid(m.seq, s0) && got == p;
  }

  // hist[i] = the action applied at publish p - K + i (kNoAction before pad_from, the episode's first
  // frame). Those ticks ended before frame p was published, so each value is final; false if a slot
  // was overwritten meanwhile (the caller retries the whole read).
  bool read_history(std::uint64_t p, std::uint64_t pad_from, std::int64_t* hist) const noexcept {
    for (std::uint32_t i = 0; i < history_; ++i) {
      const std::uint64_t back = history_ - i;
      if (p < pad_from + back) {  // publish p - back is before the episode's first frame
        hist[i] = kNoAction;
        continue;
      }
      std::int64_t step;
      std::uint64_t pf, applied;
      if (!read_meta(p - back, &step, &pf, &applied)) return false;
      // a tick that never ended (a driver killed mid-tick) has no action: none
      hist[i] = (applied & 3) >= kAppliedPosted ? static_cast<std::int64_t>(applied >> 2) : kNoAction;
    }
    return true;
  }

  // The meta of the newest publish, which must be of `step` (writer side).
  SlotMeta& head_meta(std::int64_t step) const {
    const std::uint64_t p = control().head.load(std::memory_order_relaxed);  // relaxed: only the writer moves head
    SlotMeta& m = meta(p);
    const std::int64_t newest = p == 0 ? -1 : m.step.load(std::memory_order_relaxed);  // relaxed: our own write
    if (p == 0 || newest != step)
      throw InvalidArgument("step " + std::to_string(step) + " is not the newest published step (" +
                            std::to_string(newest) + ")");
    return m;
  }

  bool read_frame(std::uint64_t q, unsigned char* dst) const noexcept {
    const SlotMeta& m = meta(q);
    const std::uint64_t s0 = seq_read_begin(m.seq);
    if (m.pubno.load(std::memory_order_relaxed) != q) return false;  // relaxed: validated below
    seq_load(dst, frame_ptr(q), frame_bytes_);
    return seq_read_valid(m.seq, s0);
  }

  unsigned char* base_;
  std::uint64_t frame_bytes_;
  std::uint32_t stack_;
  std::uint32_t history_;
  std::uint32_t slots_;
  std::size_t stride_;
};

}  // namespace rtcore::board
