// Proportional prioritized replay (Schaul et al. 2016) over the replay ring: a SumTree (sum_tree.h) with
// one leaf per ring slot, over all streams, in the same shared-memory segment as the ring.
//
// Leaf of slot (s, position p): index s * S + p % S, tag = p / S (the ring lap), value = priority^alpha
// in fixed point. A sampled transition's index (p * streams + s, as the uniform sampler returns) names
// its leaf and lap, so update() from any process reaches the right leaf and is refused if the slot has
// been overwritten since the draw.
//
// add: the leaf of the new position is set to the running maximum value (the new transition's
// priority) and the leaf of an episode's terminal-obs slot to 0 *before* the ring publishes the
// slots. A writer killed between the two leaves the new lap's tag on a slot that still holds an old,
// unsampleable position; the next writer of the stream overwrites both. Positions whose leaf is set but
// that are not sampleable yet (n-step chain incomplete, stack frames overwritten, a terminal obs) are
// drawn and refused by the ring (copy_slot), then drawn again: the accepted draws are proportional to
// the values among the sampleable transitions.
//
// Importance weights: w_i = (N * P(i))^-beta / max_j w_j over the batch, N = sampleable transitions,
// P(i) = value_i / total. (Schaul et al. divide by the buffer-wide maximum weight, i.e. they track the
// minimum priority in a second tree; a lock-free minimum cannot be recomputed as cheaply and a batch
// maximum is the normalisation of several reference Rainbow implementations. The ratio of two weights
// in a batch is the same either way.)
//
// Progress: add is the ring's wait-free write plus one or two lock-free leaf sets; sample is lock-free
// (draws refused by the ring or by an inconsistent descent are redrawn, bounded, then Timeout);
// update is lock-free. See sum_tree.h for the transient tolerance of concurrent updates.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "replay/ring.h"
#include "replay/sum_tree.h"

namespace rtcore::replay {

// Version of the whole replay segment: the ring's and the tree's layouts together.
constexpr std::uint32_t kSegmentLayoutVersion = (kLayoutVersion << 16) | kTreeLayoutVersion;

// Layout parameters of a replay segment (its header's params): the ring, then the optional tree.
struct ReplayLayout {
  Params ring;
  TreeParams tree;            // tree.leaves == 0: a uniform buffer
  double alpha;               // priority exponent, [0, 1]
  double beta;                // default importance-sampling exponent for handles, [0, 1]
  std::uint64_t tree_offset;  // bytes from the payload base (64-byte aligned)
  std::uint64_t total_bytes;  // payload bytes needed
};
static_assert(std::is_trivially_copyable_v<ReplayLayout> && std::is_standard_layout_v<ReplayLayout>);
static_assert(sizeof(ReplayLayout) == sizeof(Params) + sizeof(TreeParams) + 32, "ReplayLayout changed: bump a layout version");

inline ReplayLayout make_layout(const Params& ring, bool prioritized, double alpha, double beta) {
  ReplayLayout l{};
  l.ring = ring;
  l.alpha = alpha;
  l.beta = beta;
  l.tree_offset = round_up(ring.total_bytes, kCacheLine);
  l.total_bytes = ring.total_bytes;
  if (prioritized) {
    if (!(alpha >= 0.0 && alpha <= 1.0)) throw InvalidArgument("alpha must be in [0, 1], got " + std::to_string(alpha));
    if (!(beta >= 0.0 && beta <= 1.0)) throw InvalidArgument("beta must be in [0, 1], got " + std::to_string(beta));
    const std::uint64_t slots = ring.slots_per_stream * ring.streams;
    if (slots > kMaxLeaves)
      throw InvalidArgument("a prioritized buffer holds at most " + std::to_string(kMaxLeaves) + " slots, capacity gives " +
                            std::to_string(slots));
    l.tree = make_tree_params(slots);
    l.total_bytes = l.tree_offset + l.tree.total_bytes;
  }
  return l;
}

class Prioritized {
 public:
  static constexpr std::uint64_t kMaxRefusals = 100000;  // draws in a row refused before sample gives up

  Prioritized(Ring& ring, SumTree& tree, double alpha) : ring_(ring), tree_(tree), alpha_(alpha) {
    const Params& p = ring.params();
    S_ = p.slots_per_stream;
    streams_ = p.streams;
    if (tree.leaves() != S_ * streams_) throw InvalidArgument("priority tree and ring disagree on the number of slots");
  }

  Ring& ring() const noexcept { return ring_; }
  SumTree& tree() const noexcept { return tree_; }
  double alpha() const noexcept { return alpha_; }

  // The value new transitions enter with: the running maximum (priority 1 before any update).
  std::uint64_t entry_value() const {
    const std::uint64_t m = tree_.max_value();
    return m ? m : to_value(1.0);
  }

  // Ring::add_many, with the leaves of every new slot set first (entry value for the k steps, 0 for the
  // terminal obs slot after each step that ends its episode), as k add() calls would set them. Same
  // arguments and errors; wait-free like Ring::add_many plus one lock-free leaf set per slot.
  void add_many(std::uint32_t stream, std::size_t k, const std::uint8_t* obs, const std::int64_t* action,
                const float* reward, const bool* terminated, const bool* truncated, const std::uint8_t* next_obs,
                const bool* was_default, const std::int32_t* delay, std::uint64_t writer = 0,
                const bool* episode_start = nullptr) {
    std::uint64_t h = ring_.head(stream);  // checks the stream; only this writer moves it
    for (std::size_t i = 0; i < k; ++i) {
      Ring::check_step(action[i], reward[i], delay ? delay[i] : 0);
      if ((terminated[i] || truncated[i]) && next_obs == nullptr)
        throw InvalidArgument("next_obs is required when terminated or truncated");
    }
    const std::uint64_t v = entry_value();
    for (std::size_t i = 0; i < k; ++i, ++h) {
      tree_.set(leaf_of(stream, h), v, h / S_);
      if (terminated[i] || truncated[i]) {
        ++h;
        tree_.set(leaf_of(stream, h), 0, h / S_);
      }
    }
    ring_.add_many(stream, k, obs, action, reward, terminated, truncated, next_obs, was_default, delay, writer,
                   episode_start);
  }

  // Ring::add, with the new slots' leaves set first (see the file comment). Same arguments and errors.
  void add(std::uint32_t stream, const void* obs, std::int64_t action, float reward, bool terminated, bool truncated,
           const void* next_obs, bool was_default, std::int32_t delay, std::uint64_t writer = 0,
           bool episode_start = false) {
    const std::uint64_t h = ring_.head(stream);  // checks the stream; only this writer moves it
    const bool end = terminated || truncated;
    if (end && next_obs == nullptr) throw InvalidArgument("next_obs is required when terminated or truncated");
    tree_.set(leaf_of(stream, h), entry_value(), h / S_);
    if (end) tree_.set(leaf_of(stream, h + 1), 0, (h + 1) / S_);
    ring_.add(stream, obs, action, reward, terminated, truncated, next_obs, was_default, delay, writer, episode_start);
  }

  // Fills `batch` rows of `out`, each transition drawn with probability proportional to its value, and
  // weight[row] with its importance weight for exponent beta (see the file comment). Throws
  // InvalidArgument if fewer than `batch` transitions are sampleable or all have priority 0, Timeout if
  // kMaxRefusals draws in a row are refused.
  void sample(std::size_t batch, const SampleOut& out, float* weight, double beta, Rng& rng, SampleScratch& sc,
              bool acted = false) const {
    if (batch == 0) return;
    const std::uint64_t available = ring_.size();
    if (available < batch)
      throw InvalidArgument("cannot sample a batch of " + std::to_string(batch) + ": only " + std::to_string(available) +
                            " transition(s) are sampleable");
    // Draws are made kChunk at a time: the tree descents of a chunk run level by level together
    // (SumTree::find_many), so their cache misses overlap; each slot is prefetched while the previous
    // one is copied. A refused draw is replaced by single draws.
    constexpr std::size_t kChunk = 16;
    std::uint64_t u[kChunk], leaf[kChunk], value[kChunk];
    bool ok[kChunk];
    double wmax = 0.0;
    for (std::size_t r0 = 0; r0 < batch; r0 += kChunk) {
      const std::size_t m = std::min(kChunk, batch - r0);
      const std::uint64_t total = tree_.total();
      for (std::size_t i = 0; i < m; ++i) u[i] = total ? rng.below(total) : 0;
      tree_.find_many(m, u, leaf, value, ok);
      if (ok[0] && total) ring_.prefetch_slot(static_cast<std::uint32_t>(leaf[0] / S_), leaf[0] % S_);
      for (std::size_t i = 0; i < m; ++i) {
        if (i + 1 < m && ok[i + 1] && total)  // one ahead, as Ring::sample: its misses overlap this copy
          ring_.prefetch_slot(static_cast<std::uint32_t>(leaf[i + 1] / S_), leaf[i + 1] % S_);
        Pick d{static_cast<std::uint32_t>(leaf[i] / S_), leaf[i] % S_, ok[i] && total ? value[i] : 0, total};
        const std::size_t row = r0 + i;
        std::uint64_t refused = 0;
        for (;;) {
          if (d.value != 0) {
            const int r = ring_.copy_slot(d.s, d.slot, row, out, acted);
            if (r == Ring::kSlotCopied) {
              weight[row] = static_cast<float>(std::pow(double(available) * double(d.value) / double(d.total), -beta));
              wmax = std::max(wmax, double(weight[row]));  // the largest stored weight divides to exactly 1
              break;
            }
            if (r == Ring::kSlotOverwritten) ++sc.collisions;
          }
          if (++refused > kMaxRefusals) {
            if (!any_drawable(row, out))
              throw InvalidArgument("cannot sample: every sampleable transition has priority 0 (update_priorities)");
            throw Timeout("prioritized sample gave up after " + std::to_string(kMaxRefusals) +
                          " draws in a row were overwritten while copied: the buffer is too small for the write rate");
          }
          d = pick(rng);
        }
      }
    }
    for (std::size_t row = 0; row < batch; ++row) weight[row] = static_cast<float>(weight[row] / wmax);
  }

  // Sets the priority of transition `index` (p * streams + s) to `priority` (stored as priority^alpha).
  // Returns false, changing nothing, if the transition has been overwritten since it was sampled.
  // Throws InvalidArgument for a negative or NaN priority, OutOfRange for a position never written.
  bool update(std::int64_t index, double priority) {
    const std::uint64_t value = value_for(priority);
    std::uint32_t s;
    std::uint64_t p;
    locate(index, s, p);
    return tree_.update(leaf_of(s, p), p / S_, value);
  }

  // priority^alpha in fixed point; checks the priority.
  std::uint64_t value_for(double priority) const {
    if (std::isnan(priority) || priority < 0.0)
      throw InvalidArgument("priority must be >= 0 and not NaN, got " + std::to_string(priority));
    if (std::isinf(priority)) throw InvalidArgument("priority must be finite, got inf");
    return to_value(alpha_ == 0.0 ? 1.0 : std::pow(priority, alpha_));
  }

  // The stored priority^alpha of transition `index`, or -1 if its slot holds another transition now.
  double value_of(std::int64_t index) const {
    std::uint32_t s;
    std::uint64_t p;
    locate(index, s, p);
    const std::uint64_t w = tree_.leaf(leaf_of(s, p));
    return SumTree::tag_of(w) == ((p / S_) & kTagMask) ? from_value(SumTree::value_of(w)) : -1.0;
  }

  // Checks an index against the positions written so far: (stream, position) or OutOfRange.
  void locate(std::int64_t index, std::uint32_t& s, std::uint64_t& p) const {
    if (index < 0) throw OutOfRange("index " + std::to_string(index) + " is negative");
    s = static_cast<std::uint32_t>(std::uint64_t(index) % streams_);
    p = std::uint64_t(index) / streams_;
    if (p >= ring_.head(s))
      throw OutOfRange("index " + std::to_string(index) + " names position " + std::to_string(p) + " of stream " +
                       std::to_string(s) + ", which has not been written (head " + std::to_string(ring_.head(s)) + ")");
  }

 private:
  // Error path only: true if some slot with a nonzero value is sampleable (it is copied into `row`).
  bool any_drawable(std::size_t row, const SampleOut& out) const {
    for (std::uint64_t i = 0; i < tree_.leaves(); ++i)
      if (SumTree::value_of(tree_.leaf(i)) != 0 &&
          ring_.copy_slot(static_cast<std::uint32_t>(i / S_), i % S_, row, out) == Ring::kSlotCopied)
        return true;
    return false;
  }

  struct Pick {
    std::uint32_t s;
    std::uint64_t slot, value, total;
  };

  std::uint64_t leaf_of(std::uint32_t s, std::uint64_t p) const { return std::uint64_t(s) * S_ + p % S_; }

  // One proportional draw (value 0 if the descent met inconsistent sums).
  Pick pick(Rng& rng) const {
    const std::uint64_t total = tree_.total();
    if (total == 0) return {0, 0, 0, 0};
    std::uint64_t leaf, value;
    if (!tree_.find(rng.below(total), leaf, value)) return {0, 0, 0, total};
    return {static_cast<std::uint32_t>(leaf / S_), leaf % S_, value, total};
  }

  Ring& ring_;
  SumTree& tree_;
  double alpha_;
  std::uint64_t S_;
  std::uint32_t streams_;
};

}  // namespace rtcore::replay
