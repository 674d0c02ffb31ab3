#include "bindings/bindings.h"

PYBIND11_MODULE(_core, m) {
  m.doc() = "rtcore's private C++ core. Use the public API in the rtcore package instead.";
  using namespace rtcore::bindings;
  bind_errors(m);  // first: the other bindings raise these
  bind_shm(m);
  bind_replay(m);
  bind_board(m);
  bind_timer(m);
  bind_sched(m);
  bind_preprocess(m);
  bind_params(m);
}
