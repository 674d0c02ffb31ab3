// C++ microbenchmark of the replay ring without Python: add and sample(32) throughput on the Atari
// workload (84x84 uint8 frames, frame_stack 4, capacity 100,000, episodes of 1,000 steps) in a real
// shared-memory segment, against the bounds that matter, and the seqlock payload-copy kernels of
// common/seqlock.h on the same gather:
//   - "gather memcpy": plain memcpy of the same number of random frames per batch out of the same
//     segment (what sampling would cost with no seqlock, no metadata and no stack logic; not allowed
//     on a racy payload, so only a bound)
//   - "gather <kernel>": the same gather through each seqlock copy kernel (with the 512-byte chunked
//     prefetch the ring used to do, without it, and prefetching the next row as sample() now does)
//   - "gather, anonymous THP memory": seq_load's gather out of huge-page-backed memory (page size effect)
//   - "store <kernel>": the writer's side, 7 KB frames to consecutive slots as add() does
//   - memcpy bandwidth (64 MiB buffers, sequential)
// The machine may be busy, so every figure is the median of `rounds` short runs, taken round-robin
// (each round runs every variant once), which keeps the A/B comparison fair under drifting load.
// Prints a table and ends with one JSON line.  Usage: bench_replay [--quick]
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
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

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

// The copy before this benchmark's kernels existed: one relaxed atomic word per iteration.
void load_words_x1(void* dst, const void* src, std::size_t n) noexcept {
  auto* d = static_cast<std::uint64_t*>(dst);
  auto* s = static_cast<const std::uint64_t*>(src);
  for (std::size_t i = 0; i < n / 8; ++i) {
    std::uint64_t w = __atomic_load_n(s + i, __ATOMIC_RELAXED);  // relaxed: a benchmark of the copy
    std::memcpy(d + i, &w, 8);
  }
}

void store_words_x1(void* dst, const void* src, std::size_t n) noexcept {
  auto* d = static_cast<std::uint64_t*>(dst);
  auto* s = static_cast<const unsigned char*>(src);
  for (std::size_t i = 0; i < n / 8; ++i) {
    std::uint64_t w;
    std::memcpy(&w, s + 8 * i, 8);
    __atomic_store_n(d + i, w, __ATOMIC_RELAXED);  // relaxed: a benchmark of the copy
  }
}

void memcpy_copy(void* dst, const void* src, std::size_t n) noexcept { std::memcpy(dst, src, n); }

using CopyFn = void (*)(void*, const void*, std::size_t) noexcept;

// The ring's prefetching frame copy (replay/ring.h load_frame), with a pluggable kernel.
template <CopyFn copy>
void load_frame_pf(std::uint8_t* dst, const std::uint8_t* src, std::size_t n) noexcept {
  constexpr std::size_t kChunk = 512, kAhead = 1024;
  for (std::size_t a = 0; a < kAhead && a < n; a += kCacheLine) __builtin_prefetch(src + a, 0, 3);
  for (std::size_t off = 0; off < n; off += kChunk) {
    for (std::size_t a = off + kAhead; a < off + kAhead + kChunk && a < n; a += kCacheLine) __builtin_prefetch(src + a, 0, 3);
    copy(dst + off, src + off, std::min(kChunk, n - off));
  }
}

template <CopyFn copy>
void load_frame_nopf(std::uint8_t* dst, const std::uint8_t* src, std::size_t n) noexcept {
  copy(dst, src, n);
}

void memcpy_fn(std::uint8_t* dst, const std::uint8_t* src, std::size_t n) noexcept { std::memcpy(dst, src, n); }

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

  // Each variant runs for `slice` seconds per round and reports batches/s.
  const double slice = quick ? 0.1 : 0.25;
  const int rounds = quick ? 7 : 15;
  auto rate_of = [&](const std::function<void()>& batch) {
    std::uint64_t n = 0;
    const auto g0 = Clock::now();
    while (seconds_since(g0) < slice) {
      for (int i = 0; i < 10; ++i) batch();
      n += 10;
    }
    return n / seconds_since(g0);
  };

  // gather: 5 random frames per row (a stack of 4 + the next frame) copied out of the segment, then
  // the next stack's 3 shared frames from the obs stack, as sample() does.
  const auto* frames = static_cast<const std::uint8_t*>(seg.payload()) + p.frames_offset;
  using FrameFn = void (*)(std::uint8_t*, const std::uint8_t*, std::size_t) noexcept;
  auto gather = [&](FrameFn load) {
    return [&, load] {
      for (std::size_t r = 0; r < B; ++r) {
        const std::uint64_t j = 4 + rng.below(capacity - 8);
        for (std::uint32_t k = 0; k <= K; ++k) {
          std::uint8_t* dst = k < K ? &obs[(r * K + k) * fb] : &next[(r * K + 3) * fb];
          load(dst, frames + (j - 3 + k) * p.frame_stride, fb);
        }
        std::memcpy(&next[r * K * fb], &obs[(r * K + 1) * fb], 3 * fb);
      }
    };
  };

  // The same gather drawing each row one row ahead and prefetching the first `ahead` bytes of the
  // next row's frames while the current row copies (the rows of a batch are independent draws).
  auto gather_ahead = [&](FrameFn load, std::size_t ahead) {
    return [&, load, ahead] {
      std::uint64_t jn = 4 + rng.below(capacity - 8);
      for (std::size_t r = 0; r < B; ++r) {
        const std::uint64_t j = jn;
        jn = 4 + rng.below(capacity - 8);
        const std::uint8_t* nx = frames + (jn - 3) * p.frame_stride;
        for (std::size_t a = 0; a < ahead; a += kCacheLine) __builtin_prefetch(nx + a, 0, 3);
        for (std::uint32_t k = 0; k <= K; ++k) {
          std::uint8_t* dst = k < K ? &obs[(r * K + k) * fb] : &next[(r * K + 3) * fb];
          load(dst, frames + (j - 3 + k) * p.frame_stride, fb);
        }
        std::memcpy(&next[r * K * fb], &obs[(r * K + 1) * fb], 3 * fb);
      }
    };
  };

  // The same gather (kernel of seq_load) out of anonymous memory with transparent huge pages, where the
  // kernel grants them: the page-size effect that a numpy ring gets and a /dev/shm segment does not
  // (tmpfs huge pages depend on /sys/kernel/mm/transparent_hugepage/shmem_enabled).
  const std::size_t frames_bytes = capacity * p.frame_stride, huge = 2u << 20;
  void* anon_map = mmap(nullptr, frames_bytes + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (anon_map == MAP_FAILED) return 1;
  auto* anon = reinterpret_cast<std::uint8_t*>((reinterpret_cast<std::uintptr_t>(anon_map) + huge - 1) & ~std::uintptr_t(huge - 1));
  madvise(anon, frames_bytes, MADV_HUGEPAGE);
  std::memcpy(anon, frames, frames_bytes);
  auto gather_anon = [&] {
    for (std::size_t r = 0; r < B; ++r) {
      const std::uint64_t j = 4 + rng.below(capacity - 8);
      for (std::uint32_t k = 0; k <= K; ++k)
        seq_load(k < K ? &obs[(r * K + k) * fb] : &next[(r * K + 3) * fb], anon + (j - 3 + k) * p.frame_stride, fb);
      std::memcpy(&next[r * K * fb], &obs[(r * K + 1) * fb], 3 * fb);
    }
  };

  // The writer's side: 7 KB frames stored at consecutive ring slots (what add does), per kernel.
  // Reported as batches of 32 frames per second so the table keeps one unit. These writes bypass the
  // stamps, which is safe only because nothing runs concurrently here; sample() sees valid slots.
  std::uint64_t wpos = 0;
  auto stores = [&](CopyFn store) {
    return [&, store] {
      for (std::size_t i = 0; i < B; ++i, ++wpos)
        store(const_cast<std::uint8_t*>(frames) + (wpos % capacity) * p.frame_stride, pool.data() + (wpos % 64) * fb, fb);
    };
  };

  struct Variant {
    std::string key, label;
    std::function<void()> batch;
    std::vector<double> rates;
  };
  std::vector<Variant> vs;
  vs.push_back({"sample", "sample(32), ring (seq_load = " + std::string(seqcopy::active_kernel()) + ")",
                [&] { ring.sample(B, out, rng, sc); }, {}});
  vs.push_back({"gather_memcpy", "gather, memcpy (bound, not allowed)", gather(memcpy_fn), {}});
  vs.push_back({"gather_words_x1", "gather, atomic words x1 + prefetch", gather(load_frame_pf<load_words_x1>), {}});
  vs.push_back({"gather_words_x8", "gather, atomic words x8 + prefetch", gather(load_frame_pf<seqcopy::load_words>), {}});
#if defined(RTCORE_SEQ_X86_ASM)
  vs.push_back({"gather_sse2", "gather, asm sse2 + prefetch", gather(load_frame_pf<seqcopy::load_sse2>), {}});
  vs.push_back({"gather_sse2_nopf", "gather, asm sse2, no prefetch", gather(load_frame_nopf<seqcopy::load_sse2>), {}});
  if (seqcopy::cpu_has_avx2()) {
    vs.push_back({"gather_avx2", "gather, asm avx2 + prefetch", gather(load_frame_pf<seqcopy::load_avx2>), {}});
    vs.push_back({"gather_avx2_nopf", "gather, asm avx2, no prefetch", gather(load_frame_nopf<seqcopy::load_avx2>), {}});
    vs.push_back({"gather_avx2_next512", "gather, asm avx2, next row 512 B ahead", gather_ahead(load_frame_nopf<seqcopy::load_avx2>, 512), {}});
    vs.push_back({"gather_avx2_next2k", "gather, asm avx2, next row 2 KB ahead", gather_ahead(load_frame_nopf<seqcopy::load_avx2>, 2048), {}});
  }
#endif
  vs.push_back({"gather_thp", "gather, seq_load, anonymous THP memory", gather_anon, {}});
  vs.push_back({"store_memcpy", "store 32 frames, memcpy (bound, not allowed)", stores(memcpy_copy), {}});
  vs.push_back({"store_words_x1", "store 32 frames, atomic words x1", stores(store_words_x1), {}});
  vs.push_back({"store_words_x8", "store 32 frames, atomic words x8", stores(seqcopy::store_words), {}});
#if defined(RTCORE_SEQ_X86_ASM)
  vs.push_back({"store_sse2", "store 32 frames, asm sse2", stores(seqcopy::store_sse2), {}});
  if (seqcopy::cpu_has_avx2()) vs.push_back({"store_avx2", "store 32 frames, asm avx2", stores(seqcopy::store_avx2), {}});
#endif
  for (auto& v : vs) v.batch();  // warm up
  for (int r = 0; r < rounds; ++r)
    for (auto& v : vs) v.rates.push_back(rate_of(v.batch));

  // memcpy bandwidth
  std::vector<std::uint8_t> src(64 << 20, 1), dst(64 << 20, 0);
  std::memcpy(dst.data(), src.data(), src.size());
  std::vector<double> bws;
  for (int r = 0; r < rounds; ++r) {
    t0 = Clock::now();
    std::memcpy(dst.data(), src.data(), src.size());
    bws.push_back(src.size() / seconds_since(t0));
  }
  const double bw = median(bws);
  const double batch_bytes = 2.0 * B * K * fb;

  std::printf("replay ring, C++ only: 84x84 uint8, frame_stack 4, capacity %llu, batch %zu%s; medians of %d rounds\n",
              (unsigned long long)capacity, B, quick ? " (quick)" : "", rounds);
  std::printf("  add:  %12.0f adds/s  %8.2f GB/s of frames (one run)\n", adds / add_s, adds * double(fb) / add_s / 1e9);
  const double memcpy_gather = median(vs[1].rates);
  const double memcpy_store = median(vs[std::find_if(vs.begin(), vs.end(), [](const Variant& v) { return v.key == "store_memcpy"; }) - vs.begin()].rates);
  for (auto& v : vs) {
    const double m = median(v.rates);
    const bool st = v.key.rfind("store", 0) == 0;
    std::printf("  %-46s %8.0f batches/s  (%.2fx memcpy %s)\n", v.label.c_str(), m, m / (st ? memcpy_store : memcpy_gather),
                st ? "store" : "gather");
  }
  std::printf("  memcpy: %.2f GB/s sequential (sample(32) bound %.0f batches/s)\n", bw / 1e9, bw / batch_bytes);
  std::printf("  %llu draws redrawn (no concurrent writer: expect 0)\n", (unsigned long long)sc.collisions);
  std::printf("{\"benchmark\": \"replay_cpp\", \"quick\": %s, \"kernel\": \"%s\", \"adds_per_s\": %.1f, ", quick ? "true" : "false",
              seqcopy::active_kernel(), adds / add_s);
  for (auto& v : vs) std::printf("\"%s_batches_per_s\": %.1f, ", v.key.c_str(), median(v.rates));
  std::printf("\"memcpy_bytes_per_s\": %.1f}\n", bw);
  munmap(anon_map, frames_bytes + huge);
  return 0;
}
