#include "shm/segment.h"

#include "common/checked.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace rtcore::shm {

namespace {

std::string errno_text(int code) { return std::strerror(code); }

[[noreturn]] void throw_sys(const std::string& what, int code) {
  throw SystemError(what + ": " + errno_text(code), code);
}

std::size_t page_round(std::size_t n, const std::string& name) {
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  std::uint64_t r;
  if (!add_ok(n, page - 1, &r)) throw InvalidArgument("segment '" + name + "' would be too large: its size does not fit in 2^63 bytes");
  return r / page * page;
}

void populate_write(void* base, std::size_t size) {
#ifdef MADV_POPULATE_WRITE
  if (madvise(base, size, MADV_POPULATE_WRITE) == 0) return;
#endif
  // Older kernels: MAP_POPULATE already mapped the pages; the first write per page costs a minor fault.
  (void)base;
  (void)size;
}

}  // namespace

const char* kind_name(Kind kind) noexcept {
  switch (kind) {
    case Kind::kReplay: return "ReplayBuffer";
    case Kind::kObsBoard: return "ObsBoard";
    case Kind::kActionBoard: return "ActionBoard";
    case Kind::kSchedule: return "StaggerSchedule";
    case Kind::kTurnstile: return "Turnstile";
    case Kind::kParams: return "ParamStore";
    case Kind::kStats: return "Stats";
    case Kind::kArray: return "SharedArray";
  }
  return "unknown";
}

std::string check_name(const std::string& raw) {
  std::string name = (!raw.empty() && raw[0] == '/') ? raw.substr(1) : raw;
  if (name.empty() || name.size() > 200)
    throw InvalidArgument("segment name must have 1 to 200 characters, got " + std::to_string(name.size()));
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    if (!ok)
      throw InvalidArgument("segment name '" + raw + "' has character '" + std::string(1, c) +
                            "'; expected only letters, digits, '.', '_' and '-'");
  }
  return name;
}

Segment Segment::create(const std::string& raw_name, Kind kind, std::uint32_t layout_version, const void* params,
                        std::size_t params_size, std::size_t payload_size) {
  const std::string name = check_name(raw_name);
  if (params_size > kParamsCapacity)
    throw InvalidArgument("layout parameters of " + std::to_string(params_size) + " bytes exceed the header's " +
                          std::to_string(kParamsCapacity));
  std::uint64_t total;
  if (!add_ok(kHeaderSize, page_round(payload_size == 0 ? 1 : payload_size, name), &total))
    throw InvalidArgument("segment '" + name + "' would be too large: its size does not fit in 2^63 bytes");
  const std::string path = "/" + name;
  const int fd = shm_open(path.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) {
    const int e = errno;
    if (e == EEXIST) throw AlreadyExists("a shared-memory segment named '" + name + "' already exists");
    throw_sys("shm_open('" + name + "') failed", e);
  }
  if (ftruncate(fd, static_cast<off_t>(total)) != 0) {
    const int e = errno;
    close(fd);
    shm_unlink(path.c_str());
    throw_sys("cannot size segment '" + name + "' to " + std::to_string(total) + " bytes", e);
  }
  // Reserve the tmpfs pages now so an exhausted /dev/shm fails here with ENOSPC, not later with SIGBUS.
  const int fe = posix_fallocate(fd, 0, static_cast<off_t>(total));
  if (fe != 0 && fe != EOPNOTSUPP && fe != EINVAL) {
    close(fd);
    shm_unlink(path.c_str());
    throw_sys("cannot reserve " + std::to_string(total) + " bytes of shared memory for '" + name + "'", fe);
  }
  void* base = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  const int me = errno;
  close(fd);
  if (base == MAP_FAILED) {
    shm_unlink(path.c_str());
    throw_sys("cannot map segment '" + name + "'", me);
  }
  // Pre-fault: write every page once (the zeroing is also the payload's initial state).
  std::memset(base, 0, total);
  Segment seg(name, base, total);
  Header& h = seg.header();
  h.magic = kMagic;
  h.kind = static_cast<std::uint32_t>(kind);
  h.layout_version = layout_version;
  h.total_size = total;
  h.payload_size = total - kHeaderSize;
  h.params_size = static_cast<std::uint32_t>(params_size);
  h.creator_pid = static_cast<std::int32_t>(getpid());
  if (params_size) std::memcpy(h.params, params, params_size);
  return seg;
}

Segment Segment::attach(const std::string& raw_name, Kind kind, std::uint32_t layout_version) {
  const std::string name = check_name(raw_name);
  const std::string path = "/" + name;
  const int fd = shm_open(path.c_str(), O_RDWR, 0600);
  if (fd < 0) {
    const int e = errno;
    if (e == ENOENT) throw NotFound("no shared-memory segment named '" + name + "' (is the creating process alive?)");
    throw_sys("shm_open('" + name + "') failed", e);
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    close(fd);
    throw_sys("fstat('" + name + "') failed", e);
  }
  const std::size_t size = static_cast<std::size_t>(st.st_size);
  if (size < kHeaderSize) {
    close(fd);
    throw LayoutMismatch("segment '" + name + "' is " + std::to_string(size) + " bytes, too small to be an rtcore " +
                         kind_name(kind));
  }
  void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  const int me = errno;
  close(fd);
  if (base == MAP_FAILED) throw_sys("cannot map segment '" + name + "'", me);
  Segment seg(name, base, size);
  const Header& h = seg.header();
  if (h.magic != kMagic)
    throw LayoutMismatch("segment '" + name + "' is not an rtcore segment (bad magic); expected an rtcore " +
                         std::string(kind_name(kind)));
  if (h.kind != static_cast<std::uint32_t>(kind))
    throw LayoutMismatch("segment '" + name + "' holds an rtcore " + kind_name(static_cast<Kind>(h.kind)) +
                         ", expected a " + kind_name(kind));
  if (h.layout_version != layout_version)
    throw LayoutMismatch("segment '" + name + "' has " + kind_name(kind) + " layout version " +
                         std::to_string(h.layout_version) + ", this build of rtcore reads version " +
                         std::to_string(layout_version));
  if (h.total_size != size)
    throw LayoutMismatch("segment '" + name + "' header says " + std::to_string(h.total_size) +
                         " bytes but the segment has " + std::to_string(size));
  if (h.payload_size != size - kHeaderSize)
    throw LayoutMismatch("segment '" + name + "' header says its payload is " + std::to_string(h.payload_size) +
                         " bytes, the segment holds " + std::to_string(size - kHeaderSize));
  if (h.params_size > kParamsCapacity)
    throw LayoutMismatch("segment '" + name + "' header says its layout parameters are " + std::to_string(h.params_size) +
                         " bytes, more than the header holds");
  if (h.ready.load(std::memory_order_acquire) != 1)  // acquire: pairs with mark_ready()
    throw LayoutMismatch("segment '" + name + "' is not initialised yet (its creator has not finished)");
  populate_write(base, size);
  return seg;
}

bool Segment::exists(const std::string& raw_name) {
  const std::string path = "/" + check_name(raw_name);
  const int fd = shm_open(path.c_str(), O_RDONLY, 0);
  if (fd < 0) return false;
  close(fd);
  return true;
}

void Segment::unlink_name(const std::string& raw_name) {
  const std::string path = "/" + check_name(raw_name);
  if (shm_unlink(path.c_str()) != 0 && errno != ENOENT) throw_sys("shm_unlink('" + raw_name + "') failed", errno);
}

Segment::Segment(Segment&& other) noexcept
    : name_(std::move(other.name_)), base_(std::exchange(other.base_, nullptr)), size_(std::exchange(other.size_, 0)) {}

Segment& Segment::operator=(Segment&& other) noexcept {
  if (this != &other) {
    unmap();
    name_ = std::move(other.name_);
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

Segment::~Segment() { unmap(); }

UnlinkOnThrow::~UnlinkOnThrow() {
  if (!armed_) return;
  try {
    Segment::unlink_name(name_);
  } catch (...) {  // a destructor must not throw; the original exception is the one to report
  }
}

void Segment::unmap() noexcept {
  if (base_) munmap(base_, size_);
  base_ = nullptr;
  size_ = 0;
}

}  // namespace rtcore::shm
