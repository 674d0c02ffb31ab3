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

TEST(attach_revalidates_every_header_field) {
  const auto name = fresh_name("hdr");
  Params p{1, 2, 0};
  Segment a = Segment::create(name, Kind::kArray, 1, &p, sizeof p, 100);
  a.mark_ready();
  auto& h = a.header();
  const auto payload = h.payload_size;
  h.payload_size = payload + 4096;  // a header that claims more payload than the segment has
  CHECK_THROWS(Segment::attach(name, Kind::kArray, 1), rtcore::LayoutMismatch);
  h.payload_size = payload;
  h.params_size = rtcore::shm::kParamsCapacity + 1;
  CHECK_THROWS(Segment::attach(name, Kind::kArray, 1), rtcore::LayoutMismatch);
  h.params_size = sizeof p + 1;
  Segment b = Segment::attach(name, Kind::kArray, 1);
  CHECK_THROWS(b.params<Params>(), rtcore::LayoutMismatch);  // not the size of the kind's parameters
  h.params_size = sizeof p;
  CHECK_EQ(Segment::attach(name, Kind::kArray, 1).params<Params>().width, 2u);
  Segment::unlink_name(name);
}

TEST(oversized_segments_are_refused_before_anything_is_created) {
  const auto name = fresh_name("huge");
  CHECK_THROWS(Segment::create(name, Kind::kArray, 1, nullptr, 0, ~std::size_t{0}), rtcore::InvalidArgument);
  CHECK_THROWS(Segment::create(name, Kind::kArray, 1, nullptr, 0, ~std::size_t{0} - 8192), rtcore::InvalidArgument);
  CHECK(!Segment::exists(name));
}

TEST(unlink_on_throw_removes_a_segment_unless_released) {
  const auto name = fresh_name("guard");
  try {
    Segment a = Segment::create(name, Kind::kArray, 1, nullptr, 0, 64);
    rtcore::shm::UnlinkOnThrow guard(a.name());
    throw rtcore::InvalidArgument("a check after creation failed");
  } catch (const rtcore::InvalidArgument&) {
  }
  CHECK(!Segment::exists(name));
  {
    Segment a = Segment::create(name, Kind::kArray, 1, nullptr, 0, 64);
    rtcore::shm::UnlinkOnThrow guard(a.name());
    guard.release();
  }
  CHECK(Segment::exists(name));
  Segment::unlink_name(name);
}

int main() { return rtcore_test::run_all(); }
