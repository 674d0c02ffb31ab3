// Tests of the priority sum tree (csrc/replay/sum_tree.h) on heap memory: layout, exact proportional
// descent, tags, and concurrent updates from threads leaving every node equal to its children's sum.
#include <atomic>
#include <cmath>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include "check.h"
#include "heap.h"
#include "replay/sum_tree.h"

using namespace rtcore::replay;
using rtcore_test::HeapMem;

namespace {

// Every internal node equals the sum of its children's values (the quiescent invariant), checked by the
// tree itself and independently here: the total equals the sum of all leaf values.
bool consistent(const SumTree& t, const TreeParams& p, const void*) {
  std::uint64_t all = 0;
  for (std::uint64_t i = 0; i < p.leaves; ++i) all += SumTree::value_of(t.leaf(i));
  return t.consistent() && all == t.total();
}

}  // namespace

TEST(layout_levels_are_lines_of_eight) {
  const TreeParams one = make_tree_params(1);
  CHECK_EQ(one.levels, 1u);
  CHECK_EQ(one.level_size[0], 8u);
  const TreeParams p = make_tree_params(100000);
  CHECK_EQ(p.levels, 6u);  // entries in use 100000, 12500, 1563, 196, 25, 4 (the top line)
  CHECK_EQ(p.level_size[0], 8u);
  CHECK_EQ(p.level_size[p.levels - 1], 100000u);
  for (std::uint32_t d = 0; d < p.levels; ++d) CHECK_EQ(p.level_size[d] % 8, 0u);
  CHECK_EQ(p.total_bytes, sizeof(TreeHeader) + 8 * (p.level_offset[p.levels - 1] + p.level_size[p.levels - 1]));
  CHECK_THROWS(make_tree_params(0), rtcore::InvalidArgument);
  CHECK_THROWS(make_tree_params(kMaxLeaves + 1), rtcore::InvalidArgument);
}

TEST(fixed_point_values) {
  CHECK_EQ(to_value(1.0), std::uint64_t(1) << kFracBits);
  CHECK_EQ(to_value(0.0), 0u);
  CHECK_EQ(to_value(1e-12), 1u);  // positive stays drawable
  CHECK_EQ(to_value(1e9), kValueMask);  // clamped
  CHECK_THROWS(to_value(-1.0), rtcore::InvalidArgument);
  CHECK_THROWS(to_value(std::nan("")), rtcore::InvalidArgument);
  CHECK(std::abs(from_value(to_value(0.3)) - 0.3) < 1e-7);
}

TEST(find_is_exact_prefix_search) {
  for (std::uint64_t n : {1u, 7u, 8u, 9u, 64u, 65u, 1000u}) {
    const TreeParams p = make_tree_params(n);
    HeapMem mem(p.total_bytes, 0);
    SumTree t(mem.p, mem.size, p);
    std::vector<std::uint64_t> v(n);
    for (std::uint64_t i = 0; i < n; ++i) {
      v[i] = (i * 7919) % 13;  // some zeros
      t.set(i, v[i], 0);
    }
    CHECK(consistent(t, p, mem.p));
    std::uint64_t prefix = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      for (std::uint64_t u = prefix; u < prefix + v[i]; ++u) {
        std::uint64_t leaf = 0, value = 0;
        CHECK(t.find(u, leaf, value));
        CHECK_EQ(leaf, i);
        CHECK_EQ(value, v[i]);
      }
      prefix += v[i];
    }
    CHECK_EQ(t.total(), prefix);
    std::uint64_t leaf, value;
    CHECK(!t.find(prefix, leaf, value));  // u beyond the total: reported, not a wrong leaf
  }
}

TEST(update_refuses_a_new_occupant_and_raises_max) {
  const TreeParams p = make_tree_params(20);
  HeapMem mem(p.total_bytes, 0);
  SumTree t(mem.p, mem.size, p);
  t.set(3, 100, 7);
  CHECK(t.update(3, 7, 250));
  CHECK_EQ(SumTree::value_of(t.leaf(3)), 250u);
  CHECK_EQ(t.max_value(), 250u);
  t.set(3, 5, 8);               // the slot is overwritten by lap 8
  CHECK(!t.update(3, 7, 999));  // an update computed for lap 7 is refused
  CHECK_EQ(SumTree::value_of(t.leaf(3)), 5u);
  CHECK_EQ(t.max_value(), 250u);
  CHECK_EQ(t.total(), 5u);
  CHECK(t.update(3, 8 + (kTagMask + 1), 6));  // tags compare modulo 2^kTagBits
  CHECK_THROWS(t.set(20, 1, 0), rtcore::OutOfRange);
}

TEST(a_stale_path_heals_on_the_next_update_below_it) {
  const TreeParams p = make_tree_params(512);
  HeapMem mem(p.total_bytes, 0);
  SumTree t(mem.p, mem.size, p);
  for (std::uint64_t i = 0; i < 512; ++i) t.set(i, 10, 0);
  // Simulate a process killed after changing leaf 100 but before fixing its ancestors.
  auto* leaves = reinterpret_cast<std::uint64_t*>(static_cast<std::uint8_t*>(mem.p) + sizeof(TreeHeader)) + p.level_offset[p.levels - 1];
  leaves[100] = SumTree::pack(1000, 0);
  CHECK(!consistent(t, p, mem.p));
  t.set(101, 11, 0);  // a sibling's update recomputes the shared path from the children
  CHECK(consistent(t, p, mem.p));
  CHECK_EQ(t.total(), 510u * 10 + 1000 + 11);
}

TEST(concurrent_setters_and_updaters_leave_exact_sums) {
  const TreeParams p = make_tree_params(4096);
  HeapMem mem(p.total_bytes, 0);
  SumTree t(mem.p, mem.size, p);
  std::atomic<bool> go{false};
  std::atomic<std::uint64_t> refused{0};
  std::vector<std::thread> th;
  for (int w = 0; w < 4; ++w) {
    th.emplace_back([&, w] {
      std::mt19937_64 rng(w);
      while (!go.load(std::memory_order_acquire)) {
      }
      for (int k = 0; k < 100000; ++k) {
        // Neighbouring leaves (shared ancestors) so the threads collide on every level.
        const std::uint64_t i = (rng() % 64) + (w % 2) * 8;
        if (w < 2)
          t.set(i, rng() % 5000, k);
        else if (!t.update(i, SumTree::tag_of(t.leaf(i)), rng() % 5000))
          refused.fetch_add(1, std::memory_order_relaxed);
        std::uint64_t leaf, value;
        const std::uint64_t total = t.total();
        if (total) (void)t.find(rng() % total, leaf, value);  // readers never crash on transient sums
      }
    });
  }
  go.store(true, std::memory_order_release);
  for (auto& x : th) x.join();
  CHECK(consistent(t, p, mem.p));
  std::printf("  %llu updates refused (their leaf got a new occupant first)\n", (unsigned long long)refused.load());
}

int main() { return rtcore_test::run_all(); }
