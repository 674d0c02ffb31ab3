// The round-robin turnstile: order, congruence with the live count, joins and leaves, dead-holder skip,
// and a multi-thread run where every turn is taken exactly once, in order.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <thread>
#include <vector>

#include "check.h"
#include "sched_rig.h"
#include "sched/turnstile.h"

using namespace rtcore;
using namespace rtcore::sched;

namespace {

using rtcore_test::Created;
using rtcore_test::join_n;
using rtcore_test::kGarbage;
using rtcore_test::kMs;
using rtcore_test::on_threads;

TurnstileParams params(int m, std::int64_t hb = 100 * kMs) { return TurnstileParams{static_cast<std::uint32_t>(m), 0, hb}; }

// Who holds the turn, asking every learner in `js`.
int holder_of(Turnstile& t, const std::vector<int>& js, std::int64_t now, std::int64_t* u) {
  int h = -1;
  for (int j : js) {
    const std::int64_t x = t.try_turn(j, now);
    if (x >= 0) {
      CHECK(h < 0);  // never two holders
      h = j;
      *u = x;
    }
  }
  return h;
}

}  // namespace

TEST(round_robin_order_and_congruence) {
  auto p = params(4);
  Created<Turnstile> t(p);
  std::vector<int> js = join_n(t, 3);
  std::int64_t u = -1;
  for (int k = 0; k < 9; ++k) {
    const int h = holder_of(t, js, 0, &u);
    CHECK_EQ(h, k % 3);
    CHECK_EQ(u, k);
    CHECK_EQ(u % 3, h);  // rank == id here
    t.pass_turn(h, 0);
  }
  CHECK_EQ(t.passes(), 9u);
  CHECK_THROWS(t.pass_turn(1, 0), SlotError);  // 0 holds turn 9
}

TEST(leave_and_join_keep_u_mod_m_equal_to_rank) {
  auto p = params(8);
  Created<Turnstile> t(p);
  std::vector<int> js = join_n(t, 4);
  std::int64_t u = -1;
  CHECK_EQ(holder_of(t, js, 0, &u), 0);
  // `holder` holds the turn, and the turn number is its rank modulo the live count.
  auto expect = [&](int holder, int rank) {
    CHECK_EQ(holder_of(t, js, 0, &u), holder);
    CHECK_EQ(u % static_cast<std::int64_t>(js.size()), rank);
  };
  t.pass_turn(0, 0);  // turn 1 -> learner 1
  t.leave(2, 0);      // live: 0, 1, 3 (ranks 0, 1, 2)
  js = {0, 1, 3};
  CHECK_EQ(holder_of(t, js, 0, &u), 1);
  t.pass_turn(1, 0);
  expect(3, 2);
  t.pass_turn(3, 0);
  expect(0, 0);
  // The holder leaves: the turn passes on.
  t.leave(0, 0);
  js = {1, 3};
  expect(1, 0);
  // A joiner enters the cycle.
  CHECK_EQ(t.join(0), 0);
  js = {0, 1, 3};
  t.pass_turn(1, 0);
  expect(3, 2);
  t.pass_turn(3, 0);
  expect(0, 0);
}

TEST(dead_holder_is_skipped_after_the_heartbeat_timeout) {
  auto p = params(3, 100 * kMs);
  Created<Turnstile> t(p);
  for (int i = 0; i < 3; ++i) t.join(0);
  std::int64_t u = -1;
  CHECK_EQ(holder_of(t, {0, 1, 2}, 0, &u), 0);
  t.pass_turn(0, 10 * kMs);  // learner 1 holds turn 1, then dies (no more calls)
  CHECK_EQ(t.try_turn(2, 50 * kMs), -1);
  CHECK_EQ(t.try_turn(2, 100 * kMs), -1);  // 1's heartbeat is exactly at the timeout: still alive
  const std::int64_t v = t.try_turn(2, 200 * kMs);
  CHECK(v >= 0);
  CHECK_EQ(v % 2, 1);  // live {0, 2}: 2 has rank 1
  CHECK_EQ(t.skips(), 1u);
  CHECK_EQ(t.live_count(), 2);
  // The dead learner, back, lost its turn.
  CHECK_THROWS(t.pass_turn(1, 210 * kMs), SlotError);
  t.pass_turn(2, 220 * kMs);
  CHECK(t.try_turn(0, 220 * kMs) >= 0);
}

TEST(everyone_leaves_and_a_new_learner_takes_over) {
  auto p = params(2);
  Created<Turnstile> t(p);
  CHECK_EQ(t.join(0), 0);
  CHECK_EQ(t.try_turn(0, 0), 0);
  t.leave(0, 0);
  CHECK_EQ(t.live_count(), 0);
  CHECK_EQ(t.join(0, 1), 1);
  CHECK(t.try_turn(1, 0) >= 0);
}

TEST(threads_take_every_turn_once_in_order) {
  auto p = params(4, 10000 * kMs);
  Created<Turnstile> owner(p);
  constexpr int kTurns = 300;
  std::vector<int> order(4 * kTurns, -1);
  std::atomic<int> errors{0};
  on_threads(owner, p, 4, [&](Turnstile& t, int i) {
    const int j = t.join(clock::now_ns(), i);
    // Wait until everyone joined so the cycle is 0,1,2,3 from turn 0.
    while (owner.live_count() < 4) std::this_thread::yield();
    for (int k = 0; k < kTurns; ++k) {
      const std::int64_t u = t.wait_turn(j, clock::now_ns() + 20000 * kMs);
      if (u < 0 || u >= 4 * kTurns || u % 4 != j) {
        errors.fetch_add(1);
        return;
      }
      order[static_cast<std::size_t>(u)] = j;  // plain write: ordered by the turn hand-off
      t.pass_turn(j, clock::now_ns());
    }
  });
  CHECK_EQ(errors.load(), 0);
  for (int u = 0; u < 4 * kTurns; ++u) CHECK_EQ(order[u], u % 4);
}

int main() { return rtcore_test::run_all(); }

TEST(a_dead_holders_slot_is_reclaimed_by_a_join_and_its_turn_taken_over) {
  auto p = params(1, 600000 * kMs);  // a heartbeat timeout no test waits for: only liveness frees it
  const std::size_t bytes = (Turnstile::bytes_needed(p) + 4095) / 4096 * 4096;
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  CHECK(mem != MAP_FAILED);
  Turnstile t(mem, bytes, p, true);
  const pid_t child = fork();
  if (child == 0) {  // the sole learner takes the turn and dies in it ("mid-update")
    Turnstile c(mem, bytes, p, false);
    c.join(0, 0);
    _exit(c.try_turn(0, 0) >= 0 ? 0 : 1);
  }
  int status = 0;
  CHECK_EQ(waitpid(child, &status, 0), child);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK_EQ(t.holder(), 0);
  CHECK_THROWS(t.join(50 * kMs, 0), SlotError);  // heartbeat fresh: not looked up yet
  CHECK_EQ(t.join(200 * kMs, 0), 0);                    // its process has exited: the slot is free
  CHECK(t.try_turn(0, 200 * kMs) >= 0);                 // the replacement holds the turn it left
  t.pass_turn(0, 210 * kMs);
  CHECK(t.try_turn(0, 220 * kMs) >= 0);
  munmap(mem, bytes);
}
