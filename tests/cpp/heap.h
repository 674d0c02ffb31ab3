// Heap memory for the C++ tests of the shared-memory structures: 64-byte aligned like a segment's
// payload, every byte set to `fill` (0: what a fresh segment gives; anything else: garbage that the
// structure's init must overwrite).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace rtcore_test {

struct HeapMem {
  explicit HeapMem(std::size_t n, unsigned char fill = 0) : size((n + 63) / 64 * 64), p(std::aligned_alloc(64, size)) {
    std::memset(p, fill, size);
  }
  ~HeapMem() { std::free(p); }
  HeapMem(const HeapMem&) = delete;
  HeapMem& operator=(const HeapMem&) = delete;

  std::size_t size;
  void* p;
};

}  // namespace rtcore_test
