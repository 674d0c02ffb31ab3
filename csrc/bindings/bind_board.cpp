// rtcore._core: ObsBoard, ActionBoard (csrc/board) and SharedArray, each over its own shared-memory
// segment. Public API: rtcore/boards.py, rtcore/shared_array.py.
//
// Each handle keeps its Segment in a shared_ptr; every numpy array that views a segment holds a copy
// (capsule base), and every call that releases the GIL holds one for its duration, so close() never
// unmaps memory that is still in use.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "bindings/bindings.h"
#include "bindings/numpy_util.h"
#include "bindings/segment_handle.h"
#include "bindings/wait_util.h"
#include "board/action_board.h"
#include "board/action_history.h"
#include "board/obs_board.h"
#include "common/checked.h"
#include "common/errors.h"
#include "sched/clock.h"
#include "shm/segment.h"

namespace rtcore::bindings {

namespace {

using shm::Kind;
using shm::Segment;

constexpr int kMaxDims = 8;

// Shape and dtype of an array kept in a segment header (ObsBoard frames, SharedArray).
struct ArraySpec {
  std::uint32_t ndim;
  std::uint32_t reserved;
  std::int64_t shape[kMaxDims];
  char dtype[16];  // numpy dtype.str, e.g. "|u1", "<f4"
};

bool supported_dtype(const py::dtype& dt) {
  return !(dt.has_fields() || dt.kind() == 'O' || dt.kind() == 'V' || dt.kind() == 'U' || dt.kind() == 'S' ||
           dt.itemsize() < 1);
}

// Bytes of an array of this shape and itemsize; checked: an overflowing shape is refused, naming `what`.
std::uint64_t array_bytes(const std::int64_t* shape, std::uint32_t ndim, std::uint64_t itemsize, const char* what) {
  std::uint64_t n = itemsize;
  for (std::uint32_t i = 0; i < ndim; ++i) n = checked_mul(n, static_cast<std::uint64_t>(shape[i]), what);
  return n;
}

ArraySpec make_spec(const std::vector<std::int64_t>& shape, const py::dtype& dt, bool allow_empty, const char* what) {
  ArraySpec s{};
  if (shape.size() > static_cast<std::size_t>(kMaxDims))
    throw InvalidArgument(std::string(what) + " has " + std::to_string(shape.size()) + " dimensions, at most " +
                          std::to_string(kMaxDims) + " are supported");
  for (auto d : shape)
    if (d < 0 || (d == 0 && !allow_empty))
      throw InvalidArgument(std::string(what) + " " + shape_str(shape) + " has a " + (d < 0 ? "negative" : "zero") +
                            " dimension; expected positive sizes");
  if (!supported_dtype(dt))
    throw InvalidArgument("dtype " + dtype_str(dt) + " is not supported; expected a numeric or bool dtype");
  s.ndim = static_cast<std::uint32_t>(shape.size());
  for (std::size_t i = 0; i < shape.size(); ++i) s.shape[i] = shape[i];
  const std::string str = py::str(dt.attr("str")).cast<std::string>();
  if (str.size() >= sizeof s.dtype) throw InvalidArgument("dtype " + str + " is not supported");
  std::memcpy(s.dtype, str.c_str(), str.size());
  array_bytes(s.shape, s.ndim, static_cast<std::uint64_t>(dt.itemsize()), what);  // refuses an overflowing shape
  return s;
}

std::vector<std::int64_t> spec_shape(const ArraySpec& s) { return {s.shape, s.shape + s.ndim}; }
py::dtype spec_dtype(const ArraySpec& s) { return py::dtype(std::string(s.dtype)); }
std::uint64_t spec_bytes(const ArraySpec& s) {
  return array_bytes(s.shape, s.ndim, static_cast<std::uint64_t>(spec_dtype(s).itemsize()), "shape");
}

// Re-validates an ArraySpec read from a segment header (a corrupted or foreign header is a
// LayoutMismatch, never a crash): ndim, sizes, a terminated dtype string numpy knows, checked bytes.
void check_spec(const ArraySpec& s, bool allow_empty, const std::string& what) {
  auto bad = [&](const std::string& why) { return LayoutMismatch(what + " has a corrupt layout: " + why); };
  if (s.ndim > static_cast<std::uint32_t>(kMaxDims)) throw bad("ndim " + std::to_string(s.ndim));
  for (std::uint32_t i = 0; i < s.ndim; ++i)
    if (s.shape[i] < 0 || (s.shape[i] == 0 && !allow_empty)) throw bad("dimension " + std::to_string(s.shape[i]));
  if (std::memchr(s.dtype, 0, sizeof s.dtype) == nullptr) throw bad("its dtype string is not terminated");
  py::dtype dt;
  try {
    dt = spec_dtype(s);
  } catch (const py::error_already_set&) {
    throw bad("dtype '" + std::string(s.dtype) + "' is not a numpy dtype");
  }
  if (!supported_dtype(dt)) throw bad("dtype " + dtype_str(dt) + " is not supported");
  try {
    spec_bytes(s);
  } catch (const InvalidArgument&) {
    throw bad("its shape overflows");
  }
}

// ---- ObsBoard ------------------------------------------------------------------------------------

struct ObsParams {
  ArraySpec frame;
  std::uint64_t frame_bytes;
  std::uint32_t frame_stack;
  std::uint32_t action_history;  // K (layout 2; was reserved)
};
static_assert(std::is_trivially_copyable_v<ObsParams> && sizeof(ObsParams) == sizeof(ArraySpec) + 16, "ObsParams layout");

class ActionBoardHandle;

class ObsBoardHandle : public SegmentHandle {
 public:
  static std::unique_ptr<ObsBoardHandle> create(const std::string& name, const std::vector<std::int64_t>& shape,
                                                const py::dtype& dtype, std::int64_t frame_stack,
                                                std::int64_t action_history) {
    if (frame_stack < 1 || frame_stack > board::ObsBoardView::kMaxFrameStack)
      throw InvalidArgument("frame_stack must be in [1, " + std::to_string(board::ObsBoardView::kMaxFrameStack) + "], got " +
                            std::to_string(frame_stack));
    if (action_history < 0 || action_history > board::ObsBoardView::kMaxActionHistory)
      throw InvalidArgument("action_history must be in [0, " + std::to_string(board::ObsBoardView::kMaxActionHistory) +
                            "], got " + std::to_string(action_history));
    ObsParams p{};
    p.frame = make_spec(shape, dtype, false, "obs_shape");
    p.frame_bytes = spec_bytes(p.frame);
    p.frame_stack = static_cast<std::uint32_t>(frame_stack);
    p.action_history = static_cast<std::uint32_t>(action_history);
    const std::size_t bytes = board::ObsBoardView::bytes_needed(p.frame_bytes, p.frame_stack, p.action_history);  // checked
    auto seg = std::make_shared<Segment>(
        Segment::create(name, Kind::kObsBoard, board::ObsBoardView::kLayoutVersion, &p, sizeof p, bytes));
    shm::UnlinkOnThrow guard(seg->name());
    auto h = std::unique_ptr<ObsBoardHandle>(new ObsBoardHandle(std::move(seg)));
    h->seg_->mark_ready();  // zeroed memory is an empty board
    guard.release();
    return h;
  }
  static std::unique_ptr<ObsBoardHandle> attach(const std::string& name) {
    auto seg = std::make_shared<Segment>(Segment::attach(name, Kind::kObsBoard, board::ObsBoardView::kLayoutVersion));
    const ObsParams p = seg->params<ObsParams>();
    const std::string what = "ObsBoard '" + seg->name() + "'";
    check_spec(p.frame, false, what);
    if (p.frame.ndim < 1) throw LayoutMismatch(what + " has a corrupt layout: a frame with no dimensions");
    if (p.frame_stack < 1 || p.frame_stack > board::ObsBoardView::kMaxFrameStack)
      throw LayoutMismatch(what + " has a corrupt layout: frame_stack " + std::to_string(p.frame_stack));
    if (spec_bytes(p.frame) != p.frame_bytes)
      throw LayoutMismatch(what + " has a corrupt layout: frame_bytes does not match the frame's shape");
    if (p.action_history > board::ObsBoardView::kMaxActionHistory)
      throw LayoutMismatch(what + " has a corrupt layout: action_history " + std::to_string(p.action_history));
    if (board::ObsBoardView::bytes_needed(p.frame_bytes, p.frame_stack, p.action_history) > seg->payload_size())
      throw LayoutMismatch(what + " has a corrupt layout: it needs more bytes than the segment has");
    return std::unique_ptr<ObsBoardHandle>(new ObsBoardHandle(std::move(seg)));
  }

  void publish(const py::array& frame, std::int64_t step, bool episode_start) {
    auto seg = live();
    check_array("frame", frame, shape_, dtype_);
    const void* data = frame.data();
    py::gil_scoped_release nogil;
    view_.publish(data, step, episode_start);
  }

  // read() with the action history (board/action_history.h) into `history`, (action_history + 1,) int64;
  // `actions` (an ActionBoard handle or None) resolves the pending slot. Defined after ActionBoardHandle.
  std::tuple<py::array, std::int64_t> read_history(std::optional<py::array> out, const py::array& history,
                                                   const py::object& actions);

  void begin_apply(std::int64_t step) {
    auto seg = live();
    view_.begin_apply(step);
  }
  void end_apply(std::int64_t step, std::int64_t action, bool was_default) {
    auto seg = live();
    view_.end_apply(step, action, was_default);
  }

  std::tuple<py::array, std::int64_t> read(std::optional<py::array> out) {
    auto seg = live();
    py::array arr = stack_out(out);
    void* data = arr.mutable_data();
    std::int64_t step;
    {
      py::gil_scoped_release nogil;
      step = view_.read(data);
    }
    return {arr, step};
  }

  std::int64_t wait_step(std::int64_t after, const py::object& timeout, double spin) {
    auto seg = live();
    std::int64_t spin_ns = clock::to_ns(spin < 0 ? 0 : spin);  // the first slice only
    return wait_in_slices(
        deadline_after(timeout),
        [&](std::int64_t end) { return view_.wait_step(after, end, std::exchange(spin_ns, 0)); },
        [&](std::int64_t s) { return s > after; },
        [&] {
          return "no frame with step > " + std::to_string(after) + " was published within the timeout (newest step " +
                 std::to_string(view_.step()) + ")";
        });
  }

  std::int64_t step() { return (live(), view_.step()); }
  std::uint64_t published() { return (live(), view_.published()); }
  std::vector<std::int64_t> obs_shape() const { return shape_; }
  py::dtype dtype() const { return dtype_; }
  std::uint32_t frame_stack() const { return view_.frame_stack(); }
  std::uint32_t action_history() const { return view_.action_history(); }

 private:
  explicit ObsBoardHandle(SegmentPtr seg)
      : SegmentHandle(std::move(seg), "ObsBoard"),
        params_(seg_->params<ObsParams>()),
        view_(seg_->payload(), seg_->payload_size(), params_.frame_bytes, params_.frame_stack, params_.action_history) {
    shape_ = spec_shape(params_.frame);
    dtype_ = spec_dtype(params_.frame);
    if (spec_bytes(params_.frame) != params_.frame_bytes)
      throw LayoutMismatch("ObsBoard '" + name_ + "' has inconsistent layout parameters");
    stack_shape_ = shape_;
    stack_shape_.insert(stack_shape_.begin(), params_.frame_stack);
  }
  // The caller's `out` (checked: a writeable array of the stack's shape and dtype) or a new stack array.
  py::array stack_out(const std::optional<py::array>& out) const {
    if (!out) return py::array(dtype_, stack_shape_);
    check_array("out", *out, stack_shape_, dtype_, /*writeable=*/true);
    return *out;
  }
  ObsParams params_;
  board::ObsBoardView view_;
  std::vector<std::int64_t> shape_, stack_shape_;
  py::dtype dtype_;
};

// ---- ActionBoard ---------------------------------------------------------------------------------

struct ActionParams {
  std::uint32_t max_workers;
  std::uint32_t reserved;
};

class ActionBoardHandle : public SegmentHandle {
 public:
  static std::unique_ptr<ActionBoardHandle> create(const std::string& name, std::int64_t max_workers) {
    if (max_workers < 1 || max_workers > board::ActionBoardView::kMaxWorkers)
      throw InvalidArgument("max_workers must be in [1, " + std::to_string(board::ActionBoardView::kMaxWorkers) +
                            "], got " + std::to_string(max_workers));
    ActionParams p{static_cast<std::uint32_t>(max_workers), 0};
    auto seg = std::make_shared<Segment>(Segment::create(name, Kind::kActionBoard, board::ActionBoardView::kLayoutVersion,
                                                         &p, sizeof p,
                                                         board::ActionBoardView::bytes_needed(p.max_workers)));
    shm::UnlinkOnThrow guard(seg->name());
    auto h = std::unique_ptr<ActionBoardHandle>(new ActionBoardHandle(std::move(seg)));
    h->seg_->mark_ready();
    guard.release();
    return h;
  }
  static std::unique_ptr<ActionBoardHandle> attach(const std::string& name) {
    auto seg =
        std::make_shared<Segment>(Segment::attach(name, Kind::kActionBoard, board::ActionBoardView::kLayoutVersion));
    const ActionParams p = seg->params<ActionParams>();
    if (p.max_workers < 1 || p.max_workers > board::ActionBoardView::kMaxWorkers ||
        board::ActionBoardView::bytes_needed(p.max_workers) > seg->payload_size())
      throw LayoutMismatch("ActionBoard '" + seg->name() + "' has a corrupt layout: max_workers " +
                           std::to_string(p.max_workers) + " in a payload of " + std::to_string(seg->payload_size()) +
                           " bytes");
    return std::unique_ptr<ActionBoardHandle>(new ActionBoardHandle(std::move(seg)));
  }

  // Short and non-blocking: the GIL stays held (releasing it would cost more than the call).
  std::uint64_t post(std::int64_t action, std::int64_t obs_step, std::int32_t worker) {
    auto seg = live();
    return view_.post(action, obs_step, worker);
  }
  py::object take() {
    auto seg = live();
    board::Taken t{};
    if (!view_.take(&t)) return py::none();
    return py::make_tuple(t.action, t.obs_step, t.worker);
  }
  py::object peek() {
    auto seg = live();
    board::Taken t{};
    if (!view_.peek(&t)) return py::none();
    return py::make_tuple(t.action, t.obs_step, t.worker);
  }
  // For ObsBoardHandle::read_history: the view and a reference that keeps the segment mapped.
  const board::ActionBoardView& view() const { return view_; }
  SegmentPtr keep() const { return live(); }
  std::uint64_t posted() { return (live(), view_.posted()); }
  std::uint64_t taken() { return (live(), view_.taken()); }
  std::uint64_t superseded() { return (live(), view_.superseded()); }
  bool pending() { return (live(), view_.pending()); }
  std::uint32_t max_workers() const { return view_.max_workers(); }

 private:
  explicit ActionBoardHandle(SegmentPtr seg)
      : SegmentHandle(std::move(seg), "ActionBoard"),
        view_(seg_->payload(), seg_->payload_size(), seg_->params<ActionParams>().max_workers) {}
  board::ActionBoardView view_;
};

std::tuple<py::array, std::int64_t> ObsBoardHandle::read_history(std::optional<py::array> out, const py::array& history,
                                                                 const py::object& actions) {
  auto seg = live();
  if (view_.action_history() == 0)
    throw InvalidArgument("ObsBoard '" + name_ + "' has action_history=0: it keeps no action history");
  check_array("history", history, std::array<std::int64_t, 1>{std::int64_t(view_.action_history()) + 1},
              py::dtype::of<std::int64_t>(), /*writeable=*/true);
  const board::ActionBoardView* av = nullptr;
  SegmentPtr aseg;
  if (!actions.is_none()) {
    auto* ah = actions.cast<ActionBoardHandle*>();  // a wrong type: pybind11's cast_error (a TypeError)
    aseg = ah->keep();
    av = &ah->view();
  }
  py::array arr = stack_out(out);
  void* data = arr.mutable_data();
  auto* hist = static_cast<std::int64_t*>(const_cast<void*>(history.data()));
  std::int64_t step;
  {
    py::gil_scoped_release nogil;
    step = board::read_with_history(view_, av, data, hist);
  }
  return {arr, step};
}

// ---- SharedArray ---------------------------------------------------------------------------------

constexpr std::uint32_t kArrayLayoutVersion = 1;

class SharedArrayHandle : public SegmentHandle {
 public:
  static std::unique_ptr<SharedArrayHandle> create(const std::string& name, const std::vector<std::int64_t>& shape,
                                                   const py::dtype& dtype) {
    ArraySpec s = make_spec(shape, dtype, true, "shape");
    const std::uint64_t bytes = spec_bytes(s);
    auto seg = std::make_shared<Segment>(
        Segment::create(name, Kind::kArray, kArrayLayoutVersion, &s, sizeof s, bytes < 64 ? 64 : bytes));
    shm::UnlinkOnThrow guard(seg->name());
    seg->mark_ready();
    auto h = std::unique_ptr<SharedArrayHandle>(new SharedArrayHandle(std::move(seg)));
    guard.release();
    return h;
  }
  static std::unique_ptr<SharedArrayHandle> attach(const std::string& name) {
    auto seg = std::make_shared<Segment>(Segment::attach(name, Kind::kArray, kArrayLayoutVersion));
    check_spec(seg->params<ArraySpec>(), true, "SharedArray '" + seg->name() + "'");
    return std::unique_ptr<SharedArrayHandle>(new SharedArrayHandle(std::move(seg)));
  }
  py::array array() {
    check_open();
    return segment_view(seg_, seg_->payload(), spec_shape(spec_), spec_dtype(spec_));
  }
  std::vector<std::int64_t> shape() const { return spec_shape(spec_); }
  py::dtype dtype() const { return spec_dtype(spec_); }

 private:
  explicit SharedArrayHandle(SegmentPtr seg) : SegmentHandle(std::move(seg), "SharedArray"), spec_(seg_->params<ArraySpec>()) {
    if (spec_.ndim > static_cast<std::uint32_t>(kMaxDims) || spec_bytes(spec_) > seg_->payload_size())
      throw LayoutMismatch("SharedArray '" + name_ + "' has inconsistent layout parameters");
  }
  ArraySpec spec_;
};

}  // namespace

void bind_board(py::module_& m) {
  py::class_<ObsBoardHandle>(m, "ObsBoard")
      .def_static("create", &ObsBoardHandle::create, py::arg("name"), py::arg("shape"), py::arg("dtype"),
                  py::arg("frame_stack"), py::arg("action_history") = 0)
      .def_static("attach", &ObsBoardHandle::attach, py::arg("name"))
      .def("publish", &ObsBoardHandle::publish, py::arg("frame"), py::arg("step"), py::arg("episode_start"))
      .def("read", &ObsBoardHandle::read, py::arg("out") = py::none())
      .def("read_history", &ObsBoardHandle::read_history, py::arg("out"), py::arg("history"), py::arg("actions"))
      .def("begin_apply", &ObsBoardHandle::begin_apply, py::arg("step"))
      .def("end_apply", &ObsBoardHandle::end_apply, py::arg("step"), py::arg("action"), py::arg("was_default"))
      .def_property_readonly("action_history", &ObsBoardHandle::action_history)
      .def("wait_step", &ObsBoardHandle::wait_step, py::arg("after"), py::arg("timeout"), py::arg("spin") = 0.0)
      .def_property_readonly("step", &ObsBoardHandle::step)
      .def_property_readonly("published", &ObsBoardHandle::published)
      .def_property_readonly("name", &ObsBoardHandle::name)
      .def_property_readonly("obs_shape", &ObsBoardHandle::obs_shape)
      .def_property_readonly("dtype", &ObsBoardHandle::dtype)
      .def_property_readonly("frame_stack", &ObsBoardHandle::frame_stack)
      .def("close", &ObsBoardHandle::close);

  py::class_<ActionBoardHandle>(m, "ActionBoard")
      .def_static("create", &ActionBoardHandle::create, py::arg("name"), py::arg("max_workers"))
      .def_static("attach", &ActionBoardHandle::attach, py::arg("name"))
      .def("post", &ActionBoardHandle::post, py::arg("action"), py::arg("obs_step"), py::arg("worker"))
      .def("take", &ActionBoardHandle::take)
      .def("peek", &ActionBoardHandle::peek)
      .def_property_readonly("posted", &ActionBoardHandle::posted)
      .def_property_readonly("taken", &ActionBoardHandle::taken)
      .def_property_readonly("superseded", &ActionBoardHandle::superseded)
      .def_property_readonly("pending", &ActionBoardHandle::pending)
      .def_property_readonly("max_workers", &ActionBoardHandle::max_workers)
      .def_property_readonly("name", &ActionBoardHandle::name)
      .def("close", &ActionBoardHandle::close);

  py::class_<SharedArrayHandle>(m, "SharedArray")
      .def_static("create", &SharedArrayHandle::create, py::arg("name"), py::arg("shape"), py::arg("dtype"))
      .def_static("attach", &SharedArrayHandle::attach, py::arg("name"))
      .def("array", &SharedArrayHandle::array)
      .def_property_readonly("shape", &SharedArrayHandle::shape)
      .def_property_readonly("dtype", &SharedArrayHandle::dtype)
      .def_property_readonly("name", &SharedArrayHandle::name)
      .def("close", &SharedArrayHandle::close);
}

}  // namespace rtcore::bindings
