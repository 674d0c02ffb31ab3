// Checked size arithmetic: every size or offset computed from a caller's numbers (capacities, shapes,
// worker counts) goes through these, so an overflow is refused with InvalidArgument naming what was
// being sized, never wrapped into a small segment that a later write runs past.
//
//   std::uint64_t bytes = checked_mul(capacity, frame_stride, "capacity");   // throws on overflow
//
// `what` names the argument the caller controls; the message says the size does not fit 64 bits.
// Built on __builtin_{mul,add}_overflow (GCC and Clang), which compile to one instruction plus a branch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

#include "common/errors.h"

namespace rtcore {

// The largest segment or span rtcore sizes: what an off_t holds (mmap and ftruncate take off_t).
constexpr std::uint64_t kMaxBytes = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());

[[noreturn]] inline void throw_too_large(const char* what) {
  throw InvalidArgument(std::string(what) + " is too large: the memory it needs does not fit in 2^63 bytes");
}

inline std::uint64_t checked_mul(std::uint64_t a, std::uint64_t b, const char* what) {
  std::uint64_t r;
  if (__builtin_mul_overflow(a, b, &r) || r > kMaxBytes) throw_too_large(what);
  return r;
}

inline std::uint64_t checked_add(std::uint64_t a, std::uint64_t b, const char* what) {
  std::uint64_t r;
  if (__builtin_add_overflow(a, b, &r) || r > kMaxBytes) throw_too_large(what);
  return r;
}

// n rounded up to a multiple of `align` (> 0).
inline std::uint64_t checked_round_up(std::uint64_t n, std::uint64_t align, const char* what) {
  const std::uint64_t r = checked_add(n, align - 1, what);
  return r / align * align;
}

// Non-throwing forms, for code that must not throw (noexcept views): false on overflow.
inline bool mul_ok(std::uint64_t a, std::uint64_t b, std::uint64_t* out) noexcept {
  return !__builtin_mul_overflow(a, b, out) && *out <= kMaxBytes;
}
inline bool add_ok(std::uint64_t a, std::uint64_t b, std::uint64_t* out) noexcept {
  return !__builtin_add_overflow(a, b, out) && *out <= kMaxBytes;
}

}  // namespace rtcore
