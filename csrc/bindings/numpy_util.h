// Checks on numpy arguments, with messages that say what was wrong and what was expected:
//   ValueError: obs has shape (84, 84), expected (4, 84, 84)
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <array>
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

// True if `a` has exactly `shape` and `dtype`, is C-contiguous, and is writeable if asked. Allocates
// nothing: the per-call check of every array argument on a hot path.
template <class Shape>
bool array_matches(const py::array& a, const Shape& shape, const py::dtype& dtype, bool writeable = false) {
  if (a.ndim() != static_cast<py::ssize_t>(shape.size())) return false;
  for (std::size_t i = 0; i < shape.size(); ++i)
    if (a.shape(static_cast<py::ssize_t>(i)) != static_cast<py::ssize_t>(shape[i])) return false;
  if (!(a.flags() & py::array::c_style)) return false;
  if (writeable && !a.writeable()) return false;
  return a.dtype().is(dtype) || a.dtype().equal(dtype);
}

// Throws unless array_matches(a, shape, dtype, writeable), naming what is wrong; allocates only to throw.
template <class Shape = std::vector<std::int64_t>>
void check_array(const char* what, const py::array& a, const Shape& shape, const py::dtype& dtype, bool writeable = false) {
  if (array_matches(a, shape, dtype, writeable)) return;
  if (!a.dtype().is(dtype) && !a.dtype().equal(dtype))
    throw InvalidArgument(std::string(what) + " has dtype " + dtype_str(a.dtype()) + ", expected " + dtype_str(dtype));
  const std::vector<std::int64_t> expected(shape.begin(), shape.end());
  if (shape_of(a) != expected)
    throw InvalidArgument(std::string(what) + " has shape " + shape_str(shape_of(a)) + ", expected " + shape_str(expected));
  if (!(a.flags() & py::array::c_style))
    throw InvalidArgument(std::string(what) + " must be C-contiguous (use numpy.ascontiguousarray)");
  throw InvalidArgument(std::string(what) + " must be writeable");
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
