// Clock: time for logic that needs it (rate limits, progress, timeouts), injectable in tests.
#pragma once

#include <chrono>
#include <cstdint>

namespace ferry {

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic nanoseconds.
  virtual int64_t NowNanos() = 0;
  virtual void SleepNanos(int64_t nanos) = 0;
};

// The real monotonic clock. Never null; lives forever.
Clock* SystemClock();

inline double NanosToSeconds(int64_t nanos) { return static_cast<double>(nanos) / 1e9; }

}  // namespace ferry
