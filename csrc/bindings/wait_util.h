// Blocking calls from Python: every wait takes a deadline, releases the GIL in slices of at most
// kSignalSliceNs, and between slices re-acquires it to run Python's signal handlers, so Ctrl-C raises
// KeyboardInterrupt in the waiting thread within ~50 ms. wait_in_slices is that loop.
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

// Calls `step(slice_end)` with the GIL released, slice after slice, until `done(result)` (then returns
// the result) or `deadline` passes (then throws Timeout(timeout_message()), built with the GIL held).
// Runs Python's signal handlers between slices.
template <class Step, class Done, class Message>
auto wait_in_slices(std::int64_t deadline, Step step, Done done, Message timeout_message) {
  for (;;) {
    decltype(step(deadline)) r;
    {
      py::gil_scoped_release nogil;
      r = step(slice_end(deadline));
    }
    if (done(r)) return r;
    if (clock::now_ns() >= deadline) throw Timeout(timeout_message());
    check_signals();
  }
}

}  // namespace rtcore::bindings
