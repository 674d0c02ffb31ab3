// rtcore._core.Replay: a handle on a replay ring in a shared-memory segment (csrc/replay/ring.h).
// Validation of Python arguments, defaults and docstrings live in rtcore/replay.py; this file checks
// only what it must to stay memory-safe (every array's dtype, shape, contiguity) and keeps those checks
// allocation-free on success (check_array in numpy_util.h allocates only to build the error).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <array>
#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <unistd.h>
#include <vector>

#include "bindings/bindings.h"
#include "bindings/numpy_util.h"
#include "replay/ring.h"
#include "shm/segment.h"

namespace rtcore::bindings {

namespace {

using replay::Params;
using replay::Ring;

// add() releases the GIL only for frames of 64 KiB and more. For the 7 KB Atari frame the copy takes
// about half a microsecond, and a release + re-acquire bought nothing measurable (single process,
// 50,000 adds, best of 5: 453k adds/s holding the GIL, 456k-467k releasing it, within noise), while
// holding it keeps the call free of two extra atomic handoffs when other Python threads are waiting.
constexpr std::size_t kAddReleaseGilBytes = 64 * 1024;

class ReplayHandle {
 public:
  static std::unique_ptr<ReplayHandle> create(const std::string& name, std::uint64_t capacity,
                                              const std::vector<std::int64_t>& shape, const py::dtype& dtype,
                                              std::uint32_t frame_stack, std::uint32_t streams, std::uint32_t n_step,
                                              double gamma) {
    const std::string dstr = py::str(dtype.attr("str")).cast<std::string>();
    const Params p = replay::make_params(capacity, streams, frame_stack, n_step, gamma, shape,
                                         static_cast<std::uint64_t>(dtype.itemsize()), dstr);
    auto seg = std::make_shared<shm::Segment>(
        shm::Segment::create(name, shm::Kind::kReplay, replay::kLayoutVersion, &p, sizeof p, p.total_bytes));
    seg->mark_ready();  // the zeroed payload is an empty ring
    return std::unique_ptr<ReplayHandle>(new ReplayHandle(std::move(seg), p));
  }

  static std::unique_ptr<ReplayHandle> attach(const std::string& name) {
    auto seg = std::make_shared<shm::Segment>(shm::Segment::attach(name, shm::Kind::kReplay, replay::kLayoutVersion));
    const Params p = seg->params<Params>();
    if (p.total_bytes > seg->payload_size())
      throw LayoutMismatch("segment '" + seg->name() + "' is too small for the replay layout its header describes");
    return std::unique_ptr<ReplayHandle>(new ReplayHandle(std::move(seg), p));
  }

  const Ring& ring() const {
    if (!ring_) throw InvalidArgument("ReplayBuffer '" + name_ + "' is closed");
    return *ring_;
  }
  Ring& ring() {
    if (!ring_) throw InvalidArgument("ReplayBuffer '" + name_ + "' is closed");
    return *ring_;
  }

  void add(std::int64_t stream, const py::array& obs, std::int64_t action, float reward, bool terminated, bool truncated,
           const py::object& next_obs, bool was_default, std::int32_t delay) {
    Ring& r = ring();
    check_stream(stream);
    check_frame("obs", obs);
    const void* next_ptr = nullptr;
    py::array next_arr;
    if (!next_obs.is_none()) {
      next_arr = py::array::ensure(next_obs);
      if (!next_arr) throw InvalidArgument("next_obs must be an array or None");
      check_frame("next_obs", next_arr);
      next_ptr = next_arr.data();
    }
    if (p_.frame_bytes >= kAddReleaseGilBytes) {
      py::gil_scoped_release nogil;
      r.add(static_cast<std::uint32_t>(stream), obs.data(), action, reward, terminated, truncated, next_ptr, was_default, delay);
    } else {
      r.add(static_cast<std::uint32_t>(stream), obs.data(), action, reward, terminated, truncated, next_ptr, was_default, delay);
    }
  }

  void add_batch(const py::array& obs, const py::array& action, const py::array& reward, const py::array& terminated,
                 const py::array& truncated, const py::object& next_obs, const py::array& was_default,
                 const py::array& delay) {
    Ring& r = ring();
    const std::int64_t n = p_.streams;
    check_batch_frames("obs", obs, n);
    check_vec("action", action, n, py::dtype::of<std::int64_t>());
    check_vec("reward", reward, n, py::dtype::of<float>());
    check_vec("terminated", terminated, n, py::dtype::of<bool>());
    check_vec("truncated", truncated, n, py::dtype::of<bool>());
    check_vec("was_default", was_default, n, py::dtype::of<bool>());
    check_vec("delay", delay, n, py::dtype::of<std::int32_t>());
    const auto* term = static_cast<const bool*>(terminated.data());
    const auto* trunc = static_cast<const bool*>(truncated.data());
    const std::uint8_t* next_base = nullptr;
    py::array next_arr;
    if (!next_obs.is_none()) {
      next_arr = py::array::ensure(next_obs);
      if (!next_arr) throw InvalidArgument("next_obs must be an array or None");
      check_batch_frames("next_obs", next_arr, n);
      next_base = static_cast<const std::uint8_t*>(next_arr.data());
    }
    for (std::int64_t i = 0; i < n; ++i)
      if ((term[i] || trunc[i]) && next_base == nullptr)
        throw InvalidArgument("next_obs is required when any stream is terminated or truncated (stream " +
                              std::to_string(i) + " is)");
    const auto* o = static_cast<const std::uint8_t*>(obs.data());
    const auto* a = static_cast<const std::int64_t*>(action.data());
    const auto* rw = static_cast<const float*>(reward.data());
    const auto* wd = static_cast<const bool*>(was_default.data());
    const auto* dl = static_cast<const std::int32_t*>(delay.data());
    const std::size_t fb = p_.frame_bytes;
    py::gil_scoped_release nogil;
    for (std::int64_t i = 0; i < n; ++i)
      r.add(static_cast<std::uint32_t>(i), o + i * fb, a[i], rw[i], term[i], trunc[i],
            next_base ? next_base + i * fb : nullptr, wd[i], dl[i]);
  }

  void sample(const py::array& obs, const py::array& next_obs, const py::array& action, const py::array& reward,
              const py::array& done, const py::array& discount, const py::array& was_default, const py::array& delay,
              const py::array& index, bool acted) {
    const Ring& r = ring();
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
    if (busy_.exchange(true, std::memory_order_acquire))  // acquire: pairs with the release below
      throw InvalidArgument("ReplayBuffer '" + name_ +
                            "': sample() called from two threads at once on one handle; attach one handle per thread");
    struct Unbusy {
      std::atomic<bool>& b;
      ~Unbusy() { b.store(false, std::memory_order_release); }  // release: our RNG updates precede the next sampler
    } unbusy{busy_};
    py::gil_scoped_release nogil;
    r.sample(static_cast<std::size_t>(b), out, rng_, scratch_, acted);
  }

  void seed(std::uint64_t s) { rng_.reseed(s); }
  std::uint64_t size() const { return ring().size(); }
  std::uint64_t head(std::int64_t stream) const {
    check_stream(stream);
    return ring().head(static_cast<std::uint32_t>(stream));
  }
  std::uint64_t collisions() const { return scratch_.collisions; }
  void close() {
    ring_.reset();
    seg_.reset();
  }
  bool closed() const { return !ring_; }

  const Params& params() const { return p_; }
  const std::string& name() const { return name_; }
  std::vector<std::int64_t> obs_shape() const { return frame_shape_; }
  std::uint64_t segment_bytes() const { return seg_ ? seg_->header().total_size : 0; }

 private:
  ReplayHandle(std::shared_ptr<shm::Segment> seg, const Params& p)
      : seg_(std::move(seg)), p_(p), name_(seg_->name()), dtype_(py::dtype::from_args(py::str(std::string(p.dtype)))) {
    ring_.emplace(seg_->payload(), seg_->payload_size(), p_);
    frame_shape_.assign(p_.shape, p_.shape + p_.ndim);
    stack_tail_ = frame_shape_;
    stack_tail_.insert(stack_tail_.begin(), p_.frame_stack);
    scratch_.resize(p_.streams);
    rng_.reseed(static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
                (static_cast<std::uint64_t>(getpid()) << 32) ^ reinterpret_cast<std::uintptr_t>(this));
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

  static void check_vec(const char* what, const py::array& a, std::int64_t n, const py::dtype& dt, bool writeable = false) {
    check_array(what, a, std::array<std::int64_t, 1>{n}, dt, writeable);
  }

  std::shared_ptr<shm::Segment> seg_;
  Params p_;
  std::string name_;
  py::dtype dtype_;
  std::optional<Ring> ring_;
  std::vector<std::int64_t> frame_shape_, stack_tail_;
  replay::Rng rng_;
  replay::SampleScratch scratch_;
  std::atomic<bool> busy_{false};
};

}  // namespace

void bind_replay(py::module_& m) {
  py::class_<ReplayHandle>(m, "Replay", "Handle on a shared-memory replay ring. Use rtcore.ReplayBuffer.")
      .def_static("create", &ReplayHandle::create, py::arg("name"), py::arg("capacity"), py::arg("obs_shape"),
                  py::arg("dtype"), py::arg("frame_stack"), py::arg("streams"), py::arg("n_step"), py::arg("gamma"))
      .def_static("attach", &ReplayHandle::attach, py::arg("name"))
      .def("add", &ReplayHandle::add, py::arg("stream"), py::arg("obs"), py::arg("action"), py::arg("reward"),
           py::arg("terminated"), py::arg("truncated"), py::arg("next_obs"), py::arg("was_default"), py::arg("delay"))
      .def("add_batch", &ReplayHandle::add_batch, py::arg("obs"), py::arg("action"), py::arg("reward"),
           py::arg("terminated"), py::arg("truncated"), py::arg("next_obs"), py::arg("was_default"), py::arg("delay"))
      .def("sample", &ReplayHandle::sample, py::arg("obs"), py::arg("next_obs"), py::arg("action"), py::arg("reward"),
           py::arg("done"), py::arg("discount"), py::arg("was_default"), py::arg("delay"), py::arg("index"),
           py::arg("acted") = false)
      .def("seed", &ReplayHandle::seed, py::arg("seed"))
      .def("size", &ReplayHandle::size)
      .def("head", &ReplayHandle::head, py::arg("stream"))
      .def("collisions", &ReplayHandle::collisions)
      .def("close", &ReplayHandle::close)
      .def_property_readonly("closed", &ReplayHandle::closed)
      .def_property_readonly("name", &ReplayHandle::name)
      .def_property_readonly("capacity", [](const ReplayHandle& h) { return h.params().capacity; })
      .def_property_readonly("slots_per_stream", [](const ReplayHandle& h) { return h.params().slots_per_stream; })
      .def_property_readonly("obs_shape", &ReplayHandle::obs_shape)
      .def_property_readonly("dtype", [](const ReplayHandle& h) { return std::string(h.params().dtype); })
      .def_property_readonly("frame_stack", [](const ReplayHandle& h) { return h.params().frame_stack; })
      .def_property_readonly("streams", [](const ReplayHandle& h) { return h.params().streams; })
      .def_property_readonly("n_step", [](const ReplayHandle& h) { return h.params().n_step; })
      .def_property_readonly("gamma", [](const ReplayHandle& h) { return h.params().gamma; })
      .def_property_readonly("frame_bytes", [](const ReplayHandle& h) { return h.params().frame_bytes; })
      .def_property_readonly("frame_stride", [](const ReplayHandle& h) { return h.params().frame_stride; })
      .def_property_readonly("segment_bytes", &ReplayHandle::segment_bytes)
      .def_property_readonly_static("layout_version", [](py::object) { return replay::kLayoutVersion; });
}

}  // namespace rtcore::bindings
