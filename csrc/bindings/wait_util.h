// Blocking calls from Python: every wait takes a deadline, releases the GIL in slices of at most
// kSignalSliceNs, and between slices re-acquires it to run Python's signal handlers, so Ctrl-C raises
// KeyboardInterrupt in the waiting thread within ~50 ms.
//
//   const std::int64_t deadline = deadline_after(timeout);
//   for (;;) {
//     { py::gil_scoped_release nogil; if (wait_for_it(slice_end(deadline))) return ...; }
//     if (clock::now_ns() >= deadline) throw Timeout("... what did not happen within the timeout");
//     check_signals();
//   }
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <string>

#include "common/errors.h"
#include "sched/clock.h"

namespace rtcore::bindings {

namespace py = pybind11;

constexpr std::int64_t kSignalSliceNs = 50'000'000;  // 50 ms between signal checks
constexpr std::int64_t kNoDeadline = std::numeric_limits<std::int64_t>::max();

// The CLOCK_MONOTONIC deadline `timeout_ns` from now; kNoDeadline when timeout_ns < 0 (no timeout).
inline std::int64_t deadline_after_ns(std::int64_t timeout_ns) {
  if (timeout_ns < 0) return kNoDeadline;
  const std::int64_t now = clock::now_ns();
  return timeout_ns > kNoDeadline - now ? kNoDeadline : now + timeout_ns;
}

// The deadline `timeout` seconds from now; None (or more than ~30 years): kNoDeadline.
inline std::int64_t deadline_after(const py::object& timeout) {
  if (timeout.is_none()) return kNoDeadline;
  const double t = timeout.cast<double>();
  if (!(t >= 0)) throw InvalidArgument("timeout must be >= 0 seconds or None, got " + std::to_string(t));
  if (t > 1e9) return kNoDeadline;
  return clock::now_ns() + clock::to_ns(t);
}

// The end of the next GIL-released slice of a wait for `deadline`: at most kSignalSliceNs from now.
inline std::int64_t slice_end(std::int64_t deadline) {
  const std::int64_t now = clock::now_ns();
  return deadline - now > kSignalSliceNs ? now + kSignalSliceNs : deadline;
}

// Runs Python's signal handlers (call with the GIL held); an exception they raise propagates.
inline void check_signals() {
  if (PyErr_CheckSignals() != 0) throw py::error_already_set();
}

}  // namespace rtcore::bindings
