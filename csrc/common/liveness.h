// Process liveness by pid and start time, for structures in shared memory that record who holds a slot.
//
// A pid alone does not name a process for long: once it exits the kernel may hand it to another one.
// A token names a process by pid (high 32 bits) and the low 32 bits of its start time in clock ticks
// since boot (field 22 of /proc/<pid>/stat), so a reused pid is not mistaken for the dead holder. A
// zombie (exited, not reaped yet) counts as dead. Used by the ParamStore (reader and writer claims),
// the Turnstile (learner slots) and the StaggerSchedule (worker slots).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace rtcore::proc {

// Start time of a process in clock ticks since boot (field 22 of /proc/<pid>/stat), and whether it is a
// zombie. Returns false if the process does not exist.
inline bool read_proc_stat(int pid, std::uint64_t* start_ticks, bool* zombie) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[1024];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  const char* p = std::strrchr(buf, ')');  // the command name may contain spaces and parentheses
  if (p == nullptr || p[1] != ' ') return false;
  p += 2;
  *zombie = (*p == 'Z' || *p == 'X');
  for (int field = 3; field < 22 && *p; ++p)  // fields after ')' start at 3 (state)
    if (*p == ' ') ++field;
  *start_ticks = std::strtoull(p, nullptr, 10);
  return true;
}

// A token naming this process: pid in the high 32 bits, the low 32 bits of its start time in the low
// ones (never 0 or 1, values the ParamStore reserves: the pid of a live process is at least 1).
inline std::uint64_t make_token(int pid, std::uint64_t start_ticks) noexcept {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(pid)) << 32) | (start_ticks & 0xffffffffULL);
}

inline std::uint64_t self_token() noexcept {
  static std::atomic<std::uint64_t> cached{0};
  const int pid = static_cast<int>(::getpid());
  std::uint64_t t = cached.load(std::memory_order_relaxed);  // relaxed: recomputed if stale (fork)
  if (t == 0 || static_cast<int>(t >> 32) != pid) {
    std::uint64_t start = 0;
    bool zombie = false;
    read_proc_stat(pid, &start, &zombie);
    t = make_token(pid, start);
    cached.store(t, std::memory_order_relaxed);  // relaxed: a per-process cache of a pure function
  }
  return t;
}

// True unless the process named by `token` has exited (or is a zombie, or its pid now names another
// process). Costs one open/read of /proc (a few microseconds): only slow paths call it.
inline bool process_alive(std::uint64_t token) noexcept {
  const int pid = static_cast<int>(token >> 32);
  if (pid <= 0) return false;
  if (pid == static_cast<int>(::getpid())) return true;
  std::uint64_t start = 0;
  bool zombie = false;
  if (!read_proc_stat(pid, &start, &zombie)) return ::kill(pid, 0) == 0 || errno == EPERM;
  return !zombie && (start & 0xffffffffULL) == (token & 0xffffffffULL);
}

}  // namespace rtcore::proc
