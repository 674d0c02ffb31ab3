// Error types thrown by the core. The Python bindings map each to one Python exception type, in one
// place (csrc/bindings/bind_errors.cpp), so every message reaches the user unchanged.
#pragma once

#include <stdexcept>
#include <string>

namespace rtcore {

// A caller passed something the structure cannot accept (maps to ValueError).
struct InvalidArgument : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// An index or stream outside its range (maps to IndexError).
struct OutOfRange : std::out_of_range {
  using std::out_of_range::out_of_range;
};

// A named shared-memory segment does not exist (maps to FileNotFoundError).
struct NotFound : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A shared-memory segment of that name exists already (maps to FileExistsError).
struct AlreadyExists : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A segment exists but holds another structure or another layout version (maps to rtcore.LayoutError).
struct LayoutMismatch : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A blocking call ran past its timeout (maps to TimeoutError).
struct Timeout : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The object's runtime state forbids this call; the arguments may be fine (maps to rtcore.StateError,
// a RuntimeError). The subclasses say which state.
struct StateError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The handle was closed (maps to rtcore.ClosedError).
struct ClosedError : StateError {
  using StateError::StateError;
};

// A slot is taken by a live holder, or the caller no longer holds its slot: dropped from the schedule or
// turnstile, lost its turn, never joined through this handle (maps to rtcore.SlotError).
struct SlotError : StateError {
  using StateError::StateError;
};

// The handle is in use by another thread or call (maps to rtcore.BusyError).
struct BusyError : StateError {
  using StateError::StateError;
};

// A system call failed; `code` is errno (maps to OSError with that errno).
struct SystemError : std::runtime_error {
  SystemError(const std::string& what, int code) : std::runtime_error(what), code(code) {}
  int code;
};

}  // namespace rtcore
