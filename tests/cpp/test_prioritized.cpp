// Tests of prioritized replay (csrc/replay/prioritized.h: the ring and the sum tree in one heap span):
// exact proportional draws when quiescent, and writers, samplers and priority updaters on threads with
// no torn transition and a consistent tree at the end (run it under ThreadSanitizer too).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <map>
#include <thread>
#include <vector>

#include "check.h"
#include "heap.h"
#include "replay/prioritized.h"

using namespace rtcore::replay;
using rtcore_test::HeapMem;

namespace {

constexpr std::uint32_t kWords = 16;  // a frame: 16 copies of one 64-bit tag
constexpr std::uint32_t K = 2;

std::uint64_t tag(std::uint32_t s, std::uint64_t p) { return (std::uint64_t(s) << 48) | p; }

struct Buffer {
  Buffer(std::uint64_t capacity, std::uint32_t streams, double alpha)
      : ring_p(make_params(capacity, streams, K, 1, 0.9, {kWords}, 8, "<u8")),
        layout(make_layout(ring_p, true, alpha, 0.5)),
        mem(layout.total_bytes),
        ring(mem.p, mem.size, ring_p),
        tree(static_cast<std::uint8_t*>(mem.p) + layout.tree_offset, mem.size - layout.tree_offset, layout.tree),
        prio(ring, tree, alpha) {}
  Params ring_p;
  ReplayLayout layout;
  HeapMem mem;
  Ring ring;
  SumTree tree;
  Prioritized prio;
};

struct Out {
  explicit Out(std::size_t n)
      : obs(n * K * kWords), next(n * K * kWords), action(n), reward(n), done(new bool[n]), discount(n),
        was_default(new bool[n]), delay(n), index(n), weight(n) {}
  SampleOut view() {
    return {reinterpret_cast<std::uint8_t*>(obs.data()), reinterpret_cast<std::uint8_t*>(next.data()), action.data(),
            reward.data(), done.get(), discount.data(), was_default.get(), delay.data(), index.data()};
  }
  std::vector<std::uint64_t> obs, next;
  std::vector<std::int64_t> action;
  std::vector<float> reward;
  std::unique_ptr<bool[]> done;
  std::vector<float> discount;
  std::unique_ptr<bool[]> was_default;
  std::vector<std::int32_t> delay;
  std::vector<std::int64_t> index;
  std::vector<float> weight;
};

void add(Buffer& b, std::uint32_t s, std::uint64_t p) {
  std::uint64_t f[kWords];
  for (auto& w : f) w = tag(s, p);
  b.prio.add(s, f, std::int64_t(p), 1.0f, false, false, nullptr, false, 0);
}

// Row i holds transition index[i] = p * streams + s untorn: obs = frames (p-1, p) (p, p at the stream's
// start), next = (p, p+1), action = p.
bool row_ok(const Out& o, std::size_t i, std::uint32_t streams) {
  const std::uint64_t idx = std::uint64_t(o.index[i]);
  const std::uint32_t s = std::uint32_t(idx % streams);
  const std::uint64_t p = idx / streams;
  const std::uint64_t want_obs[K] = {tag(s, p ? p - 1 : 0), tag(s, p)};
  const std::uint64_t want_next[K] = {tag(s, p), tag(s, p + 1)};
  for (std::uint32_t k = 0; k < K; ++k)
    for (std::uint32_t w = 0; w < kWords; ++w)
      if (o.obs[(i * K + k) * kWords + w] != want_obs[k] || o.next[(i * K + k) * kWords + w] != want_next[k]) return false;
  return o.action[i] == std::int64_t(p);
}

}  // namespace

TEST(layout_puts_the_tree_after_the_ring) {
  Buffer b(64, 2, 0.6);
  CHECK(b.layout.tree_offset >= b.ring_p.total_bytes);
  CHECK_EQ(b.layout.tree_offset % 64, 0u);
  CHECK_EQ(b.layout.tree.leaves, 64u);
  CHECK_THROWS(make_layout(b.ring_p, true, 1.5, 0.5), rtcore::InvalidArgument);
  CHECK_THROWS(make_layout(b.ring_p, true, 0.5, -1.0), rtcore::InvalidArgument);
  const ReplayLayout uniform = make_layout(b.ring_p, false, 0.6, 0.4);
  CHECK_EQ(uniform.tree.leaves, 0u);
  CHECK_EQ(uniform.total_bytes, b.ring_p.total_bytes);
}

TEST(quiescent_draws_follow_the_priorities_exactly) {
  Buffer b(40, 2, 1.0);
  for (std::uint64_t p = 0; p < 15; ++p)
    for (std::uint32_t s = 0; s < 2; ++s) add(b, s, p);
  // Sampleable: positions 0..13 of each stream (14's successor is unwritten). Priority 0 except three.
  for (std::uint64_t p = 0; p < 15; ++p)
    for (std::uint32_t s = 0; s < 2; ++s) b.prio.update(std::int64_t(p * 2 + s), 0.0);
  b.prio.update(3 * 2 + 0, 1.0);
  b.prio.update(7 * 2 + 1, 2.0);
  b.prio.update(14 * 2 + 1, 50.0);  // not sampleable yet: never drawn, whatever its priority
  b.prio.update(13 * 2 + 0, 5.0);
  Out o(16);
  Rng rng(5);
  SampleScratch sc;
  sc.resize(2);
  std::map<std::int64_t, int> seen;
  const std::map<std::int64_t, double> value{{6, 1.0}, {15, 2.0}, {26, 5.0}};
  for (int r = 0; r < 800; ++r) {
    b.prio.sample(16, o.view(), o.weight.data(), 1.0, rng, sc);
    double wmax = 0, pmin = 1e9;
    for (std::size_t i = 0; i < 16; ++i) {
      CHECK(row_ok(o, i, 2));
      seen[o.index[i]]++;
      wmax = std::max(wmax, double(o.weight[i]));
      pmin = std::min(pmin, value.count(o.index[i]) ? value.at(o.index[i]) : 0.0);
    }
    // beta = 1: weight = (N P)^-1 / max, so weight * priority is the batch's smallest priority.
    for (std::size_t i = 0; i < 16; ++i)
      if (value.count(o.index[i])) CHECK(std::abs(o.weight[i] * value.at(o.index[i]) - pmin) < 1e-5);
    CHECK_EQ(wmax, 1.0);
  }
  CHECK_EQ(seen.size(), 3u);
  const double n = 800 * 16;
  CHECK(std::abs(seen[6] / n - 1.0 / 8) < 0.01);
  CHECK(std::abs(seen[15] / n - 2.0 / 8) < 0.015);
  CHECK(std::abs(seen[26] / n - 5.0 / 8) < 0.015);
}

TEST(threads_write_sample_and_update_without_torn_rows) {
  constexpr std::uint32_t streams = 2;
  Buffer b(2 * 48, streams, 0.6);
  // Enough written before the threads start for a batch of 16 (each stream's newest step waits for its
  // n-step chain): with 8 per stream, a sampler that ran before both writers had 14 and threw (seen once
  // under ASan).
  constexpr std::uint64_t prefill = 20;
  for (std::uint32_t s = 0; s < streams; ++s)
    for (std::uint64_t p = 0; p < prefill; ++p) add(b, s, p);
  CHECK(b.prio.ring().size() >= 16);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> bad{0}, rows{0}, applied{0};
  std::vector<std::thread> th;
  for (std::uint32_t s = 0; s < streams; ++s)
    th.emplace_back([&, s] {
      for (std::uint64_t p = prefill; p < 60000; ++p) add(b, s, p);
    });
  for (int k = 0; k < 2; ++k)
    th.emplace_back([&, k] {
      Out o(16);
      Rng rng(100 + k);
      SampleScratch sc;
      sc.resize(streams);
      while (!stop.load(std::memory_order_acquire)) {
        b.prio.sample(16, o.view(), o.weight.data(), 0.4, rng, sc);
        for (std::size_t i = 0; i < 16; ++i) {
          if (!row_ok(o, i, streams) || !(o.weight[i] > 0.0f && o.weight[i] <= 1.0f))
            bad.fetch_add(1, std::memory_order_relaxed);
          // Two samplers update overlapping transitions with different priorities at once.
          if (b.prio.update(o.index[i], 0.5 + double((o.index[i] * 7 + k) % 11))) applied.fetch_add(1, std::memory_order_relaxed);
        }
        rows.fetch_add(16, std::memory_order_relaxed);
      }
    });
  th[0].join();
  th[1].join();
  stop.store(true, std::memory_order_release);
  th[2].join();
  th[3].join();
  std::printf("  %llu rows checked, %llu priority updates applied\n", (unsigned long long)rows.load(),
              (unsigned long long)applied.load());
  CHECK_EQ(bad.load(), 0u);
  CHECK(rows.load() > 0);
  CHECK(b.tree.consistent());
}

int main() { return rtcore_test::run_all(); }
