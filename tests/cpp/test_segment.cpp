#include <unistd.h>

#include <cstring>
#include <string>

#include "check.h"
#include "shm/segment.h"

using rtcore::shm::Kind;
using rtcore::shm::Segment;

namespace {

struct Params {
  std::uint64_t capacity;
  std::uint32_t width;
  std::uint32_t pad;
};

std::string fresh_name(const char* tag) { return std::string("rtcore-cpptest-") + tag + "-" + std::to_string(getpid()); }

}  // namespace

TEST(create_attach_roundtrip_shares_payload) {
  const auto name = fresh_name("rt");
  Params p{123, 7, 0};
  {
    Segment a = Segment::create(name, Kind::kArray, 3, &p, sizeof p, 10000);
    CHECK(a.payload_size() >= 10000);
    a.mark_ready();
    static_cast<char*>(a.payload())[9999] = 42;
    Segment b = Segment::attach(name, Kind::kArray, 3);
    CHECK_EQ(static_cast<char*>(b.payload())[9999], 42);
    CHECK_EQ(b.params<Params>().capacity, 123u);
    CHECK_EQ(b.params<Params>().width, 7u);
    CHECK_EQ(b.header().creator_pid, getpid());
  }
  CHECK(Segment::exists(name));
  Segment::unlink_name(name);
  CHECK(!Segment::exists(name));
}

TEST(attach_checks_kind_version_and_readiness) {
  const auto name = fresh_name("kv");
  Segment a = Segment::create(name, Kind::kReplay, 1, nullptr, 0, 64);
  CHECK_THROWS(Segment::attach(name, Kind::kReplay, 1), rtcore::LayoutMismatch);  // not ready yet
  a.mark_ready();
  CHECK_THROWS(Segment::attach(name, Kind::kObsBoard, 1), rtcore::LayoutMismatch);
  CHECK_THROWS(Segment::attach(name, Kind::kReplay, 2), rtcore::LayoutMismatch);
  CHECK_THROWS(a.params<Params>(), rtcore::LayoutMismatch);
  CHECK_THROWS(Segment::create(name, Kind::kReplay, 1, nullptr, 0, 64), rtcore::AlreadyExists);
  Segment::unlink_name(name);
}

TEST(missing_and_malformed_names) {
  CHECK_THROWS(Segment::attach(fresh_name("missing"), Kind::kReplay, 1), rtcore::NotFound);
  CHECK_THROWS(Segment::create("a/b", Kind::kReplay, 1, nullptr, 0, 64), rtcore::InvalidArgument);
  CHECK_THROWS(Segment::create("", Kind::kReplay, 1, nullptr, 0, 64), rtcore::InvalidArgument);
  Segment::unlink_name(fresh_name("never-created"));  // no error
}

int main() { return rtcore_test::run_all(); }
