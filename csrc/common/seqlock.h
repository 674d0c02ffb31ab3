// Building blocks for seqlock-protected payloads in shared memory.
//
// A seqlock writer bumps a sequence number to odd, writes the payload, and bumps it to even; a reader
// reads the sequence, copies the payload, and re-reads the sequence: equal and even means the copy is
// whole, otherwise it retries. The reader's copy races with the writer by design. To keep that race
// well-defined under the C++ memory model (Boehm, "Can seqlocks get along with programming language
// memory models?", MSPC 2012) and visible to ThreadSanitizer as the synchronisation it is, payload
// bytes move through relaxed atomic word operations, fenced as below, never through plain memcpy.
// On x86-64 and AArch64 a relaxed 8-byte atomic load or store is an ordinary `mov`/`ldr`, so the
// copy runs at memory bandwidth.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace rtcore {

constexpr std::size_t kCacheLine = 64;

// Copies n bytes out of a payload that a writer may be changing. Both pointers must be 8-byte aligned
// for the word loop; a byte tail is handled separately.
inline void seq_load(void* dst, const void* src, std::size_t n) noexcept {
  auto* d = static_cast<std::uint64_t*>(dst);
  auto* s = static_cast<const std::uint64_t*>(src);
  const std::size_t words = n / 8;
  for (std::size_t i = 0; i < words; ++i) {
    std::uint64_t w = __atomic_load_n(s + i, __ATOMIC_RELAXED);  // relaxed: validated by the sequence re-read
    std::memcpy(d + i, &w, 8);
  }
  auto* db = reinterpret_cast<unsigned char*>(d + words);
  auto* sb = reinterpret_cast<const unsigned char*>(s + words);
  for (std::size_t i = 0; i < n % 8; ++i) db[i] = __atomic_load_n(sb + i, __ATOMIC_RELAXED);  // relaxed: as above
}

// Copies n bytes into a payload that readers may be copying at the same time.
inline void seq_store(void* dst, const void* src, std::size_t n) noexcept {
  auto* d = static_cast<std::uint64_t*>(dst);
  auto* s = static_cast<const unsigned char*>(src);
  const std::size_t words = n / 8;
  for (std::size_t i = 0; i < words; ++i) {
    std::uint64_t w;
    std::memcpy(&w, s + 8 * i, 8);
    __atomic_store_n(d + i, w, __ATOMIC_RELAXED);  // relaxed: ordered by the fences around the payload
  }
  auto* db = reinterpret_cast<unsigned char*>(d + words);
  for (std::size_t i = 0; i < n % 8; ++i) __atomic_store_n(db + i, s[8 * words + i], __ATOMIC_RELAXED);  // relaxed: as above
}

// Writer side: seq goes odd, payload is written, seq goes even.
//   std::uint64_t s = seq_write_begin(seq);  ... seq_store(...) ...  seq_write_end(seq, s);
inline std::uint64_t seq_write_begin(std::atomic<std::uint64_t>& seq) noexcept {
  const std::uint64_t s = seq.load(std::memory_order_relaxed);  // relaxed: only this writer changes seq
  seq.store(s + 1, std::memory_order_relaxed);                   // relaxed: ordered by the fence below
  std::atomic_thread_fence(std::memory_order_release);  // release: the odd seq is seen before any new payload byte
  return s + 1;
}

inline void seq_write_end(std::atomic<std::uint64_t>& seq, std::uint64_t odd) noexcept {
  seq.store(odd + 1, std::memory_order_release);  // release: publishes the payload with the even seq
}

// Reader side: spin past a writer, then copy, then validate.
//   std::uint64_t s0 = seq_read_begin(seq); ... seq_load(...) ...; if (seq_read_valid(seq, s0)) done;
inline std::uint64_t seq_read_begin(const std::atomic<std::uint64_t>& seq) noexcept {
  return seq.load(std::memory_order_acquire);  // acquire: the payload read after this is at least this new
}

inline bool seq_read_valid(const std::atomic<std::uint64_t>& seq, std::uint64_t s0) noexcept {
  std::atomic_thread_fence(std::memory_order_acquire);  // acquire: the payload loads complete before the re-read
  return (s0 & 1) == 0 && seq.load(std::memory_order_relaxed) == s0;  // relaxed: ordered by the fence above
}

// Spin-wait hint for the few places that spin.
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

}  // namespace rtcore
