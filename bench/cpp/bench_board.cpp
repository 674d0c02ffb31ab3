// Microbenchmark of the boards' operations in C++ (no Python): ObsBoard publish / read of an 84x84
// uint8 frame with frame_stack 4, ActionBoard post / take, and memcpy of the same bytes as the bound.
// Build with -DRTCORE_BUILD_BENCH=ON; run build-dir/bench_board [iterations].
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "board/action_board.h"
#include "board/obs_board.h"

using rtcore::board::ActionBoardView;
using rtcore::board::ObsBoardView;

namespace {

template <class F>
double ns_per_op(int n, F&& fn) {
  for (int i = 0; i < std::min(n, 1000); ++i) fn(i);
  double best = 1e300;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) fn(i);
    const auto t1 = std::chrono::steady_clock::now();
    best = std::min(best, std::chrono::duration<double, std::nano>(t1 - t0).count() / n);
  }
  return best;
}

void* zeroed(std::size_t n) {
  n = (n + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, n);
  std::memset(p, 0, n);
  return p;
}

}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 20000;
  const std::size_t fb = 84 * 84;
  const std::uint32_t K = 4;
  const std::size_t obs_bytes = ObsBoardView::bytes_needed(fb, K);
  void* obs_mem = zeroed(obs_bytes);
  ObsBoardView board(obs_mem, obs_bytes, fb, K);
  std::vector<unsigned char> frame(fb, 7), out(K * fb);
  std::int64_t step = 0;

  const double publish = ns_per_op(n, [&](int) { board.publish(frame.data(), step++, false); });
  const double read = ns_per_op(n, [&](int) { (void)board.read(out.data()); });
  const double memcpy_stack = ns_per_op(n, [&](int) {
    std::memcpy(out.data(), frame.data(), fb);
    std::memcpy(out.data() + fb, frame.data(), fb);
    std::memcpy(out.data() + 2 * fb, frame.data(), fb);
    std::memcpy(out.data() + 3 * fb, frame.data(), fb);
    asm volatile("" ::"r"(out.data()) : "memory");
  });

  const std::size_t act_bytes = ActionBoardView::bytes_needed(4);
  void* act_mem = zeroed(act_bytes);
  ActionBoardView actions(act_mem, act_bytes, 4);
  rtcore::board::Taken t{};
  const double post = ns_per_op(n, [&](int i) { actions.post(i, i, i & 3); });
  const double post_take = ns_per_op(n, [&](int i) {
    actions.post(i, i, 0);
    (void)actions.take(&t);
  });

  std::printf("# boards, C++ only, best of 5 x %d (ns per operation)\n", n);
  std::printf("ObsBoard.publish 84x84 u8          %8.1f\n", publish);
  std::printf("ObsBoard.read 4x84x84 u8           %8.1f   (memcpy of the same bytes: %.1f)\n", read, memcpy_stack);
  std::printf("ActionBoard.post                   %8.1f\n", post);
  std::printf("ActionBoard.post + take            %8.1f\n", post_take);
  std::printf("hand-off total (publish+read+post+take) %8.1f ns\n", publish + read + post_take);
  std::printf("{\"bench\": \"board_cpp\", \"n\": %d, \"publish_ns\": %.1f, \"read_ns\": %.1f, \"memcpy_stack_ns\": %.1f, "
              "\"post_ns\": %.1f, \"post_take_ns\": %.1f}\n",
              n, publish, read, memcpy_stack, post, post_take);
  std::free(obs_mem);
  std::free(act_mem);
  return 0;
}
