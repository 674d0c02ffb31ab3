// C++ microbenchmark of the replay ring without Python: add and sample(32) throughput on the Atari
// workload (84x84 uint8 frames, frame_stack 4, capacity 100,000, episodes of 1,000 steps) in a real
// shared-memory segment, against the bounds that matter:
//   - memcpy bandwidth (64 MiB buffers, sequential)
//   - "gather": plain memcpy of the same number of random frames per batch out of the same segment
//     (what sampling would cost with no seqlock, no metadata and no stack logic)
// Prints a table and ends with one JSON line.  Usage: bench_replay [--quick]
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "replay/ring.h"
#include "shm/segment.h"

using namespace rtcore;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  const std::uint64_t capacity = 100000;
  const std::uint32_t K = 4;
  const std::size_t B = 32;
  const std::uint64_t ep_len = 1000;
  const replay::Params p = replay::make_params(capacity, 1, K, 1, 0.99, {84, 84}, 1, "|u1");
  const std::string name = "rtcore-bench-replay-" + std::to_string(getpid());
  shm::Segment seg = shm::Segment::create(name, shm::Kind::kReplay, replay::kLayoutVersion, &p, sizeof p, p.total_bytes);
  shm::Segment::unlink_name(name);  // the mapping stays; nothing to clean up on exit
  replay::Ring ring(seg.payload(), seg.payload_size(), p);

  const std::size_t fb = p.frame_bytes;
  std::vector<std::uint8_t> pool(64 * fb);
  std::mt19937_64 gen(1);
  for (auto& b : pool) b = static_cast<std::uint8_t>(gen());

  // add: fill the ring once, then keep adding (overwriting).
  const std::uint64_t adds = quick ? 2 * capacity : 5 * capacity;
  auto t0 = Clock::now();
  for (std::uint64_t t = 0; t < adds; ++t) {
    const bool end = (t + 1) % ep_len == 0;
    ring.add(0, pool.data() + (t % 64) * fb, std::int64_t(t % 18), 1.0f, end, false, end ? pool.data() : nullptr, false, 0);
  }
  const double add_s = seconds_since(t0);

  // sample(32)
  std::vector<std::uint8_t> obs(B * K * fb), next(B * K * fb);
  std::vector<std::int64_t> action(B), index(B);
  std::vector<float> reward(B), discount(B);
  std::unique_ptr<bool[]> done(new bool[B]), was_default(new bool[B]);
  std::vector<std::int32_t> delay(B);
  replay::SampleOut out{obs.data(), next.data(), action.data(), reward.data(), done.get(),
                        discount.data(), was_default.get(), delay.data(), index.data()};
  replay::Rng rng(7);
  replay::SampleScratch sc;
  sc.resize(1);
  const double dur = quick ? 0.5 : 2.0;
  std::uint64_t batches = 0;
  t0 = Clock::now();
  while (seconds_since(t0) < dur) {
    for (int i = 0; i < 50; ++i) ring.sample(B, out, rng, sc);
    batches += 50;
  }
  const double sample_rate = batches / seconds_since(t0);

  // gather bounds: 5 random frames per row (a stack of 4 + the next frame) copied out of the segment,
  // by plain memcpy (no seqlock possible) and by seq_load (the relaxed-atomic copy the ring must use).
  const auto* frames = static_cast<const std::uint8_t*>(seg.payload()) + p.frames_offset;
  auto gather = [&](bool atomic_words) {
    std::uint64_t n = 0;
    const auto g0 = Clock::now();
    while (seconds_since(g0) < dur) {
      for (int i = 0; i < 50; ++i) {
        for (std::size_t r = 0; r < B; ++r) {
          const std::uint64_t j = 4 + rng.below(capacity - 8);
          for (std::uint32_t k = 0; k <= K; ++k) {
            std::uint8_t* dst = k < K ? &obs[(r * K + k) * fb] : &next[(r * K + 3) * fb];
            const std::uint8_t* src = frames + (j - 3 + k) * p.frame_stride;
            if (atomic_words)
              seq_load(dst, src, fb);
            else
              std::memcpy(dst, src, fb);
          }
          std::memcpy(&next[r * K * fb], &obs[(r * K + 1) * fb], 3 * fb);
        }
      }
      n += 50;
    }
    return n / seconds_since(g0);
  };
  const double gather_rate = gather(false);
  const double gather_seq_rate = gather(true);

  // memcpy bandwidth
  std::vector<std::uint8_t> src(64 << 20, 1), dst(64 << 20, 0);
  std::memcpy(dst.data(), src.data(), src.size());
  std::uint64_t copies = 0;
  t0 = Clock::now();
  while (seconds_since(t0) < dur) {
    std::memcpy(dst.data(), src.data(), src.size());
    ++copies;
  }
  const double bw = double(copies) * src.size() / seconds_since(t0);
  const double batch_bytes = 2.0 * B * K * fb;

  std::printf("replay ring, C++ only: 84x84 uint8, frame_stack 4, capacity %llu, batch %zu%s\n",
              (unsigned long long)capacity, B, quick ? " (quick)" : "");
  std::printf("  add:          %12.0f adds/s     %8.2f GB/s of frames\n", adds / add_s, adds * double(fb) / add_s / 1e9);
  std::printf("  sample(32):   %12.0f batches/s  %8.2f GB/s written (obs + next_obs stacks)\n", sample_rate,
              sample_rate * batch_bytes / 1e9);
  std::printf("  gather bound: %12.0f batches/s  (plain memcpy of the same random frames; ring reaches %.2fx)\n",
              gather_rate, sample_rate / gather_rate);
  std::printf("  gather, seq_load: %8.0f batches/s  (the same with relaxed-atomic words; ring reaches %.2fx)\n",
              gather_seq_rate, sample_rate / gather_seq_rate);
  std::printf("  memcpy:       %12.2f GB/s      (sample(32) bound %.0f batches/s; ring reaches %.2fx)\n", bw / 1e9,
              bw / batch_bytes, sample_rate / (bw / batch_bytes));
  std::printf("  %llu draws redrawn (no concurrent writer: expect 0)\n", (unsigned long long)sc.collisions);
  std::printf("{\"benchmark\": \"replay_cpp\", \"quick\": %s, \"adds_per_s\": %.1f, \"batches_per_s\": %.1f, "
              "\"gather_batches_per_s\": %.1f, \"gather_seq_load_batches_per_s\": %.1f, \"memcpy_bytes_per_s\": %.1f}\n",
              quick ? "true" : "false", adds / add_s, sample_rate, gather_rate, gather_seq_rate, bw);
  return 0;
}
