// POSIX shared-memory segments with a self-describing header.
//
// Every shared structure in rtcore lives in one segment: a 4 KiB header page (magic, structure kind,
// layout version, sizes, the structure's own layout parameters) followed by the payload. The data
// structures themselves never see a segment: they are views over a (base, size) span and run the same
// on heap memory in the C++ tests. Attaching to a segment of another kind or layout version is a
// LayoutMismatch, never a crash.
//
// Creation pre-faults the whole payload (every page written once), so the first-touch cost of fresh
// pages (microseconds each) is paid here, never on a hot path. Attaching maps the pages writable up
// front (MADV_POPULATE_WRITE where the kernel has it).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>

#include "common/errors.h"

namespace rtcore::shm {

enum class Kind : std::uint32_t {
  kReplay = 1,
  kObsBoard = 2,
  kActionBoard = 3,
  kSchedule = 4,
  kTurnstile = 5,
  kParams = 6,
  kStats = 7,
  kArray = 8,
};

const char* kind_name(Kind kind) noexcept;

constexpr std::uint64_t kMagic = 0x31305f45524f4354ULL;  // "TCORE_01" little-endian, preceded by 'R' in docs
constexpr std::size_t kHeaderSize = 4096;
constexpr std::size_t kParamsCapacity = 3072;

struct Header {
  std::uint64_t magic;
  std::uint32_t kind;            // Kind
  std::uint32_t layout_version;  // per kind; bumped whenever the payload layout changes
  std::uint64_t total_size;      // header + payload, bytes
  std::uint64_t payload_size;    // bytes
  std::uint32_t params_size;     // bytes of `params` in use
  std::int32_t creator_pid;
  std::atomic<std::uint32_t> ready;  // 0 while the creator initialises the payload, then 1
  std::uint32_t reserved0;
  std::uint8_t reserved[64 - 48];
  alignas(64) std::uint8_t params[kParamsCapacity];  // the structure's layout parameters (trivially copyable)
};
static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "shared atomics must be lock-free");
static_assert(std::is_standard_layout_v<Header>, "Header lives in shared memory");
static_assert(offsetof(Header, params) == 64, "Header layout changed: bump kMagic");
static_assert(sizeof(Header) <= kHeaderSize, "Header must fit its page");

// A mapped segment. Movable, not copyable; unmapping happens in the destructor. Unlinking (removing the
// name) is separate and explicit: the creating process decides when (see rtcore/_shm.py).
class Segment {
 public:
  // Creates `name` (exclusive: an existing name is an error), sizes it, pre-faults it, writes the
  // header and copies `params`. The payload is zeroed; ready stays 0 until mark_ready().
  static Segment create(const std::string& name, Kind kind, std::uint32_t layout_version, const void* params,
                        std::size_t params_size, std::size_t payload_size);
  // Attaches to an existing, initialised segment of this kind and layout version.
  static Segment attach(const std::string& name, Kind kind, std::uint32_t layout_version);
  // True if a segment of that name exists.
  static bool exists(const std::string& name);
  // Removes a name; no error if it is already gone.
  static void unlink_name(const std::string& name);

  Segment() = default;
  Segment(Segment&& other) noexcept;
  Segment& operator=(Segment&& other) noexcept;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment();

  void* payload() const noexcept { return static_cast<std::uint8_t*>(base_) + kHeaderSize; }
  std::size_t payload_size() const noexcept { return size_ - kHeaderSize; }
  Header& header() const noexcept { return *static_cast<Header*>(base_); }
  const std::string& name() const noexcept { return name_; }
  bool mapped() const noexcept { return base_ != nullptr; }

  // The header's layout parameters as P. Throws LayoutMismatch unless the header holds exactly
  // sizeof(P) bytes of them; the caller re-validates every field of P (see each kind's attach).
  template <class P>
  P params() const {
    static_assert(std::is_trivially_copyable_v<P>, "layout parameters must be trivially copyable");
    if (header().params_size != sizeof(P))
      throw LayoutMismatch("segment '" + name_ + "' has layout parameters of " +
                           std::to_string(header().params_size) + " bytes, expected " + std::to_string(sizeof(P)));
    P p;
    std::memcpy(&p, header().params, sizeof(P));
    return p;
  }

  // Publishes the initialised payload to attachers.
  void mark_ready() noexcept { header().ready.store(1, std::memory_order_release); }  // release: payload init happens-before attach
  void unmap() noexcept;

 private:
  Segment(std::string name, void* base, std::size_t size) : name_(std::move(name)), base_(base), size_(size) {}
  std::string name_;
  void* base_ = nullptr;
  std::size_t size_ = 0;
};

// Unlinks a freshly created segment's name unless released: a constructor that throws after creating
// its segment (a layout check, a view's constructor) leaves nothing behind in /dev/shm.
//   auto seg = Segment::create(name, ...);
//   UnlinkOnThrow guard(seg.name());
//   ... build the handle (may throw) ...
//   guard.release();
class UnlinkOnThrow {
 public:
  explicit UnlinkOnThrow(std::string name) : name_(std::move(name)) {}
  UnlinkOnThrow(const UnlinkOnThrow&) = delete;
  UnlinkOnThrow& operator=(const UnlinkOnThrow&) = delete;
  ~UnlinkOnThrow();
  void release() noexcept { armed_ = false; }

 private:
  std::string name_;
  bool armed_ = true;
};

// Normalises and validates a segment name: no leading slash in the result, no '/', 1..200 chars of
// [A-Za-z0-9._-]. Throws InvalidArgument naming what was wrong.
std::string check_name(const std::string& name);

}  // namespace rtcore::shm
