// Set-up shared by the scheduler tests (StaggerSchedule, Turnstile): virtual-clock units, a structure
// created on garbage-filled heap memory, and slots joined at t = 0.
#pragma once

#include <cstdint>
#include <thread>
#include <vector>

#include "heap.h"

namespace rtcore_test {

constexpr std::int64_t kMs = 1000000;
constexpr unsigned char kGarbage = 0x5a;  // the memory before init: init must write what it reads

// A T (StaggerSchedule or Turnstile) created on its own heap memory; other handles attach to `mem`.
template <class T>
struct Created : HeapMem, T {
  template <class Params>
  explicit Created(const Params& p) : HeapMem(T::bytes_needed(p), kGarbage), T(HeapMem::p, HeapMem::size, p, true) {}
  HeapMem& mem() { return *this; }
};

// Runs fn(handle, t) for t in [0, n) on n threads, each with its own handle attached to `owner`'s memory
// (as separate processes would be); returns when all are done.
template <class T, class Params, class Fn>
void on_threads(Created<T>& owner, const Params& p, int n, Fn fn) {
  std::vector<std::thread> threads;
  for (int t = 0; t < n; ++t)
    threads.emplace_back([&, t] {
      T handle(owner.mem().p, owner.mem().size, p, false);
      fn(handle, t);
    });
  for (auto& th : threads) th.join();
}

// Joins `n` slots of `t` at time 0 and returns their ids.
template <class T>
std::vector<int> join_n(T& t, int n) {
  std::vector<int> ids;
  for (int i = 0; i < n; ++i) ids.push_back(t.join(0));
  return ids;
}

}  // namespace rtcore_test
