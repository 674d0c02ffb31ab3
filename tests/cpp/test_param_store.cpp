#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "check.h"
#include "params/param_store.h"

using rtcore::params::kNoFreeBuffer;
using rtcore::params::kWriterBusy;
using rtcore::params::Layout;
using rtcore::params::ParamStore;

namespace {

// Heap (or shared) memory for a store; zeroed and page aligned.
struct Memory {
  explicit Memory(std::size_t n, bool shared = false) : size(n), shared(shared) {
    if (shared) {
      base = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    } else {
      base = std::aligned_alloc(4096, (n + 4095) / 4096 * 4096);
      std::memset(base, 0, n);
    }
  }
  ~Memory() {
    if (shared)
      munmap(base, size);
    else
      std::free(base);
  }
  void* base;
  std::size_t size;
  bool shared;
};

// A fake liveness oracle for the threaded tests: tokens listed here are "dead".
std::atomic<std::uint64_t> g_dead[4];
bool fake_alive(std::uint64_t token) {
  for (auto& d : g_dead)
    if (d.load(std::memory_order_relaxed) == token) return false;  // relaxed: set before the call under test
  return true;
}

constexpr std::uint64_t kWriter = 0x100000001ULL;
constexpr std::uint64_t kReaderA = 0x200000002ULL;
constexpr std::uint64_t kReaderB = 0x300000003ULL;

void fill(ParamStore& s, std::uint32_t value, std::vector<std::uint32_t>& scratch) {
  scratch.assign(s.numel(), value);
}

// A store of uint32 elements on fresh heap memory (fake_alive says who is alive), and a writer that
// publishes versions whose every element is one value.
struct Store {
  Store(std::uint64_t numel, std::uint32_t buffers, std::uint32_t max_readers)
      : l(ParamStore::make_layout(numel, 4, 0, buffers, max_readers)),
        m(l.total_size),
        s(ParamStore::init(m.base, m.size, l, &fake_alive)) {}
  // Publishes `value` in every element as `token`; returns the version (0: skipped).
  std::uint64_t publish(std::uint32_t value, std::uint64_t token = kWriter) {
    fill(s, value, src);
    return s.publish(src.data(), src.size() * 4, token);
  }
  Layout l;
  Memory m;
  ParamStore s;
  std::vector<std::uint32_t> src;
};

bool uniform(const ParamStore& s, int b, std::uint32_t value) {
  const auto* p = static_cast<const std::uint32_t*>(s.buffer(b));
  for (std::uint64_t i = 0; i < s.numel(); ++i)
    if (p[i] != value) return false;
  return true;
}

}  // namespace

TEST(layout_is_page_aligned_and_validated) {
  Layout l = ParamStore::make_layout(1000, 4, 0, 3, 8);
  CHECK_EQ(l.buffer_stride, 4096u);
  CHECK_EQ(l.buffers_offset % 4096, 0u);
  CHECK_EQ(l.total_size, l.buffers_offset + 3 * 4096u);
  CHECK_THROWS(ParamStore::make_layout(0, 4, 0, 3, 8), rtcore::InvalidArgument);
  CHECK_THROWS(ParamStore::make_layout(10, 3, 0, 3, 8), rtcore::InvalidArgument);
  CHECK_THROWS(ParamStore::make_layout(10, 4, 0, 1, 8), rtcore::InvalidArgument);
  CHECK_THROWS(ParamStore::make_layout(10, 4, 0, 3, 0), rtcore::InvalidArgument);
  Memory m(l.total_size);
  CHECK_THROWS(ParamStore::init(m.base, l.total_size - 1, l), rtcore::InvalidArgument);
}

TEST(publish_then_pin_reads_the_newest_version) {
  Store st(257, 3, 4);
  ParamStore& s = st.s;
  const int r = s.acquire_slot(kReaderA);
  CHECK_EQ(s.pin(r).version, 0u);  // nothing published yet
  CHECK_EQ(s.pin(r).buffer, -1);
  for (std::uint32_t v = 1; v <= 10; ++v) {
    CHECK_EQ(st.publish(v), std::uint64_t{v});
    auto p = s.pin(r);
    CHECK_EQ(p.version, std::uint64_t{v});
    CHECK(uniform(s, p.buffer, v));
    s.unpin(r);
  }
  CHECK_EQ(s.version(), 10u);
  CHECK_THROWS(s.publish(st.src.data(), 4, kWriter), rtcore::InvalidArgument);
  ParamStore other = ParamStore::view(st.m.base, st.m.size, st.l, &fake_alive);  // a second view sees the same store
  CHECK_EQ(other.version(), 10u);
  CHECK_EQ(other.stats().published, 10u);
}

TEST(a_pinned_buffer_is_never_written) {
  Store st(64, 3, 4);
  ParamStore& s = st.s;
  const int r = s.acquire_slot(kReaderA);
  st.publish(1);
  auto p = s.pin(r);
  for (std::uint32_t v = 2; v < 50; ++v) {
    CHECK(st.publish(v) == v);  // two other buffers keep publishing going
    CHECK(uniform(s, p.buffer, 1));
  }
  s.unpin(r);
}

TEST(publish_skips_when_every_candidate_is_pinned) {
  Store st(16, 2, 4);
  ParamStore& s = st.s;
  const int r = s.acquire_slot(kReaderA);
  CHECK_EQ(st.publish(1), 1u);
  auto p = s.pin(r);  // pins version 1
  CHECK_EQ(st.publish(2), 2u);  // the other buffer
  CHECK_EQ(st.publish(3), 0u);  // version 1's buffer is pinned, version 2's is the newest
  CHECK_EQ(s.begin_write(kWriter), kNoFreeBuffer);
  CHECK_EQ(s.stats().skipped_no_buffer, 2u);
  CHECK(uniform(s, p.buffer, 1));
  s.unpin(r);
  CHECK_EQ(st.publish(3), 3u);
  CHECK_EQ(s.version(), 3u);
}

TEST(one_writer_at_a_time_and_a_dead_writers_claim_is_stolen) {
  Store st(16, 3, 4);
  ParamStore& s = st.s;
  const int b = s.begin_write(kWriter);
  CHECK(b >= 0);
  CHECK_EQ(s.begin_write(kReaderB), kWriterBusy);  // another (live) process holds the claim
  g_dead[0].store(kWriter, std::memory_order_relaxed);  // the writer dies mid-write
  const int b2 = s.begin_write(kReaderB);
  CHECK(b2 >= 0);
  CHECK_EQ(s.commit(b2), 1u);
  CHECK_EQ(s.stats().reclaimed_writers, 1u);
  CHECK_EQ(s.stats().skipped_writer_busy, 1u);
  g_dead[0].store(0, std::memory_order_relaxed);
}

TEST(a_dead_readers_pin_is_reclaimed_by_the_writer) {
  Store st(16, 2, 2);
  ParamStore& s = st.s;
  const int r = s.acquire_slot(kReaderA);
  st.publish(1);
  s.pin(r);
  st.publish(2);
  CHECK_EQ(st.publish(3), 0u);  // reader A (alive) holds the only candidate
  g_dead[1].store(kReaderA, std::memory_order_relaxed);  // reader A dies while pinned
  CHECK_EQ(st.publish(3), 3u);
  CHECK_EQ(s.stats().reclaimed_readers, 1u);
  CHECK_EQ(s.pinned(r), -1);
  // Its slot is free again: two more readers fit in a store of two slots.
  const int r1 = s.acquire_slot(kReaderB);
  const int r2 = s.acquire_slot(kReaderB + 1);
  CHECK(r1 != r2);
  CHECK_THROWS(s.acquire_slot(kReaderB + 2), rtcore::SlotError);
  g_dead[2].store(kReaderB, std::memory_order_relaxed);  // a slot whose owner died is taken over
  CHECK_EQ(s.acquire_slot(kReaderB + 3), r1);
  g_dead[1].store(0, std::memory_order_relaxed);
  g_dead[2].store(0, std::memory_order_relaxed);
}

// Threads: one writer publishes versions whose every element equals the version; readers check each pinned
// buffer is uniform (never a mix of two versions) and that versions never go backwards.
TEST(concurrent_readers_never_see_a_mix_of_versions) {
  constexpr int kReaders = 3;
  Layout l = ParamStore::make_layout(2048, 4, 0, 4, kReaders);
  Memory m(l.total_size);
  ParamStore s = ParamStore::init(m.base, m.size, l, &fake_alive);
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::atomic<std::uint64_t> pins{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < kReaders; ++t) {
    readers.emplace_back([&, t] {
      ParamStore v = ParamStore::view(m.base, m.size, l, &fake_alive);
      const int slot = v.acquire_slot(kReaderA + static_cast<std::uint64_t>(t));
      std::uint64_t last = 0;
      while (!stop.load(std::memory_order_acquire)) {  // acquire: pairs with the writer's final store
        auto p = v.pin(slot);
        if (p.version != 0) {
          if (p.version < last || !uniform(v, p.buffer, static_cast<std::uint32_t>(p.version))) bad.fetch_add(1);
          last = p.version;
          pins.fetch_add(1, std::memory_order_relaxed);
        }
        v.unpin(slot);
      }
      v.release_slot(slot);
    });
  }
  std::vector<std::uint32_t> src;
  std::uint64_t published = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  // Publish at least 3000 versions, and go on until a reader has pinned one: on a loaded machine the
  // reader threads may not be scheduled before 3000 publishes are done.
  while ((published < 3000 || pins.load(std::memory_order_relaxed) == 0) &&
         std::chrono::steady_clock::now() < deadline) {
    const int b = s.begin_write(kWriter);
    if (b < 0) continue;  // every candidate pinned at this instant: try again
    const auto v = static_cast<std::uint32_t>(s.version() + 1);
    auto* dst = static_cast<std::uint32_t*>(s.buffer(b));
    for (std::uint64_t i = 0; i < s.numel(); ++i) dst[i] = v;
    CHECK_EQ(s.commit(b), std::uint64_t{v});
    ++published;
  }
  stop.store(true, std::memory_order_release);  // release: readers stop after seeing it
  for (auto& t : readers) t.join();
  CHECK(published >= 3000u);
  CHECK_EQ(bad.load(), 0);
  CHECK(pins.load() > 0);
}

// Real processes and the real liveness check: a reader SIGKILLed while it holds a pin does not block
// publishing, whether or not its parent has reaped it yet.
TEST(a_killed_reader_process_does_not_block_publishing) {
  for (bool reap_first : {false, true}) {
    Layout l = ParamStore::make_layout(1024, 4, 0, 2, 4);
    Memory m(l.total_size, /*shared=*/true);
    ParamStore s = ParamStore::init(m.base, m.size, l);
    std::vector<std::uint32_t> src;
    fill(s, 1, src);
    const std::uint64_t me = rtcore::params::self_token();
    CHECK(rtcore::params::process_alive(me));
    CHECK_EQ(s.publish(src.data(), src.size() * 4, me), 1u);
    int ready[2];
    CHECK_EQ(pipe(ready), 0);
    const pid_t child = fork();
    if (child == 0) {
      ParamStore v = ParamStore::view(m.base, m.size, l);
      const int slot = v.acquire_slot(rtcore::params::self_token());
      v.pin(slot);
      char c = 1;
      (void)!write(ready[1], &c, 1);
      for (;;) pause();  // holds the pin until killed
    }
    char c = 0;
    CHECK_EQ(read(ready[0], &c, 1), 1);
    close(ready[0]);
    close(ready[1]);
    fill(s, 2, src);
    CHECK_EQ(s.publish(src.data(), src.size() * 4, me), 2u);  // into the free buffer
    CHECK_EQ(s.publish(src.data(), src.size() * 4, me), 0u);  // the child pins version 1's buffer
    kill(child, SIGKILL);
    int status = 0;
    if (reap_first) waitpid(child, &status, 0);
    // Until the kernel has torn the child down its state may still read as running; it is a zombie (or
    // gone) within a few milliseconds.
    std::uint64_t v = 0;
    for (int i = 0; i < 5000 && v == 0; ++i) {
      v = s.publish(src.data(), src.size() * 4, me);
      if (v == 0) usleep(1000);
    }
    CHECK_EQ(v, 3u);
    CHECK_EQ(s.stats().reclaimed_readers, 1u);
    if (!reap_first) waitpid(child, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  }
}

TEST(liveness_of_tokens) {
  CHECK(rtcore::params::process_alive(rtcore::params::self_token()));
  const pid_t child = fork();
  if (child == 0) _exit(0);
  int status = 0;
  waitpid(child, &status, 0);
  CHECK(!rtcore::params::process_alive(rtcore::params::make_token(child, 0)));  // exited and reaped
  // The parent is alive, but a token with another start time names an earlier process with its pid.
  std::uint64_t start = 0;
  bool zombie = true;
  CHECK(rtcore::params::read_proc_stat(getppid(), &start, &zombie));
  CHECK(!zombie);
  CHECK(rtcore::params::process_alive(rtcore::params::make_token(getppid(), start)));
  CHECK(!rtcore::params::process_alive(rtcore::params::make_token(getppid(), start + 1)));
}

int main() { return rtcore_test::run_all(); }
