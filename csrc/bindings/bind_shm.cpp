#include "bindings/bindings.h"
#include "shm/segment.h"

namespace rtcore::bindings {

void bind_shm(py::module_& m) {
  m.def("segment_exists", &shm::Segment::exists, py::arg("name"), "True if a shared-memory segment of that name exists.");
  m.def("unlink_segment", &shm::Segment::unlink_name, py::arg("name"),
        "Remove a segment's name (no error if already gone). Mappings stay valid until closed.");
  m.def("check_segment_name", &shm::check_name, py::arg("name"), "Validate and normalise a segment name.");
}

}  // namespace rtcore::bindings
