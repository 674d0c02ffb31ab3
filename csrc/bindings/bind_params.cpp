// rtcore._core.Params: a handle on a ParamStore (csrc/params/param_store.h) in a shared-memory segment.
// Validation, defaults and docstrings live in rtcore/params.py; this file checks what it must to stay
// memory-safe (dtypes, sizes, contiguity) and releases the GIL around every copy and wait.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

#include "bindings/bindings.h"
#include "bindings/numpy_util.h"
#include "bindings/segment_handle.h"
#include "bindings/wait_util.h"
#include "params/param_store.h"
#include "sched/clock.h"
#include "shm/segment.h"

namespace rtcore::bindings {

namespace {

using params::Layout;
using params::ParamStore;

// dtype codes stored in the layout (the C++ side only needs element sizes).
py::dtype dtype_of_code(std::uint32_t code) {
  switch (code) {
    case 0: return py::dtype::of<float>();
    case 1: return py::dtype("float16");
    case 2: return py::dtype::of<double>();
  }
  throw LayoutMismatch("parameter store has unknown dtype code " + std::to_string(code));
}

// Polls `ready()` every 200 us with the GIL released until it holds or `timeout_s` passes, running
// Python's signal handlers between slices (so Ctrl-C interrupts a wait). Returns ready().
template <class Ready>
bool wait_until(Ready ready, double timeout_s) {
  if (!(timeout_s >= 0) || timeout_s > 1e9)  // NaN included; the Python layer names the argument first
    throw InvalidArgument("timeout must be a finite number of seconds in [0, 1e9], got " + std::to_string(timeout_s));
  if (ready()) return true;
  if (timeout_s <= 0) return false;
  const std::int64_t deadline = clock::now_ns() + static_cast<std::int64_t>(timeout_s * 1e9);
  for (;;) {
    bool ok = false;
    {
      py::gil_scoped_release nogil;
      const std::int64_t end = slice_end(deadline);
      while (!(ok = ready()) && clock::now_ns() < end) std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    if (ok) return true;
    check_signals();
    if (clock::now_ns() >= deadline) return ready();
  }
}

class ParamsHandle : public SegmentHandle {
 public:
  static std::unique_ptr<ParamsHandle> create(const std::string& name, std::uint64_t numel, std::uint32_t dtype_code,
                                              std::uint32_t buffers, std::uint32_t max_readers) {
    const auto elem = static_cast<std::uint32_t>(dtype_of_code(dtype_code).itemsize());
    const Layout l = ParamStore::make_layout(numel, elem, dtype_code, buffers, max_readers);
    auto seg = std::make_shared<shm::Segment>(
        shm::Segment::create(name, shm::Kind::kParams, params::kLayoutVersion, &l, sizeof l, l.total_size));
    shm::UnlinkOnThrow guard(seg->name());
    ParamStore store = ParamStore::init(seg->payload(), seg->payload_size(), l);
    seg->mark_ready();
    auto h = std::unique_ptr<ParamsHandle>(new ParamsHandle(std::move(seg), store));
    guard.release();
    return h;
  }

  static std::unique_ptr<ParamsHandle> attach(const std::string& name) {
    auto seg = std::make_shared<shm::Segment>(shm::Segment::attach(name, shm::Kind::kParams, params::kLayoutVersion));
    const Layout l = seg->params<Layout>();
    dtype_of_code(l.dtype);
    Layout expect;
    try {
      expect = ParamStore::make_layout(l.numel, l.elem_size, l.dtype, l.buffers, l.max_readers);
    } catch (const InvalidArgument& e) {
      throw LayoutMismatch("segment '" + seg->name() + "' has a corrupt parameter-store layout: " + e.what());
    }
    if (std::memcmp(&expect, &l, sizeof l) != 0 || static_cast<std::uint32_t>(dtype_of_code(l.dtype).itemsize()) != l.elem_size)
      throw LayoutMismatch("segment '" + seg->name() + "' has a parameter-store layout this build does not produce");
    ParamStore store = ParamStore::view(seg->payload(), seg->payload_size(), l);
    return std::unique_ptr<ParamsHandle>(new ParamsHandle(std::move(seg), store));
  }

  ~ParamsHandle() { close(); }

  void close() {
    if (!seg_) return;
    if (owns_slot()) store_.release_slot(slot_);
    slot_ = -1;
    seg_.reset();
  }

  // A zero-copy numpy view of buffer b; it keeps the mapping alive.
  py::array buffer_view(int b) {
    check_open();
    check_buffer(b);
    return segment_view(seg_, store_.buffer(b), {static_cast<std::int64_t>(store_.numel())},
                        dtype_of_code(store_.layout().dtype));
  }

  std::uintptr_t buffer_address(int b) {
    check_open();
    check_buffer(b);
    return reinterpret_cast<std::uintptr_t>(store_.buffer(b));
  }

  // Publishes the concatenation of `parts` (1-D C-contiguous arrays of the store's dtype whose sizes sum to
  // numel). Returns the new version, or -1 if no buffer became free within timeout_s.
  std::int64_t publish(const std::vector<py::array>& parts, double timeout_s) {
    const auto seg = live();  // held for the whole call: a concurrent close() never unmaps under the copy
    const py::dtype dt = dtype_of_code(store_.layout().dtype);
    std::vector<std::pair<const void*, std::size_t>> chunks;
    chunks.reserve(parts.size());
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      const py::array& a = parts[i];
      if (!a.dtype().equal(dt))
        throw InvalidArgument("parameters part " + std::to_string(i) + " has dtype " + dtype_str(a.dtype()) +
                              ", expected " + dtype_str(dt));
      if (!(a.flags() & py::array::c_style))
        throw InvalidArgument("parameters part " + std::to_string(i) + " must be C-contiguous");
      total += static_cast<std::uint64_t>(a.size());
      chunks.emplace_back(a.data(), static_cast<std::size_t>(a.nbytes()));
    }
    if (total != store_.numel())
      throw InvalidArgument("parameters have " + std::to_string(total) + " elements, expected " +
                            std::to_string(store_.numel()));
    const std::uint64_t token = params::self_token();
    int b = -1;
    if (!wait_until([&] { return (b = store_.begin_write(token)) >= 0; }, timeout_s)) return -1;
    {
      py::gil_scoped_release nogil;
      auto* dst = static_cast<std::uint8_t*>(store_.buffer(b));
      for (const auto& [src, n] : chunks) {
        std::memcpy(dst, src, n);
        dst += n;
      }
    }
    return static_cast<std::int64_t>(store_.commit(b));
  }

  // Pins the newest version (waiting up to timeout_s for a first one). Returns (version, buffer).
  std::pair<std::uint64_t, int> pin(double timeout_s) {
    const auto seg = live();  // held for the whole call, waits included
    const int pid = static_cast<int>(::getpid());
    if (slot_ >= 0 && slot_pid_ != pid) slot_ = -1;  // a forked child: the slot is its parent's
    if (slot_ < 0) {
      slot_ = store_.acquire_slot(params::self_token());
      slot_pid_ = pid;
    }
    if (store_.pinned(slot_) >= 0)
      throw BusyError("this ParamStore handle already holds a pin; unpin it first (one handle per thread)");
    const int slot = slot_;
    params::Pin p = store_.pin(slot);
    if (p.version == 0) {
      store_.unpin(slot);
      if (!wait_until([&] { return store_.version() != 0; }, timeout_s))
        throw Timeout("no parameters were published to '" + name_ + "' within " + std::to_string(timeout_s) + " s");
      // close() ran in another thread during the wait and released the slot: pin nothing.
      if (!seg_ || slot_ != slot) throw InvalidArgument("ParamStore '" + name_ + "' was closed while pin() waited");
      p = store_.pin(slot);
    }
    return {p.version, p.buffer};
  }

  void unpin() {
    check_open();
    if (owns_slot()) store_.unpin(slot_);
  }

  int pinned() const { return (seg_ && owns_slot()) ? store_.pinned(slot_) : -1; }
  std::uint64_t version() const {
    check_open();
    return store_.version();
  }
  const Layout& layout() const {
    check_open();
    return store_.layout();
  }
  py::dict stats() const {
    check_open();
    const params::Stats s = store_.stats();
    return py::dict(
        "version"_a = s.version,
        "published"_a = s.published,
        "skipped_no_buffer"_a = s.skipped_no_buffer,
        "skipped_writer_busy"_a = s.skipped_writer_busy,
        "reclaimed_readers"_a = s.reclaimed_readers,
        "reclaimed_writers"_a = s.reclaimed_writers);
  }

 private:
  ParamsHandle(SegmentPtr seg, ParamStore store) : SegmentHandle(std::move(seg), "ParamStore"), store_(store) {}

  bool owns_slot() const { return slot_ >= 0 && slot_pid_ == static_cast<int>(::getpid()); }

  void check_buffer(int b) const {
    if (b < 0 || b >= static_cast<int>(store_.layout().buffers))
      throw OutOfRange("buffer " + std::to_string(b) + " out of range [0, " + std::to_string(store_.layout().buffers) + ")");
  }

  ParamStore store_;
  int slot_ = -1;
  int slot_pid_ = 0;  // the process that acquired slot_
};

}  // namespace

void bind_params(py::module_& m) {
  py::class_<ParamsHandle>(m, "Params", "Private handle on a shared-memory parameter store; use rtcore.ParamStore.")
      .def_static("create", &ParamsHandle::create, py::arg("name"), py::arg("numel"), py::arg("dtype_code"),
                  py::arg("buffers"), py::arg("max_readers"))
      .def_static("attach", &ParamsHandle::attach, py::arg("name"))
      .def("close", &ParamsHandle::close)
      .def("buffer_view", &ParamsHandle::buffer_view, py::arg("buffer"))
      .def("buffer_address", &ParamsHandle::buffer_address, py::arg("buffer"))
      .def("publish", &ParamsHandle::publish, py::arg("parts"), py::arg("timeout"))
      .def("pin", &ParamsHandle::pin, py::arg("timeout"))
      .def("unpin", &ParamsHandle::unpin)
      .def_property_readonly("pinned", &ParamsHandle::pinned)
      .def_property_readonly("version", &ParamsHandle::version)
      .def_property_readonly("numel", [](const ParamsHandle& h) { return h.layout().numel; })
      .def_property_readonly("buffers", [](const ParamsHandle& h) { return h.layout().buffers; })
      .def_property_readonly("max_readers", [](const ParamsHandle& h) { return h.layout().max_readers; })
      .def_property_readonly("dtype_code", [](const ParamsHandle& h) { return h.layout().dtype; })
      .def_property_readonly("buffer_stride", [](const ParamsHandle& h) { return h.layout().buffer_stride; })
      .def("stats", &ParamsHandle::stats);
}

}  // namespace rtcore::bindings
