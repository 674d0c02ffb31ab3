// Seqlock building blocks for payloads in shared memory. A writer makes seq odd, writes the payload,
// makes seq even; a reader copies between two reads of seq and keeps the copy only if both are equal
// and even (the copy races with the writer by design).
// Invariant: the payload is touched only through seq_load/seq_store, never memcpy or plain accesses (a
// racing plain access is UB even when discarded): relaxed 8-byte atomic words, or on x86-64 SSE2/AVX2
// moves in inline asm (not C++ accesses; x86-TSO keeps them between the seq accesses). TSan builds use
// the words only (TSan cannot see asm); ASan builds check both ranges of every copy.
// Why each choice, the measurements behind the asm, what the sanitizers check: docs/design/seqlock.md.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__SANITIZE_THREAD__)
#define RTCORE_SEQ_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RTCORE_SEQ_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define RTCORE_SEQ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RTCORE_SEQ_ASAN 1
#endif
#endif
#if defined(__x86_64__) && !defined(RTCORE_SEQ_TSAN) && !defined(RTCORE_SEQ_NO_ASM)
#define RTCORE_SEQ_X86_ASM 1
#endif
#if defined(RTCORE_SEQ_ASAN) && defined(RTCORE_SEQ_X86_ASM)
#include <sanitizer/asan_interface.h>

#include <cstdio>
#include <cstdlib>
#endif

namespace rtcore {

constexpr std::size_t kCacheLine = 64;

// The copy kernels, exposed for the benchmark and the tests; use seq_load/seq_store. "load": src is the racy payload (8-byte aligned), dst any alignment.
// "store": dst is the racy payload (8-byte aligned), src any alignment.
namespace seqcopy {

// Relaxed atomic 8-byte words, unrolled x8 (then single words, then bytes).
inline void load_words(void* dst, const void* src, std::size_t n) noexcept {
  auto* d = static_cast<unsigned char*>(dst);
  auto* s = static_cast<const std::uint64_t*>(src);
  const std::size_t words = n / 8;
  std::size_t i = 0;
  for (; i + 8 <= words; i += 8) {  // unrolled by hand (docs/design/seqlock.md)
    const std::uint64_t* p = s + i;
    const std::uint64_t w0 = __atomic_load_n(p + 0, __ATOMIC_RELAXED);  // relaxed: validated by the sequence re-read
    const std::uint64_t w1 = __atomic_load_n(p + 1, __ATOMIC_RELAXED);  // relaxed: as above
    const std::uint64_t w2 = __atomic_load_n(p + 2, __ATOMIC_RELAXED);  // relaxed: as above
    const std::uint64_t w3 = __atomic_load_n(p + 3, __ATOMIC_RELAXED);  // relaxed: as above
    const std::uint64_t w4 = __atomic_load_n(p + 4, __ATOMIC_RELAXED);  // relaxed: as above
    const std::uint64_t w5 = __atomic_load_n(p + 5, __ATOMIC_RELAXED);  // relaxed: as above
    const std::uint64_t w6 = __atomic_load_n(p + 6, __ATOMIC_RELAXED);  // relaxed: as above
    const std::uint64_t w7 = __atomic_load_n(p + 7, __ATOMIC_RELAXED);  // relaxed: as above
    unsigned char* q = d + 8 * i;
    std::memcpy(q, &w0, 8);
    std::memcpy(q + 8, &w1, 8);
    std::memcpy(q + 16, &w2, 8);
    std::memcpy(q + 24, &w3, 8);
    std::memcpy(q + 32, &w4, 8);
    std::memcpy(q + 40, &w5, 8);
    std::memcpy(q + 48, &w6, 8);
    std::memcpy(q + 56, &w7, 8);
  }
  for (; i < words; ++i) {
    const std::uint64_t w = __atomic_load_n(s + i, __ATOMIC_RELAXED);  // relaxed: as above
    std::memcpy(d + 8 * i, &w, 8);
  }
  auto* sb = reinterpret_cast<const unsigned char*>(s + words);
  for (std::size_t b = 0; b < n % 8; ++b) d[8 * words + b] = __atomic_load_n(sb + b, __ATOMIC_RELAXED);  // relaxed: as above
}

inline void store_words(void* dst, const void* src, std::size_t n) noexcept {
  auto* d = static_cast<std::uint64_t*>(dst);
  auto* s = static_cast<const unsigned char*>(src);
  const std::size_t words = n / 8;
  std::size_t i = 0;
  for (; i + 8 <= words; i += 8) {  // spelled out, as in load_words
    const unsigned char* q = s + 8 * i;
    std::uint64_t w0, w1, w2, w3, w4, w5, w6, w7;
    std::memcpy(&w0, q, 8);
    std::memcpy(&w1, q + 8, 8);
    std::memcpy(&w2, q + 16, 8);
    std::memcpy(&w3, q + 24, 8);
    std::memcpy(&w4, q + 32, 8);
    std::memcpy(&w5, q + 40, 8);
    std::memcpy(&w6, q + 48, 8);
    std::memcpy(&w7, q + 56, 8);
    std::uint64_t* p = d + i;
    __atomic_store_n(p + 0, w0, __ATOMIC_RELAXED);  // relaxed: ordered by the seqlock's fences
    __atomic_store_n(p + 1, w1, __ATOMIC_RELAXED);  // relaxed: as above
    __atomic_store_n(p + 2, w2, __ATOMIC_RELAXED);  // relaxed: as above
    __atomic_store_n(p + 3, w3, __ATOMIC_RELAXED);  // relaxed: as above
    __atomic_store_n(p + 4, w4, __ATOMIC_RELAXED);  // relaxed: as above
    __atomic_store_n(p + 5, w5, __ATOMIC_RELAXED);  // relaxed: as above
    __atomic_store_n(p + 6, w6, __ATOMIC_RELAXED);  // relaxed: as above
    __atomic_store_n(p + 7, w7, __ATOMIC_RELAXED);  // relaxed: as above
  }
  for (; i < words; ++i) {
    std::uint64_t w;
    std::memcpy(&w, s + 8 * i, 8);
    __atomic_store_n(d + i, w, __ATOMIC_RELAXED);  // relaxed: as above
  }
  auto* db = reinterpret_cast<unsigned char*>(d + words);
  for (std::size_t b = 0; b < n % 8; ++b) __atomic_store_n(db + b, s[8 * words + b], __ATOMIC_RELAXED);  // relaxed: as above
}

#if defined(RTCORE_SEQ_X86_ASM)

// 64-byte blocks with SSE2 (baseline x86-64). Returns the bytes copied (n rounded down to 64).
inline std::size_t blocks_sse2(void* dst, const void* src, std::size_t n) noexcept {
  std::size_t k = n / 64;
  if (k == 0) return 0;
  auto* d = static_cast<unsigned char*>(dst);
  auto* s = static_cast<const unsigned char*>(src);
  asm volatile(
      "1:\n\t"
      "movdqu   (%[s]), %%xmm0\n\t"
      "movdqu 16(%[s]), %%xmm1\n\t"
      "movdqu 32(%[s]), %%xmm2\n\t"
      "movdqu 48(%[s]), %%xmm3\n\t"
      "movdqu %%xmm0,   (%[d])\n\t"
      "movdqu %%xmm1, 16(%[d])\n\t"
      "movdqu %%xmm2, 32(%[d])\n\t"
      "movdqu %%xmm3, 48(%[d])\n\t"
      "add $64, %[s]\n\t"
      "add $64, %[d]\n\t"
      "dec %[k]\n\t"
      "jnz 1b"
      : [d] "+r"(d), [s] "+r"(s), [k] "+r"(k)
      :
      : "xmm0", "xmm1", "xmm2", "xmm3", "memory", "cc");
  return n / 64 * 64;
}

// 128-byte blocks with AVX2; call only where cpu_has_avx2(). Returns the bytes copied.
__attribute__((target("avx2"))) inline std::size_t blocks_avx2(void* dst, const void* src, std::size_t n) noexcept {
  std::size_t k = n / 128;
  if (k == 0) return 0;
  auto* d = static_cast<unsigned char*>(dst);
  auto* s = static_cast<const unsigned char*>(src);
  asm volatile(
      "1:\n\t"
      "vmovdqu   (%[s]), %%ymm0\n\t"
      "vmovdqu 32(%[s]), %%ymm1\n\t"
      "vmovdqu 64(%[s]), %%ymm2\n\t"
      "vmovdqu 96(%[s]), %%ymm3\n\t"
      "vmovdqu %%ymm0,   (%[d])\n\t"
      "vmovdqu %%ymm1, 32(%[d])\n\t"
      "vmovdqu %%ymm2, 64(%[d])\n\t"
      "vmovdqu %%ymm3, 96(%[d])\n\t"
      "add $128, %[s]\n\t"
      "add $128, %[d]\n\t"
      "dec %[k]\n\t"
      "jnz 1b\n\t"
#if !defined(__AVX__)
      // The rest of this build is legacy-SSE code: clear the upper halves (no live ymm state exists
      // outside this statement) to avoid the SSE/AVX transition penalty.
      "vzeroupper"
#endif
      : [d] "+r"(d), [s] "+r"(s), [k] "+r"(k)
      :
      : "xmm0", "xmm1", "xmm2", "xmm3", "memory", "cc");
  return n / 128 * 128;
}

inline bool cpu_has_avx2() noexcept {
#if defined(__AVX2__)
  return true;
#else
  static const bool has = (__builtin_cpu_init(), __builtin_cpu_supports("avx2") != 0);
  return has;
#endif
}

inline void check_asan(const void* p, std::size_t n) noexcept {
#if defined(RTCORE_SEQ_ASAN)
  if (void* bad = __asan_region_is_poisoned(const_cast<void*>(p), n)) {
    std::fprintf(stderr, "rtcore seqlock copy: %zu bytes at %p reach poisoned memory at %p\n", n, p, bad);
    __asan_describe_address(bad);
    std::abort();
  }
#else
  (void)p;
  (void)n;
#endif
}

// Vector blocks, then atomic words for the tail (the tail starts at a multiple of 64 bytes, so the
// payload side stays 8-byte aligned).
inline void load_sse2(void* dst, const void* src, std::size_t n) noexcept {
  const std::size_t done = blocks_sse2(dst, src, n);
  load_words(static_cast<unsigned char*>(dst) + done, static_cast<const unsigned char*>(src) + done, n - done);
}
inline void store_sse2(void* dst, const void* src, std::size_t n) noexcept {
  const std::size_t done = blocks_sse2(dst, src, n);
  store_words(static_cast<unsigned char*>(dst) + done, static_cast<const unsigned char*>(src) + done, n - done);
}
inline void load_avx2(void* dst, const void* src, std::size_t n) noexcept {
  std::size_t done = blocks_avx2(dst, src, n);
  done += blocks_sse2(static_cast<unsigned char*>(dst) + done, static_cast<const unsigned char*>(src) + done, n - done);
  load_words(static_cast<unsigned char*>(dst) + done, static_cast<const unsigned char*>(src) + done, n - done);
}
inline void store_avx2(void* dst, const void* src, std::size_t n) noexcept {
  std::size_t done = blocks_avx2(dst, src, n);
  done += blocks_sse2(static_cast<unsigned char*>(dst) + done, static_cast<const unsigned char*>(src) + done, n - done);
  store_words(static_cast<unsigned char*>(dst) + done, static_cast<const unsigned char*>(src) + done, n - done);
}

#endif  // RTCORE_SEQ_X86_ASM

// Name of the kernel seq_load/seq_store use in this build on this CPU ("avx2", "sse2" or "words").
inline const char* active_kernel() noexcept {
#if defined(RTCORE_SEQ_X86_ASM)
  return cpu_has_avx2() ? "avx2" : "sse2";
#else
  return "words";
#endif
}

}  // namespace seqcopy

// Copies n bytes out of a payload that a writer may be changing (inside seq_read_begin/valid).
// `src` must be 8-byte aligned; `dst` (private memory) may have any alignment.
inline void seq_load(void* dst, const void* src, std::size_t n) noexcept {
#if defined(RTCORE_SEQ_X86_ASM)
  seqcopy::check_asan(dst, n);
  seqcopy::check_asan(src, n);
  if (seqcopy::cpu_has_avx2())
    seqcopy::load_avx2(dst, src, n);
  else
    seqcopy::load_sse2(dst, src, n);
#else
  seqcopy::load_words(dst, src, n);
#endif
}

// Copies n bytes into a payload that readers may be copying at the same time (inside
// seq_write_begin/end). `dst` must be 8-byte aligned; `src` may have any alignment.
inline void seq_store(void* dst, const void* src, std::size_t n) noexcept {
#if defined(RTCORE_SEQ_X86_ASM)
  seqcopy::check_asan(dst, n);
  seqcopy::check_asan(src, n);
  if (seqcopy::cpu_has_avx2())
    seqcopy::store_avx2(dst, src, n);
  else
    seqcopy::store_sse2(dst, src, n);
#else
  seqcopy::store_words(dst, src, n);
#endif
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
