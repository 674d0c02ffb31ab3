// Checks on numpy arguments, with messages that say what was wrong and what was expected:
//   ValueError: obs has shape (84, 84), expected (4, 84, 84)
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/errors.h"
#include "shm/segment.h"

namespace rtcore::bindings {

namespace py = pybind11;

inline std::string shape_str(const std::vector<std::int64_t>& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

inline std::vector<std::int64_t> shape_of(const py::array& a) {
  return std::vector<std::int64_t>(a.shape(), a.shape() + a.ndim());
}

inline std::string dtype_str(const py::dtype& dt) { return py::str(dt).cast<std::string>(); }

// Throws unless `a` has exactly `shape` and `dtype`, and is C-contiguous (and writeable if asked).
inline void check_array(const char* what, const py::array& a, const std::vector<std::int64_t>& shape,
                        const py::dtype& dtype, bool writeable = false) {
  if (!a.dtype().is(dtype) && !a.dtype().equal(dtype))
    throw InvalidArgument(std::string(what) + " has dtype " + dtype_str(a.dtype()) + ", expected " + dtype_str(dtype));
  if (shape_of(a) != shape)
    throw InvalidArgument(std::string(what) + " has shape " + shape_str(shape_of(a)) + ", expected " +
                          shape_str(shape));
  if (!(a.flags() & py::array::c_style))
    throw InvalidArgument(std::string(what) + " must be C-contiguous (use numpy.ascontiguousarray)");
  if (writeable && !a.writeable()) throw InvalidArgument(std::string(what) + " must be writeable");
}

// A numpy array over `data` (inside `seg`'s mapping) whose base holds `seg`: the mapping outlives the
// handle's close() for as long as the array, or any view of it, is alive.
inline py::array segment_view(const std::shared_ptr<shm::Segment>& seg, void* data, const std::vector<std::int64_t>& shape,
                              const py::dtype& dtype) {
  auto* keep = new std::shared_ptr<shm::Segment>(seg);
  py::capsule base(keep, [](void* p) { delete static_cast<std::shared_ptr<shm::Segment>*>(p); });
  return py::array(dtype, shape, data, base);
}

}  // namespace rtcore::bindings
