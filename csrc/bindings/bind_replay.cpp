// rtcore._core.Replay: a handle on a replay ring in a shared-memory segment (csrc/replay/ring.h).
// Validation of Python arguments, defaults and docstrings live in rtcore/replay.py; this file checks
// only what it must to stay memory-safe (every array's dtype, shape, contiguity) and keeps those checks
// allocation-free on success (check_array in numpy_util.h allocates only to build the error).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <pthread.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "bindings/bindings.h"
#include "bindings/numpy_util.h"
#include "bindings/segment_handle.h"
#include "params/param_store.h"
#include "replay/prioritized.h"
#include "replay/ring.h"
#include "replay/sum_tree.h"
#include "shm/segment.h"

namespace rtcore::bindings {

namespace {

using replay::Params;
using replay::Prioritized;
using replay::ReplayLayout;
using replay::Ring;
using replay::SumTree;

// add() releases the GIL only for frames of 64 KiB and more: a smaller copy is shorter than the release
// and re-acquire it would save (docs/design/replay.md, "The GIL in add").
constexpr std::size_t kAddReleaseGilBytes = 64 * 1024;

// The mapped segment and the views over it (the ring; the priority tree of a prioritized buffer),
// shared by the handle and by every call in flight: close() drops the handle's reference, and the
// memory is unmapped when the last call using it (a GIL-free sample in another thread) returns.
struct ReplayState {
  shm::Segment seg;
  Ring ring;
  std::optional<SumTree> tree;
  std::optional<Prioritized> prio;  // refers to ring and tree: the state never moves (held by shared_ptr)
  ReplayState(shm::Segment s, const ReplayLayout& l) : seg(std::move(s)), ring(seg.payload(), seg.payload_size(), l.ring) {
    if (l.tree.leaves) {
      tree.emplace(static_cast<std::uint8_t*>(seg.payload()) + l.tree_offset, seg.payload_size() - l.tree_offset, l.tree);
      prio.emplace(ring, *tree, l.alpha);
    }
  }
  ReplayState(const ReplayState&) = delete;
  ReplayState& operator=(const ReplayState&) = delete;
};
using StatePtr = std::shared_ptr<ReplayState>;

// This process's writer token (params::self_token(): pid and start time), recomputed after fork()
// without a system call per add (the fork generation is bumped in the child by pthread_atfork).
std::atomic<std::uint32_t> g_fork_generation{0};
std::uint64_t writer_token(std::uint64_t& cached, std::uint32_t& generation) {
  static const int registered = [] {
    pthread_atfork(nullptr, nullptr, [] { g_fork_generation.fetch_add(1, std::memory_order_relaxed); });  // relaxed: one process's counter
    return 0;
  }();
  (void)registered;
  const std::uint32_t g = g_fork_generation.load(std::memory_order_relaxed);  // relaxed: as above
  if (cached == 0 || generation != g) {
    cached = params::self_token();
    generation = g;
  }
  return cached;
}

class ReplayHandle {
 public:
  static std::unique_ptr<ReplayHandle> create(const std::string& name, std::uint64_t capacity,
                                              const std::vector<std::int64_t>& shape, const py::dtype& dtype,
                                              std::uint32_t frame_stack, std::uint32_t streams, std::uint32_t n_step,
                                              double gamma, bool prioritized, double alpha, double beta,
                                              std::uint32_t action_history) {
    const std::string dstr = py::str(dtype.attr("str")).cast<std::string>();
    const Params p = replay::make_params(capacity, streams, frame_stack, n_step, gamma, shape,
                                         static_cast<std::uint64_t>(dtype.itemsize()), dstr, action_history);
    const ReplayLayout l = replay::make_layout(p, prioritized, alpha, beta);
    shm::Segment seg =
        shm::Segment::create(name, shm::Kind::kReplay, replay::kSegmentLayoutVersion, &l, sizeof l, l.total_bytes);
    shm::UnlinkOnThrow guard(seg.name());
    seg.mark_ready();  // the zeroed payload is an empty ring and a tree of zero leaves
    auto h = std::unique_ptr<ReplayHandle>(new ReplayHandle(std::move(seg), l));
    guard.release();
    return h;
  }

  static std::unique_ptr<ReplayHandle> attach(const std::string& name) {
    shm::Segment seg = shm::Segment::attach(name, shm::Kind::kReplay, replay::kSegmentLayoutVersion);
    const ReplayLayout l = seg.params<ReplayLayout>();
    const Params& p = l.ring;
    if (std::memchr(p.dtype, 0, sizeof p.dtype) == nullptr)
      throw LayoutMismatch("segment '" + seg.name() + "' has a corrupt replay layout: its dtype string is not terminated");
    std::uint64_t itemsize;
    try {
      itemsize = static_cast<std::uint64_t>(py::dtype(std::string(p.dtype)).itemsize());
    } catch (const py::error_already_set&) {
      throw LayoutMismatch("segment '" + seg.name() + "' has a corrupt replay layout: dtype '" + std::string(p.dtype) +
                           "' is not a numpy dtype");
    }
    try {
      replay::check_params(p, seg.payload_size(), itemsize);
    } catch (const LayoutMismatch& e) {
      throw LayoutMismatch("segment '" + seg.name() + "': " + e.what());
    }
    if (l.total_bytes > seg.payload_size() || l.ring.total_bytes > l.tree_offset)
      throw LayoutMismatch("segment '" + seg.name() + "' is too small for the replay layout its header describes");
    return std::unique_ptr<ReplayHandle>(new ReplayHandle(std::move(seg), l));
  }

  void add(std::int64_t stream, const py::array& obs, std::int64_t action, double reward, bool terminated, bool truncated,
           const py::object& next_obs, bool was_default, std::int32_t delay, bool episode_start) {
    const StatePtr st = live();
    check_stream(stream);
    check_frame("obs", obs);
    const float r = check_reward(reward);
    Ring::check_step(action, r, delay);
    const void* next_ptr = nullptr;
    py::array next_arr;
    if (!next_obs.is_none()) {
      if (!py::isinstance<py::array>(next_obs)) throw InvalidArgument("next_obs must be a numpy array or None");
      next_arr = py::reinterpret_borrow<py::array>(next_obs);
      check_frame("next_obs", next_arr);
      next_ptr = next_arr.data();
    }
    const std::uint64_t token = writer_token(token_, token_generation_);
    const auto s = static_cast<std::uint32_t>(stream);
    if (p_.frame_bytes >= kAddReleaseGilBytes) {
      py::gil_scoped_release nogil;
      add_one(*st, s, obs.data(), action, r, terminated, truncated, next_ptr, was_default, delay, token, episode_start);
    } else {
      add_one(*st, s, obs.data(), action, r, terminated, truncated, next_ptr, was_default, delay, token, episode_start);
    }
  }

  void add_batch(const py::array& obs, const py::array& action, const py::array& reward, const py::array& terminated,
                 const py::array& truncated, const py::object& next_obs, const py::array& was_default,
                 const py::array& delay, const py::array& episode_start) {
    const StatePtr st = live();
    const std::int64_t n = p_.streams;
    check_batch_frames("obs", obs, n);
    check_vec("action", action, n, py::dtype::of<std::int64_t>());
    check_vec("reward", reward, n, py::dtype::of<float>());
    check_vec("terminated", terminated, n, py::dtype::of<bool>());
    check_vec("truncated", truncated, n, py::dtype::of<bool>());
    check_vec("was_default", was_default, n, py::dtype::of<bool>());
    check_vec("delay", delay, n, py::dtype::of<std::int32_t>());
    check_vec("episode_start", episode_start, n, py::dtype::of<bool>());
    const auto* term = static_cast<const bool*>(terminated.data());
    const auto* trunc = static_cast<const bool*>(truncated.data());
    const std::uint8_t* next_base = nullptr;
    py::array next_arr;
    if (!next_obs.is_none()) {
      if (!py::isinstance<py::array>(next_obs)) throw InvalidArgument("next_obs must be a numpy array or None");
      next_arr = py::reinterpret_borrow<py::array>(next_obs);
      check_batch_frames("next_obs", next_arr, n);
      next_base = static_cast<const std::uint8_t*>(next_arr.data());
    }
    const auto* a = static_cast<const std::int64_t*>(action.data());
    const auto* rw = static_cast<const float*>(reward.data());
    const auto* wd = static_cast<const bool*>(was_default.data());
    const auto* dl = static_cast<const std::int32_t*>(delay.data());
    const auto* es = static_cast<const bool*>(episode_start.data());
    // Every row is checked before any is written: a bad row leaves the buffer as it was.
    for (std::int64_t i = 0; i < n; ++i) {
      if ((term[i] || trunc[i]) && next_base == nullptr)
        throw InvalidArgument("next_obs is required when any stream is terminated or truncated (stream " +
                              std::to_string(i) + " is)");
      try {
        Ring::check_step(a[i], rw[i], dl[i]);
      } catch (const InvalidArgument& e) {
        throw InvalidArgument(std::string(e.what()) + " (stream " + std::to_string(i) + ")");
      }
    }
    const auto* o = static_cast<const std::uint8_t*>(obs.data());
    const std::size_t fb = p_.frame_bytes;
    const std::uint64_t token = writer_token(token_, token_generation_);
    py::gil_scoped_release nogil;
    for (std::int64_t i = 0; i < n; ++i)
      add_one(*st, static_cast<std::uint32_t>(i), o + i * fb, a[i], rw[i], term[i], trunc[i],
              next_base ? next_base + i * fb : nullptr, wd[i], dl[i], token, es[i]);
  }

  // k steps of one stream in one call: every argument is checked first (a bad one writes nothing), then
  // one GIL release and Ring::add_many (the slots k add() calls would write, fenced once per call).
  void add_many(std::int64_t stream, const py::object& obs_in, const py::object& action, const py::object& reward,
                const py::object& terminated, const py::object& truncated, const py::object& next_obs,
                const py::object& was_default, const py::object& delay, const py::object& episode_start) {
    const StatePtr st = live();
    check_stream(stream);
    if (!py::isinstance<py::array>(obs_in)) throw InvalidArgument("obs must be a numpy array of k frames");
    const auto obs = py::reinterpret_borrow<py::array>(obs_in);
    if (obs.ndim() != static_cast<py::ssize_t>(p_.ndim) + 1) {
      std::string expected = "(k";
      for (std::int64_t d : frame_shape_) expected += ", " + std::to_string(d);
      throw InvalidArgument("obs has shape " + shape_str(shape_of(obs)) + ", expected " + expected +
                            "): k steps of obs_shape " + shape_str(frame_shape_));
    }
    const std::int64_t k = obs.shape(0);
    check_batch_frames("obs", obs, k);
    const py::array a = many_vec("action", action, k, py::dtype::of<std::int64_t>(), "iu");
    const py::array rw = many_vec("reward", reward, k, py::dtype::of<float>(), "iuf");
    const py::array te = many_vec("terminated", terminated, k, py::dtype::of<bool>(), "b");
    const py::array tr = many_vec("truncated", truncated, k, py::dtype::of<bool>(), "b");
    const bool has_wd = !was_default.is_none(), has_dl = !delay.is_none();  // None: all false / all 0
    const py::array wd = has_wd ? many_vec("was_default", was_default, k, py::dtype::of<bool>(), "b") : py::array();
    const py::array dl = has_dl ? many_vec("delay", delay, k, py::dtype::of<std::int32_t>(), "iu") : py::array();
    const bool has_es = !episode_start.is_none();  // None: no step restarts an episode
    const py::array es = has_es ? many_vec("episode_start", episode_start, k, py::dtype::of<bool>(), "b") : py::array();
    const auto* term = static_cast<const bool*>(te.data());
    const auto* trunc = static_cast<const bool*>(tr.data());
    const std::uint8_t* next_base = nullptr;
    py::array next_arr;
    if (!next_obs.is_none()) {
      next_arr = py::array::ensure(next_obs);
      if (!next_arr) throw InvalidArgument("next_obs must be an array or None");
      check_batch_frames("next_obs", next_arr, k);
      next_base = static_cast<const std::uint8_t*>(next_arr.data());
    }
    for (std::int64_t i = 0; i < k; ++i)
      if ((term[i] || trunc[i]) && next_base == nullptr)
        throw InvalidArgument("next_obs is required when a step ends its episode (step " + std::to_string(i) +
                              " is terminated or truncated); pass next_obs with one row per step");
    const auto* o = static_cast<const std::uint8_t*>(obs.data());
    const auto* ac = static_cast<const std::int64_t*>(a.data());
    const auto* re = static_cast<const float*>(rw.data());
    const auto* w = has_wd ? static_cast<const bool*>(wd.data()) : nullptr;
    const auto* d = has_dl ? static_cast<const std::int32_t*>(dl.data()) : nullptr;
    const auto s = static_cast<std::uint32_t>(stream);
    const auto* e = has_es ? static_cast<const bool*>(es.data()) : nullptr;
    const std::uint64_t token = writer_token(token_, token_generation_);
    py::gil_scoped_release nogil;
    if (st->prio)  // a prioritized buffer: the new slots' leaves too (entry priority), as add() sets them
      st->prio->add_many(s, static_cast<std::size_t>(k), o, ac, re, term, trunc, next_base, w, d, token, e);
    else
      st->ring.add_many(s, static_cast<std::size_t>(k), o, ac, re, term, trunc, next_base, w, d, token, e);
  }

  void sample(const py::array& obs, const py::array& next_obs, const py::array& action, const py::array& reward,
              const py::array& done, const py::array& discount, const py::array& was_default, const py::array& delay,
              const py::array& index, const py::object& weight, double beta, bool acted, const py::object& history,
              const py::object& next_history) {
    const StatePtr st = live();  // held until the GIL-free copy below is done: close() cannot unmap under it
    float* wptr = nullptr;
    if (!weight.is_none()) {
      if (!st->prio) throw InvalidArgument("ReplayBuffer '" + name_ + "' is not prioritized");
      if (!(beta >= 0.0 && beta <= 1.0)) throw InvalidArgument("beta must be in [0, 1], got " + std::to_string(beta));
      const py::array w = py::array::ensure(weight);
      if (!w) throw InvalidArgument("out.weight must be an array");
      check_vec("out.weight", w, action.ndim() == 1 ? action.shape(0) : 0, py::dtype::of<float>(), true);
      wptr = static_cast<float*>(const_cast<void*>(w.data()));
    }
    if (action.ndim() != 1) throw InvalidArgument("out.action must be one-dimensional");
    const std::int64_t b = action.shape(0);
    check_batch_stacks("out.obs", obs, b);
    check_batch_stacks("out.next_obs", next_obs, b);
    check_vec("out.action", action, b, py::dtype::of<std::int64_t>(), true);
    check_vec("out.reward", reward, b, py::dtype::of<float>(), true);
    check_vec("out.done", done, b, py::dtype::of<bool>(), true);
    check_vec("out.discount", discount, b, py::dtype::of<float>(), true);
    check_vec("out.was_default", was_default, b, py::dtype::of<bool>(), true);
    check_vec("out.delay", delay, b, py::dtype::of<std::int32_t>(), true);
    check_vec("out.index", index, b, py::dtype::of<std::int64_t>(), true);
    // Writeable was checked above.
    replay::SampleOut out{static_cast<std::uint8_t*>(const_cast<void*>(obs.data())),
                          static_cast<std::uint8_t*>(const_cast<void*>(next_obs.data())),
                          static_cast<std::int64_t*>(const_cast<void*>(action.data())),
                          static_cast<float*>(const_cast<void*>(reward.data())),
                          static_cast<bool*>(const_cast<void*>(done.data())),
                          static_cast<float*>(const_cast<void*>(discount.data())),
                          static_cast<bool*>(const_cast<void*>(was_default.data())),
                          static_cast<std::int32_t*>(const_cast<void*>(delay.data())),
                          static_cast<std::int64_t*>(const_cast<void*>(index.data()))};
    // Action histories: both arrays exactly when the buffer gathers them, (b, action_history + 1) int64.
    py::array hist_arr, next_hist_arr;
    if (p_.action_history > 0) {
      if (history.is_none() || next_history.is_none())
        throw InvalidArgument("ReplayBuffer '" + name_ + "' has action_history=" + std::to_string(p_.action_history) +
                              ": out.action_history and out.next_action_history are required (see empty_batch())");
      hist_arr = py::array::ensure(history);
      next_hist_arr = py::array::ensure(next_history);
      if (!hist_arr || !next_hist_arr) throw InvalidArgument("out.action_history must be arrays");
      const std::array<std::int64_t, 2> hshape{b, std::int64_t(p_.action_history) + 1};
      check_array("out.action_history", hist_arr, hshape, py::dtype::of<std::int64_t>(), true);
      check_array("out.next_action_history", next_hist_arr, hshape, py::dtype::of<std::int64_t>(), true);
      out.hist = static_cast<std::int64_t*>(const_cast<void*>(hist_arr.data()));
      out.next_hist = static_cast<std::int64_t*>(const_cast<void*>(next_hist_arr.data()));
    } else if (!history.is_none() || !next_history.is_none()) {
      throw InvalidArgument("ReplayBuffer '" + name_ + "' has action_history=0: it gathers no action history");
    }
    if (busy_.exchange(true, std::memory_order_acquire))  // acquire: pairs with the release below
      throw BusyError("ReplayBuffer '" + name_ +
                      "': sample() called from two threads at once on one handle; attach one handle per thread");
    struct Unbusy {
      std::atomic<bool>& b;
      ~Unbusy() { b.store(false, std::memory_order_release); }  // release: our RNG updates precede the next sampler
    } unbusy{busy_};
    py::gil_scoped_release nogil;
    if (wptr)
      st->prio->sample(static_cast<std::size_t>(b), out, wptr, beta, rng_, scratch_, acted);
    else
      st->ring.sample(static_cast<std::size_t>(b), out, rng_, scratch_, acted);
  }

  // Validates every (index, priority) pair first, then applies them; returns how many were applied
  // (the others' transitions were overwritten since they were sampled).
  std::int64_t update_priorities(const py::array& index, const py::array& priority) {
    const StatePtr st = live();
    if (!st->prio) throw InvalidArgument("ReplayBuffer '" + name_ + "' is not prioritized");
    if (index.ndim() != 1) throw InvalidArgument("index must be one-dimensional");
    const std::int64_t n = index.shape(0);
    check_vec("index", index, n, py::dtype::of<std::int64_t>());
    check_vec("priority", priority, n, py::dtype::of<double>());
    const auto* idx = static_cast<const std::int64_t*>(index.data());
    const auto* pr = static_cast<const double*>(priority.data());
    py::gil_scoped_release nogil;
    for (std::int64_t i = 0; i < n; ++i) {
      if (!std::isfinite(pr[i]) || pr[i] < 0.0) {
        std::ostringstream os;
        os << "priority[" << i << "] is " << pr[i] << ": priorities must be finite and >= 0";
        throw InvalidArgument(os.str());
      }
      if (idx[i] < 0)
        throw OutOfRange("index[" + std::to_string(i) + "] is " + std::to_string(idx[i]) +
                         ": indices are >= 0 (use ReplayBatch.index)");
      std::uint32_t s;
      std::uint64_t p;
      st->prio->locate(idx[i], s, p);
    }
    std::int64_t applied = 0;
    for (std::int64_t i = 0; i < n; ++i) applied += st->prio->update(idx[i], pr[i]) ? 1 : 0;
    return applied;
  }

  double priority_value(std::int64_t index) const {
    const StatePtr st = live();
    if (!st->prio) throw InvalidArgument("ReplayBuffer '" + name_ + "' is not prioritized");
    return st->prio->value_of(index);
  }
  double max_priority_value() const {
    const StatePtr st = live();
    return st->prio ? replay::from_value(st->prio->entry_value()) : 1.0;
  }
  bool priority_tree_consistent() const {
    const StatePtr st = live();
    return st->prio ? st->tree->consistent() : true;
  }
  double total_priority_value() const {
    const StatePtr st = live();
    return st->prio ? replay::from_value(st->tree->total()) : 0.0;
  }


  void seed(std::uint64_t s) { rng_.reseed(s); }
  std::uint64_t size() const { return live()->ring.size(); }
  std::uint64_t head(std::int64_t stream) const {
    const StatePtr st = live();
    check_stream(stream);
    return st->ring.head(static_cast<std::uint32_t>(stream));
  }
  std::uint64_t collisions() const { return scratch_.collisions; }
  // Drops this handle's reference; a call in flight in another thread keeps the mapping until it returns.
  void close() { state_.reset(); }
  bool closed() const { return !state_; }
  const std::string& name() const { return name_; }

  const Params& params() const { return p_; }
  const ReplayLayout& layout() const { return l_; }
  std::vector<std::int64_t> obs_shape() const { return frame_shape_; }
  std::uint64_t segment_bytes() const { return state_ ? state_->seg.header().total_size : 0; }

 private:
  ReplayHandle(shm::Segment seg, const ReplayLayout& l)
      : l_(l), p_(l.ring), name_(seg.name()), dtype_(py::dtype::from_args(py::str(std::string(l.ring.dtype)))) {
    state_ = std::make_shared<ReplayState>(std::move(seg), l_);
    frame_shape_.assign(p_.shape, p_.shape + p_.ndim);
    stack_tail_ = frame_shape_;
    stack_tail_.insert(stack_tail_.begin(), p_.frame_stack);
    scratch_.resize(p_.streams);
    rng_.reseed(static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
                (static_cast<std::uint64_t>(getpid()) << 32) ^ reinterpret_cast<std::uintptr_t>(this));
  }

  StatePtr live() const {
    if (!state_) throw ClosedError("ReplayBuffer '" + name_ + "' is closed");
    return state_;
  }

  // A reward as float32: finite and within float32's range (a larger double would become inf).
  static float check_reward(double reward) {
    if (std::isfinite(reward) && std::fabs(reward) <= static_cast<double>(std::numeric_limits<float>::max()))
      return static_cast<float>(reward);
    char text[32];
    std::snprintf(text, sizeof text, "%g", reward);
    if (!std::isfinite(reward)) throw InvalidArgument(std::string("reward must be finite, got ") + text);
    throw InvalidArgument(std::string("reward must fit a float32 (|reward| <= 3.4e38), got ") + text);
  }

  static void add_one(ReplayState& st, std::uint32_t s, const void* obs, std::int64_t action, float reward,
                      bool terminated, bool truncated, const void* next_obs, bool was_default, std::int32_t delay,
                      std::uint64_t token, bool episode_start) {
    if (st.prio)
      st.prio->add(s, obs, action, reward, terminated, truncated, next_obs, was_default, delay, token, episode_start);
    else
      st.ring.add(s, obs, action, reward, terminated, truncated, next_obs, was_default, delay, token, episode_start);
  }

  void check_stream(std::int64_t stream) const {
    if (stream < 0 || stream >= static_cast<std::int64_t>(p_.streams))
      throw OutOfRange("stream " + std::to_string(stream) + " is out of range for a buffer with " +
                       std::to_string(p_.streams) + " stream(s)");
  }

  bool same_dtype(const py::array& a) const {
    return a.dtype().is(dtype_) || a.dtype().equal(dtype_);
  }

  // A frame: obs_shape, the buffer's dtype, C-contiguous. Fast path allocates nothing.
  void check_frame(const char* what, const py::array& a) const { check_array(what, a, frame_shape_, dtype_); }

  // Rows of frames: (rows, *obs_shape).
  void check_batch_frames(const char* what, const py::array& a, std::int64_t rows) const {
    bool ok = a.ndim() == static_cast<py::ssize_t>(p_.ndim) + 1 && a.shape(0) == rows && same_dtype(a) &&
              (a.flags() & py::array::c_style);
    for (std::uint32_t i = 0; ok && i < p_.ndim; ++i) ok = a.shape(i + 1) == p_.shape[i];
    if (!ok) {
      std::vector<std::int64_t> shape = frame_shape_;
      shape.insert(shape.begin(), rows);
      check_array(what, a, shape, dtype_);
    }
  }

  // Rows of stacks: (rows, frame_stack, *obs_shape), writeable.
  void check_batch_stacks(const char* what, const py::array& a, std::int64_t rows) const {
    bool ok = a.ndim() == static_cast<py::ssize_t>(p_.ndim) + 2 && a.shape(0) == rows && a.shape(1) == p_.frame_stack &&
              same_dtype(a) && (a.flags() & py::array::c_style) && a.writeable();
    for (std::uint32_t i = 0; ok && i < p_.ndim; ++i) ok = a.shape(i + 2) == p_.shape[i];
    if (!ok) {
      std::vector<std::int64_t> shape = stack_tail_;
      shape.insert(shape.begin(), rows);
      check_array(what, a, shape, dtype_, true);
    }
  }

  // add_many's per-step vectors: `obj` itself when it is already a C-contiguous (k,) array of `dt` (no
  // allocation), else a converted copy when its dtype kind is one of `kinds` (a list, int32 actions,
  // float64 rewards...), else InvalidArgument naming what was wrong.
  static py::array many_vec(const char* what, const py::object& obj, std::int64_t k, const py::dtype& dt,
                            const char* kinds) {
    py::array a = py::array::ensure(obj);
    if (!a) throw InvalidArgument(std::string(what) + " must be an array of " + std::to_string(k) + " entries");
    if (array_matches(a, std::array<std::int64_t, 1>{k}, dt)) return a;
    const bool empty = k == 0 && a.ndim() == 1 && a.shape(0) == 0;  // [] is float64 to numpy: fine for k = 0
    if (!empty && std::string(kinds).find(a.dtype().kind()) == std::string::npos)
      throw InvalidArgument(std::string(what) + " has dtype " + dtype_str(a.dtype()) + ", expected " + dtype_str(dt));
    if (a.ndim() != 1 || a.shape(0) != k)
      throw InvalidArgument(std::string(what) + " has shape " + shape_str(shape_of(a)) + ", expected (" +
                            std::to_string(k) + ",) (one entry per step: obs has " + std::to_string(k) + " rows)");
    return py::module_::import("numpy").attr("ascontiguousarray")(a, dt).cast<py::array>();
  }

  static void check_vec(const char* what, const py::array& a, std::int64_t n, const py::dtype& dt, bool writeable = false) {
    check_array(what, a, std::array<std::int64_t, 1>{n}, dt, writeable);
  }

  StatePtr state_;
  ReplayLayout l_;
  Params p_;
  std::string name_;
  py::dtype dtype_;
  std::uint64_t token_ = 0;            // writer_token() cache
  std::uint32_t token_generation_ = 0;
  std::vector<std::int64_t> frame_shape_, stack_tail_;
  replay::Rng rng_;
  replay::SampleScratch scratch_;
  std::atomic<bool> busy_{false};
};

}  // namespace

void bind_replay(py::module_& m) {
  py::class_<ReplayHandle>(m, "Replay", "Handle on a shared-memory replay ring. Use rtcore.ReplayBuffer.")
      .def_static("create", &ReplayHandle::create, py::arg("name"), py::arg("capacity"), py::arg("obs_shape"),
                  py::arg("dtype"), py::arg("frame_stack"), py::arg("streams"), py::arg("n_step"), py::arg("gamma"),
                  py::arg("prioritized") = false, py::arg("alpha") = 0.6, py::arg("beta") = 0.4,
                  py::arg("action_history") = 0)
      .def_static("attach", &ReplayHandle::attach, py::arg("name"))
      .def("add", &ReplayHandle::add, py::arg("stream"), py::arg("obs"), py::arg("action"), py::arg("reward"),
           py::arg("terminated"), py::arg("truncated"), py::arg("next_obs"), py::arg("was_default"), py::arg("delay"),
           py::arg("episode_start") = false)
      .def("add_batch", &ReplayHandle::add_batch, py::arg("obs"), py::arg("action"), py::arg("reward"),
           py::arg("terminated"), py::arg("truncated"), py::arg("next_obs"), py::arg("was_default"), py::arg("delay"),
           py::arg("episode_start"))
      .def("add_many", &ReplayHandle::add_many, py::arg("stream"), py::arg("obs"), py::arg("action"), py::arg("reward"),
           py::arg("terminated"), py::arg("truncated"), py::arg("next_obs"), py::arg("was_default"), py::arg("delay"),
           py::arg("episode_start"))
      .def("sample", &ReplayHandle::sample, py::arg("obs"), py::arg("next_obs"), py::arg("action"), py::arg("reward"),
           py::arg("done"), py::arg("discount"), py::arg("was_default"), py::arg("delay"), py::arg("index"),
           py::arg("weight") = py::none(), py::arg("beta") = 0.0, py::arg("acted") = false,
           py::arg("history") = py::none(), py::arg("next_history") = py::none())
      .def("update_priorities", &ReplayHandle::update_priorities, py::arg("index"), py::arg("priority"))
      .def("priority_value", &ReplayHandle::priority_value, py::arg("index"))
      .def("max_priority_value", &ReplayHandle::max_priority_value)
      .def("total_priority_value", &ReplayHandle::total_priority_value)
      .def("priority_tree_consistent", &ReplayHandle::priority_tree_consistent)
      .def("seed", &ReplayHandle::seed, py::arg("seed"))
      .def("size", &ReplayHandle::size)
      .def("head", &ReplayHandle::head, py::arg("stream"))
      .def("collisions", &ReplayHandle::collisions)
      .def("close", &ReplayHandle::close)
      .def_property_readonly("closed", &ReplayHandle::closed)
      .def_property_readonly("name", &ReplayHandle::name)
      .def_property_readonly("capacity", [](const ReplayHandle& h) { return h.params().capacity; })
      .def_property_readonly("obs_shape", &ReplayHandle::obs_shape)
      .def_property_readonly("dtype", [](const ReplayHandle& h) { return std::string(h.params().dtype); })
      .def_property_readonly("frame_stack", [](const ReplayHandle& h) { return h.params().frame_stack; })
      .def_property_readonly("action_history", [](const ReplayHandle& h) { return h.params().action_history; })
      .def_property_readonly("streams", [](const ReplayHandle& h) { return h.params().streams; })
      .def_property_readonly("n_step", [](const ReplayHandle& h) { return h.params().n_step; })
      .def_property_readonly("gamma", [](const ReplayHandle& h) { return h.params().gamma; })
      .def_property_readonly("frame_bytes", [](const ReplayHandle& h) { return h.params().frame_bytes; })
      .def_property_readonly("segment_bytes", &ReplayHandle::segment_bytes)
      .def_property_readonly("prioritized", [](const ReplayHandle& h) { return h.layout().tree.leaves != 0; })
      .def_property_readonly("alpha", [](const ReplayHandle& h) { return h.layout().alpha; })
      .def_property_readonly("beta", [](const ReplayHandle& h) { return h.layout().beta; })
      .def_property_readonly_static("layout_version", [](py::object) { return replay::kSegmentLayoutVersion; });
}

}  // namespace rtcore::bindings
