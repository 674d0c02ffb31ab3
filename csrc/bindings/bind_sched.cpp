// rtcore._core: StaggerSchedule and Turnstile (csrc/sched) over their shared-memory segments, n_star,
// and the discrete-event simulator. Public API: rtcore/sched.py, rtcore/simulation.py.
//
// Blocking waits release the GIL in slices of at most 50 ms, re-acquire it to run PyErr_CheckSignals
// (Ctrl-C), and take a deadline. Each call keeps the Segment alive for its duration, so close() never
// unmaps memory in use.
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "bindings/segment_handle.h"
#include "bindings/wait_util.h"
#include "common/errors.h"
#include "sched/clock.h"
#include "sched/simulator.h"
#include "sched/stagger.h"
#include "sched/turnstile.h"
#include "shm/segment.h"

namespace rtcore::bindings {

namespace {

using shm::Kind;
using shm::Segment;

// ---- StaggerSchedule -----------------------------------------------------------------------------

// A schedule wait is over when the moment came or the schedule was stopped.
bool came(sched::WaitResult r) { return r != sched::WaitResult::kTimeout; }

class ScheduleHandle : public SegmentHandle {
 public:
  static std::unique_ptr<ScheduleHandle> create(const std::string& name, std::int64_t n_workers, std::int64_t tau_seed_ns,
                                                std::uint32_t mode, std::int64_t window, std::int64_t heartbeat_timeout_ns,
                                                std::uint32_t pushback, std::int64_t tau_window,
                                                std::int64_t min_interval_ns) {
    if (tau_window < 0 || tau_window > sched::StaggerSchedule::kMaxTauWindow)
      throw InvalidArgument("tau_window must be in [0, " + std::to_string(sched::StaggerSchedule::kMaxTauWindow) +
                            "] (0: all-time maximum), got " + std::to_string(tau_window));
    if (n_workers < 1 || n_workers > sched::StaggerSchedule::kMaxWorkers)
      throw InvalidArgument("n_workers must be in [1, " + std::to_string(sched::StaggerSchedule::kMaxWorkers) + "], got " +
                            std::to_string(n_workers));
    if (window < 1 || window > sched::StaggerSchedule::kMaxWindow)
      throw InvalidArgument("window must be in [1, " + std::to_string(sched::StaggerSchedule::kMaxWindow) + "], got " +
                            std::to_string(window));
    sched::StaggerParams p{static_cast<std::uint32_t>(n_workers), mode, static_cast<std::uint32_t>(window), pushback, tau_seed_ns,
                           heartbeat_timeout_ns, static_cast<std::uint32_t>(tau_window), 0, min_interval_ns};
    sched::StaggerSchedule::validate(p);
    auto seg = std::make_shared<Segment>(Segment::create(name, Kind::kSchedule, sched::StaggerSchedule::kLayoutVersion, &p,
                                                         sizeof p, sched::StaggerSchedule::bytes_needed(p)));
    shm::UnlinkOnThrow guard(seg->name());
    auto h = std::unique_ptr<ScheduleHandle>(new ScheduleHandle(std::move(seg), true));
    h->seg_->mark_ready();
    guard.release();
    return h;
  }
  static std::unique_ptr<ScheduleHandle> attach(const std::string& name) {
    auto seg = std::make_shared<Segment>(Segment::attach(name, Kind::kSchedule, sched::StaggerSchedule::kLayoutVersion));
    const auto p = seg->params<sched::StaggerParams>();
    try {
      sched::StaggerSchedule::validate(p);
    } catch (const InvalidArgument& e) {
      throw LayoutMismatch("StaggerSchedule '" + seg->name() + "' has a corrupt layout: " + e.what());
    }
    if (sched::StaggerSchedule::bytes_needed(p) > seg->payload_size())
      throw LayoutMismatch("StaggerSchedule '" + seg->name() + "' has a corrupt layout: it needs more bytes than the segment has");
    return std::unique_ptr<ScheduleHandle>(new ScheduleHandle(std::move(seg), false));
  }

  int join(int worker) {
    auto seg = live();
    return s_->join(clock::now_ns(), worker);
  }
  void leave(int w) {
    auto seg = live();
    s_->leave(w, clock::now_ns());
  }
  void heartbeat(int w) {
    auto seg = live();
    s_->heartbeat(w, clock::now_ns());
  }
  int reap() {
    auto seg = live();
    return s_->reap(clock::now_ns());
  }
  // True when the turn came, False when the schedule was stopped; TimeoutError past the timeout.
  bool wait_turn(int w, std::int64_t timeout_ns, std::int64_t spin_ns) {
    auto seg = live();
    const auto s = s_;  // the view stays alive for the whole wait, whatever close() does
    const auto r = wait_in_slices(
        deadline_after_ns(timeout_ns), [&](std::int64_t end) { return s->wait_turn(w, end, spin_ns); }, came, [&] {
          return "worker " + std::to_string(w) + "'s turn did not come within the timeout (it starts in " +
                 std::to_string(clock::to_sec(s->poll_turn(w, clock::now_ns()) - clock::now_ns())) +
                 " s; pass a timeout longer than tau_max = " + std::to_string(clock::to_sec(s->tau_max_ns())) + " s)";
        });
    return r == sched::WaitResult::kReady;
  }
  std::int64_t report(int w, std::int64_t duration_ns) {
    auto seg = live();
    const std::int64_t now = clock::now_ns();
    const std::int64_t publish = s_->report(w, duration_ns, now);
    return publish > now ? publish - now : 0;
  }
  bool wait_publish(int w, std::int64_t timeout_ns, std::int64_t spin_ns) {
    auto seg = live();
    const auto s = s_;  // the view stays alive for the whole wait, whatever close() does
    const auto r = wait_in_slices(
        deadline_after_ns(timeout_ns), [&](std::int64_t end) { return s->wait_publish(w, end, spin_ns); }, came, [&] {
          return "worker " + std::to_string(w) + " may publish only in " +
                 std::to_string(clock::to_sec(s->publish_at(w) - clock::now_ns())) + " s, past the timeout";
        });
    return r == sched::WaitResult::kReady;
  }
  std::int64_t poll_turn(int w) {
    auto seg = live();
    return s_->poll_turn(w, clock::now_ns());
  }

  std::int64_t tau_max_ns() { return (live(), s_->tau_max_ns()); }
  std::int64_t mean_tau_ns() { return (live(), s_->mean_tau_ns()); }
  std::int64_t tau_ns() { return (live(), s_->tau_ns()); }
  std::int64_t action_interval_ns() { return (live(), s_->action_interval_ns()); }
  int live_workers() { return (live(), s_->live_count()); }
  std::vector<int> workers() { return (live(), s_->workers()); }
  std::int64_t pending_delay_ns(int w) { return (live(), s_->pending_delay_ns(w)); }
  std::int64_t last_ns(int w) { return (live(), s_->last_ns(w)); }
  std::uint64_t epoch() { return (live(), s_->epoch()); }
  std::uint64_t drops() { return (live(), s_->drops()); }
  std::uint64_t pushbacks() { return (live(), s_->pushbacks()); }
  std::uint64_t stalls() { return (live(), s_->stalls()); }
  std::int64_t horizon_ns() { return (live(), s_->horizon_ns()); }
  std::uint64_t samples() { return (live(), s_->samples()); }
  void set_stop(bool on) { (live(), s_->set_stop(on)); }
  bool stopped() { return (live(), s_->stopped()); }
  int n_workers() const { return static_cast<int>(p_.n_workers); }
  std::uint32_t mode() const { return p_.mode; }
  std::uint32_t window() const { return p_.window; }
  std::uint32_t pushback() const { return p_.pushback; }
  std::int64_t min_interval_ns() const { return p_.min_interval_ns; }
  std::uint32_t tau_window() const { return p_.tau_window; }
  std::int64_t heartbeat_timeout_ns() const { return p_.heartbeat_timeout_ns; }
  void close() {
    s_.reset();
    SegmentHandle::close();
  }

 private:
  ScheduleHandle(SegmentPtr seg, bool init)
      : SegmentHandle(std::move(seg), "StaggerSchedule"), p_(seg_->params<sched::StaggerParams>()) {
    s_ = std::make_shared<sched::StaggerSchedule>(seg_->payload(), seg_->payload_size(), p_, init);
  }
  sched::StaggerParams p_;
  std::shared_ptr<sched::StaggerSchedule> s_;  // views seg_'s memory: a call copies both before releasing the GIL
};

// ---- Turnstile -----------------------------------------------------------------------------------

class TurnstileHandle : public SegmentHandle {
 public:
  static std::unique_ptr<TurnstileHandle> create(const std::string& name, std::int64_t n_learners, std::int64_t heartbeat_timeout_ns) {
    if (n_learners < 1 || n_learners > sched::Turnstile::kMaxLearners)
      throw InvalidArgument("n_learners must be in [1, " + std::to_string(sched::Turnstile::kMaxLearners) + "], got " +
                            std::to_string(n_learners));
    sched::TurnstileParams p{static_cast<std::uint32_t>(n_learners), 0, heartbeat_timeout_ns};
    sched::Turnstile::validate(p);
    auto seg = std::make_shared<Segment>(Segment::create(name, Kind::kTurnstile, sched::Turnstile::kLayoutVersion, &p,
                                                         sizeof p, sched::Turnstile::bytes_needed(p)));
    shm::UnlinkOnThrow guard(seg->name());
    auto h = std::unique_ptr<TurnstileHandle>(new TurnstileHandle(std::move(seg), true));
    h->seg_->mark_ready();
    guard.release();
    return h;
  }
  static std::unique_ptr<TurnstileHandle> attach(const std::string& name) {
    auto seg = std::make_shared<Segment>(Segment::attach(name, Kind::kTurnstile, sched::Turnstile::kLayoutVersion));
    const auto p = seg->params<sched::TurnstileParams>();
    try {
      sched::Turnstile::validate(p);
    } catch (const InvalidArgument& e) {
      throw LayoutMismatch("Turnstile '" + seg->name() + "' has a corrupt layout: " + e.what());
    }
    if (sched::Turnstile::bytes_needed(p) > seg->payload_size())
      throw LayoutMismatch("Turnstile '" + seg->name() + "' has a corrupt layout: it needs more bytes than the segment has");
    return std::unique_ptr<TurnstileHandle>(new TurnstileHandle(std::move(seg), false));
  }

  int join(int learner) { return (live(), t_->join(clock::now_ns(), learner)); }
  void leave(int j) { (live(), t_->leave(j, clock::now_ns())); }
  void heartbeat(int j) { (live(), t_->heartbeat(j, clock::now_ns())); }
  void pass_turn(int j) { (live(), t_->pass_turn(j, clock::now_ns())); }
  std::int64_t try_turn(int j) { return (live(), t_->try_turn(j, clock::now_ns())); }
  // The turn number; -1 when the turnstile was stopped; TimeoutError past the timeout.
  std::int64_t wait_turn(int j, std::int64_t timeout_ns) {
    auto seg = live();
    const auto t = t_;  // the view stays alive for the whole wait, whatever close() does
    const std::int64_t u = wait_in_slices(
        deadline_after_ns(timeout_ns), [&](std::int64_t end) { return t->wait_turn(j, end); },
        [](std::int64_t v) { return v >= 0 || v == -2; },  // -2: stopped
        [&] {
          const int h = t->holder();
          std::string who = h < 0 ? std::string("nobody") : "learner " + std::to_string(h);
          if (h >= 0)
            who += " (last heartbeat " + std::to_string(clock::to_sec(clock::now_ns() - t->last_heartbeat_ns(h))) + " s ago)";
          return "learner " + std::to_string(j) + " timed out waiting for its turn: turn " + std::to_string(t->turn()) +
                 " is held by " + who + "; a holder is skipped once silent for heartbeat_timeout";
        });
    return u == -2 ? -1 : u;
  }
  std::int64_t turn() { return (live(), t_->turn()); }
  int holder() { return (live(), t_->holder()); }
  std::vector<int> learners() { return (live(), t_->learners()); }
  int live_count() { return (live(), t_->live_count()); }
  std::uint64_t passes() { return (live(), t_->passes()); }
  std::uint64_t skips() { return (live(), t_->skips()); }
  void set_stop(bool on) { (live(), t_->set_stop(on)); }
  bool stopped() { return (live(), t_->stopped()); }
  int n_learners() const { return static_cast<int>(p_.n_learners); }
  std::int64_t heartbeat_timeout_ns() const { return p_.heartbeat_timeout_ns; }
  void close() {
    t_.reset();
    SegmentHandle::close();
  }

 private:
  TurnstileHandle(SegmentPtr seg, bool init)
      : SegmentHandle(std::move(seg), "Turnstile"), p_(seg_->params<sched::TurnstileParams>()) {
    t_ = std::make_shared<sched::Turnstile>(seg_->payload(), seg_->payload_size(), p_, init);
  }
  sched::TurnstileParams p_;
  std::shared_ptr<sched::Turnstile> t_;  // views seg_'s memory: a wait copies both before releasing the GIL
};

py::dict stats_dict(const sched::SimStats& s) {
  return py::dict(
      "mean"_a = s.mean,
      "std"_a = s.std,
      "p99"_a = s.p99,
      "max"_a = s.max);
}

py::dict simulate(std::int64_t tau_m_ns, std::int64_t tau_theta_ns, int workers, int mode, std::int64_t steps, std::uint64_t seed,
                  int dist, double dist_param, std::vector<std::int64_t> samples_ns, std::int64_t tau_l_ns, int window,
                  std::int64_t tau_seed_ns, int pushback, int tau_window, std::int64_t outlier_at, std::int64_t outlier_ns,
                  std::int64_t min_interval_ns) {
  sched::SimConfig c;
  c.tau_m_ns = tau_m_ns;
  c.tau_theta_ns = tau_theta_ns;
  c.tau_l_ns = tau_l_ns;
  c.tau_seed_ns = tau_seed_ns;
  c.workers = workers;
  if (mode < 0 || mode > 3) throw InvalidArgument("mode must be 0..3");
  if (dist < 0 || dist > 3) throw InvalidArgument("dist must be 0..3");
  c.mode = static_cast<sched::SimMode>(mode);
  c.dist = static_cast<sched::SimDist>(dist);
  c.dist_param = dist_param;
  c.samples_ns = std::move(samples_ns);
  c.steps = steps;
  c.seed = seed;
  c.window = window;
  c.tau_window = tau_window;
  c.outlier_at = outlier_at;
  c.outlier_ns = outlier_ns;
  c.min_interval_ns = min_interval_ns;
  if (pushback < 0 || pushback > 2) throw InvalidArgument("pushback must be 0 (paper), 1 (lattice) or 2 (authors)");
  c.pushback = static_cast<sched::StaggerPushback>(pushback);
  sched::SimResult r;
  {
    py::gil_scoped_release nogil;
    r = sched::simulate(c);
  }
  return py::dict(
      "steps"_a = r.steps,
      "inaction_steps"_a = r.inaction_steps,
      "inaction_fraction"_a = r.inaction_fraction,
      "late_inaction_fraction"_a = r.late_inaction_fraction,
      "posted"_a = r.posted,
      "applied"_a = r.applied,
      "wasted"_a = r.wasted,
      "action_interval"_a = stats_dict(r.action_interval),
      "delay"_a = stats_dict(r.delay),
      "applied_gap"_a = stats_dict(r.applied_gap),
      "tau_max_final"_a = r.tau_max_final,
      "mean_tau_final"_a = r.mean_tau_final,
      "target_interval"_a = r.target_interval,
      "pushbacks"_a = r.pushbacks,
      "restaggers"_a = r.restaggers,
      "stalls"_a = r.stalls,
      "sim_seconds"_a = r.sim_seconds);
}

}  // namespace

void bind_sched(py::module_& m) {
  py::class_<ScheduleHandle>(m, "StaggerSchedule")
      .def_static("create", &ScheduleHandle::create, py::arg("name"), py::arg("n_workers"), py::arg("tau_seed_ns"),
                  py::arg("mode"), py::arg("window"), py::arg("heartbeat_timeout_ns"), py::arg("pushback"),
                  py::arg("tau_window") = 0, py::arg("min_interval_ns") = 0)
      .def_static("attach", &ScheduleHandle::attach, py::arg("name"))
      .def("join", &ScheduleHandle::join, py::arg("worker"))
      .def("leave", &ScheduleHandle::leave, py::arg("worker"))
      .def("heartbeat", &ScheduleHandle::heartbeat, py::arg("worker"))
      .def("reap", &ScheduleHandle::reap)
      .def("wait_turn", &ScheduleHandle::wait_turn, py::arg("worker"), py::arg("timeout_ns"), py::arg("spin_ns"))
      .def("report", &ScheduleHandle::report, py::arg("worker"), py::arg("duration_ns"))
      .def("wait_publish", &ScheduleHandle::wait_publish, py::arg("worker"), py::arg("timeout_ns"), py::arg("spin_ns"))
      .def("poll_turn", &ScheduleHandle::poll_turn, py::arg("worker"))
      .def("pending_delay_ns", &ScheduleHandle::pending_delay_ns, py::arg("worker"))
      .def("last_ns", &ScheduleHandle::last_ns, py::arg("worker"))
      .def("set_stop", &ScheduleHandle::set_stop, py::arg("on"))
      .def_property_readonly("stopped", &ScheduleHandle::stopped)
      .def_property_readonly("tau_max_ns", &ScheduleHandle::tau_max_ns)
      .def_property_readonly("mean_tau_ns", &ScheduleHandle::mean_tau_ns)
      .def_property_readonly("tau_ns", &ScheduleHandle::tau_ns)
      .def_property_readonly("action_interval_ns", &ScheduleHandle::action_interval_ns)
      .def_property_readonly("live_workers", &ScheduleHandle::live_workers)
      .def_property_readonly("workers", &ScheduleHandle::workers)
      .def_property_readonly("epoch", &ScheduleHandle::epoch)
      .def_property_readonly("drops", &ScheduleHandle::drops)
      .def_property_readonly("pushbacks", &ScheduleHandle::pushbacks)
      .def_property_readonly("stalls", &ScheduleHandle::stalls)
      .def_property_readonly("horizon_ns", &ScheduleHandle::horizon_ns)
      .def_property_readonly("samples", &ScheduleHandle::samples)
      .def_property_readonly("n_workers", &ScheduleHandle::n_workers)
      .def_property_readonly("mode", &ScheduleHandle::mode)
      .def_property_readonly("window", &ScheduleHandle::window)
      .def_property_readonly("pushback", &ScheduleHandle::pushback)
      .def_property_readonly("tau_window", &ScheduleHandle::tau_window)
      .def_property_readonly("min_interval_ns", &ScheduleHandle::min_interval_ns)
      .def_property_readonly_static("MAX_TAU_WINDOW", [](py::object) { return sched::StaggerSchedule::kMaxTauWindow; })
      .def_property_readonly("heartbeat_timeout_ns", &ScheduleHandle::heartbeat_timeout_ns)
      .def_property_readonly("name", &ScheduleHandle::name)
      .def("close", &ScheduleHandle::close);

  py::class_<TurnstileHandle>(m, "Turnstile")
      .def_static("create", &TurnstileHandle::create, py::arg("name"), py::arg("n_learners"), py::arg("heartbeat_timeout_ns"))
      .def_static("attach", &TurnstileHandle::attach, py::arg("name"))
      .def("join", &TurnstileHandle::join, py::arg("learner"))
      .def("leave", &TurnstileHandle::leave, py::arg("learner"))
      .def("heartbeat", &TurnstileHandle::heartbeat, py::arg("learner"))
      .def("pass_turn", &TurnstileHandle::pass_turn, py::arg("learner"))
      .def("try_turn", &TurnstileHandle::try_turn, py::arg("learner"))
      .def("wait_turn", &TurnstileHandle::wait_turn, py::arg("learner"), py::arg("timeout_ns"))
      .def("set_stop", &TurnstileHandle::set_stop, py::arg("on"))
      .def_property_readonly("stopped", &TurnstileHandle::stopped)
      .def_property_readonly("turn", &TurnstileHandle::turn)
      .def_property_readonly("holder", &TurnstileHandle::holder)
      .def_property_readonly("learners", &TurnstileHandle::learners)
      .def_property_readonly("live", &TurnstileHandle::live_count)
      .def_property_readonly("passes", &TurnstileHandle::passes)
      .def_property_readonly("skips", &TurnstileHandle::skips)
      .def_property_readonly("n_learners", &TurnstileHandle::n_learners)
      .def_property_readonly("heartbeat_timeout_ns", &TurnstileHandle::heartbeat_timeout_ns)
      .def_property_readonly("name", &TurnstileHandle::name)
      .def("close", &TurnstileHandle::close);

  m.def("n_star", &sched::n_star, py::arg("tau_theta_max"), py::arg("tau_m"),
        "ceil(tau_theta_max / tau_m), robust to float error.");
  m.def("simulate", &simulate, py::arg("tau_m_ns"), py::arg("tau_theta_ns"), py::arg("workers"), py::arg("mode"), py::arg("steps"),
        py::arg("seed"), py::arg("dist"), py::arg("dist_param"), py::arg("samples_ns"), py::arg("tau_l_ns"), py::arg("window"),
        py::arg("tau_seed_ns"), py::arg("pushback"), py::arg("tau_window") = 0, py::arg("outlier_at") = -1, py::arg("outlier_ns") = 0,
        py::arg("min_interval_ns") = 0, "Discrete-event simulation of staggered inference (see csrc/sched/simulator.h).");

}

}  // namespace rtcore::bindings
