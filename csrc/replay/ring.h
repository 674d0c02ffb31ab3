// The replay ring: transitions of several environment streams in one flat span of memory (heap in
// the C++ tests, a shared-memory segment in production), one writer per stream, any number of
// samplers, no lock anywhere.
//
//   StreamState[streams]              one cache line each: `pub` = head << 8 | (head - ready)
//   SlotMeta[streams * S]             32 bytes per slot: stamp, action, reward, delay, flags, ...
//   frames[streams * S][frame_stride] one observation frame per slot, 64-byte aligned rows
//
// Stream s owns S = capacity / streams slots; position p lives in slot p % S and holds the frame
// before its action; the next obs of p is the frame of p + 1 (an episode end adds a terminal-obs slot).
// Invariants: a slot's stamp is 2p+1 while position p is written and 2p+2 after (stamps only grow); a
// copy of positions e..b is whole iff stamp(e) is still 2e+2 afterwards (a stream is written in
// order, so any overwrite in [e, b] overwrites e first); `pub` packs head and the sampleable bound in
// one word, so a writer killed mid-add publishes all of it or none. A writer of another process never
// continues a dead writer's episode: it closes it as truncated and starts a new one (Ring::add).
// add: wait-free; sample: lock-free (a torn draw is redrawn; Timeout after a bounded number); size:
// approximate while writers run. Only one writer per stream at a time.
// The design, its alternatives and the crash story: docs/design/replay.md.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "common/checked.h"
#include "common/errors.h"
#include "common/seqlock.h"

namespace rtcore::replay {

constexpr std::uint32_t kLayoutVersion = 2;  // 2: StreamState::writer (a restarted writer never joins episodes)
constexpr std::uint32_t kMaxDims = 8;
constexpr std::uint32_t kMaxNStep = 255;     // head - ready <= n_step must fit pub's low byte
constexpr std::uint32_t kMaxFrameStack = 1024;
constexpr std::uint32_t kEpOffMax = (1u << 24) - 1;  // offsets saturate: only min(off, stack-1) matters

// Slot flags (low byte of SlotMeta::ep_off_flags).
constexpr std::uint32_t kTerminated = 1u << 0;
constexpr std::uint32_t kTruncated = 1u << 1;
constexpr std::uint32_t kWasDefault = 1u << 2;
constexpr std::uint32_t kEpisodeStart = 1u << 3;
constexpr std::uint32_t kTerminalObs = 1u << 4;  // holds the final next_obs of an episode; not a transition

// Layout parameters, stored in the segment header (Segment::params<Params>).
struct Params {
  std::uint64_t capacity;          // as requested
  std::uint64_t slots_per_stream;  // S = capacity / streams
  std::uint64_t frame_bytes;       // one observation
  std::uint64_t frame_stride;      // frame_bytes rounded up to 8 (< 64 bytes) or 64
  std::uint64_t meta_offset;       // bytes from base
  std::uint64_t frames_offset;     // bytes from base
  std::uint64_t total_bytes;       // the span the ring needs
  std::uint32_t streams;
  std::uint32_t frame_stack;
  std::uint32_t n_step;
  std::uint32_t ndim;
  std::int64_t shape[kMaxDims];
  double gamma;
  char dtype[16];  // numpy dtype.str of an observation, e.g. "|u1", "<f4"
};
static_assert(std::is_trivially_copyable_v<Params> && std::is_standard_layout_v<Params>, "Params is in shared memory");
static_assert(sizeof(Params) == 56 + 16 + 8 * kMaxDims + 8 + 16, "Params layout changed: bump kLayoutVersion");

struct alignas(kCacheLine) StreamState {
  std::atomic<std::uint64_t> pub;     // head << 8 | (head - ready); written only by the stream's writer
  std::atomic<std::uint64_t> writer;  // token of the process whose episode is open (see Ring::add); 0: none
  std::uint8_t pad[kCacheLine - 16];
};
static_assert(sizeof(StreamState) == kCacheLine && std::is_standard_layout_v<StreamState>);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "shared atomics must be lock-free");

// Every field except stamp is accessed with relaxed atomic operations (a sampler may read it while a
// writer overwrites it); the stamp protocol above decides whether what was read is kept.
struct SlotMeta {
  std::atomic<std::uint64_t> stamp;  // 0 never written, 2p+1 writing position p, 2p+2 holds position p
  std::int64_t action;
  std::uint32_t reward_bits;  // float32
  std::int32_t delay;
  std::uint32_t term_before;   // terminal-obs slots at earlier positions of this stream (mod 2^32)
  std::uint32_t ep_off_flags;  // flags | min(position - episode start, kEpOffMax) << 8
};
static_assert(sizeof(SlotMeta) == 32 && std::is_standard_layout_v<SlotMeta>, "SlotMeta layout: bump kLayoutVersion");

constexpr std::uint64_t stamp_writing(std::uint64_t p) { return 2 * p + 1; }
constexpr std::uint64_t stamp_done(std::uint64_t p) { return 2 * p + 2; }

inline std::uint64_t round_up(std::uint64_t n, std::uint64_t a) { return (n + a - 1) / a * a; }

// Validates the shape of a ring and computes its layout. Throws InvalidArgument naming what is wrong
// (every size is checked arithmetic: a capacity or shape whose bytes overflow is refused, not wrapped).
inline Params make_params(std::uint64_t capacity, std::uint32_t streams, std::uint32_t frame_stack,
                          std::uint32_t n_step, double gamma, const std::vector<std::int64_t>& shape,
                          std::uint64_t itemsize, const std::string& dtype) {
  using std::to_string;
  if (streams < 1) throw InvalidArgument("streams must be >= 1, got " + to_string(streams));
  if (frame_stack < 1 || frame_stack > kMaxFrameStack)
    throw InvalidArgument("frame_stack must be in [1, " + to_string(kMaxFrameStack) + "], got " + to_string(frame_stack));
  if (n_step < 1 || n_step > kMaxNStep)
    throw InvalidArgument("n_step must be in [1, " + to_string(kMaxNStep) + "], got " + to_string(n_step));
  if (!(gamma >= 0.0 && gamma <= 1.0)) throw InvalidArgument("gamma must be in [0, 1], got " + std::to_string(gamma));
  if (shape.size() > kMaxDims)
    throw InvalidArgument("obs_shape has " + to_string(shape.size()) + " dimensions, at most " + to_string(kMaxDims) +
                          " are supported");
  if (itemsize < 1) throw InvalidArgument("obs dtype has itemsize 0");
  if (dtype.empty() || dtype.size() >= sizeof(Params::dtype)) throw InvalidArgument("obs dtype string '" + dtype + "' is invalid");
  std::uint64_t frame_bytes = itemsize;
  for (std::int64_t d : shape) {
    if (d < 1) throw InvalidArgument("obs_shape dimensions must be >= 1, got " + to_string(d));
    frame_bytes = checked_mul(frame_bytes, static_cast<std::uint64_t>(d), "obs_shape");
  }
  if (frame_bytes > (1ull << 40)) throw InvalidArgument("obs_shape is too large: one observation is larger than 1 TiB");
  const std::uint64_t per_stream_min = std::uint64_t(frame_stack) + n_step + 1;
  if (capacity / streams < per_stream_min)
    throw InvalidArgument("capacity " + to_string(capacity) + " is too small for " + to_string(streams) +
                          " stream(s) with frame_stack=" + to_string(frame_stack) + " and n_step=" + to_string(n_step) +
                          ": each stream needs at least frame_stack + n_step + 1 = " + to_string(per_stream_min) +
                          " slots, so capacity must be >= " + to_string(std::uint64_t(streams) * per_stream_min));
  Params p{};
  p.capacity = capacity;
  p.slots_per_stream = capacity / streams;
  p.frame_bytes = frame_bytes;
  p.frame_stride = frame_bytes < kCacheLine ? round_up(frame_bytes, 8) : round_up(frame_bytes, kCacheLine);
  p.streams = streams;
  p.frame_stack = frame_stack;
  p.n_step = n_step;
  p.ndim = static_cast<std::uint32_t>(shape.size());
  for (std::size_t i = 0; i < shape.size(); ++i) p.shape[i] = shape[i];
  p.gamma = gamma;
  std::memcpy(p.dtype, dtype.data(), dtype.size());
  const std::uint64_t slots = p.slots_per_stream * streams;  // <= capacity
  p.meta_offset = round_up(sizeof(StreamState) * std::uint64_t{streams}, kCacheLine);  // streams < 2^32: no overflow
  p.frames_offset = checked_round_up(checked_add(p.meta_offset, checked_mul(sizeof(SlotMeta), slots, "capacity"), "capacity"),
                                     kCacheLine, "capacity");
  p.total_bytes = checked_add(p.frames_offset, checked_mul(p.frame_stride, slots, "capacity"), "capacity");
  return p;
}

// Re-validates layout parameters read from a segment header: the ring a corrupted or foreign header
// describes is refused with LayoutMismatch before any view is built over it. `payload_size` is the span
// available; `itemsize` is the size numpy gives the stored dtype string.
inline void check_params(const Params& stored, std::uint64_t payload_size, std::uint64_t itemsize) {
  auto bad = [](const std::string& why) { return LayoutMismatch("replay segment has a corrupt layout: " + why); };
  if (std::memchr(stored.dtype, 0, sizeof stored.dtype) == nullptr) throw bad("its dtype string is not terminated");
  if (stored.ndim > kMaxDims) throw bad("ndim " + std::to_string(stored.ndim));
  Params expect;
  try {
    expect = make_params(stored.capacity, stored.streams, stored.frame_stack, stored.n_step, stored.gamma,
                         std::vector<std::int64_t>(stored.shape, stored.shape + stored.ndim), itemsize,
                         std::string(stored.dtype));
  } catch (const InvalidArgument& e) {
    throw bad(e.what());
  }
  if (std::memcmp(&expect, &stored, sizeof stored) != 0)
    throw bad("the stored sizes and offsets are not the ones its capacity, streams and shape give");
  if (expect.total_bytes > payload_size)
    throw bad("it needs " + std::to_string(expect.total_bytes) + " bytes, the segment has " + std::to_string(payload_size));
}

// Caller-owned output arrays of one batch (C-contiguous; obs rows are frame_stack * frame_bytes).
struct SampleOut {
  std::uint8_t* obs;
  std::uint8_t* next_obs;
  std::int64_t* action;
  float* reward;
  bool* done;
  float* discount;
  bool* was_default;
  std::int32_t* delay;
  std::int64_t* index;
};

// xoshiro256**: a fast, small-state generator, one per sampler handle.
class Rng {
 public:
  explicit Rng(std::uint64_t seed = 0) { reseed(seed); }
  void reseed(std::uint64_t seed) {
    for (auto& w : s_) {  // splitmix64 expansion of the seed
      seed += 0x9e3779b97f4a7c15ull;
      std::uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      w = z ^ (z >> 31);
    }
  }
  std::uint64_t next() {
    const std::uint64_t r = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return r;
  }
  // Uniform in [0, n) by Lemire's multiply-shift (bias below n / 2^64, far under any test's reach).
  std::uint64_t below(std::uint64_t n) { return static_cast<std::uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64); }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t s_[4];
};

// Per-sampler scratch (allocated once per handle, so sample() never allocates).
struct SampleScratch {
  std::vector<std::uint64_t> lo, cum;
  std::uint64_t collisions = 0;  // draws redrawn because a writer overwrote them (cumulative)
  void resize(std::uint32_t streams) {
    lo.assign(streams, 0);
    cum.assign(streams, 0);
  }
};

class Ring {
 public:
  // A view over `size` bytes at `base` (64-byte aligned). Zeroed memory is an empty ring.
  Ring(void* base, std::size_t size, const Params& p) : p_(p), base_(static_cast<std::uint8_t*>(base)) {
    if (size < p.total_bytes)
      throw InvalidArgument("replay ring needs " + std::to_string(p.total_bytes) + " bytes, got " + std::to_string(size));
    if (reinterpret_cast<std::uintptr_t>(base) % kCacheLine != 0) throw InvalidArgument("replay ring base must be 64-byte aligned");
    streams_ = reinterpret_cast<StreamState*>(base_);
    meta_ = reinterpret_cast<SlotMeta*>(base_ + p.meta_offset);
    frames_ = base_ + p.frames_offset;
    S_ = p.slots_per_stream;
  }

  const Params& params() const noexcept { return p_; }

  // Refuses what add() must never store: a negative action or delay, a NaN or infinite reward (it would
  // spread into every n-step return that sums it). Throws InvalidArgument naming the argument.
  static void check_step(std::int64_t action, float reward, std::int32_t delay) {
    if (action < 0) throw InvalidArgument("action must be >= 0, got " + std::to_string(action));
    if (!std::isfinite(reward)) throw InvalidArgument("reward must be finite, got " + std::to_string(reward));
    if (delay < 0) throw InvalidArgument("delay must be >= 0, got " + std::to_string(delay));
  }

  // Appends one step to `stream`. `obs` is the observation before `action`; at an episode end
  // (terminated or truncated) `next_obs` is required and stored as the episode's terminal obs.
  //
  // Episodes never join. A new episode starts (a new frame chain: stacks are padded from this frame)
  // after an episode end, when `episode_start` is set, and when `writer` (a token naming the writing
  // process, its pid and start time as params::self_token() gives; 0 in single-process tests) differs
  // from the token of the process that wrote the open episode: a restarted writer's env is a new
  // episode, never the old one continued. An episode left
  // open that way is closed as truncated (close_open_episode): its last step, whose next obs was never
  // written, is dropped, and the one before it bootstraps from the last frame written.
  //
  // Wait-free. Only one writer per stream at a time.
  void add(std::uint32_t stream, const void* obs, std::int64_t action, float reward, bool terminated, bool truncated,
           const void* next_obs, bool was_default, std::int32_t delay, std::uint64_t writer = 0,
           bool episode_start = false) {
    check_stream(stream);
    check_step(action, reward, delay);
    const bool end = terminated || truncated;
    if (end && next_obs == nullptr) throw InvalidArgument("next_obs is required when terminated or truncated");
    StreamState& st = streams_[stream];
    const std::uint64_t h = st.pub.load(std::memory_order_relaxed) >> 8;  // relaxed: only this writer stores pub
    const std::uint64_t owner = st.writer.load(std::memory_order_relaxed);  // relaxed: only the stream's writer stores it
    std::uint32_t ep_off = 0, term_before = 0;
    if (h > 0) {
      const SlotMeta& prev = meta(stream, h - 1);  // the newest slot: nobody overwrites it but us
      std::uint32_t pf = __atomic_load_n(&prev.ep_off_flags, __ATOMIC_RELAXED);  // relaxed: our own stream
      term_before = __atomic_load_n(&prev.term_before, __ATOMIC_RELAXED);      // relaxed: our own stream
      if (!(pf & kTerminalObs) && (episode_start || owner != writer)) {
        close_open_episode(stream, h, pf);
        pf |= kTerminalObs;
      }
      if (pf & kTerminalObs) {
        term_before += 1;
      } else {
        ep_off = std::min<std::uint32_t>((pf >> 8) + 1, kEpOffMax);
      }
    }
    if (owner != writer) st.writer.store(writer, std::memory_order_relaxed);  // relaxed: read only by later writers of the stream, after pub
    std::uint32_t flags = (terminated ? kTerminated : 0) | (truncated ? kTruncated : 0) | (was_default ? kWasDefault : 0) |
                          (ep_off == 0 ? kEpisodeStart : 0);
    write_slot(stream, h, obs, action, reward, delay, term_before, flags | (ep_off << 8));
    std::uint64_t pub;
    if (end) {
      const std::uint32_t off = std::min<std::uint32_t>(ep_off + 1, kEpOffMax);
      write_slot(stream, h + 1, next_obs, 0, 0.0f, 0, term_before, kTerminalObs | (off << 8));
      pub = (h + 2) << 8;  // the whole episode is sampleable: ready = head
    } else {
      const std::uint64_t delta = std::min<std::uint64_t>(p_.n_step, std::uint64_t(ep_off) + 1);
      pub = ((h + 1) << 8) | delta;  // ready = max(episode start, head - n_step)
    }
    st.pub.store(pub, std::memory_order_release);  // release: publishes the slots written above to samplers
  }

  // Positions written so far on `stream` (its head).
  std::uint64_t head(std::uint32_t stream) const {
    check_stream(stream);
    return streams_[stream].pub.load(std::memory_order_acquire) >> 8;  // acquire: pairs with add's release
  }

  // Transitions sampleable now. Exact while no writer runs; a recent value otherwise.
  std::uint64_t size() const {
    std::uint64_t total = 0;
    for (std::uint32_t s = 0; s < p_.streams; ++s) total += stream_size(s);
    return total;
  }

  std::uint64_t stream_size(std::uint32_t s) const {
    for (int attempt = 0;; ++attempt) {
      const std::uint64_t pub = streams_[s].pub.load(std::memory_order_acquire);  // acquire: slots below head are written
      std::uint64_t lo, ready;
      window(pub, lo, ready);
      if (ready <= lo) return 0;
      const std::uint32_t t_lo = __atomic_load_n(&meta(s, lo).term_before, __ATOMIC_RELAXED);  // relaxed: validated below
      const SlotMeta& last = meta(s, ready - 1);
      const std::uint32_t t_ready = __atomic_load_n(&last.term_before, __ATOMIC_RELAXED) +  // relaxed: validated below
                                    ((__atomic_load_n(&last.ep_off_flags, __ATOMIC_RELAXED) & kTerminalObs) ? 1u : 0u);
      std::atomic_thread_fence(std::memory_order_acquire);  // acquire: the loads above complete before the check
      if (meta(s, lo).stamp.load(std::memory_order_relaxed) == stamp_done(lo) || attempt >= 64)  // relaxed: fenced
        return (ready - lo) - std::min<std::uint64_t>(ready - lo, std::uint32_t(t_ready - t_lo));
    }
  }

  // Fills `batch` rows of `out` with uniformly drawn transitions (with replacement). Lock-free; never
  // allocates. Throws InvalidArgument if fewer than `batch` transitions are sampleable, Timeout if
  // writers overwrite every draw before it is copied.
  // `acted`: both stacks end `delay` positions earlier (the observation the action was computed from,
  // and the same lag before the bootstrap position), never before the episode's first frame; the
  // n-step rewards are the same. A draw whose earlier frames have left the ring is drawn again.
  void sample(std::size_t batch, const SampleOut& out, Rng& rng, SampleScratch& sc, bool acted = false) const {
    if (batch == 0) return;
    std::uint64_t total = snapshot(sc);
    const std::uint64_t available = size();
    if (available < batch)
      throw InvalidArgument("cannot sample a batch of " + std::to_string(batch) + ": only " + std::to_string(available) +
                            " transition(s) are sampleable");
    const std::size_t K = p_.frame_stack;
    const std::size_t fb = p_.frame_bytes;
    // Draws are made one ahead: while a draw is copied, the next one's metadata and first frame lines
    // are prefetched, so its random-access misses overlap this copy instead of stalling the next.
    Draw next = draw(total, rng, sc);
    for (std::size_t row = 0; row < batch; ++row) {
      std::uint8_t* obs_row = out.obs + row * K * fb;
      std::uint8_t* next_row = out.next_obs + row * K * fb;
      std::uint64_t collisions = 0;
      for (;;) {
        const Draw d = next;
        next = draw(total, rng, sc);
        const int r = try_copy(d.s, d.j, row, obs_row, next_row, out, acted);
        if (r == kCopied) break;
        if (r == kNotTransition) continue;  // a terminal-obs slot: draw again (keeps the draw uniform)
        ++sc.collisions;
        if (++collisions > kMaxCollisions)
          throw Timeout("sample gave up after " + std::to_string(kMaxCollisions) +
                        " draws in a row were overwritten by writers while being copied; the buffer is too small "
                        "for the write rate (capacity " + std::to_string(p_.capacity) + ")");
        if (collisions % 8 == 0) total = snapshot(sc);  // writers moved on: refresh the window
      }
    }
  }

  // For samplers that choose slots themselves (replay/prioritized.h): copies the transition that slot
  // `slot` of stream `s` holds into row `row` of `out` if it is sampleable now. Returns kSlotCopied,
  // kSlotSkipped (empty, being written, a terminal obs, or outside the sampleable window) or
  // kSlotOverwritten (overwritten while copied). Lock-free, like sample().
  static constexpr int kSlotCopied = 0, kSlotSkipped = 1, kSlotOverwritten = 2;
  int copy_slot(std::uint32_t s, std::uint64_t slot, std::size_t row, const SampleOut& out, bool acted = false) const {
    const std::uint64_t st = meta_[s * S_ + slot].stamp.load(std::memory_order_acquire);  // acquire: pairs with write_slot
    if (st == 0 || st % 2 == 1) return kSlotSkipped;
    const std::uint64_t j = st / 2 - 1;
    std::uint64_t lo, ready;
    window(streams_[s].pub.load(std::memory_order_acquire), lo, ready);  // acquire: slots below head are written
    if (j < lo || j >= ready) return kSlotSkipped;
    const std::size_t row_bytes = p_.frame_stack * p_.frame_bytes;
    const int r = try_copy(s, j, row, out.obs + row * row_bytes, out.next_obs + row * row_bytes, out, acted);
    return r == kCopied ? kSlotCopied : r == kNotTransition ? kSlotSkipped : kSlotOverwritten;
  }
  // Prefetches what copy_slot(s, slot) reads first (its metadata and oldest stack frame's first lines).
  void prefetch_slot(std::uint32_t s, std::uint64_t slot) const {
    __builtin_prefetch(&meta_[s * S_ + slot], 0, 3);
    const std::uint64_t back = (p_.frame_stack - 1) % S_;
    const std::uint8_t* f = frames_ + (s * S_ + (slot + S_ - back) % S_) * p_.frame_stride;
    const std::size_t ahead = std::min<std::size_t>(kPrefetchBytes, p_.frame_bytes);
    for (std::size_t a = 0; a < ahead; a += kCacheLine) __builtin_prefetch(f + a, 0, 3);
  }

 private:
  static constexpr int kCopied = 0, kNotTransition = 1, kOverwritten = 2;
  static constexpr std::size_t kPrefetchBytes = 512;  // of the next draw's oldest frame (bench/cpp/bench_replay.cpp)

  struct Draw {
    std::uint32_t s;
    std::uint64_t j;
  };

  // One uniform draw over the snapshot's windows, with its first cache lines prefetched.
  Draw draw(std::uint64_t total, Rng& rng, const SampleScratch& sc) const {
    if (total == 0) throw InvalidArgument("no transition is sampleable");
    const std::uint64_t u = rng.below(total);
    const std::uint32_t s = static_cast<std::uint32_t>(std::upper_bound(sc.cum.begin(), sc.cum.end(), u) - sc.cum.begin());
    const std::uint64_t j = sc.lo[s] + (u - (s ? sc.cum[s - 1] : 0));
    __builtin_prefetch(&meta(s, j), 0, 3);
    const std::uint8_t* f = frame(s, j >= p_.frame_stack - 1 ? j - (p_.frame_stack - 1) : 0);
    const std::size_t ahead = std::min<std::size_t>(kPrefetchBytes, p_.frame_bytes);
    for (std::size_t a = 0; a < ahead; a += kCacheLine) __builtin_prefetch(f + a, 0, 3);
    return {s, j};
  }
  static constexpr std::uint64_t kMaxCollisions = 100000;

  void check_stream(std::uint32_t stream) const {
    if (stream >= p_.streams)
      throw OutOfRange("stream " + std::to_string(stream) + " is out of range for a buffer with " +
                       std::to_string(p_.streams) + " stream(s)");
  }

  SlotMeta& meta(std::uint32_t s, std::uint64_t pos) const { return meta_[s * S_ + pos % S_]; }
  std::uint8_t* frame(std::uint32_t s, std::uint64_t pos) const { return frames_ + (s * S_ + pos % S_) * p_.frame_stride; }

  // [lo, ready): candidate transition starts of a stream given its published word.
  void window(std::uint64_t pub, std::uint64_t& lo, std::uint64_t& ready) const {
    const std::uint64_t head = pub >> 8;
    ready = head - (pub & 0xff);
    const std::uint64_t reach = S_ - (p_.frame_stack - 1);  // stack frames of lo must still be in the ring
    lo = head > reach ? head - reach : 0;
  }

  std::uint64_t snapshot(SampleScratch& sc) const {
    std::uint64_t total = 0;
    for (std::uint32_t s = 0; s < p_.streams; ++s) {
      const std::uint64_t pub = streams_[s].pub.load(std::memory_order_acquire);  // acquire: slots below head are written
      std::uint64_t lo, ready;
      window(pub, lo, ready);
      sc.lo[s] = lo;
      total += ready > lo ? ready - lo : 0;
      sc.cum[s] = total;
    }
    return total;
  }

  // Closes the open episode of stream s, whose newest slot h - 1 (flags `pf`) is a transition start
  // with no next obs: slot h - 1 becomes the episode's terminal obs (its frame is the next obs of step
  // h - 2) and step h - 2, if it is in the same episode, becomes truncated. The caller publishes the new
  // head afterwards, which makes the closed episode's last transitions sampleable.
  //
  // Both relabels are safe under concurrent samplers without a stamp change: a sampleable start j is
  // below ready <= h - 1, so it never reads slot h - 1's flags; and a chain that reads slot h - 2's
  // flags (only j = h - 1 - n_step) ends there after n steps with or without the truncated flag, with
  // the same return, discount and bootstrap frame. A writer killed between the relabels and the
  // publish leaves a state that reads the same to samplers and that the next writer recognises (the
  // newest slot is a terminal obs).
  void close_open_episode(std::uint32_t s, std::uint64_t h, std::uint32_t pf) {
    if ((pf >> 8) > 0) {  // step h - 2 is in this episode
      SlotMeta& m2 = meta(s, h - 2);
      const std::uint32_t f2 = __atomic_load_n(&m2.ep_off_flags, __ATOMIC_RELAXED);  // relaxed: our own stream
      __atomic_store_n(&m2.ep_off_flags, f2 | kTruncated, __ATOMIC_RELAXED);  // relaxed: published by add's release of pub
    }
    SlotMeta& m1 = meta(s, h - 1);
    __atomic_store_n(&m1.ep_off_flags, (pf & ~(kTerminated | kTruncated | kWasDefault | kEpisodeStart)) | kTerminalObs,
                     __ATOMIC_RELAXED);  // relaxed: as above
  }

  void write_slot(std::uint32_t s, std::uint64_t pos, const void* src, std::int64_t action, float reward,
                  std::int32_t delay, std::uint32_t term_before, std::uint32_t ep_off_flags) {
    SlotMeta& m = meta(s, pos);
    m.stamp.store(stamp_writing(pos), std::memory_order_relaxed);  // relaxed: ordered by the fence below
    std::atomic_thread_fence(std::memory_order_release);  // release: a reader that sees new payload sees this stamp
    std::uint32_t rbits;
    std::memcpy(&rbits, &reward, 4);
    __atomic_store_n(&m.action, action, __ATOMIC_RELAXED);  // relaxed: published by the stamp below
    __atomic_store_n(&m.reward_bits, rbits, __ATOMIC_RELAXED);
    __atomic_store_n(&m.delay, delay, __ATOMIC_RELAXED);
    __atomic_store_n(&m.term_before, term_before, __ATOMIC_RELAXED);
    __atomic_store_n(&m.ep_off_flags, ep_off_flags, __ATOMIC_RELAXED);
    seq_store(frame(s, pos), src, p_.frame_bytes);
    m.stamp.store(stamp_done(pos), std::memory_order_release);  // release: the slot holds position pos
  }

  int try_copy(std::uint32_t s, std::uint64_t j, std::size_t row, std::uint8_t* obs_row, std::uint8_t* next_row,
               const SampleOut& out, bool acted) const {
    const std::size_t K = p_.frame_stack;
    const std::size_t fb = p_.frame_bytes;
    const SlotMeta& mj = meta(s, j);
    if (mj.stamp.load(std::memory_order_acquire) != stamp_done(j)) return kOverwritten;  // acquire: payload below is this new
    const std::uint32_t ef = __atomic_load_n(&mj.ep_off_flags, __ATOMIC_RELAXED);  // relaxed: validated at the end
    const std::int32_t delay = __atomic_load_n(&mj.delay, __ATOMIC_RELAXED);       // relaxed: validated at the end
    // acted: the stacks end `shift` positions earlier, never before the episode start (ep_off back)
    const std::uint64_t shift = acted ? std::min<std::uint64_t>(delay > 0 ? std::uint64_t(delay) : 0, ef >> 8) : 0;
    const std::uint64_t ep_off = (ef >> 8) - shift;  // of the obs stack's newest position js
    const std::uint64_t js = j - shift;
    const std::uint64_t back = std::min<std::uint64_t>(ep_off, K - 1);
    const std::uint64_t e = js - back;  // oldest position read
    if (ef & kTerminalObs) {
      std::atomic_thread_fence(std::memory_order_acquire);  // acquire: the flag load completes before the check
      return meta(s, e).stamp.load(std::memory_order_relaxed) == stamp_done(e) ? kNotTransition : kOverwritten;  // relaxed: fenced
    }
    if (shift > 0 && meta(s, e).stamp.load(std::memory_order_relaxed) != stamp_done(e))  // relaxed: re-checked at the end
      return kNotTransition;  // the earlier frames have left the ring: not sampleable as `acted`
    // The n-step chain: rewards up to n steps or the episode end.
    double ret = 0.0, g = 1.0;
    bool done = false;
    std::uint64_t k = 0;
    for (std::uint64_t t = 0; t < p_.n_step; ++t) {
      const SlotMeta& m = meta(s, j + t);
      const std::uint32_t bits = __atomic_load_n(&m.reward_bits, __ATOMIC_RELAXED);  // relaxed: validated at the end
      const std::uint32_t f = __atomic_load_n(&m.ep_off_flags, __ATOMIC_RELAXED);     // relaxed: validated at the end
      float r;
      std::memcpy(&r, &bits, 4);
      ret += g * r;
      g *= p_.gamma;
      k = t + 1;
      if (f & (kTerminated | kTruncated)) {
        done = (f & kTerminated) != 0;
        break;
      }
    }
    // bootstrap position: the n-th next obs, or the episode's terminal obs (acted: `shift` earlier)
    const std::uint64_t b = j + k - shift;
    // Obs stack: positions max(js - (K-1-i), e), written without unsigned underflow.
    for (std::size_t i = 0; i < K; ++i) {
      const std::uint64_t p = js - std::min<std::uint64_t>(K - 1 - i, back);
      seq_load(obs_row + i * fb, frame(s, p), fb);
    }
    // Next stack: positions max(b - (K-1-i), episode start); reuse frames already copied into obs_row.
    const std::uint64_t back_b = std::min<std::uint64_t>(ep_off + k, K - 1);
    for (std::size_t i = 0; i < K; ++i) {
      const std::uint64_t q = b - std::min<std::uint64_t>(K - 1 - i, back_b);
      if (q <= js)
        std::memcpy(next_row + i * fb, obs_row + (K - 1 - (js - q)) * fb, fb);  // q >= e: already in the obs stack
      else
        seq_load(next_row + i * fb, frame(s, q), fb);
    }
    const std::int64_t action = __atomic_load_n(&mj.action, __ATOMIC_RELAXED);  // relaxed: validated below
    std::atomic_thread_fence(std::memory_order_acquire);  // acquire: every load above completes before the check
    if (meta(s, e).stamp.load(std::memory_order_relaxed) != stamp_done(e)) return kOverwritten;  // relaxed: fenced
    out.action[row] = action;
    out.reward[row] = static_cast<float>(ret);
    out.done[row] = done;
    out.discount[row] = done ? 0.0f : static_cast<float>(std::pow(p_.gamma, static_cast<double>(k)));
    out.was_default[row] = (ef & kWasDefault) != 0;
    out.delay[row] = delay;
    out.index[row] = static_cast<std::int64_t>(j * p_.streams + s);
    return kCopied;
  }

  Params p_;
  std::uint8_t* base_;
  StreamState* streams_;
  SlotMeta* meta_;
  std::uint8_t* frames_;
  std::uint64_t S_;
};

}  // namespace rtcore::replay
