// board/action_history.h: the act-time action history against what the env really applied, with the
// env, a poster and a reader in three threads.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "board/action_board.h"
#include "board/action_history.h"
#include "board/obs_board.h"
#include "check.h"
#include "heap.h"

using rtcore::board::ActionBoardView;
using rtcore::board::ObsBoardView;
using rtcore::board::read_with_history;
using rtcore::board::Taken;

namespace {
using Mem = rtcore_test::HeapMem;
constexpr std::int64_t kNone = ObsBoardView::kNoAction;
}  // namespace

TEST(history_is_read_with_the_stack_and_pads_at_episode_start) {
  constexpr std::uint32_t K = 3;
  Mem om(ObsBoardView::bytes_needed(8, 1, K)), am(ActionBoardView::bytes_needed(2));
  ObsBoardView ob(om.p, om.size, 8, 1, K);
  ActionBoardView ab(am.p, am.size, 2);
  CHECK_EQ(ObsBoardView::slot_count(1, K), 8u);
  std::int64_t frame = 0, out = 0, hist[K + 1];
  CHECK_EQ(read_with_history(ob, &ab, &out, hist), -1);
  for (auto h : hist) CHECK_EQ(h, kNone);
  ob.publish(&frame, 0, true);
  for (std::int64_t step = 0; step < 6; ++step) {
    ob.begin_apply(step);
    Taken t{};
    const bool got = ab.take(&t);
    ob.end_apply(step, got ? t.action : 9, !got);
    if (step % 2 == 0) ab.post(10 + step, step, 0);  // pending at the next read
    frame = step + 1;
    ob.publish(&frame, step + 1, step + 1 == 4);  // a new episode at step 4
  }
  // steps 0..5 applied 9 (default), 10, 9, 12, 9, 14 (each post is taken at the next tick); a new episode at step 4
  CHECK_EQ(read_with_history(ob, &ab, &out, hist), 6);
  CHECK_EQ(out, 6);
  CHECK_EQ(hist[0], kNone);  // step 3: before the episode of step 6
  CHECK_EQ(hist[1], 9);      // step 4
  CHECK_EQ(hist[2], 14);     // step 5
  CHECK_EQ(hist[3], kNone);  // nothing pending
  ab.post(21, 6, 1);
  CHECK_EQ(read_with_history(ob, &ab, &out, hist), 6);
  CHECK_EQ(hist[3], 21);                                  // pending on the board
  CHECK_EQ(read_with_history(ob, nullptr, &out, hist), 6);
  CHECK_EQ(hist[3], kNone);                               // no board to look at
  ob.begin_apply(6);
  Taken t{};
  CHECK(ab.take(&t));
  CHECK(!ab.peek(&t));
  CHECK_EQ(read_with_history(ob, &ab, &out, hist), 6);  // `applying`: waits the bounded spin, keeps nothing
  ob.end_apply(6, t.action, false);
  CHECK_EQ(read_with_history(ob, &ab, &out, hist), 6);
  CHECK_EQ(hist[3], 21);                                  // taken by the tick of step 6: still on its way
  CHECK_THROWS(ob.begin_apply(5), rtcore::InvalidArgument);
  CHECK_THROWS(ob.end_apply(6, -1, false), rtcore::InvalidArgument);
}

TEST(concurrent_history_matches_what_the_env_applied) {
  constexpr std::uint32_t K = 4;
  constexpr std::int64_t kSteps = 20000, kEpisode = 37;
  Mem om(ObsBoardView::bytes_needed(8, 2, K)), am(ActionBoardView::bytes_needed(2));
  ObsBoardView ob(om.p, om.size, 8, 2, K);
  ActionBoardView ab(am.p, am.size, 2);
  std::vector<std::atomic<std::int64_t>> applied(kSteps + 1);  // action applied at each step, kNone: default
  std::atomic<bool> done{false};
  std::atomic<std::int64_t> reads{0}, pendings{0}, failures{0}, took{0};
  std::int64_t f0 = 0;
  ob.publish(&f0, 0, true);
  std::thread env([&] {
    for (std::int64_t step = 0; step < kSteps; ++step) {
      ob.begin_apply(step);
      Taken t{};
      const bool got = ab.take(&t);
      const std::int64_t a = got ? t.action : 0;  // the default action is 0; posted actions are >= 1
      applied[step].store(got ? a : kNone, std::memory_order_relaxed);  // relaxed: published by publish()
      ob.end_apply(step, a, !got);
      if (got) took.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
      for (int i = 0; i < 3000; ++i) rtcore::cpu_relax();  // the env step: readers and the poster run meanwhile
      const std::int64_t f = step + 1;
      ob.publish(&f, step + 1, (step + 1) % kEpisode == 0);
    }
    done.store(true, std::memory_order_release);  // release: the last applied values
  });
  std::thread poster([&] {
    std::int64_t next = 1;
    while (!done.load(std::memory_order_acquire)) {  // acquire: pairs with the env's release
      ab.post(next++, 0, 0);  // increasing values: a newer post is a larger action
      for (int i = 0; i < 50; ++i) rtcore::cpu_relax();
    }
  });
  std::thread reader([&] {
    std::int64_t out[2], hist[K + 1];
    while (!done.load(std::memory_order_acquire)) {  // acquire: as above
      const std::int64_t u = read_with_history(ob, &ab, out, hist);
      if (u < 0) continue;
      reads.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
      const std::int64_t start = u / kEpisode * kEpisode;
      for (std::uint32_t i = 0; i < K; ++i) {
        const std::int64_t q = u - K + i;
        const std::int64_t a = applied[q < 0 ? 0 : q].load(std::memory_order_relaxed);  // relaxed: published before frame u
        const std::int64_t want = q < start ? kNone : (a == kNone ? 0 : a);
        if (hist[i] != want) failures.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
      }
      if (hist[K] != kNone) {
        pendings.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
        // the tick of u applies this post or a newer one (a larger value); wait for it to be known
        while (ob.step() <= u && !done.load(std::memory_order_acquire)) rtcore::cpu_relax();  // acquire: as above
        if (ob.step() > u) {
          const std::int64_t a = applied[u].load(std::memory_order_relaxed);  // relaxed: published before frame u + 1
          if (a == kNone || a < hist[K]) failures.fetch_add(1, std::memory_order_relaxed);  // relaxed: a counter
        }
      }
    }
  });
  env.join();
  poster.join();
  reader.join();
  CHECK_EQ(failures.load(), 0);
  CHECK(reads.load() > 100);
  std::printf("  %lld reads, %lld with a pending action; %lld of %lld steps applied a post\n",
              static_cast<long long>(reads.load()), static_cast<long long>(pendings.load()),
              static_cast<long long>(took.load()), static_cast<long long>(kSteps));
  CHECK(pendings.load() > 10);
}

int main() { return rtcore_test::run_all(); }
