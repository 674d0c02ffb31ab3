// Tests of the replay ring (csrc/replay/ring.h) on heap memory.
//
// Every frame written here is filled with one 64-bit tag encoding (stream, step, is-terminal-obs), so
// a sampled frame says exactly which step it is, and a torn frame (two tags mixed) is detectable. The
// episode structure of each stream is a fixed function of the step number, so the expected transition
// for any sampled (stream, step) can be recomputed independently (expect()) and compared field by field.
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "check.h"
#include "replay/ring.h"

using namespace rtcore::replay;

namespace {

struct HeapSpan {
  explicit HeapSpan(std::size_t n) : size(round_up(n, 64)), ptr(std::aligned_alloc(64, size)) { std::memset(ptr, 0, size); }
  ~HeapSpan() { std::free(ptr); }
  std::size_t size;
  void* ptr;
};

// The synthetic environment: stream s has episodes of length L(s); episode k ends terminated unless
// k % 3 == 2 (truncated).
struct World {
  std::uint32_t frame_words;
  std::uint64_t L(std::uint32_t s) const { return 5 + 2 * s; }
  static std::uint64_t tag(std::uint32_t s, std::uint64_t t, bool terminal) {
    return (std::uint64_t(s) << 48) | (std::uint64_t(terminal) << 47) | t;
  }
  static float reward(std::uint64_t t) { return float(t % 11) * 0.5f - 1.0f; }
  static std::int64_t action(std::uint32_t s, std::uint64_t t) { return std::int64_t(t * 3 + s); }
  static bool was_default(std::uint64_t t) { return t % 4 == 0; }
  static std::int32_t delay(std::uint64_t t) { return std::int32_t(t % 9); }
  bool ends(std::uint32_t s, std::uint64_t t) const { return (t + 1) % L(s) == 0; }
  bool terminated(std::uint32_t s, std::uint64_t t) const { return ends(s, t) && (t / L(s)) % 3 != 2; }
  bool truncated(std::uint32_t s, std::uint64_t t) const { return ends(s, t) && (t / L(s)) % 3 == 2; }

  void add(Ring& r, std::uint32_t s, std::uint64_t t, std::vector<std::uint64_t>& a, std::vector<std::uint64_t>& b) const {
    std::fill(a.begin(), a.end(), tag(s, t, false));
    std::fill(b.begin(), b.end(), tag(s, t, true));
    r.add(s, a.data(), action(s, t), reward(t), terminated(s, t), truncated(s, t), ends(s, t) ? b.data() : nullptr,
          was_default(t), delay(t));
  }
};

struct Batch {
  Batch(std::size_t n, std::size_t K, std::size_t frame_bytes)
      : obs(n * K * frame_bytes / 8), next(n * K * frame_bytes / 8), action(n), reward(n), done(n), discount(n),
        was_default(n), delay(n), index(n) {}
  SampleOut out() {
    return SampleOut{reinterpret_cast<std::uint8_t*>(obs.data()), reinterpret_cast<std::uint8_t*>(next.data()),
                     action.data(), reward.data(), done.get(), discount.data(), was_default.get(), delay.data(),
                     index.data()};
  }
  std::vector<std::uint64_t> obs, next;
  std::vector<std::int64_t> action;
  std::vector<float> reward;
  struct Bools {
    explicit Bools(std::size_t n) : v(new bool[n]()) {}
    bool* get() { return v.get(); }
    bool& operator[](std::size_t i) { return v[i]; }
    std::unique_ptr<bool[]> v;
  } done;
  std::vector<float> discount;
  Bools was_default;
  std::vector<std::int32_t> delay;
  std::vector<std::int64_t> index;
};

// Decodes one frame of a sampled row; returns false if the frame is torn (words disagree).
bool frame_tag(const std::uint64_t* f, std::uint32_t words, std::uint64_t& tag) {
  tag = f[0];
  for (std::uint32_t w = 1; w < words; ++w)
    if (f[w] != tag) return false;
  return true;
}

// Checks row `i` of a batch against the world; returns a description of the first mismatch or "".
std::string verify_row(const World& w, const Params& p, Batch& b, std::size_t i) {
  const std::uint32_t K = p.frame_stack, words = w.frame_words;
  const std::uint64_t* obs = b.obs.data() + i * K * words;
  const std::uint64_t* nxt = b.next.data() + i * K * words;
  std::uint64_t last;
  if (!frame_tag(obs + (K - 1) * words, words, last)) return "torn obs frame";
  if (last & (1ull << 47)) return "a terminal-obs slot was sampled as a transition";
  const std::uint32_t s = std::uint32_t(last >> 48);
  const std::uint64_t t = last & ((1ull << 47) - 1);
  if (s >= p.streams) return "bad stream in frame";
  if (std::uint64_t(b.index[i]) % p.streams != s) return "index names another stream";
  const std::uint64_t L = w.L(s), e0 = t - t % L, u = t % L;
  for (std::uint32_t k = 0; k < K; ++k) {
    std::uint64_t tg;
    if (!frame_tag(obs + k * words, words, tg)) return "torn obs frame";
    const std::uint64_t want_t = std::max<std::int64_t>(std::int64_t(t) - std::int64_t(K - 1 - k), std::int64_t(e0));
    if (tg != World::tag(s, want_t, false)) return "obs stack frame " + std::to_string(k) + " is the wrong step";
  }
  const std::uint64_t m = std::min<std::uint64_t>(p.n_step, L - u);
  const bool ended = u + m == L;
  double ret = 0, g = 1;
  for (std::uint64_t q = 0; q < m; ++q) {
    ret += g * World::reward(t + q);
    g *= p.gamma;
  }
  const bool done = ended && w.terminated(s, e0 + L - 1);
  if (b.action[i] != World::action(s, t)) return "action mismatch";
  if (std::fabs(b.reward[i] - float(ret)) > 1e-5f * (1 + std::fabs(float(ret)))) return "n-step reward mismatch";
  if (b.done[i] != done) return "done mismatch";
  const float disc = done ? 0.0f : float(std::pow(p.gamma, double(m)));
  if (std::fabs(b.discount[i] - disc) > 1e-6f) return "discount mismatch";
  if (b.was_default[i] != World::was_default(t)) return "was_default mismatch";
  if (b.delay[i] != World::delay(t)) return "delay mismatch";
  for (std::uint32_t k = 0; k < K; ++k) {
    std::uint64_t tg;
    if (!frame_tag(nxt + k * words, words, tg)) return "torn next_obs frame";
    const std::int64_t off = std::max<std::int64_t>(std::int64_t(u + m) - std::int64_t(K - 1 - k), 0);
    const std::uint64_t want = std::uint64_t(off) == L ? World::tag(s, e0 + L - 1, true) : World::tag(s, e0 + off, false);
    if (tg != want) return "next_obs stack frame " + std::to_string(k) + " is the wrong step";
  }
  return "";
}

Params small_params(std::uint64_t capacity, std::uint32_t streams, std::uint32_t K, std::uint32_t n, std::uint32_t words,
                    std::uint32_t history = 0) {
  return make_params(capacity, streams, K, n, 0.9, {std::int64_t(words)}, 8, "<u8", history);
}

// Checks the action histories of row `i` (learn_on applied: the pending slots are none) against the
// world: the actions of the H steps before the obs stack's newest step t and before the bootstrap step.
std::string verify_history(const World& w, const Params& p, const Batch& b, const std::vector<std::int64_t>& hist,
                           const std::vector<std::int64_t>& next_hist, std::size_t i) {
  const std::uint32_t H = p.action_history, words = w.frame_words, K = p.frame_stack;
  const std::uint64_t last = b.obs[(i * K + K - 1) * words];
  const std::uint32_t s = std::uint32_t(last >> 48);
  const std::uint64_t t = last & ((1ull << 47) - 1), L = w.L(s), e0 = t - t % L;
  const std::uint64_t m = std::min<std::uint64_t>(p.n_step, L - t % L);
  for (int which = 0; which < 2; ++which) {
    const std::int64_t* h = (which ? next_hist.data() : hist.data()) + i * (H + 1);
    const std::uint64_t u = which ? t + m : t;  // the bootstrap stack ends m steps later (or at the terminal obs)
    for (std::uint32_t k = 0; k < H; ++k) {
      const std::int64_t q = std::int64_t(u) - std::int64_t(H) + std::int64_t(k);
      const std::int64_t want = q >= std::int64_t(e0) ? World::action(s, std::uint64_t(q)) : -1;
      if (h[k] != want) return std::string(which ? "next " : "") + "history slot " + std::to_string(k) + " mismatch";
    }
    if (h[H] != -1) return "a pending slot with learn_on applied";
  }
  return "";
}

}  // namespace

TEST(params_validation_names_the_problem) {
  CHECK_THROWS(small_params(0, 1, 1, 1, 4), rtcore::InvalidArgument);
  CHECK_THROWS(small_params(100, 0, 1, 1, 4), rtcore::InvalidArgument);
  CHECK_THROWS(small_params(100, 1, 0, 1, 4), rtcore::InvalidArgument);
  CHECK_THROWS(small_params(100, 1, 1, 0, 4), rtcore::InvalidArgument);
  CHECK_THROWS(small_params(100, 1, 1, 256, 4), rtcore::InvalidArgument);
  CHECK_THROWS(make_params(100, 1, 1, 1, 1.5, {4}, 1, "|u1"), rtcore::InvalidArgument);
  CHECK_THROWS(make_params(100, 1, 1, 1, 0.9, {0}, 1, "|u1"), rtcore::InvalidArgument);
  // Each stream needs frame_stack + n_step + 1 slots.
  CHECK_THROWS(small_params(4 * (4 + 3 + 1) - 1, 4, 4, 3, 4), rtcore::InvalidArgument);
  const Params p = small_params(4 * (4 + 3 + 1), 4, 4, 3, 4);
  CHECK_EQ(p.slots_per_stream, 8u);
  try {
    small_params(10, 4, 4, 3, 4);
  } catch (const rtcore::InvalidArgument& e) {
    CHECK(std::string(e.what()).find("capacity must be >= 32") != std::string::npos);
  }
}

TEST(layout_is_aligned_and_strides_are_padded) {
  const Params a = make_params(1000, 3, 4, 1, 0.99, {84, 84}, 1, "|u1");
  CHECK_EQ(a.frame_bytes, 7056u);
  CHECK_EQ(a.frame_stride, 7104u);  // 64-byte rows
  CHECK_EQ(a.meta_offset % 64, 0u);
  CHECK_EQ(a.frames_offset % 64, 0u);
  CHECK(a.total_bytes >= a.frames_offset + 3 * 333 * 7104);
  const Params v = make_params(100, 1, 1, 1, 0.99, {3}, 4, "<f4");
  CHECK_EQ(v.frame_bytes, 12u);
  CHECK_EQ(v.frame_stride, 16u);  // small frames: 8-byte rows
}

TEST(empty_ring_has_nothing_to_sample) {
  const Params p = small_params(64, 2, 2, 1, 4);
  HeapSpan mem(p.total_bytes);
  Ring r(mem.ptr, mem.size, p);
  CHECK_EQ(r.size(), 0u);
  Batch b(1, 2, 32);
  Rng rng(1);
  SampleScratch sc;
  sc.resize(2);
  CHECK_THROWS(r.sample(1, b.out(), rng, sc), rtcore::InvalidArgument);
  CHECK_THROWS(r.head(2), rtcore::OutOfRange);
  std::uint64_t f[4] = {};
  CHECK_THROWS(r.add(2, f, 0, 0, false, false, nullptr, false, 0), rtcore::OutOfRange);
  CHECK_THROWS(r.add(0, f, 0, 0, true, false, nullptr, false, 0), rtcore::InvalidArgument);  // next_obs missing
  CHECK_EQ(r.head(0), 0u);  // the rejected add wrote nothing
}

TEST(size_counts_complete_n_step_chains_and_skips_terminal_slots) {
  // One stream, L = 5, n = 3, big enough never to wrap.
  World w{4};
  const Params p = small_params(1000, 1, 2, 3, 4);
  HeapSpan mem(p.total_bytes);
  Ring r(mem.ptr, mem.size, p);
  std::vector<std::uint64_t> a(4), b(4);
  // Before each add: ready = max(episode start, head - n); an episode end makes all its steps sampleable.
  std::uint64_t expect_sizes[] = {0, 0, 0, 0, 1, 5, 5, 5, 5, 6, 10};
  for (std::uint64_t t = 0; t < 11; ++t) {
    CHECK_EQ(r.size(), expect_sizes[t]);
    w.add(r, 0, t, a, b);
  }
  CHECK_EQ(r.head(0), 13u);  // 11 steps + the terminal obs slots of the episodes ending at steps 4 and 9
}

TEST(every_field_of_every_sample_matches_the_world) {
  for (std::uint32_t K : {1u, 2u, 4u}) {
    for (std::uint32_t n : {1u, 3u}) {
      World w{4};
      const Params p = small_params(2 * 1000, 2, K, n, 4);
      HeapSpan mem(p.total_bytes);
      Ring r(mem.ptr, mem.size, p);
      std::vector<std::uint64_t> a(4), b(4);
      for (std::uint64_t t = 0; t < 300; ++t)
        for (std::uint32_t s = 0; s < 2; ++s) w.add(r, s, t, a, b);
      Batch bt(256, K, 32);
      Rng rng(7);
      SampleScratch sc;
      sc.resize(2);
      for (int rep = 0; rep < 20; ++rep) {
        r.sample(256, bt.out(), rng, sc);
        for (std::size_t i = 0; i < 256; ++i) {
          const std::string err = verify_row(w, p, bt, i);
          if (!err.empty()) std::printf("  K=%u n=%u row %zu: %s\n", K, n, i, err.c_str());
          CHECK(err.empty());
        }
      }
      CHECK_EQ(sc.collisions, 0u);
    }
  }
}

TEST(sampling_is_uniform_and_reproducible) {
  World w{1};
  const Params p = small_params(3 * 50, 3, 1, 1, 1);
  HeapSpan mem(p.total_bytes);
  Ring r(mem.ptr, mem.size, p);
  std::vector<std::uint64_t> a(1), b(1);
  // Streams of different lengths: stream 0 has 40 steps, 1 has 20, 2 has 10 (no wrap: 50 slots each).
  for (std::uint32_t s = 0; s < 3; ++s)
    for (std::uint64_t t = 0; t < 40u >> s; ++t) w.add(r, s, t, a, b);
  const std::uint64_t n = r.size();
  std::map<std::int64_t, int> counts;
  CHECK_EQ(n, 40u + 19u + 9u);  // an unfinished episode's last step waits for its next frame
  Batch bt(n, 1, 8);
  Rng rng(3);
  SampleScratch sc;
  sc.resize(3);
  CHECK_THROWS(r.sample(n + 1, bt.out(), rng, sc), rtcore::InvalidArgument);  // more than is stored
  const int reps = 4000;
  for (int rep = 0; rep < reps; ++rep) {
    r.sample(n, bt.out(), rng, sc);
    for (auto idx : bt.index) counts[idx]++;
  }
  CHECK_EQ(counts.size(), n);  // every sampleable transition is drawn, nothing else
  const double mean = double(reps);
  for (auto& [idx, c] : counts) CHECK(std::fabs(c - mean) < 5 * std::sqrt(mean));  // 5 sigma
  // Same seed, same draws.
  Batch b1(64, 1, 8), b2(64, 1, 8);
  Rng r1(11), r2(11);
  r.sample(64, b1.out(), r1, sc);
  r.sample(64, b2.out(), r2, sc);
  CHECK(b1.index == b2.index);
}

TEST(overwritten_transitions_are_never_returned) {
  World w{4};
  const Params p = small_params(16, 1, 4, 2, 4);  // 16 slots: wraps every ~13 steps
  HeapSpan mem(p.total_bytes);
  Ring r(mem.ptr, mem.size, p);
  std::vector<std::uint64_t> a(4), b(4);
  Batch bt(64, 4, 32);
  Rng rng(5);
  SampleScratch sc;
  sc.resize(1);
  for (std::uint64_t t = 0; t < 500; ++t) {
    w.add(r, 0, t, a, b);
    const std::size_t size = r.size();
    if (size == 0) continue;
    CHECK(size <= 16 - 3);
    r.sample(size, bt.out(), rng, sc);
    for (std::size_t i = 0; i < size; ++i) {
      const std::string err = verify_row(w, p, bt, i);
      CHECK(err.empty());
      // Drawn transitions are recent: within the ring.
      const std::uint64_t tg = bt.obs[(i * 4 + 3) * 4];
      CHECK((tg & ((1ull << 47) - 1)) + 16 > t);
    }
  }
}

TEST(a_writer_that_died_mid_add_is_continued_by_the_next) {
  World w{4};
  const Params p = small_params(64, 1, 2, 2, 4);
  HeapSpan mem(p.total_bytes);
  std::vector<std::uint64_t> a(4), b(4);
  {
    Ring r(mem.ptr, mem.size, p);
    for (std::uint64_t t = 0; t < 12; ++t) w.add(r, 0, t, a, b);
  }
  const std::uint64_t size_before = Ring(mem.ptr, mem.size, p).size();
  // Simulate a SIGKILL in the middle of the next add: slot `head` stamped "writing", half its frame
  // overwritten with garbage, pub not advanced.
  auto* base = static_cast<std::uint8_t*>(mem.ptr);
  auto* st = reinterpret_cast<StreamState*>(base);
  const std::uint64_t head = st[0].pub.load() >> 8;
  auto* meta = reinterpret_cast<SlotMeta*>(base + p.meta_offset) + head % p.slots_per_stream;
  meta->stamp.store(stamp_writing(head));
  meta->action = 999;
  std::memset(base + p.frames_offset + (head % p.slots_per_stream) * p.frame_stride, 0xAB, 16);
  {
    Ring r(mem.ptr, mem.size, p);  // a new process attaching
    CHECK_EQ(r.size(), size_before);
    CHECK_EQ(r.head(0), head);
    Batch bt(128, 2, 32);
    Rng rng(9);
    SampleScratch sc;
    sc.resize(1);
    r.sample(size_before, bt.out(), rng, sc);
    for (std::size_t i = 0; i < size_before; ++i) CHECK(verify_row(w, p, bt, i).empty());
    // It carries on: the episode continues where the dead writer left it.
    for (std::uint64_t t = 12; t < 100; ++t) w.add(r, 0, t, a, b);
    const std::size_t size = r.size();
    // 100 steps in episodes of 5 + 20 terminal slots = head 120; stacks reach 1 back, so positions
    // [120 - 63, 120) are in the window, 11 of them terminal slots (positions 6k + 5).
    CHECK_EQ(size, 63u - 11u);
    r.sample(size, bt.out(), rng, sc);
    for (std::size_t i = 0; i < size; ++i) {
      const std::string err = verify_row(w, p, bt, i);
      if (!err.empty()) std::printf("  row %zu: %s\n", i, err.c_str());
      CHECK(err.empty());
    }
  }
}

TEST(sizes_that_overflow_are_refused) {
  // Each of these wrapped to a small span before sizes were checked; writes then ran past it.
  CHECK_THROWS(make_params(1ull << 62, 1, 1, 1, 0.99, {84, 84}, 1, "|u1"), rtcore::InvalidArgument);
  CHECK_THROWS(make_params(10, 1, 1, 1, 0.99, {1ll << 32, 1ll << 32}, 1, "|u1"), rtcore::InvalidArgument);
  CHECK_THROWS(make_params((1ull << 62) + 1, 3, 4, 1, 0.99, {4}, 2, "<u2"), rtcore::InvalidArgument);
  CHECK_THROWS(make_params(~0ull, 1, 1, 1, 0.99, {1}, 1, "|u1"), rtcore::InvalidArgument);
  try {
    make_params(1ull << 62, 1, 1, 1, 0.99, {84, 84}, 1, "|u1");
  } catch (const rtcore::InvalidArgument& e) {
    CHECK(std::string(e.what()).find("capacity is too large") == 0);
  }
  try {
    make_params(10, 1, 1, 1, 0.99, {1ll << 32, 1ll << 32}, 1, "|u1");
  } catch (const rtcore::InvalidArgument& e) {
    CHECK(std::string(e.what()).find("obs_shape is too large") == 0);
  }
}

TEST(check_params_refuses_a_layout_that_does_not_add_up) {
  const Params p = make_params(1000, 2, 4, 3, 0.99, {84, 84}, 1, "|u1");
  check_params(p, p.total_bytes, 1);  // as created: fine
  CHECK_THROWS(check_params(p, p.total_bytes - 1, 1), rtcore::LayoutMismatch);  // segment too small
  CHECK_THROWS(check_params(p, p.total_bytes, 2), rtcore::LayoutMismatch);      // dtype says another itemsize
  Params q = p;
  q.capacity = 1000000;  // a patched capacity: the offsets no longer match
  CHECK_THROWS(check_params(q, 1ull << 40, 1), rtcore::LayoutMismatch);
  q = p;
  q.slots_per_stream += 1;
  CHECK_THROWS(check_params(q, 1ull << 40, 1), rtcore::LayoutMismatch);
  q = p;
  q.capacity = 1ull << 62;  // overflowing: refused as a layout error, not as an argument error
  CHECK_THROWS(check_params(q, 1ull << 40, 1), rtcore::LayoutMismatch);
  q = p;
  q.ndim = 200;
  CHECK_THROWS(check_params(q, 1ull << 40, 1), rtcore::LayoutMismatch);
  q = p;
  std::memset(q.dtype, 'x', sizeof q.dtype);  // no terminating NUL
  CHECK_THROWS(check_params(q, 1ull << 40, 1), rtcore::LayoutMismatch);
  q = p;
  q.frame_stack = 0;
  CHECK_THROWS(check_params(q, 1ull << 40, 1), rtcore::LayoutMismatch);
}

TEST(bad_steps_are_refused_and_write_nothing) {
  const Params p = small_params(64, 1, 2, 3, 1);
  HeapSpan mem(p.total_bytes);
  Ring r(mem.ptr, mem.size, p);
  std::uint64_t f = 1;
  r.add(0, &f, 0, 0.0f, false, false, nullptr, false, 0);
  CHECK_THROWS(r.add(0, &f, -1, 0.0f, false, false, nullptr, false, 0), rtcore::InvalidArgument);
  CHECK_THROWS(r.add(0, &f, 1, std::nanf(""), false, false, nullptr, false, 0), rtcore::InvalidArgument);
  CHECK_THROWS(r.add(0, &f, 1, INFINITY, false, false, nullptr, false, 0), rtcore::InvalidArgument);
  CHECK_THROWS(r.add(0, &f, 1, -INFINITY, false, false, nullptr, false, 0), rtcore::InvalidArgument);
  CHECK_THROWS(r.add(0, &f, 1, 0.0f, false, false, nullptr, false, -1), rtcore::InvalidArgument);
  CHECK_EQ(r.head(0), 1u);
}

namespace {

// One sampled transition of a ring of one-word frames, by action.
struct Row {
  std::vector<std::uint64_t> obs, next;
  float reward, discount;
  bool done;
};

// Every sampleable transition of a one-stream ring with 1-word frames, keyed by action (drawn until
// `want` distinct actions were seen, or 2000 draws).
std::map<std::int64_t, Row> sample_all(Ring& r, std::size_t want) {
  const std::uint32_t K = r.params().frame_stack;
  std::map<std::int64_t, Row> rows;
  Batch b(1, K, 8);
  Rng rng(3);
  SampleScratch sc;
  sc.resize(1);
  for (int i = 0; i < 2000 && rows.size() < want; ++i) {
    r.sample(1, b.out(), rng, sc);
    rows[b.action[0]] = Row{std::vector<std::uint64_t>(b.obs.begin(), b.obs.begin() + K),
                            std::vector<std::uint64_t>(b.next.begin(), b.next.begin() + K), b.reward[0], b.discount[0],
                            b.done[0]};
  }
  return rows;
}

// Writes steps with frames 0..4 (actions 0..4, reward 1 each) as writer `w1`, then frames 10, 11, 12
// (actions 10..12) as writer `w2`, the first with `episode_start`; returns the ring's transitions.
std::map<std::int64_t, Row> restart_run(std::uint64_t w1, std::uint64_t w2, bool episode_start, std::uint64_t* size) {
  const Params p = make_params(64, 1, 3, 2, 0.5, {1}, 8, "<u8");
  static HeapSpan* mem = nullptr;
  delete mem;
  mem = new HeapSpan(p.total_bytes);
  Ring r(mem->ptr, mem->size, p);
  for (std::uint64_t t = 0; t < 5; ++t) r.add(0, &t, std::int64_t(t), 1.0f, false, false, nullptr, false, 0, w1);
  for (std::uint64_t t = 10; t < 13; ++t)
    r.add(0, &t, std::int64_t(t), 1.0f, false, false, nullptr, false, 0, w2, episode_start && t == 10);
  *size = r.size();
  return sample_all(r, *size);
}

void check_restart(const std::map<std::int64_t, Row>& rows, std::uint64_t size) {
  // The old episode ends truncated at step 3, bootstrapping from frame 4 (its last frame); step 4,
  // whose next obs was never written, is dropped. The new episode's stacks start at frame 10.
  CHECK_EQ(size, 5u);  // steps 0..3, and step 10 (its 2-step chain 10, 11 bootstraps from 12)
  CHECK_EQ(rows.size(), 5u);
  CHECK(rows.count(4) == 0 && rows.count(11) == 0);
  const Row& r3 = rows.at(3);
  CHECK(r3.obs == (std::vector<std::uint64_t>{1, 2, 3}) && r3.next == (std::vector<std::uint64_t>{2, 3, 4}));
  CHECK(!r3.done && r3.reward == 1.0f && r3.discount == 0.5f);  // truncated after one step: gamma^1
  const Row& r2 = rows.at(2);
  CHECK(r2.next == (std::vector<std::uint64_t>{2, 3, 4}) && r2.reward == 1.5f && r2.discount == 0.25f);
  const Row& r10 = rows.at(10);
  CHECK(r10.obs == (std::vector<std::uint64_t>{10, 10, 10}) && r10.next == (std::vector<std::uint64_t>{10, 11, 12}));
  CHECK(r10.reward == 1.5f && r10.discount == 0.25f && !r10.done);
}

}  // namespace

TEST(episode_start_closes_the_open_episode_as_truncated) {
  std::uint64_t size = 0;
  const auto rows = restart_run(0, 0, true, &size);
  check_restart(rows, size);
}

TEST(a_writer_of_another_process_never_continues_the_open_episode) {
  std::uint64_t size = 0;
  const auto restarted = restart_run(7, 8, false, &size);
  check_restart(restarted, size);
  // The same writer continues its episode: one chain 0..4, 10..12.
  const auto rows = restart_run(7, 7, false, &size);
  CHECK_EQ(size, 6u);
  CHECK(rows.at(4).obs == (std::vector<std::uint64_t>{2, 3, 4}) && rows.at(4).next == (std::vector<std::uint64_t>{4, 10, 11}));
}

TEST(episode_start_right_after_an_episode_end_or_on_a_fresh_stream_changes_nothing) {
  const Params p = make_params(64, 1, 2, 1, 0.5, {1}, 8, "<u8");
  HeapSpan mem(p.total_bytes);
  Ring r(mem.ptr, mem.size, p);
  std::uint64_t f = 1, g = 2;
  r.add(0, &f, 1, 0.0f, false, false, nullptr, false, 0, 0, true);
  r.add(0, &f, 2, 0.0f, true, false, &g, false, 0, 0, false);
  CHECK_EQ(r.head(0), 3u);
  r.add(0, &f, 3, 0.0f, false, false, nullptr, false, 0, 0, true);  // after an end: just the next episode
  CHECK_EQ(r.head(0), 4u);
  CHECK_EQ(r.size(), 2u);
}

TEST(restarted_episodes_never_join_under_concurrent_samplers) {
  // One writer restarts episodes mid-way (episode_start, never an episode end), so every episode is
  // closed as truncated while samplers copy; each frame's tag names (episode, its length, step), and
  // every sampled row must stay inside one episode: stacks padded with its first frame, the n-step
  // chain cut before the dropped last step, the bootstrap frame that step's frame.
  const std::uint32_t K = 3, n = 3, words = 8;
  const Params p = small_params(40, 1, K, n, words);
  HeapSpan mem(p.total_bytes);
  Ring ring(mem.ptr, mem.size, p);
  auto tag = [](std::uint64_t ep, std::uint64_t len, std::uint64_t i) { return ep << 24 | len << 12 | i; };
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> rows{0}, bad{0};
  std::thread writer([&] {
    std::vector<std::uint64_t> f(words);
    Rng rng(7);
    for (std::uint64_t ep = 1; ep < 40000; ++ep) {
      const std::uint64_t len = 1 + rng.below(9);
      for (std::uint64_t i = 0; i < len; ++i) {
        std::fill(f.begin(), f.end(), tag(ep, len, i));
        ring.add(0, f.data(), std::int64_t(tag(ep, len, i)), 1.0f, false, false, nullptr, false, 0, 0, i == 0);
      }
    }
    done.store(true, std::memory_order_release);  // release: the samplers stop after the last add
  });
  std::vector<std::thread> samplers;
  for (int k = 0; k < 2; ++k)
    samplers.emplace_back([&, k] {
      Batch bt(8, K, words * 8);
      Rng rng(50 + k);
      SampleScratch sc;
      sc.resize(1);
      auto fail = [&](const char* what) {
        if (bad.fetch_add(1, std::memory_order_relaxed) < 5) std::printf("  sampler %d: %s\n", k, what);  // relaxed: a counter
      };
      while (!done.load(std::memory_order_acquire)) {  // acquire: pairs with the writer's release
        if (ring.size() < 8) continue;
        ring.sample(8, bt.out(), rng, sc);
        for (std::size_t r = 0; r < 8; ++r) {
          const std::uint64_t a = std::uint64_t(bt.action[r]), ep = a >> 24, len = (a >> 12) & 0xfff, i = a & 0xfff;
          if (i + 1 >= len) fail("the dropped last step of a restarted episode was sampled");
          const std::uint64_t k_steps = std::min<std::uint64_t>(n, len - 1 - i);
          std::uint64_t tg;
          for (std::uint32_t j = 0; j < K; ++j) {
            if (!frame_tag(bt.obs.data() + (r * K + j) * words, words, tg)) fail("torn obs frame");
            else if (tg != tag(ep, len, i + j + 1 >= K ? i + j + 1 - K : 0)) fail("obs stack crosses an episode start");
            const std::uint64_t q = i + k_steps;
            if (!frame_tag(bt.next.data() + (r * K + j) * words, words, tg)) fail("torn next_obs frame");
            else if (tg != tag(ep, len, q + j + 1 >= K ? q + j + 1 - K : 0)) fail("next_obs joins another episode");
          }
          const float disc = float(std::pow(0.9, double(k_steps)));
          if (bt.done[r] || std::fabs(bt.discount[r] - disc) > 1e-6f) fail("truncation is not a bootstrap");
        }
        rows.fetch_add(8, std::memory_order_relaxed);  // relaxed: a counter read after join
      }
    });
  writer.join();
  for (auto& t : samplers) t.join();
  std::printf("  %llu rows checked\n", (unsigned long long)rows.load());
  CHECK_EQ(bad.load(), 0u);
}

// Two writer threads (one per stream) race three sampler threads over a ring small enough that the
// writers lap it thousands of times; every sampled row must match the world exactly.
void race_writers_and_samplers(World w, std::uint64_t streaming_bytes, bool expect_streaming, std::uint64_t steps,
                               std::size_t chunk = 1) {
  const std::uint32_t streams = 2, K = 4, n = 3;
  const Params p = small_params(streams * 48, streams, K, n, w.frame_words);
  HeapSpan mem(p.total_bytes);
  Ring ring(mem.ptr, mem.size, p, streaming_bytes);
  CHECK_EQ(ring.streaming_stores(), expect_streaming);
  std::atomic<int> writers_left{int(streams)};
  std::atomic<std::uint64_t> rows{0}, bad{0}, collisions{0};
  std::vector<std::thread> threads;
  for (std::uint32_t s = 0; s < streams; ++s)
    threads.emplace_back([&, s] {
      std::vector<std::uint64_t> a(w.frame_words), b(w.frame_words);
      if (chunk == 1) {
        for (std::uint64_t t = 0; t < steps; ++t) w.add(ring, s, t, a, b);
      } else {
        const std::size_t fw = w.frame_words;
        std::vector<std::uint64_t> obs(chunk * fw), next(chunk * fw);
        std::vector<std::int64_t> act(chunk);
        std::vector<float> rew(chunk);
        std::unique_ptr<bool[]> te(new bool[chunk]), tr(new bool[chunk]), wd(new bool[chunk]);
        std::vector<std::int32_t> dl(chunk);
        for (std::uint64_t t0 = 0; t0 < steps; t0 += chunk) {
          for (std::size_t i = 0; i < chunk; ++i) {
            const std::uint64_t t = t0 + i;
            std::fill(obs.begin() + i * fw, obs.begin() + (i + 1) * fw, World::tag(s, t, false));
            std::fill(next.begin() + i * fw, next.begin() + (i + 1) * fw, World::tag(s, t, true));
            act[i] = World::action(s, t);
            rew[i] = World::reward(t);
            te[i] = w.terminated(s, t);
            tr[i] = w.truncated(s, t);
            wd[i] = World::was_default(t);
            dl[i] = World::delay(t);
          }
          ring.add_many(s, chunk, reinterpret_cast<const std::uint8_t*>(obs.data()), act.data(), rew.data(), te.get(),
                        tr.get(), reinterpret_cast<const std::uint8_t*>(next.data()), wd.get(), dl.data());
        }
      }
      writers_left.fetch_sub(1, std::memory_order_release);  // release: the samplers stop after the last add
    });
  for (int k = 0; k < 3; ++k)
    threads.emplace_back([&, k] {
      Batch bt(16, K, w.frame_words * 8);
      Rng rng(100 + k);
      SampleScratch sc;
      sc.resize(streams);
      while (ring.size() < 16) std::this_thread::yield();
      bool last_round = false;
      while (!last_round) {
        last_round = writers_left.load(std::memory_order_acquire) == 0;  // acquire: see the final adds
        ring.sample(16, bt.out(), rng, sc);
        for (std::size_t i = 0; i < 16; ++i) {
          const std::string err = verify_row(w, p, bt, i);
          if (!err.empty()) {
            if (bad.fetch_add(1, std::memory_order_relaxed) < 5) std::printf("  sampler %d: %s\n", k, err.c_str());
          }
        }
        rows.fetch_add(16, std::memory_order_relaxed);  // relaxed: a counter read after join
      }
      collisions.fetch_add(sc.collisions, std::memory_order_relaxed);  // relaxed: read after join
    });
  for (auto& t : threads) t.join();
  std::printf("  %llu rows checked, %llu redrawn after a concurrent overwrite\n", (unsigned long long)rows.load(),
              (unsigned long long)collisions.load());
  CHECK_EQ(bad.load(), 0u);
  CHECK(rows.load() >= 16 * 3);
  for (std::uint32_t s = 0; s < streams; ++s) CHECK_EQ(ring.head(s), steps + steps / w.L(s));
}

TEST(action_histories_never_tear_under_concurrent_writers) {
  // Histories reach further back than the stacks (6 actions, 4 frames): the oldest position a sample
  // reads is the history's, and its stamp check must cover it while writers lap the ring.
  World w{4};
  const std::uint32_t streams = 2, K = 4, n = 3, H = 6;
  const Params p = small_params(streams * 40, streams, K, n, w.frame_words, H);
  HeapSpan mem(p.total_bytes);
  Ring ring(mem.ptr, mem.size, p);
  const std::uint64_t steps = 200000;
  std::atomic<int> writers_left{int(streams)};
  std::atomic<std::uint64_t> rows{0}, bad{0};
  std::vector<std::thread> threads;
  for (std::uint32_t s = 0; s < streams; ++s)
    threads.emplace_back([&, s] {
      std::vector<std::uint64_t> a(w.frame_words), b(w.frame_words);
      for (std::uint64_t t = 0; t < steps; ++t) w.add(ring, s, t, a, b);
      writers_left.fetch_sub(1, std::memory_order_release);  // release: the samplers stop after the last add
    });
  for (int k = 0; k < 2; ++k)
    threads.emplace_back([&, k] {
      Batch bt(16, K, w.frame_words * 8);
      std::vector<std::int64_t> hist(16 * (H + 1)), next_hist(16 * (H + 1));
      Rng rng(200 + k);
      SampleScratch sc;
      sc.resize(streams);
      while (ring.size() < 16) std::this_thread::yield();
      bool last_round = false;
      while (!last_round) {
        last_round = writers_left.load(std::memory_order_acquire) == 0;  // acquire: see the final adds
        SampleOut out = bt.out();
        out.hist = hist.data();
        out.next_hist = next_hist.data();
        ring.sample(16, out, rng, sc);
        for (std::size_t i = 0; i < 16; ++i) {
          std::string err = verify_row(w, p, bt, i);
          if (err.empty()) err = verify_history(w, p, bt, hist, next_hist, i);
          if (!err.empty() && bad.fetch_add(1, std::memory_order_relaxed) < 5) std::printf("  sampler %d: %s\n", k, err.c_str());
        }
        rows.fetch_add(16, std::memory_order_relaxed);  // relaxed: a counter read after join
      }
    });
  for (auto& t : threads) t.join();
  std::printf("  %llu rows checked\n", (unsigned long long)rows.load());
  CHECK_EQ(bad.load(), 0u);
  CHECK(rows.load() >= 16 * 2);
}

TEST(concurrent_writers_and_samplers_never_tear) {
  race_writers_and_samplers(World{32}, streaming::kStreamingBytes, false, 300000);  // 256-byte frames
}

TEST(streamed_frame_stores_never_tear) {
  // The same race with non-temporal frame stores (a big ring's path) forced on a small ring of 1 KB
  // frames, so that the writers lap it and the samplers meet overwrites.
  race_writers_and_samplers(World{128}, 0, streaming::kAvailable, 100000);
}

TEST(add_many_writes_what_k_adds_write) {
  // Two rings fed the same steps, one add() at a time and in add_many() chunks of varying size
  // (episode ends inside chunks, chunks that lap the ring, chunks too large for one pass, null
  // was_default/delay arrays): the two rings' memory must be identical, byte for byte, after every
  // chunk, with plain and with streamed frame stores.
  World w{16};
  for (const bool stream_frames : {false, true}) {
    const std::uint32_t streams = 2, K = 3, n = 2;
    const Params p = small_params(streams * 40, streams, K, n, w.frame_words);
    HeapSpan ma(p.total_bytes), mb(p.total_bytes);
    Ring a(ma.ptr, ma.size, p, stream_frames ? 0 : streaming::kStreamingBytes);
    Ring b(mb.ptr, mb.size, p);
    const std::size_t fw = w.frame_words;
    std::uint64_t t[2] = {0, 0};
    const std::size_t chunks[] = {1, 3, 7, 16, 2, 25, 5, 11, 1, 9};
    for (int round = 0; round < 40; ++round) {
      const std::uint32_t s = round % 2;
      const std::size_t k = chunks[round % 10];
      const bool arrays = round % 3 != 0;
      std::vector<std::uint64_t> obs(k * fw), next(k * fw);
      std::vector<std::int64_t> act(k);
      std::vector<float> rew(k);
      std::unique_ptr<bool[]> te(new bool[k]), tr(new bool[k]), wd(new bool[k]);
      std::vector<std::int32_t> dl(k);
      for (std::size_t i = 0; i < k; ++i, ++t[s]) {
        std::fill(obs.begin() + i * fw, obs.begin() + (i + 1) * fw, World::tag(s, t[s], false));
        std::fill(next.begin() + i * fw, next.begin() + (i + 1) * fw, World::tag(s, t[s], true));
        act[i] = World::action(s, t[s]);
        rew[i] = World::reward(t[s]);
        te[i] = w.terminated(s, t[s]);
        tr[i] = w.truncated(s, t[s]);
        wd[i] = World::was_default(t[s]);
        dl[i] = World::delay(t[s]);
        b.add(s, obs.data() + i * fw, act[i], rew[i], te[i], tr[i], (te[i] || tr[i]) ? next.data() + i * fw : nullptr,
              arrays ? wd[i] : false, arrays ? dl[i] : 0);
      }
      a.add_many(s, k, reinterpret_cast<const std::uint8_t*>(obs.data()), act.data(), rew.data(), te.get(), tr.get(),
                 reinterpret_cast<const std::uint8_t*>(next.data()), arrays ? wd.get() : nullptr,
                 arrays ? dl.data() : nullptr);
      CHECK_EQ(a.head(s), b.head(s));
      CHECK_EQ(a.size(), b.size());
      CHECK(std::memcmp(ma.ptr, mb.ptr, p.total_bytes) == 0);
    }
  }
}

TEST(add_many_needs_next_obs_at_an_episode_end_and_writes_nothing_without) {
  World w{4};
  const Params p = small_params(40, 1, 2, 1, w.frame_words);
  HeapSpan m(p.total_bytes);
  Ring r(m.ptr, m.size, p);
  std::vector<std::uint64_t> obs(2 * w.frame_words, 7);
  const std::int64_t act[2] = {1, 2};
  const float rew[2] = {0.f, 0.f};
  const bool te[2] = {false, true}, tr[2] = {false, false};
  CHECK_THROWS(r.add_many(0, 2, reinterpret_cast<const std::uint8_t*>(obs.data()), act, rew, te, tr, nullptr, nullptr,
                          nullptr),
               rtcore::InvalidArgument);
  CHECK_EQ(r.head(0), 0u);
  r.add_many(0, 0, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr);  // k = 0: nothing
  CHECK_EQ(r.head(0), 0u);
}

TEST(add_many_writers_and_samplers_never_tear) {
  // The writer/sampler race with add_many() chunks of 5 steps and streamed frames forced on.
  race_writers_and_samplers(World{128}, 0, streaming::kAvailable, 100000, 5);
}

int main() { return rtcore_test::run_all(); }
