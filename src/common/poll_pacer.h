// PollPacer: when a loop that follows remote state by polling should look next. Both ferryd's
// loop (following its agents) and the CLI's watch (following ferryd) use it.
//
// A migration ends in a burst of changes (verifying, defining, done within tens of
// milliseconds), so after a poll that saw a change, or while a copy's ETA is close
// (EtaIsClose), the next polls come after 25, 50, 100 ... ms up to poll_ms; otherwise every
// poll_ms. The end is seen soon without polling fast all the time.
//
// Thread-safety: one pacer per loop.
#pragma once

#include <algorithm>
#include <cstdint>

namespace ferry {

class PollPacer {
 public:
  explicit PollPacer(int64_t poll_ms) : poll_ms_(poll_ms) {}

  // Under four polls: the state polled may be a poll old, and an ETA over a disk whose tail is
  // holes overestimates (a cold copy ended with 650 ms still "to go"). -1 = not known.
  static bool EtaIsClose(int64_t eta_ms, int64_t poll_ms) {
    return eta_ms >= 0 && eta_ms <= 4 * poll_ms;
  }

  // The delay before the next poll, given what this poll saw.
  int64_t Next(bool changed, int64_t eta_ms) {
    if (changed || EtaIsClose(eta_ms, poll_ms_)) {
      quick_ms_ = kFirstQuickMs;
    } else if (quick_ms_ > 0) {
      quick_ms_ = quick_ms_ * 2 < poll_ms_ ? quick_ms_ * 2 : 0;
    }
    return quick_ms_ > 0 ? std::min(quick_ms_, poll_ms_) : poll_ms_;
  }

 private:
  static constexpr int64_t kFirstQuickMs = 25;
  int64_t poll_ms_;
  int64_t quick_ms_ = 0;  // 0: not following closely
};

// The sooner of two ETAs (-1 = not known).
inline int64_t SoonerEta(int64_t a, int64_t b) {
  if (a < 0) return b;
  if (b < 0) return a;
  return std::min(a, b);
}

}  // namespace ferry
