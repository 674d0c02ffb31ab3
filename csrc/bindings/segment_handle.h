// The part every Python handle on a shared-memory segment shares: the segment (null once closed) and
// its name. A call that releases the GIL holds live()'s copy of the segment for its duration, so
// close() in another thread never unmaps memory that is still in use.
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "common/errors.h"
#include "shm/segment.h"

namespace rtcore::bindings {

using SegmentPtr = std::shared_ptr<shm::Segment>;

class SegmentHandle {
 public:
  const std::string& name() const { return name_; }
  bool closed() const { return !seg_; }
  void close() { seg_.reset(); }

 protected:
  // `kind` names the object in errors ("ReplayBuffer 'x' is closed").
  SegmentHandle(SegmentPtr seg, const char* kind) : seg_(std::move(seg)), name_(seg_->name()), kind_(kind) {}

  void check_open() const {
    if (!seg_) throw ClosedError(std::string(kind_) + " '" + name_ + "' is closed");
  }
  SegmentPtr live() const {
    check_open();
    return seg_;
  }

  SegmentPtr seg_;
  std::string name_;
  const char* kind_;
};

}  // namespace rtcore::bindings
