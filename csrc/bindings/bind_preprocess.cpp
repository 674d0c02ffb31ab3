// Observation preprocessing kernels (csrc/preprocess). The public wrapper is rtcore.envs.preprocess.
#include <array>
#include <cstdint>
#include <string>

#include "bindings/bindings.h"
#include "bindings/numpy_util.h"
#include "preprocess/resize.h"

namespace rtcore::bindings {

namespace {

// src: uint8 (H, W) grey with any positive strides (e.g. one channel of an RGBA frame), or (H, W, C) with
// C in {3, 4} (BT.601 luma) and contiguous pixels; rows any positive stride. The GIL is released.
void resize_into(AreaResize& r, const py::array& src, py::array& out) {
  if (!src.dtype().is(py::dtype::of<std::uint8_t>()))
    throw InvalidArgument("frame has dtype " + dtype_str(src.dtype()) + ", expected uint8");
  if ((src.ndim() != 2 && src.ndim() != 3) || src.shape(0) != r.in_h() || src.shape(1) != r.in_w()) {
    const std::string hw = shape_str({r.in_h(), r.in_w()});
    throw InvalidArgument("frame has shape " + shape_str(shape_of(src)) + ", expected " + hw + " or " +
                          hw.substr(0, hw.size() - 1) + ", channels) with 1, 3 or 4 channels");
  }
  const int channels = src.ndim() == 3 ? static_cast<int>(src.shape(2)) : 1;
  if (channels != 1 && channels != 3 && channels != 4)
    throw InvalidArgument("frame has " + std::to_string(channels) + " channels, expected 1, 3 or 4");
  const auto* strides = src.strides();
  const bool grey = channels == 1;
  const py::ssize_t pixel_stride = strides[1];
  const bool ok = grey ? (pixel_stride >= 1 && strides[0] >= pixel_stride * r.in_w())
                       : (pixel_stride == channels && strides[2] == 1 && strides[0] >= channels * r.in_w());
  if (!ok)
    throw InvalidArgument(grey ? "frame must have positive, non-overlapping strides (use numpy.ascontiguousarray)"
                               : "frame rows must hold contiguous pixels (use numpy.ascontiguousarray)");
  check_array("out", out, std::array<std::int64_t, 2>{r.out_h(), r.out_w()}, py::dtype::of<std::uint8_t>(), /*writeable=*/true);
  const auto* in = static_cast<const std::uint8_t*>(src.data());
  auto* dst = static_cast<std::uint8_t*>(out.mutable_data());
  const std::ptrdiff_t row_stride = strides[0];
  py::gil_scoped_release release;
  if (grey) {
    r.grey_strided(in, pixel_stride, row_stride, dst);
  } else {
    r(in, channels, row_stride, dst);
  }
}

}  // namespace

void bind_preprocess(py::module_& m) {
  py::class_<AreaResize>(m, "AreaResize")
      .def(py::init<int, int, int, int>(), py::arg("in_h"), py::arg("in_w"), py::arg("out_h"), py::arg("out_w"))
      .def_property_readonly("in_shape", [](const AreaResize& r) { return py::make_tuple(r.in_h(), r.in_w()); })
      .def_property_readonly("out_shape", [](const AreaResize& r) { return py::make_tuple(r.out_h(), r.out_w()); })
      .def("__call__", &resize_into, py::arg("src"), py::arg("out"));
}

}  // namespace rtcore::bindings
