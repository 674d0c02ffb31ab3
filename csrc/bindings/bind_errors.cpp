// The one place where C++ errors become Python exceptions. Messages pass through unchanged.
#include <cerrno>

#include "bindings/bindings.h"
#include "common/errors.h"

namespace rtcore::bindings {

void bind_errors(py::module_& m) {
  static py::exception<LayoutMismatch> layout_error(m, "LayoutError", PyExc_ValueError);
  static py::exception<StateError> state_error(m, "StateError", PyExc_RuntimeError);
  static py::exception<ClosedError> closed_error(m, "ClosedError", state_error.ptr());
  static py::exception<SlotError> slot_error(m, "SlotError", state_error.ptr());
  static py::exception<BusyError> busy_error(m, "BusyError", state_error.ptr());
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
    } catch (const ClosedError& e) {  // the subclasses before their base
      py::set_error(closed_error, e.what());
    } catch (const SlotError& e) {
      py::set_error(slot_error, e.what());
    } catch (const BusyError& e) {
      py::set_error(busy_error, e.what());
    } catch (const StateError& e) {
      py::set_error(state_error, e.what());
    } catch (const Timeout& e) {
      PyErr_SetString(PyExc_TimeoutError, e.what());
    } catch (const SystemError& e) {
      PyErr_SetObject(PyExc_OSError, py::make_tuple(e.code, e.what()).ptr());
    }
  });
}

}  // namespace rtcore::bindings
