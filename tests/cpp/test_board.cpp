#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "board/action_board.h"
#include "board/obs_board.h"
#include "check.h"
#include "heap.h"
#include "sched/clock.h"

using rtcore::board::ActionBoardView;
using rtcore::board::ObsBoardView;
using rtcore::board::Taken;
using rtcore::clock::now_ns;

namespace {

using Mem = rtcore_test::HeapMem;  // zeroed, like a fresh segment

// A frame whose every byte encodes `step`: words hold step * 0x9E3779B97F4A7C15 (odd multiplier, so
// distinct steps give distinct words), tail bytes hold its low byte.
void fill_frame(std::vector<unsigned char>& f, std::int64_t step) {
  const std::uint64_t w = static_cast<std::uint64_t>(step) * 0x9E3779B97F4A7C15ULL;
  for (std::size_t i = 0; i + 8 <= f.size(); i += 8) std::memcpy(&f[i], &w, 8);
  for (std::size_t i = f.size() / 8 * 8; i < f.size(); ++i) f[i] = static_cast<unsigned char>(w);
}

// The step a frame encodes, or -2 if its bytes disagree (a torn frame).
std::int64_t frame_step(const unsigned char* f, std::size_t n, std::int64_t guess) {
  std::vector<unsigned char> want(n);
  fill_frame(want, guess);
  return std::memcmp(f, want.data(), n) == 0 ? guess : -2;
}

}  // namespace

TEST(obs_board_sizes_are_checked) {
  // A frame near 2^64 bytes wrapped to a tiny board before sizes were checked.
  CHECK_THROWS(ObsBoardView::bytes_needed(~std::uint64_t{0} - 8, 1), rtcore::InvalidArgument);
  CHECK_THROWS(ObsBoardView::bytes_needed(std::uint64_t{1} << 62, 4), rtcore::InvalidArgument);
  CHECK_EQ(ObsBoardView::bytes_needed(100, 2), sizeof(ObsBoardView::Control) + 4 * (64 + 128));
  Mem mem(ObsBoardView::bytes_needed(8, 2));
  CHECK_THROWS(ObsBoardView(mem.p, mem.size, 8, ObsBoardView::kMaxFrameStack + 1), rtcore::InvalidArgument);
  CHECK_THROWS(ObsBoardView(mem.p, mem.size, 8, 0), rtcore::InvalidArgument);
}

TEST(obs_board_stacks_and_pads_at_episode_start) {
  const std::size_t fb = 5;  // odd size: tail bytes and unaligned stack offsets
  Mem mem(ObsBoardView::bytes_needed(fb, 3));
  ObsBoardView b(mem.p, mem.size, fb, 3);
  std::vector<unsigned char> out(3 * fb, 0xAA);
  CHECK_EQ(b.read(out.data()), -1);
  CHECK_EQ(b.step(), -1);
  CHECK(std::all_of(out.begin(), out.end(), [](unsigned char c) { return c == 0; }));
  auto frame = [&](unsigned char v) { return std::vector<unsigned char>(fb, v); };
  auto stack_is = [&](std::vector<unsigned char> vals) {
    for (std::size_t j = 0; j < 3; ++j)
      for (std::size_t i = 0; i < fb; ++i)
        if (out[j * fb + i] != vals[j]) return false;
    return true;
  };
  b.publish(frame(1).data(), 10, false);  // the first publish starts an episode
  CHECK_EQ(b.read(out.data()), 10);
  CHECK(stack_is({1, 1, 1}));
  b.publish(frame(2).data(), 11, false);
  CHECK_EQ(b.read(out.data()), 11);
  CHECK(stack_is({1, 1, 2}));
  b.publish(frame(3).data(), 12, false);
  b.publish(frame(4).data(), 13, false);
  CHECK_EQ(b.read(out.data()), 13);
  CHECK(stack_is({2, 3, 4}));
  b.publish(frame(5).data(), 20, true);
  CHECK_EQ(b.read(out.data()), 20);
  CHECK(stack_is({5, 5, 5}));
  b.publish(frame(6).data(), 21, false);
  CHECK_EQ(b.read(out.data()), 21);
  CHECK(stack_is({5, 5, 6}));
  CHECK_EQ(b.published(), 6u);
  CHECK_EQ(b.step(), 21);
  CHECK_THROWS(b.publish(frame(7).data(), 21, false), rtcore::InvalidArgument);  // steps must increase
  CHECK_THROWS(b.publish(frame(7).data(), 3, true), rtcore::InvalidArgument);
  CHECK_EQ(b.step(), 21);
}

TEST(obs_board_survives_a_writer_that_died_mid_publish) {
  const std::size_t fb = 16;
  Mem mem(ObsBoardView::bytes_needed(fb, 2));
  ObsBoardView b(mem.p, mem.size, fb, 2);
  std::vector<unsigned char> f(fb);
  for (std::int64_t s = 0; s < 3; ++s) {
    fill_frame(f, s);
    b.publish(f.data(), s, false);
  }
  // The writer of publish 4 died after making slot 4 % 4 odd and writing half a frame.
  auto* slot0 = reinterpret_cast<ObsBoardView::SlotMeta*>(static_cast<char*>(mem.p) + sizeof(ObsBoardView::Control));
  slot0->seq.fetch_add(1);
  std::memset(reinterpret_cast<char*>(slot0) + sizeof(ObsBoardView::SlotMeta), 0xEE, fb / 2);
  std::vector<unsigned char> out(2 * fb);
  CHECK_EQ(b.read(out.data()), 2);  // the published stack is untouched
  CHECK_EQ(frame_step(out.data(), fb, 1), 1);
  CHECK_EQ(frame_step(out.data() + fb, fb, 2), 2);
  ObsBoardView again(mem.p, mem.size, fb, 2);  // a new writer attaches and carries on
  fill_frame(f, 3);
  again.publish(f.data(), 3, false);
  CHECK_EQ(b.read(out.data()), 3);
  CHECK_EQ(frame_step(out.data(), fb, 2), 2);
  CHECK_EQ(frame_step(out.data() + fb, fb, 3), 3);
  CHECK_EQ(slot0->seq.load() % 2, 0u);
}

TEST(obs_board_rejects_bad_layouts) {
  Mem mem(ObsBoardView::bytes_needed(8, 2));
  CHECK_THROWS(ObsBoardView(mem.p, mem.size, 8, 0), rtcore::InvalidArgument);
  CHECK_THROWS(ObsBoardView(mem.p, mem.size, 0, 2), rtcore::InvalidArgument);
  CHECK_THROWS(ObsBoardView(mem.p, mem.size, 4096, 2), rtcore::LayoutMismatch);
  CHECK_THROWS(ObsBoardView(static_cast<char*>(mem.p) + 8, mem.size - 64, 8, 1), rtcore::InvalidArgument);
  Mem m1(ObsBoardView::bytes_needed(8, 1));
  ObsBoardView b(m1.p, m1.size, 8, 1);
  std::uint64_t f = 7;
  CHECK_THROWS(b.publish(&f, -1, false), rtcore::InvalidArgument);
}

// One writer publishing as fast as it can, several readers: every frame of every stack read is whole
// (all its bytes encode one step), the stack is the consecutive frames ending at the returned step
// (padded at episode starts), and steps seen by one reader never go back.
TEST(obs_board_readers_never_see_a_torn_frame) {
  const std::size_t fb = 84 * 84 + 3;
  const std::uint32_t K = 4;
  const std::int64_t kSteps = 20000, kEpisode = 37;
  const int kReaders = 3;
  Mem mem(ObsBoardView::bytes_needed(fb, K));
  ObsBoardView board(mem.p, mem.size, fb, K);
  std::atomic<bool> done{false};
  std::atomic<int> bad{0};
  std::atomic<std::int64_t> reads{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&] {
      ObsBoardView view(mem.p, mem.size, fb, K);  // each reader its own view, as in another process
      std::vector<unsigned char> out(K * fb + 1);
      unsigned char* o = out.data() + 1;  // unaligned destination on purpose
      std::int64_t last = -1, n = 0;
      for (;;) {
        const bool finished = done.load(std::memory_order_acquire);
        const std::int64_t s = view.read(o);
        ++n;
        if (s < last) bad.fetch_add(1);
        if (s >= 0) {
          const std::int64_t ep = s - s % kEpisode;
          for (std::uint32_t j = 0; j < K; ++j) {
            const std::int64_t want = std::max<std::int64_t>(s - static_cast<std::int64_t>(K - 1 - j), ep);
            if (frame_step(o + j * fb, fb, want) != want) bad.fetch_add(1);
          }
        }
        last = s;
        if (finished) {
          if (s != kSteps - 1) bad.fetch_add(1);
          break;
        }
      }
      reads.fetch_add(n);
    });
  }
  std::vector<unsigned char> f(fb);
  for (std::int64_t s = 0; s < kSteps; ++s) {
    fill_frame(f, s);
    board.publish(f.data(), s, s % kEpisode == 0);
    if (s % 64 == 0) std::this_thread::yield();
  }
  done.store(true, std::memory_order_release);
  for (auto& t : readers) t.join();
  CHECK_EQ(bad.load(), 0);
  CHECK(reads.load() >= kReaders);
  CHECK_EQ(board.step(), kSteps - 1);
}

TEST(obs_board_wait_step_wakes_on_publish_and_times_out) {
  Mem mem(ObsBoardView::bytes_needed(16, 2));
  ObsBoardView b(mem.p, mem.size, 16, 2);
  CHECK_EQ(b.wait_step(-1, now_ns() + 2000000), -1);  // nothing published: times out
  std::atomic<std::int64_t> got{-100};
  std::thread waiter([&] {
    ObsBoardView v(mem.p, mem.size, 16, 2);
    got.store(v.wait_step(4, now_ns() + 30LL * 1000000000));
  });
  std::vector<unsigned char> f(16, 1);
  for (std::int64_t s = 0; s <= 5; ++s) {
    b.publish(f.data(), s, false);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  waiter.join();
  CHECK_EQ(got.load(), 5);
  CHECK_EQ(b.wait_step(4, now_ns()), 5);  // already newer: returns at once
  CHECK_EQ(b.wait_step(5, now_ns() + 1000000, 100000), -1);
}

TEST(action_board_takes_newest_once_and_counts_superseded) {
  Mem mem(ActionBoardView::bytes_needed(4));
  ActionBoardView b(mem.p, mem.size, 4);
  Taken t{};
  CHECK(!b.take(&t));
  bool pub = false;
  CHECK_EQ(b.post(7, 100, 0, &pub), 1u);
  CHECK(pub);
  CHECK(b.pending());
  CHECK(b.take(&t));
  CHECK_EQ(t.action, 7);
  CHECK_EQ(t.obs_step, 100);
  CHECK_EQ(t.worker, 0);
  CHECK_EQ(t.seq, 1u);
  CHECK(!b.take(&t));  // at most once
  CHECK(!b.pending());
  b.post(1, 101, 1);
  b.post(2, 102, 2);
  b.post(3, 99, 3);  // newest by post order even though its obs_step is older
  CHECK(b.take(&t));
  CHECK_EQ(t.action, 3);
  CHECK_EQ(t.obs_step, 99);
  CHECK_EQ(t.worker, 3);
  CHECK(!b.take(&t));
  CHECK_EQ(b.posted(), 4u);
  CHECK_EQ(b.taken(), 2u);
  CHECK_EQ(b.superseded(), 2u);
  // The same worker posting twice: its second post supersedes the first.
  b.post(10, 200, 1);
  b.post(11, 201, 1);
  b.post(12, 202, 1);
  CHECK(b.take(&t));
  CHECK_EQ(t.action, 12);
  CHECK_EQ(b.superseded(), 4u);
  CHECK_THROWS(b.post(0, 0, 4), rtcore::InvalidArgument);
  CHECK_THROWS(b.post(0, 0, -1), rtcore::InvalidArgument);
  CHECK_THROWS(ActionBoardView(mem.p, mem.size, 0), rtcore::InvalidArgument);
  CHECK_THROWS(ActionBoardView(mem.p, mem.size, 5), rtcore::LayoutMismatch);
}

// Several posters, one taker (and a second taker racing it): no post taken twice, every taken record
// whole, the taken post never older than any post completed before the take began, counters exact.
TEST(action_board_concurrent_posters_at_most_once_newest_exact_counts) {
  const int kPosters = 4, kPerPoster = 20000;
  Mem mem(ActionBoardView::bytes_needed(kPosters));
  ActionBoardView board(mem.p, mem.size, kPosters);
  std::atomic<std::uint64_t> done_max{0};  // highest seq whose post() has returned
  std::atomic<int> posters_left{kPosters};
  std::atomic<int> bad{0};
  std::vector<std::thread> posters;
  for (int w = 0; w < kPosters; ++w) {
    posters.emplace_back([&, w] {
      ActionBoardView v(mem.p, mem.size, kPosters);
      for (int i = 0; i < kPerPoster; ++i) {
        const std::uint64_t seq = v.post(static_cast<std::int64_t>(w) * 1000000 + i, i, w);
        std::uint64_t m = done_max.load(std::memory_order_relaxed);
        while (m < seq && !done_max.compare_exchange_weak(m, seq, std::memory_order_release, std::memory_order_relaxed)) {
        }
      }
      posters_left.fetch_sub(1, std::memory_order_release);
    });
  }
  std::vector<std::uint64_t> seqs[2];
  auto taker = [&](int id) {
    ActionBoardView v(mem.p, mem.size, kPosters);
    Taken t{};
    for (;;) {
      const bool finished = posters_left.load(std::memory_order_acquire) == 0;
      const std::uint64_t before = done_max.load(std::memory_order_acquire);
      const std::uint64_t last_before = v.last_taken_seq();
      if (v.take(&t)) {
        seqs[id].push_back(t.seq);
        if (t.action != static_cast<std::int64_t>(t.worker) * 1000000 + t.obs_step) bad.fetch_add(1);  // torn record
        if (t.seq < before) bad.fetch_add(1);  // not the newest
      } else if (id == 0 && before > std::max(last_before, v.last_taken_seq())) {
        bad.fetch_add(1);  // a completed post newer than the last take was there, and take() said none
      }
      if (finished && !v.pending()) break;
    }
  };
  std::thread t1(taker, 1);
  taker(0);
  for (auto& p : posters) p.join();
  t1.join();
  CHECK_EQ(bad.load(), 0);
  std::vector<std::uint64_t> all;
  for (auto& s : seqs) {
    CHECK(std::is_sorted(s.begin(), s.end()));
    all.insert(all.end(), s.begin(), s.end());
  }
  std::sort(all.begin(), all.end());
  CHECK(std::adjacent_find(all.begin(), all.end()) == all.end());  // at most once
  CHECK_EQ(board.posted(), static_cast<std::uint64_t>(kPosters) * kPerPoster);
  CHECK_EQ(board.taken(), static_cast<std::uint64_t>(all.size()));
  CHECK_EQ(board.taken() + board.superseded(), board.posted());
  CHECK_EQ(all.back(), board.posted());  // the very last post was taken
}

TEST(action_board_refuses_concurrent_poster_and_recovers_from_a_dead_one) {
  Mem mem(ActionBoardView::bytes_needed(2));
  ActionBoardView b(mem.p, mem.size, 2);
  auto* claim = reinterpret_cast<std::atomic<std::uint64_t>*>(static_cast<char*>(mem.p) + sizeof(ActionBoardView::Control));
  // A claim held by this process: another thread with the same worker id is mid-post.
  claim->store((static_cast<std::uint64_t>(getpid()) << 32) | 1);
  CHECK_THROWS(b.post(1, 1, 0), rtcore::BusyError);
  // A claim held by a process that has exited: the line is taken over.
  const pid_t child = fork();
  if (child == 0) _exit(0);
  waitpid(child, nullptr, 0);
  claim->store((static_cast<std::uint64_t>(child) << 32) | 1);
  b.post(5, 50, 0);
  Taken t{};
  CHECK(b.take(&t));
  CHECK_EQ(t.action, 5);
  b.post(6, 51, 0);
  CHECK(b.take(&t));
  CHECK_EQ(t.action, 6);
}

int main() { return rtcore_test::run_all(); }
