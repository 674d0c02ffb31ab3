#include "bindings/bindings.h"

namespace rtcore::bindings {

void bind_sched(py::module_& m) { (void)m; }

}  // namespace rtcore::bindings
