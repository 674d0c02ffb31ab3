// A lock-free sum tree of fixed-point priorities, shared by processes (the prioritized replay's index).
//
// Layout (a view over (base, size); the replay puts it in its shared-memory segment after the ring, the
// C++ test in heap memory):
//
//   TreeHeader                 one cache line: the running maximum leaf value
//   level 0 .. level L-1       uint64 words; level L-1 holds the leaves, every other entry is the sum
//                              of its 8 children, which are one cache line of the level below
//
// Fan-out 8: a node's children are one 64-byte line, so a draw reads one line per level (6 levels for
// 100k leaves) and an update recomputes one line per level.
//
// Values are fixed point, kFracBits fractional bits (resolution 2^-24 = 6e-8), so sums are exact
// integers: no rounding drift, and a draw is exactly proportional at quiescence. A leaf word packs the
// value (low kValueBits) with a tag (high kTagBits) that names the occupant of the leaf; the replay uses
// the ring lap of the transition, so a priority update computed for an overwritten transition is
// refused instead of landing on its successor. With at most kMaxLeaves leaves, a sum of values never
// overflows 64 bits.
//
// Concurrency (any number of processes set leaves, update leaves and draw at once; no lock):
//  - A leaf changes by one atomic exchange (set) or compare-exchange on the tag (update). Then every
//    ancestor is *recomputed from its children* (never adjusted by a delta): load the node, sum its 8
//    children, compare-exchange the node to the sum, re-read the children; retry while the exchange
//    fails or the children changed. All these operations are seq_cst, so of two updaters under one
//    node, the one whose exchange lands last has read the other's child (store-buffering needs a single
//    total order); the re-read catches the ABA case where an exchange of an unchanged value succeeds.
//    Hence at quiescence every node equals the sum of its children (exact).
//  - Progress: set/update/fix are lock-free (a retry means another updater's exchange on the same node
//    succeeded or a child changed), not wait-free. A draw is a read-only descent, wait-free.
//  - Transient tolerance: a draw concurrent with updates may follow sums that include some in-flight
//    changes and not others, so it draws from a mixture of the before and after distributions of those
//    updates; a descent that finds u beyond the sum of a line (a parent ahead of its children) reports
//    failure and the caller draws again.
//  - A process killed mid-update leaves its leaf's ancestors stale (at most one path). Because nodes
//    are recomputed, not adjusted, the next update of any leaf under a stale node repairs it and all of
//    its ancestors (self-healing); a delta-based tree would stay wrong forever.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "common/errors.h"
#include "common/seqlock.h"

namespace rtcore::replay {

constexpr std::uint32_t kTreeLayoutVersion = 1;
constexpr std::uint32_t kTreeFanout = 8;
constexpr unsigned kTreeFanoutBits = 3;
constexpr std::uint32_t kMaxTreeLevels = 10;  // 8^9 > kMaxLeaves
constexpr unsigned kValueBits = 40;
constexpr unsigned kTagBits = 64 - kValueBits;
constexpr unsigned kFracBits = 24;
constexpr std::uint64_t kValueMask = (std::uint64_t(1) << kValueBits) - 1;
constexpr std::uint64_t kTagMask = (std::uint64_t(1) << kTagBits) - 1;
constexpr std::uint64_t kMaxLeaves = std::uint64_t(1) << 24;  // kMaxLeaves * kValueMask < 2^64
constexpr double kValueScale = double(std::uint64_t(1) << kFracBits);
constexpr double kMaxPriorityValue = double(kValueMask) / kValueScale;  // largest storable value (~65536)
static_assert(kValueBits + 24 <= 64, "a full tree's sum must fit 64 bits");

// Layout parameters (stored in the owning segment's header).
struct TreeParams {
  std::uint64_t leaves;       // 0: no tree
  std::uint64_t total_bytes;  // header + all levels
  std::uint32_t levels;
  std::uint32_t reserved;
  std::uint64_t level_offset[kMaxTreeLevels];  // words from the first level's start
  std::uint64_t level_size[kMaxTreeLevels];    // words, a multiple of 8
};
static_assert(std::is_trivially_copyable_v<TreeParams> && std::is_standard_layout_v<TreeParams>);
static_assert(sizeof(TreeParams) == 24 + 16 * kMaxTreeLevels, "TreeParams layout changed: bump kTreeLayoutVersion");

struct alignas(kCacheLine) TreeHeader {
  std::atomic<std::uint64_t> max_value;  // running maximum of values ever stored by update(); 0 = none yet
  std::uint8_t pad[kCacheLine - 8];
};
static_assert(sizeof(TreeHeader) == kCacheLine && std::is_standard_layout_v<TreeHeader>);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "shared atomics must be lock-free");

inline TreeParams make_tree_params(std::uint64_t leaves) {
  if (leaves < 1 || leaves > kMaxLeaves)
    throw InvalidArgument("a priority tree holds 1 to " + std::to_string(kMaxLeaves) + " leaves, got " +
                          std::to_string(leaves));
  TreeParams p{};
  p.leaves = leaves;
  std::uint64_t sizes[kMaxTreeLevels];
  std::uint32_t n = 0;
  std::uint64_t count = leaves;  // entries in use at this level
  for (;;) {
    sizes[n++] = (count + kTreeFanout - 1) / kTreeFanout * kTreeFanout;
    if (count <= kTreeFanout) break;
    count = (count + kTreeFanout - 1) / kTreeFanout;
  }
  p.levels = n;
  std::uint64_t off = 0;
  for (std::uint32_t d = 0; d < n; ++d) {  // level 0 is the top line
    p.level_size[d] = sizes[n - 1 - d];
    p.level_offset[d] = off;
    off += p.level_size[d];
  }
  p.total_bytes = sizeof(TreeHeader) + off * sizeof(std::uint64_t);
  return p;
}

// p^alpha (already exponentiated) to the fixed-point value stored in a leaf: rounded, a positive value
// never rounds to 0 (it stays drawable), clamped to kMaxPriorityValue. Throws on NaN or negative.
inline std::uint64_t to_value(double x) {
  if (!(x >= 0.0)) throw InvalidArgument("priority value must be >= 0 and not NaN, got " + std::to_string(x));
  if (x >= kMaxPriorityValue) return kValueMask;
  const auto v = static_cast<std::uint64_t>(std::llround(x * kValueScale));
  return (v == 0 && x > 0.0) ? 1 : v;
}
inline double from_value(std::uint64_t v) { return double(v) / kValueScale; }

class SumTree {
 public:
  // A view over `size` bytes at `base` (64-byte aligned). Zeroed memory is a tree of zero leaves.
  SumTree(void* base, std::size_t size, const TreeParams& p) : p_(p) {
    if (p.levels < 1 || p.levels > kMaxTreeLevels) throw InvalidArgument("priority tree: bad level count");
    if (size < p.total_bytes)
      throw InvalidArgument("priority tree needs " + std::to_string(p.total_bytes) + " bytes, got " + std::to_string(size));
    if (reinterpret_cast<std::uintptr_t>(base) % kCacheLine != 0) throw InvalidArgument("priority tree base must be 64-byte aligned");
    head_ = static_cast<TreeHeader*>(base);
    words_ = reinterpret_cast<std::atomic<std::uint64_t>*>(static_cast<std::uint8_t*>(base) + sizeof(TreeHeader));
    leaf_level_ = words_ + p.level_offset[p.levels - 1];
  }

  const TreeParams& params() const noexcept { return p_; }
  std::uint64_t leaves() const noexcept { return p_.leaves; }

  static std::uint64_t pack(std::uint64_t value, std::uint64_t tag) { return (tag & kTagMask) << kValueBits | value; }
  static std::uint64_t value_of(std::uint64_t word) { return word & kValueMask; }
  static std::uint64_t tag_of(std::uint64_t word) { return word >> kValueBits; }

  // The leaf's word (value and tag).
  std::uint64_t leaf(std::uint64_t i) const {
    check(i);
    return leaf_level_[i].load(std::memory_order_relaxed);  // relaxed: a snapshot, nothing depends on it
  }

  // Unconditionally gives leaf i a new occupant (`tag`) and value; returns the old word. Lock-free.
  std::uint64_t set(std::uint64_t i, std::uint64_t value, std::uint64_t tag) {
    check(i);
    const std::uint64_t old = leaf_level_[i].exchange(pack(value, tag), std::memory_order_seq_cst);  // seq_cst: see fix()
    if (value_of(old) != value) fix(i);
    return old;
  }

  // Sets leaf i's value if its occupant is still `tag`; returns false (changing nothing) otherwise.
  bool update(std::uint64_t i, std::uint64_t tag, std::uint64_t value) {
    check(i);
    std::uint64_t cur = leaf_level_[i].load(std::memory_order_seq_cst);  // seq_cst: see fix()
    const std::uint64_t want = pack(value, tag);
    for (;;) {
      if (tag_of(cur) != (tag & kTagMask)) return false;
      if (cur == want) return true;
      if (leaf_level_[i].compare_exchange_weak(cur, want, std::memory_order_seq_cst, std::memory_order_seq_cst))  // seq_cst: see fix()
        break;
    }
    fix(i);
    raise_max(value);
    return true;
  }

  // Sum of all leaf values (a recent one while updates run).
  std::uint64_t total() const { return line_sum(0, 0, std::memory_order_relaxed); }  // relaxed: a draw validates elsewhere

  // Finds the leaf where the prefix sum passes u (0 <= u < total()): leaf i with
  // sum(values[0..i)) <= u < sum(values[0..i]). Returns false if the sums were inconsistent (updates in
  // flight or a stale path); the caller draws again. Wait-free.
  bool find(std::uint64_t u, std::uint64_t& leaf, std::uint64_t& value) const {
    std::uint64_t g = 0;
    for (std::uint32_t d = 0; d < p_.levels; ++d)
      if (!step(d, g, u, value)) return false;
    leaf = g;
    return true;
  }

  // find() for n draws at once, level by level, so the cache misses of the n descents overlap (each
  // level's lines are prefetched for all draws before any is read). ok[i] is find()'s result.
  void find_many(std::size_t n, const std::uint64_t* u_in, std::uint64_t* leaf, std::uint64_t* value, bool* ok) const {
    constexpr std::size_t kMax = 16;
    std::uint64_t u[kMax], g[kMax];
    for (std::size_t i0 = 0; i0 < n; i0 += kMax) {
      const std::size_t m = std::min(kMax, n - i0);
      for (std::size_t i = 0; i < m; ++i) {
        u[i] = u_in[i0 + i];
        g[i] = 0;
        ok[i0 + i] = true;
      }
      for (std::uint32_t d = 0; d < p_.levels; ++d) {
        for (std::size_t i = 0; i < m; ++i) __builtin_prefetch(level(d) + g[i] * kTreeFanout, 0, 3);
        for (std::size_t i = 0; i < m; ++i)
          if (ok[i0 + i]) ok[i0 + i] = step(d, g[i], u[i], value[i0 + i]);
      }
      for (std::size_t i = 0; i < m; ++i) leaf[i0 + i] = g[i];
    }
  }

  // The running maximum of values stored by update() (new transitions enter at it); 0 before any.
  std::uint64_t max_value() const { return head_->max_value.load(std::memory_order_relaxed); }  // relaxed: a hint for new leaves
  void raise_max(std::uint64_t value) {
    std::uint64_t cur = head_->max_value.load(std::memory_order_relaxed);  // relaxed: a monotone hint
    while (cur < value && !head_->max_value.compare_exchange_weak(cur, value, std::memory_order_relaxed))  // relaxed: a monotone hint
      ;
  }

  // True if every node equals the sum of its children and padding entries are 0. Exact for a quiescent
  // tree (no update in flight); tests and diagnostics only (reads the whole tree).
  bool consistent() const {
    for (std::uint32_t d = 0; d + 1 < p_.levels; ++d)
      for (std::uint64_t i = 0; i < p_.level_size[d]; ++i) {
        const std::uint64_t want = i < p_.level_size[d + 1] / kTreeFanout ? line_sum(d + 1, i, std::memory_order_relaxed) : 0;
        if (level(d)[i].load(std::memory_order_relaxed) != want) return false;  // relaxed: quiescent
      }
    return true;
  }

  // Recomputes every node from its children, bottom-up. For a quiescent tree only (no concurrent updates).
  void rebuild_quiescent() {
    for (std::uint32_t d = p_.levels - 1; d-- > 0;)
      for (std::uint64_t i = 0; i < p_.level_size[d]; ++i)
        level(d)[i].store(line_sum(d + 1, i, std::memory_order_relaxed), std::memory_order_relaxed);  // relaxed: quiescent
  }

 private:
  void check(std::uint64_t i) const {
    if (i >= p_.leaves)
      throw OutOfRange("leaf " + std::to_string(i) + " is out of range for a tree of " + std::to_string(p_.leaves) + " leaves");
  }

  std::atomic<std::uint64_t>* level(std::uint32_t d) const { return words_ + p_.level_offset[d]; }

  // One level of a descent: in line g of level d, picks the child k whose prefix sums bracket u,
  // branch-free (the 8 loads are independent, the choice is a count of prefix sums <= u); g becomes
  // the child's index and u the offset within it. False if u is beyond the line's sum.
  bool step(std::uint32_t d, std::uint64_t& g, std::uint64_t& u, std::uint64_t& value) const {
    const std::atomic<std::uint64_t>* line = level(d) + g * kTreeFanout;
    const std::uint64_t mask = d + 1 == p_.levels ? kValueMask : ~std::uint64_t(0);
    std::uint64_t v[kTreeFanout], prefix[kTreeFanout];
    std::uint64_t acc = 0;
    unsigned k = 0;
    for (std::uint32_t c = 0; c < kTreeFanout; ++c) {
      v[c] = line[c].load(std::memory_order_relaxed) & mask;  // relaxed: only steers the draw
      prefix[c] = acc;  // sum of children before c
      acc += v[c];
      k += acc <= u;  // children entirely below u
    }
    if (k >= kTreeFanout) return false;
    u -= prefix[k];
    value = v[k];
    g = g * kTreeFanout + k;
    return true;
  }

  // Sum of the values of line `g` (entries 8g..8g+7) of level d.
  std::uint64_t line_sum(std::uint32_t d, std::uint64_t g, std::memory_order mo) const {
    const std::atomic<std::uint64_t>* line = level(d) + g * kTreeFanout;
    const bool bottom = d + 1 == p_.levels;
    std::uint64_t s = 0;
    for (std::uint32_t k = 0; k < kTreeFanout; ++k) {
      const std::uint64_t w = line[k].load(mo);
      s += bottom ? value_of(w) : w;
    }
    return s;
  }

  // Recomputes the ancestors of leaf i, bottom-up, each from its children (see the header comment).
  void fix(std::uint64_t i) {
    for (std::uint32_t d = p_.levels - 1; d-- > 0;) {
      const std::uint64_t node = i >> (kTreeFanoutBits * (p_.levels - 1 - d));
      std::atomic<std::uint64_t>& n = level(d)[node];
      for (;;) {
        std::uint64_t old = n.load(std::memory_order_seq_cst);  // seq_cst: one total order with the children's RMWs
        const std::uint64_t sum = line_sum(d + 1, node, std::memory_order_seq_cst);  // seq_cst: see header comment
        if (!n.compare_exchange_strong(old, sum, std::memory_order_seq_cst, std::memory_order_seq_cst)) continue;  // seq_cst: see header
        if (line_sum(d + 1, node, std::memory_order_seq_cst) == sum) break;  // seq_cst: children unchanged since the exchange
      }
    }
  }

  TreeParams p_;
  TreeHeader* head_;
  std::atomic<std::uint64_t>* words_;
  std::atomic<std::uint64_t>* leaf_level_;
};

}  // namespace rtcore::replay
