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

constexpr std::uint32_t kLayoutVersion = 3;  // 2: StreamState::writer (a restarted writer never joins episodes); 3: Params::action_history
constexpr std::uint32_t kMaxDims = 8;
constexpr std::uint32_t kMaxNStep = 255;     // head - ready <= n_step must fit pub's low byte
constexpr std::uint32_t kMaxFrameStack = 1024;
constexpr std::uint32_t kEpOffMax = (1u << 24) - 1;  // offsets saturate: only min(off, max(stack-1, history)) matters
constexpr std::uint32_t kMaxActionHistory = 1024;
constexpr std::int64_t kNoAction = -1;  // the "none" token of action histories (before an episode start; no pending post)

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
  std::uint32_t action_history;  // K: actions applied before each sampled stack (0: none gathered)
  std::uint32_t reserved;
};
static_assert(std::is_trivially_copyable_v<Params> && std::is_standard_layout_v<Params>, "Params is in shared memory");
static_assert(sizeof(Params) == 56 + 16 + 8 * kMaxDims + 8 + 16 + 8, "Params layout changed: bump kLayoutVersion");

// Positions a sampled stack reaches back from its newest frame: its older frames, and the actions of
// its history (both stop at the episode start).
inline std::uint64_t reach_back(const Params& p) {
  return std::max<std::uint64_t>(p.frame_stack - 1, p.action_history);
}

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
                          std::uint64_t itemsize, const std::string& dtype, std::uint32_t action_history = 0) {
  using std::to_string;
  if (streams < 1) throw InvalidArgument("streams must be >= 1, got " + to_string(streams));
  if (frame_stack < 1 || frame_stack > kMaxFrameStack)
    throw InvalidArgument("frame_stack must be in [1, " + to_string(kMaxFrameStack) + "], got " + to_string(frame_stack));
  if (n_step < 1 || n_step > kMaxNStep)
    throw InvalidArgument("n_step must be in [1, " + to_string(kMaxNStep) + "], got " + to_string(n_step));
  if (!(gamma >= 0.0 && gamma <= 1.0)) throw InvalidArgument("gamma must be in [0, 1], got " + std::to_string(gamma));
  if (action_history > kMaxActionHistory)
    throw InvalidArgument("action_history must be in [0, " + to_string(kMaxActionHistory) + "], got " + to_string(action_history));
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
  const std::uint64_t per_stream_min = std::max<std::uint64_t>(frame_stack, std::uint64_t(action_history) + 1) + n_step + 1;
  if (capacity / streams < per_stream_min)
    throw InvalidArgument("capacity " + to_string(capacity) + " is too small for " + to_string(streams) +
                          " stream(s) with frame_stack=" + to_string(frame_stack) + ", action_history=" +
                          to_string(action_history) + " and n_step=" + to_string(n_step) +
                          ": each stream needs at least max(frame_stack, action_history + 1) + n_step + 1 = " +
                          to_string(per_stream_min) + " slots, so capacity must be >= " +
                          to_string(std::uint64_t(streams) * per_stream_min));
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
  p.action_history = action_history;
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
                         std::string(stored.dtype), stored.action_history);
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
  // Action histories, rows of action_history + 1 (null: not gathered; both or neither). See Ring::sample.
  std::int64_t* hist = nullptr;
  std::int64_t* next_hist = nullptr;
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

// Frame stores that bypass the cache, for rings far larger than any cache (kStreamingBytes). A frame
// written into such a ring is not read again until a sampler draws it, long after it left the cache,
// so a plain store first reads each destination line in (read-for-ownership) only to overwrite it:
// half of the add's memory traffic. Non-temporal moves (SSE2 movntdq, baseline x86-64) write whole
// lines without reading them. They are weaker than x86-TSO (common/seqlock.h): a streaming store may
// become visible before an earlier plain store, and after a later one. The writer therefore fences on
// both sides: sfence after the "writing" stamp (it is visible before any payload line), the payload,
// sfence before the "holds position p" stamp (every payload line is visible before it). With both
// fences the slot protocol is the one Ring documents: a sampler that sees any new payload byte sees
// the odd stamp when it re-checks, and one that sees the even stamp sees the whole payload. Only the
// plain-x86 build uses it (ThreadSanitizer and AddressSanitizer builds take seq_store, which they
// check). Measured (bench/replay.py, 84x84 frames, capacity 100k): see the README's add rows.
namespace streaming {

#if defined(RTCORE_SEQ_X86_ASM) && !defined(RTCORE_SEQ_ASAN)
constexpr bool kAvailable = true;

inline void sfence() noexcept { asm volatile("sfence" ::: "memory"); }

// dst 16-byte aligned (a frame row), src any alignment; 64-byte blocks, then 16-byte pieces streamed
// (an 84x84 frame ends 16 bytes into a line: a plain store there would read the line in), the last
// n % 16 bytes plain.
inline void store(void* dst, const void* src, std::size_t n) noexcept {
  std::size_t k = n / 64;
  auto* d = static_cast<unsigned char*>(dst);
  auto* s = static_cast<const unsigned char*>(src);
  const unsigned char* const s_end = s + n;
  if (k != 0) {
    asm volatile(
        "1:\n\t"
        "movdqu   (%[s]), %%xmm0\n\t"
        "movdqu 16(%[s]), %%xmm1\n\t"
        "movdqu 32(%[s]), %%xmm2\n\t"
        "movdqu 48(%[s]), %%xmm3\n\t"
        "movntdq %%xmm0,   (%[d])\n\t"
        "movntdq %%xmm1, 16(%[d])\n\t"
        "movntdq %%xmm2, 32(%[d])\n\t"
        "movntdq %%xmm3, 48(%[d])\n\t"
        "add $64, %[s]\n\t"
        "add $64, %[d]\n\t"
        "dec %[k]\n\t"
        "jnz 1b"
        : [d] "+r"(d), [s] "+r"(s), [k] "+r"(k)
        :
        : "xmm0", "xmm1", "xmm2", "xmm3", "memory", "cc");
  }
  for (std::size_t r = (n % 64) / 16; r > 0; --r, d += 16, s += 16)
    asm volatile("movdqu (%[s]), %%xmm0\n\tmovntdq %%xmm0, (%[d])" : : [d] "r"(d), [s] "r"(s) : "xmm0", "memory");
  if (s != s_end) seq_store(d, s, static_cast<std::size_t>(s_end - s));
}
#else
constexpr bool kAvailable = false;
inline void sfence() noexcept {}
inline void store(void* dst, const void* src, std::size_t n) noexcept { seq_store(dst, src, n); }
#endif

// Rings whose frames span at least this much stream their frame stores (no cache holds them).
constexpr std::uint64_t kStreamingBytes = 64ull << 20;

}  // namespace streaming

class Ring {
 public:
  // A view over `size` bytes at `base` (64-byte aligned). Zeroed memory is an empty ring. Frame stores
  // stream past the cache when the ring's frames span at least `streaming_bytes` (the tests lower it).
  Ring(void* base, std::size_t size, const Params& p, std::uint64_t streaming_bytes = streaming::kStreamingBytes)
      : p_(p), base_(static_cast<std::uint8_t*>(base)) {
    if (size < p.total_bytes)
      throw InvalidArgument("replay ring needs " + std::to_string(p.total_bytes) + " bytes, got " + std::to_string(size));
    if (reinterpret_cast<std::uintptr_t>(base) % kCacheLine != 0) throw InvalidArgument("replay ring base must be 64-byte aligned");
    streams_ = reinterpret_cast<StreamState*>(base_);
    meta_ = reinterpret_cast<SlotMeta*>(base_ + p.meta_offset);
    frames_ = base_ + p.frames_offset;
    S_ = p.slots_per_stream;
    streaming_ = streaming::kAvailable && p.frame_bytes >= 1024 && p.frame_stride % 16 == 0 &&
                 p.frame_stride * S_ * p.streams >= streaming_bytes;
  }

  // Whether add() streams its frame stores past the cache (see namespace streaming).
  bool streaming_stores() const noexcept { return streaming_; }

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

  // Appends k consecutive steps to `stream`: the same slots, metadata and final published word as k
  // calls of add() with row i of each array, written in three passes so that the fences are paid
  // once per call, not once per step: (1) every slot's "writing" stamp and metadata, in position
  // order; (2) every frame; (3) every slot's "holds position p" stamp, then `pub` once. Samplers see
  // none of the k steps until pass 3 and never a torn one: an overwritten old position q is preceded
  // in the ring by the oldest position e a sampler reads, whose "writing" stamp pass 1 stored before
  // pass 2 wrote any frame (the sfence between them when frames are streamed; x86-TSO or the release
  // fence otherwise). Wait-free. A writer killed mid-call loses the steps of that call (none of them
  // is published), as a killed add() loses its step. `was_default` and `delay` may be null (all false,
  // all 0); `next_obs` (row i read where step i ends) must be non-null if any step ends. Calls with
  // more slots than half a stream's share fall back to k add() calls.
  //
  // `writer` and `episode_start` (may be null: all false) as in add(). A call that restarts an episode
  // (an episode_start flag, or a writer other than the one whose episode is open) takes the k add()
  // calls, which close the open episode as add() documents; so does a call that would lap its own slots.
  void add_many(std::uint32_t stream, std::size_t k, const std::uint8_t* obs, const std::int64_t* action,
                const float* reward, const bool* terminated, const bool* truncated, const std::uint8_t* next_obs,
                const bool* was_default, const std::int32_t* delay, std::uint64_t writer = 0,
                const bool* episode_start = nullptr) {
    check_stream(stream);
    const std::size_t fb = p_.frame_bytes;
    std::uint64_t slots = k;
    bool restarts = false;
    for (std::size_t i = 0; i < k; ++i) {  // every step is checked before any is written
      check_step(action[i], reward[i], delay ? delay[i] : 0);
      if (terminated[i] || truncated[i]) {
        if (next_obs == nullptr) throw InvalidArgument("next_obs is required when terminated or truncated");
        ++slots;
      }
      restarts = restarts || (episode_start && episode_start[i]);
    }
    if (k == 0) return;
    StreamState& st = streams_[stream];
    const std::uint64_t owner = st.writer.load(std::memory_order_relaxed);  // relaxed: only the stream's writer stores it
    if (restarts || owner != writer || slots > S_ / 2) {
      for (std::size_t i = 0; i < k; ++i)
        add(stream, obs + i * fb, action[i], reward[i], terminated[i], truncated[i], next_obs ? next_obs + i * fb : nullptr,
            was_default ? was_default[i] : false, delay ? delay[i] : 0, writer, episode_start ? episode_start[i] : false);
      return;
    }
    const std::uint64_t h0 = st.pub.load(std::memory_order_relaxed) >> 8;  // relaxed: only this writer stores pub
    // The previous slot's state, as add() reads it from the newest slot; then carried along the steps.
    bool prev_exists = h0 > 0, prev_terminal = false;
    std::uint32_t prev_ep_off = 0, prev_term_before = 0;
    if (prev_exists) {
      const SlotMeta& prev = meta(stream, h0 - 1);  // the newest slot: nobody overwrites it but us
      const std::uint32_t pf = __atomic_load_n(&prev.ep_off_flags, __ATOMIC_RELAXED);  // relaxed: our own stream
      prev_term_before = __atomic_load_n(&prev.term_before, __ATOMIC_RELAXED);         // relaxed: our own stream
      prev_terminal = (pf & kTerminalObs) != 0;
      prev_ep_off = pf >> 8;
    }
    // Pass 1: stamps "writing" and metadata, in position order, chained as add() chains them.
    std::uint64_t h = h0;
    std::uint64_t pub = 0;
    for (std::size_t i = 0; i < k; ++i) {
      std::uint32_t ep_off = 0, term_before = 0;
      if (prev_exists && prev_terminal) {
        term_before = prev_term_before + 1;
      } else if (prev_exists) {
        term_before = prev_term_before;
        ep_off = std::min<std::uint32_t>(prev_ep_off + 1, kEpOffMax);
      }
      const std::uint32_t flags = (terminated[i] ? kTerminated : 0) | (truncated[i] ? kTruncated : 0) |
                                  ((was_default && was_default[i]) ? kWasDefault : 0) | (ep_off == 0 ? kEpisodeStart : 0);
      begin_slot(stream, h, action[i], reward[i], delay ? delay[i] : 0, term_before, flags | (ep_off << 8));
      prev_exists = true;
      prev_term_before = term_before;
      if (terminated[i] || truncated[i]) {
        const std::uint32_t off = std::min<std::uint32_t>(ep_off + 1, kEpOffMax);
        begin_slot(stream, h + 1, 0, 0.0f, 0, term_before, kTerminalObs | (off << 8));
        h += 2;
        pub = h << 8;  // the whole episode is sampleable: ready = head
        prev_terminal = true;
        prev_ep_off = off;
      } else {
        h += 1;
        pub = (h << 8) | std::min<std::uint64_t>(p_.n_step, std::uint64_t(ep_off) + 1);
        prev_terminal = false;
        prev_ep_off = ep_off;
      }
    }
    // Pass 2: the frames.
    if (streaming_) streaming::sfence();  // every "writing" stamp is visible before any streamed frame line
    h = h0;
    for (std::size_t i = 0; i < k; ++i) {
      store_frame(frame(stream, h++), obs + i * fb);
      if (terminated[i] || truncated[i]) store_frame(frame(stream, h++), next_obs + i * fb);
    }
    if (streaming_) streaming::sfence();  // every streamed frame line is visible before the stamps below
    // Pass 3: stamps "holds position p", then the published word.
    for (std::uint64_t q = h0; q < h; ++q)
      meta(stream, q).stamp.store(stamp_done(q), std::memory_order_release);  // release: the slot holds q
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
  //
  // Action history (out.hist / out.next_hist non-null, K = action_history): for a stack whose newest
  // frame is position u and whose own action is applied at position v (v = j for obs, j + k for
  // next_obs), K + 1 entries: the actions applied at positions u-K .. u-1 (the ones that led to frames
  // u-K+1 .. u; kNoAction before the episode start), then the pending slot: the action applied at u
  // when u < v and it was a posted one (not the default), else kNoAction. At act time that is the post
  // pending (or being applied) when frame u was read; it differs only if a newer post superseded it.
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
    const std::uint64_t reach = S_ - reach_back(p_);  // stack frames and history of lo must still be in the ring
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
    if (streaming_) {
      streaming::sfence();  // the stamp and metadata above are visible before any streamed payload line
      streaming::store(frame(s, pos), src, p_.frame_bytes);
      streaming::sfence();  // every streamed payload line is visible before the stamp below
    } else {
      seq_store(frame(s, pos), src, p_.frame_bytes);
    }
    m.stamp.store(stamp_done(pos), std::memory_order_release);  // release: the slot holds position pos
  }

  // add_many's passes: a slot's "writing" stamp and metadata; a frame (streamed or not).
  void begin_slot(std::uint32_t s, std::uint64_t pos, std::int64_t action, float reward, std::int32_t delay,
                  std::uint32_t term_before, std::uint32_t ep_off_flags) {
    SlotMeta& m = meta(s, pos);
    m.stamp.store(stamp_writing(pos), std::memory_order_relaxed);  // relaxed: ordered by the fence below
    std::atomic_thread_fence(std::memory_order_release);  // release: a reader that sees new payload sees this stamp
    std::uint32_t rbits;
    std::memcpy(&rbits, &reward, 4);
    __atomic_store_n(&m.action, action, __ATOMIC_RELAXED);  // relaxed: published by the stamp in pass 3
    __atomic_store_n(&m.reward_bits, rbits, __ATOMIC_RELAXED);
    __atomic_store_n(&m.delay, delay, __ATOMIC_RELAXED);
    __atomic_store_n(&m.term_before, term_before, __ATOMIC_RELAXED);
    __atomic_store_n(&m.ep_off_flags, ep_off_flags, __ATOMIC_RELAXED);
  }

  void store_frame(std::uint8_t* dst, const std::uint8_t* src) const {
    if (streaming_)
      streaming::store(dst, src, p_.frame_bytes);
    else
      seq_store(dst, src, p_.frame_bytes);
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
    const std::uint64_t H = out.hist ? p_.action_history : 0;
    const std::uint64_t e = js - std::min<std::uint64_t>(ep_off, std::max<std::uint64_t>(K - 1, H));  // oldest position read
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
    if (out.hist) {
      gather_history(s, js, ep_off, j, out.hist + row * (H + 1));
      gather_history(s, b, ep_off + k, j + k, out.next_hist + row * (H + 1));
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

  // The history of a stack ending at position u (`off` positions after its episode's start), whose own
  // action is applied at position v >= u (see sample()). Positions read are >= the caller's oldest e.
  void gather_history(std::uint32_t s, std::uint64_t u, std::uint64_t off, std::uint64_t v, std::int64_t* h) const {
    const std::uint64_t H = p_.action_history;
    for (std::uint64_t i = 0; i < H; ++i) {
      const std::uint64_t back = H - i;  // position u - back
      h[i] = back <= off ? __atomic_load_n(&meta(s, u - back).action, __ATOMIC_RELAXED)  // relaxed: validated by the caller
                         : kNoAction;
    }
    if (u < v) {
      const SlotMeta& m = meta(s, u);
      const std::uint32_t f = __atomic_load_n(&m.ep_off_flags, __ATOMIC_RELAXED);  // relaxed: validated by the caller
      h[H] = (f & kWasDefault) ? kNoAction : __atomic_load_n(&m.action, __ATOMIC_RELAXED);  // relaxed: as above
    } else {
      h[H] = kNoAction;
    }
  }

  Params p_;
  std::uint8_t* base_;
  StreamState* streams_;
  SlotMeta* meta_;
  std::uint8_t* frames_;
  std::uint64_t S_;
  bool streaming_ = false;
};

}  // namespace rtcore::replay
