// A versioned store of flat model parameters in shared memory: learners publish, inference workers pin.
//
// The store holds B >= 2 buffers of `numel` elements each. A learner (the writer) publishes a complete
// new version by copying it into a buffer that is neither the newest nor pinned by any reader, then
// making that buffer the newest. An inference worker (a reader) *pins* the newest buffer for the whole
// of a turn and runs its model on it in place (zero copy on the CPU): a pinned buffer is never written,
// so a reader never sees a mix of two versions, and it needs no copy and no retry while it computes.
//
// Pinning is a hazard pointer (Michael 2004) per reader slot:
//   reader:  n = newest;  hazard[slot] = buffer(n);  if (newest == n) pinned, else retry
//   writer:  pick b != buffer(newest) with no hazard on b;  write b;  newest = (version + 1, b)
// Both sides use sequentially consistent operations on `newest` and the hazards: if the writer's scan
// misses a reader's hazard, that hazard store comes later in the single total order than the scan, so
// the reader's re-check of `newest` sees the publish that made its buffer stale, and it retries. Versions
// only grow, so `newest` cannot return to an old value (no ABA). The buffer contents need no seqlock:
// no buffer is ever read and written at the same time.
//
// Crashes. Each reader slot and the writer claim record an owner token: pid and process start time (from
// /proc, so a reused pid is not mistaken for the dead owner). When the writer finds no free buffer it
// checks the owners of the slots that pin one: a slot whose owner has died (a SIGKILLed worker, or a
// zombie not reaped yet) is reclaimed and its pin dropped. A writer that died mid-write leaves its claim;
// the next writer steals it and the half-written buffer, which was never the newest, is simply reused.
// So a dead process never blocks publishing for longer than it takes the next publish to notice.
//
// Guarantees: pin() is lock-free (it retries only when a publish completed meanwhile) and makes no system
// call; unpin() is wait-free. publish is wait-free apart from the copy, but *non-blocking by design*: it
// fails (returns no buffer) when another live writer holds the claim or when every non-newest buffer is
// pinned by a live reader. A skipped publish loses nothing: the learners apply to their own master copy,
// and the next publish carries it.
//
// Sizing by use. Readers that pin the newest version share its buffer, so what needs buffers is the
// number of *distinct superseded* versions pinned at once, not the number of readers: a pin lasts one
// forward pass, so a reader pinning version v holds it at most tau_pass, and the versions pinned at once
// are at most the publishes that fit in tau_pass, plus one. B = that + 2 (the newest and the one being
// written) never skips; a smaller B skips a publish only while every spare buffer is pinned, which ends
// within one pass (a skipped publish leaves `newest` unchanged, so new pins share it and the old ones
// drain). Memory is O(B x numel) for any number of readers (up to kMaxReaders slots of 64 bytes).
//
// Layout (a view over a caller's (base, size) span; the same code runs on heap memory in the C++ tests):
//   [Control, one page] [ReaderSlot x max_readers, padded to a page] [buffer 0] [buffer 1] ...
// each buffer page-aligned (good for DMA: a CUDA worker registers the buffers as pinned host memory).
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <type_traits>

#include "common/errors.h"
#include "common/liveness.h"
#include "common/seqlock.h"

namespace rtcore::params {

constexpr std::uint32_t kLayoutVersion = 1;
constexpr std::uint32_t kMaxBuffers = 64;        // buffer index lives in the low 8 bits of `newest`
constexpr std::uint32_t kMaxReaders = 4096;
constexpr std::size_t kPage = 4096;
constexpr std::uint64_t kReclaiming = 1;         // owner value while a slot's pin is being dropped

// ---- process liveness (common/liveness.h: pid + start time tokens, shared with the turnstile and
// the stagger schedule) -------------------------------------------------------------------------------
using proc::make_token;
using proc::process_alive;
using proc::read_proc_stat;
using proc::self_token;

using LivenessFn = bool (*)(std::uint64_t token);

// ---- shared layout ----------------------------------------------------------------------------------

// The structure's layout parameters (stored in the segment header; trivially copyable).
struct Layout {
  std::uint64_t numel;
  std::uint32_t elem_size;    // bytes per element
  std::uint32_t dtype;        // opaque to C++: the Python side's dtype code
  std::uint32_t buffers;
  std::uint32_t max_readers;
  std::uint64_t buffer_stride;  // bytes between buffers (page multiple)
  std::uint64_t slots_offset;
  std::uint64_t buffers_offset;
  std::uint64_t total_size;
};
static_assert(std::is_trivially_copyable_v<Layout>);

struct alignas(kCacheLine) ReaderSlot {
  std::atomic<std::uint64_t> owner;   // 0 free, kReclaiming, or the owner's token
  std::atomic<std::uint32_t> hazard;  // 0, or 1 + the pinned buffer
  std::uint32_t reserved;
};
static_assert(sizeof(ReaderSlot) == kCacheLine, "one reader slot per cache line");
static_assert(std::is_standard_layout_v<ReaderSlot>);

struct Control {
  alignas(kCacheLine) std::atomic<std::uint64_t> newest;  // (version << 8) | buffer; 0: nothing published
  alignas(kCacheLine) std::atomic<std::uint64_t> writer;  // 0, or the token of the process publishing
  // Counters for metrics (relaxed: statistics, never used for synchronisation).
  alignas(kCacheLine) std::atomic<std::uint64_t> published;
  std::atomic<std::uint64_t> skipped_no_buffer;
  std::atomic<std::uint64_t> skipped_writer_busy;
  std::atomic<std::uint64_t> reclaimed_readers;
  std::atomic<std::uint64_t> reclaimed_writers;
};
static_assert(sizeof(Control) <= kPage);
static_assert(std::is_standard_layout_v<Control>);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<std::uint32_t>::is_always_lock_free,
              "shared atomics must be lock-free");

struct Pin {
  std::uint64_t version;  // 0: nothing published yet
  int buffer;             // -1 if version == 0
};

struct Stats {
  std::uint64_t version, published, skipped_no_buffer, skipped_writer_busy, reclaimed_readers, reclaimed_writers;
};

// Result codes of begin_write().
constexpr int kNoFreeBuffer = -1;
constexpr int kWriterBusy = -2;

class ParamStore {
 public:
  static Layout make_layout(std::uint64_t numel, std::uint32_t elem_size, std::uint32_t dtype, std::uint32_t buffers,
                            std::uint32_t max_readers) {
    if (numel == 0) throw InvalidArgument("numel must be positive, got 0");
    if (elem_size != 1 && elem_size != 2 && elem_size != 4 && elem_size != 8)
      throw InvalidArgument("element size must be 1, 2, 4 or 8 bytes, got " + std::to_string(elem_size));
    if (buffers < 2 || buffers > kMaxBuffers)
      throw InvalidArgument("buffers must be in [2, " + std::to_string(kMaxBuffers) + "], got " + std::to_string(buffers));
    if (max_readers < 1 || max_readers > kMaxReaders)
      throw InvalidArgument("max_readers must be in [1, " + std::to_string(kMaxReaders) + "], got " +
                            std::to_string(max_readers));
    if (numel > (std::uint64_t{1} << 40) / elem_size) throw InvalidArgument("numel too large: " + std::to_string(numel));
    Layout l{};
    l.numel = numel;
    l.elem_size = elem_size;
    l.dtype = dtype;
    l.buffers = buffers;
    l.max_readers = max_readers;
    l.buffer_stride = round_up(numel * elem_size, kPage);
    l.slots_offset = kPage;
    l.buffers_offset = kPage + round_up(std::uint64_t{max_readers} * sizeof(ReaderSlot), kPage);
    l.total_size = l.buffers_offset + l.buffer_stride * buffers;
    return l;
  }

  // Initialises a fresh store in [base, base + size) (zeroed memory, 64-byte aligned).
  static ParamStore init(void* base, std::size_t size, const Layout& layout, LivenessFn alive = &process_alive) {
    check_span(base, size, layout);
    auto* c = new (base) Control;
    c->newest.store(0, std::memory_order_relaxed);  // relaxed: published by the segment's ready flag
    c->writer.store(0, std::memory_order_relaxed);
    c->published.store(0, std::memory_order_relaxed);
    c->skipped_no_buffer.store(0, std::memory_order_relaxed);
    c->skipped_writer_busy.store(0, std::memory_order_relaxed);
    c->reclaimed_readers.store(0, std::memory_order_relaxed);
    c->reclaimed_writers.store(0, std::memory_order_relaxed);
    auto* slots = reinterpret_cast<ReaderSlot*>(static_cast<std::uint8_t*>(base) + layout.slots_offset);
    for (std::uint32_t i = 0; i < layout.max_readers; ++i) {
      auto* s = new (&slots[i]) ReaderSlot;
      s->owner.store(0, std::memory_order_relaxed);  // relaxed: as above
      s->hazard.store(0, std::memory_order_relaxed);
    }
    return ParamStore(base, layout, alive);
  }

  // A view of a store that init() set up (in this or another process).
  static ParamStore view(void* base, std::size_t size, const Layout& layout, LivenessFn alive = &process_alive) {
    check_span(base, size, layout);
    return ParamStore(base, layout, alive);
  }

  const Layout& layout() const noexcept { return layout_; }
  std::uint64_t numel() const noexcept { return layout_.numel; }
  std::uint64_t buffer_bytes() const noexcept { return layout_.numel * layout_.elem_size; }
  void* buffer(int b) const noexcept {
    return static_cast<std::uint8_t*>(base_) + layout_.buffers_offset + layout_.buffer_stride * static_cast<std::uint64_t>(b);
  }
  // Newest published version (0: none).
  std::uint64_t version() const noexcept {
    return ctl_->newest.load(std::memory_order_acquire) >> 8;  // acquire: pairs with commit's publish
  }

  // ---- readers ---------------------------------------------------------------------------------------

  // Takes a free reader slot for `token` (reclaiming one whose owner died if none is free).
  int acquire_slot(std::uint64_t token) {
    if (token <= kReclaiming) throw InvalidArgument("reader token must be > 1");
    for (std::uint32_t i = 0; i < layout_.max_readers; ++i) {
      std::uint64_t expected = 0;
      if (slots_[i].owner.load(std::memory_order_relaxed) == 0 &&  // relaxed: a hint; the CAS decides
          slots_[i].owner.compare_exchange_strong(expected, token, std::memory_order_acq_rel,  // acq_rel: after the last owner's release
                                                  std::memory_order_relaxed)) {
        slots_[i].hazard.store(0, std::memory_order_relaxed);  // relaxed: already 0; only this owner pins it
        return static_cast<int>(i);
      }
    }
    for (std::uint32_t i = 0; i < layout_.max_readers; ++i) {
      std::uint64_t o = slots_[i].owner.load(std::memory_order_acquire);  // acquire: see the dead owner's last pin
      if (o > kReclaiming && !alive_(o) &&
          slots_[i].owner.compare_exchange_strong(o, token, std::memory_order_acq_rel, std::memory_order_relaxed)) {  // acq_rel: take it over exclusively
        slots_[i].hazard.store(0, std::memory_order_release);  // release: drop the dead owner's pin
        ctl_->reclaimed_readers.fetch_add(1, std::memory_order_relaxed);
        return static_cast<int>(i);
      }
    }
    throw SlotError("all " + std::to_string(layout_.max_readers) +
                    " reader slots of the parameter store are held by live processes; create it with more max_readers");
  }

  void release_slot(int slot) noexcept {
    slots_[slot].hazard.store(0, std::memory_order_release);  // release: reads of the pinned buffer are done
    slots_[slot].owner.store(0, std::memory_order_release);   // release: the slot is free for the next owner
  }

  // Pins the newest version for `slot` (which must hold no pin). Lock-free, no system call.
  Pin pin(int slot) noexcept {
    ReaderSlot& s = slots_[slot];
    for (;;) {
      const std::uint64_t n = ctl_->newest.load(std::memory_order_acquire);  // acquire: the buffer's contents
      if (n == 0) return {0, -1};
      const auto b = static_cast<std::uint32_t>(n & 0xff);
      s.hazard.store(b + 1, std::memory_order_seq_cst);  // seq_cst: ordered before the re-check (see top)
      if (ctl_->newest.load(std::memory_order_seq_cst) == n) return {n >> 8, static_cast<int>(b)};  // seq_cst: as above
      // A publish completed in between: our buffer may be the writer's next target; try the new newest.
    }
  }

  void unpin(int slot) noexcept {
    slots_[slot].hazard.store(0, std::memory_order_release);  // release: our reads happen-before its reuse
  }

  // The buffer `slot` pins (-1: none).
  int pinned(int slot) const noexcept {
    return static_cast<int>(slots_[slot].hazard.load(std::memory_order_relaxed)) - 1;  // relaxed: own slot
  }

  // ---- writers ---------------------------------------------------------------------------------------

  // Claims the store for writing and picks a buffer that no reader pins and that is not the newest.
  // Returns the buffer, kWriterBusy (another live process is publishing), or kNoFreeBuffer (every
  // candidate is pinned by a live reader). On success the caller fills buffer(b) and calls commit(b) or
  // abort_write().
  int begin_write(std::uint64_t token) {
    if (token <= kReclaiming) throw InvalidArgument("writer token must be > 1");
    std::uint64_t w = 0;
    if (!ctl_->writer.compare_exchange_strong(w, token, std::memory_order_acq_rel,  // acq_rel: after the last writer's commit
                                              std::memory_order_acquire)) {
      if (alive_(w) || !ctl_->writer.compare_exchange_strong(w, token, std::memory_order_acq_rel,  // acq_rel: steal a dead writer's claim
                                                             std::memory_order_relaxed)) {
        ctl_->skipped_writer_busy.fetch_add(1, std::memory_order_relaxed);
        return kWriterBusy;
      }
      ctl_->reclaimed_writers.fetch_add(1, std::memory_order_relaxed);
    }
    int b = find_free(false);
    if (b < 0) b = find_free(true);
    if (b < 0) {
      ctl_->skipped_no_buffer.fetch_add(1, std::memory_order_relaxed);
      abort_write();
      return kNoFreeBuffer;
    }
    return b;
  }

  // Makes buffer b (filled since begin_write) the newest version; returns that version.
  std::uint64_t commit(int b) noexcept {
    const std::uint64_t v = (ctl_->newest.load(std::memory_order_relaxed) >> 8) + 1;  // relaxed: only the claim holder changes it
    ctl_->newest.store((v << 8) | static_cast<std::uint64_t>(b), std::memory_order_seq_cst);  // seq_cst: publishes the buffer (release) and orders against pins (see top)
    ctl_->published.fetch_add(1, std::memory_order_relaxed);
    ctl_->writer.store(0, std::memory_order_release);  // release: the next writer sees this version
    return v;
  }

  void abort_write() noexcept {
    ctl_->writer.store(0, std::memory_order_release);  // release: as in commit
  }

  // begin_write + copy of `bytes` (== buffer_bytes()) from src + commit. Returns the version, or 0 if
  // nothing was published (writer busy or no free buffer).
  std::uint64_t publish(const void* src, std::size_t bytes, std::uint64_t token) {
    if (bytes != buffer_bytes())
      throw InvalidArgument("publish got " + std::to_string(bytes) + " bytes, expected " + std::to_string(buffer_bytes()));
    const int b = begin_write(token);
    if (b < 0) return 0;
    std::memcpy(buffer(b), src, bytes);  // no reader touches buffer b until commit makes it the newest
    return commit(b);
  }

  Stats stats() const noexcept {
    return {version(),
            ctl_->published.load(std::memory_order_relaxed),  // relaxed: statistics
            ctl_->skipped_no_buffer.load(std::memory_order_relaxed),
            ctl_->skipped_writer_busy.load(std::memory_order_relaxed),
            ctl_->reclaimed_readers.load(std::memory_order_relaxed),
            ctl_->reclaimed_writers.load(std::memory_order_relaxed)};
  }

 private:
  ParamStore(void* base, const Layout& layout, LivenessFn alive)
      : base_(base),
        layout_(layout),
        ctl_(static_cast<Control*>(base)),
        slots_(reinterpret_cast<ReaderSlot*>(static_cast<std::uint8_t*>(base) + layout.slots_offset)),
        alive_(alive) {}

  static std::uint64_t round_up(std::uint64_t n, std::uint64_t to) { return (n + to - 1) / to * to; }

  static void check_span(void* base, std::size_t size, const Layout& layout) {
    if (reinterpret_cast<std::uintptr_t>(base) % kCacheLine != 0)
      throw InvalidArgument("parameter store memory must be 64-byte aligned");
    if (size < layout.total_size)
      throw InvalidArgument("parameter store needs " + std::to_string(layout.total_size) + " bytes, got " +
                            std::to_string(size));
    if (layout.buffers < 2 || layout.buffers > kMaxBuffers || layout.max_readers < 1 ||
        layout.max_readers > kMaxReaders)
      throw LayoutMismatch("parameter store layout is corrupt (buffers " + std::to_string(layout.buffers) +
                           ", max_readers " + std::to_string(layout.max_readers) + ")");
  }

  // One pass over the reader slots: the first buffer (after the newest, round robin) that is neither the
  // newest nor pinned. With `reclaim`, pins held by dead owners are dropped first.
  int find_free(bool reclaim) {
    const std::uint64_t n = ctl_->newest.load(std::memory_order_seq_cst);  // seq_cst: see top; stable while we hold the claim
    const int newest_b = n == 0 ? -1 : static_cast<int>(n & 0xff);
    std::uint64_t pinned_mask = 0;
    for (std::uint32_t i = 0; i < layout_.max_readers; ++i) {
      const std::uint32_t h = slots_[i].hazard.load(std::memory_order_seq_cst);  // seq_cst: see top
      if (h == 0 || static_cast<int>(h) - 1 == newest_b) continue;
      if (reclaim) {
        std::uint64_t o = slots_[i].owner.load(std::memory_order_acquire);  // acquire: the owner's token
        if (o > kReclaiming && !alive_(o) &&
            slots_[i].owner.compare_exchange_strong(o, kReclaiming, std::memory_order_acq_rel,  // acq_rel: exclusive while the pin is dropped
                                                    std::memory_order_relaxed)) {
          slots_[i].hazard.store(0, std::memory_order_relaxed);  // relaxed: ordered by the release below
          slots_[i].owner.store(0, std::memory_order_release);   // release: the slot is free, with no pin
          ctl_->reclaimed_readers.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
      }
      pinned_mask |= std::uint64_t{1} << (h - 1);
    }
    const int nb = static_cast<int>(layout_.buffers);
    for (int k = 1; k <= nb; ++k) {
      const int b = (newest_b + k + nb) % nb;
      if (b != newest_b && !(pinned_mask >> b & 1)) return b;
    }
    return -1;
  }

  void* base_;
  Layout layout_;
  Control* ctl_;
  ReaderSlot* slots_;
  LivenessFn alive_;
};

}  // namespace rtcore::params
