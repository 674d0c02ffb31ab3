// rtcore._core: the periodic timer and one-shot sleeps (csrc/sched/timer.h, clock.h). Public API: rtcore/timer.py.
//
// Blocking calls release the GIL and come back at least every kSignalSliceNs to run Python's signal
// handlers (Ctrl-C raises KeyboardInterrupt in the waiting thread) before sleeping on.
#include <pybind11/stl.h>
#include <time.h>

#include <memory>

#include "bindings/bindings.h"
#include "bindings/wait_util.h"
#include "common/errors.h"
#include "sched/clock.h"
#include "sched/timer.h"

namespace rtcore::bindings {

namespace {

// clock_nanosleep(TIMER_ABSTIME) to `until`, no spin.
void nanosleep_until(std::int64_t until) {
  timespec ts{static_cast<time_t>(until / clock::kNsPerSec), static_cast<long>(until % clock::kNsPerSec)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

// Sleeps until `deadline` (sleep, then spin the last `spin` ns) with the GIL released, checking for
// signals at least every kSignalSliceNs.
void sleep_until_py(std::int64_t deadline, std::int64_t spin) {
  if (spin < 0) throw InvalidArgument("spin must be >= 0 seconds");
  for (;;) {
    const std::int64_t now = clock::now_ns();
    if (now >= deadline) return;
    if (deadline - now > kSignalSliceNs + spin) {
      {
        py::gil_scoped_release nogil;
        nanosleep_until(now + kSignalSliceNs);
      }
      check_signals();
      continue;
    }
    py::gil_scoped_release nogil;
    clock::sleep_until(deadline, spin);
    return;
  }
}

}  // namespace

void bind_timer(py::module_& m) {
  using sched::PeriodicTimer;
  m.def("monotonic_ns", &clock::now_ns, "CLOCK_MONOTONIC in nanoseconds (the clock every rtcore process shares).");
  m.def("monotonic", []() { return clock::to_sec(clock::now_ns()); }, "CLOCK_MONOTONIC in seconds.");
  m.def(
      "sleep_until_ns", [](std::int64_t deadline_ns, std::int64_t spin_ns) { sleep_until_py(deadline_ns, spin_ns); },
      py::arg("deadline_ns"), py::arg("spin_ns"),
      "Sleep (GIL released) until a CLOCK_MONOTONIC deadline; spin the last spin_ns. Ctrl-C interrupts.");
  m.def("apply_realtime", &sched::apply_realtime, py::arg("priority"),
        "Timer slack 1 ns and SCHED_FIFO for the calling thread; returns 'on (...)' or 'refused: <reason>'.");

  py::class_<PeriodicTimer>(m, "Timer")
      .def(py::init([](std::int64_t period_ns, std::int64_t spin_ns, std::int64_t start_ns, std::int64_t handoff_ns) {
             return new PeriodicTimer(period_ns, spin_ns, start_ns, 10000000, handoff_ns);
           }),
           py::arg("period_ns"), py::arg("spin_ns"), py::arg("start_ns"), py::arg("handoff_ns") = 0)
      .def("complete", &PeriodicTimer::complete, py::arg("k"), py::arg("now_ns"),
           "Record tick k as reached at now_ns (only for a timer with a hand-off).")
      .def_property_readonly("waiting", &PeriodicTimer::waiting)
      .def(
          "wait",
          [](PeriodicTimer& t, const py::object& timeout) -> std::int64_t {
            const std::int64_t limit = deadline_after(timeout);
            t.claim();  // for the whole wait, across its 50 ms slices
            struct Unclaim {
              PeriodicTimer& t;
              ~Unclaim() { t.unclaim(); }
            } unclaim{t};
            return wait_in_slices(
                limit, [&](std::int64_t end) { return t.wait_claimed(end); },
                [](std::int64_t r) { return r != PeriodicTimer::kNotYet; },
                [] { return std::string("Timer.wait() timed out before the next tick"); });
          },
          py::arg("timeout") = py::none())
      .def("stop", &PeriodicTimer::stop)
      .def("resume", &PeriodicTimer::resume)
      .def_property_readonly("stopped", &PeriodicTimer::stopped)
      .def("stats",
           [](const PeriodicTimer& t) {
             const auto s = t.stats();
             return py::dict(
                 "ticks"_a = s.ticks,
                 "overruns"_a = s.overruns,
                 "late"_a = s.late,
                 "lateness_p50"_a = clock::to_sec(s.lateness_p50_ns),
                 "lateness_p99"_a = clock::to_sec(s.lateness_p99_ns),
                 "lateness_max"_a = clock::to_sec(s.lateness_max_ns),
                 "lateness_mean"_a = s.lateness_mean_ns * 1e-9);
           })
      .def("reset_stats", &PeriodicTimer::reset_stats)
      .def_property_readonly("period_ns", &PeriodicTimer::period_ns)
      .def_property_readonly("spin_ns", &PeriodicTimer::spin_ns)
      .def_property_readonly("start_ns", &PeriodicTimer::start_ns)
      .def_property_readonly("next_tick", &PeriodicTimer::next_tick)
      .def_property_readonly("last_lateness_ns", &PeriodicTimer::last_lateness_ns)
      .def("deadline_ns", &PeriodicTimer::deadline_ns, py::arg("k"));
}

}  // namespace rtcore::bindings
