#include "bindings/bindings.h"

namespace rtcore::bindings {

void bind_timer(py::module_& m) { (void)m; }

}  // namespace rtcore::bindings
