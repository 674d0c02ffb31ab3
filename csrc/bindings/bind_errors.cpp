// The one place where C++ errors become Python exceptions. Messages pass through unchanged.
#include <cerrno>

#include "bindings/bindings.h"
#include "common/errors.h"

namespace rtcore::bindings {

void bind_errors(py::module_& m) {
  static py::exception<LayoutMismatch> layout_error(m, "LayoutError", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const InvalidArgument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const OutOfRange& e) {
      PyErr_SetString(PyExc_IndexError, e.what());
    } catch (const NotFound& e) {
      PyErr_SetString(PyExc_FileNotFoundError, e.what());
    } catch (const AlreadyExists& e) {
      PyErr_SetString(PyExc_FileExistsError, e.what());
    } catch (const LayoutMismatch& e) {
      py::set_error(layout_error, e.what());
    } catch (const Timeout& e) {
      PyErr_SetString(PyExc_TimeoutError, e.what());
    } catch (const SystemError& e) {
      PyErr_SetObject(PyExc_OSError, py::make_tuple(e.code, e.what()).ptr());
    }
  });
}

}  // namespace rtcore::bindings
