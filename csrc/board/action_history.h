// The act-time action history (the delay-aware observation, rtcore/models/history.py): the newest
// stack from the ObsBoard, the K actions applied before its newest frame, and the pending slot.
//
// Pending slot of frame u (publish p): the action the env applies at the tick of step u, the first one
// whose effect frame u does not show, when it is a posted action (kNoAction when it is the default).
// The replay buffer reconstructs it at sample time from the stored transitions (csrc/replay/ring.h,
// Ring::sample); here it is known as of the read:
//   - the tick of u has taken its action (slot p's `applied` is set): that action (or none: default);
//   - it has not started: the ActionBoard's pending post (peek), or none. The env takes that post at
//     the tick unless a newer post supersedes it first: then the two definitions differ, the only case.
// The env stores `applying` in slot p before its take and the value after, and take() is a release, so
// a peek that finds the pending post already taken is followed by a re-read that sees `applying` or the
// value: the window between the take and the stored value never reads as "nothing pending". While
// slot p says `applying`, the reader waits for the value (the env's take and one store), at most
// kApplyingSpinNs, then takes the post it peeked (a driver killed mid-tick).
#pragma once

#include <cstdint>

#include "board/action_board.h"
#include "board/obs_board.h"
#include "common/seqlock.h"
#include "sched/clock.h"

namespace rtcore::board {

constexpr std::int64_t kApplyingSpinNs = 2'000'000;

// Reads the newest stack into `out` and its history into `hist` (obs.action_history() + 1 entries:
// K applied actions, oldest first, then the pending slot). `actions` may be null (no pending posts are
// looked up: a tick not started gives none). Returns the step of the stack (-1 before the first publish,
// every entry kNoAction). Lock-free except for the bounded wait above.
inline std::int64_t read_with_history(const ObsBoardView& obs, const ActionBoardView* actions, void* out,
                                      std::int64_t* hist) noexcept {
  ObsBoardView::ReadInfo info;
  const std::int64_t step = obs.read(out, hist, &info);
  std::int64_t& pending = hist[obs.action_history()];
  pending = ObsBoardView::kNoAction;
  if (step < 0) return step;
  std::uint64_t applied = info.applied;
  Taken peeked{};
  bool have_peek = false;
  std::int64_t spin_until = -1;
  for (;;) {
    const std::uint64_t state = applied & 3;
    if (state >= ObsBoardView::kAppliedPosted) {
      if (state == ObsBoardView::kAppliedPosted) pending = static_cast<std::int64_t>(applied >> 2);
      return step;
    }
    if (state == ObsBoardView::kOpen) {
      have_peek = actions != nullptr && actions->peek(&peeked);
    } else {  // applying: the env is between its take and the stored value
      if (spin_until < 0) spin_until = clock::now_ns() + kApplyingSpinNs;
      if (clock::now_ns() >= spin_until) break;
      cpu_relax();
    }
    std::uint64_t again;
    if (!obs.applied_word(info.pubno, &again)) break;  // overwritten: the reader is far behind; keep the peek
    if ((again & 3) == ObsBoardView::kOpen && state == ObsBoardView::kOpen) break;  // the peek preceded the tick
    applied = again;
  }
  if (have_peek) pending = peeked.action;
  return step;
}

}  // namespace rtcore::board
