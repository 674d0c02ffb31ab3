// One bind_* function per concept, each in its own bind_<concept>.cpp; module.cpp calls them in order.
#pragma once

#include <pybind11/pybind11.h>

namespace rtcore::bindings {

namespace py = pybind11;
using namespace pybind11::literals;  // "name"_a = value: the stats dicts are built as py::dict("a"_a = x, ...)

void bind_errors(py::module_& m);
void bind_shm(py::module_& m);
void bind_replay(py::module_& m);
void bind_board(py::module_& m);
void bind_timer(py::module_& m);
void bind_sched(py::module_& m);
void bind_preprocess(py::module_& m);
void bind_params(py::module_& m);

}  // namespace rtcore::bindings
