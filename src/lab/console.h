// ConsoleWatcher: follows a guest's serial console log (the file QEMU appends the guest's
// ttyS0 output to) and timestamps every line as it arrives on the host, so tests and
// benchmarks can wait for markers ("FERRY-READY", "FERRY-DISK-OK ...") and measure the
// guest-observed downtime: the longest host-seen gap between two heartbeat lines.
//
// The console protocol is documented in docs/lab.md and src/lab/guest/ferry_guest.c.
//
// Thread-safety: all methods are thread-safe. A background thread polls the file every
// millisecond from Start() until destruction.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"

namespace ferry::lab {

struct ConsoleLine {
  int64_t host_ns = 0;  // host CLOCK_MONOTONIC (steady_clock) when the line was read
  std::string text;     // without the line ending
};

struct HeartbeatStats {
  uint64_t count = 0;          // heartbeat lines seen in the window
  uint64_t first_counter = 0;  // guest counters of the first and last of them
  uint64_t last_counter = 0;
  uint64_t missing = 0;          // counter values skipped (lost console output)
  int64_t max_gap_ns = 0;        // longest host-seen gap between consecutive heartbeats
  int64_t max_gap_end_ns = 0;    // host time of the heartbeat that ended that gap
  int64_t max_guest_gap_ms = 0;  // longest gap in the guest's own clock between them
  int64_t last_ns = 0;           // host time of the last heartbeat (0: none)
};

class ConsoleWatcher {
 public:
  explicit ConsoleWatcher(std::string path);
  ~ConsoleWatcher();
  ConsoleWatcher(const ConsoleWatcher&) = delete;
  ConsoleWatcher& operator=(const ConsoleWatcher&) = delete;

  // Starts following the file from its beginning (it may not exist yet).
  void Start();

  static int64_t NowNs();

  // Waits until a non-heartbeat line starting with `prefix` has arrived at or after host
  // time `since_ns`; returns it. kNotFound after `timeout_ms`, naming the prefix and the
  // last lines seen.
  Result<ConsoleLine> WaitForLine(const std::string& prefix, int64_t timeout_ms,
                                  int64_t since_ns = 0);
  // Waits until at least `count` heartbeats arrived at or after `since_ns`.
  Status WaitForHeartbeats(uint64_t count, int64_t timeout_ms, int64_t since_ns = 0);

  // Heartbeats that arrived in [since_ns, until_ns).
  HeartbeatStats Heartbeats(int64_t since_ns = 0, int64_t until_ns = INT64_MAX) const;
  // Non-heartbeat lines so far.
  std::vector<ConsoleLine> Lines() const;

 private:
  struct Beat {
    int64_t host_ns;
    uint64_t counter;
    int64_t guest_ms;
  };
  void Run();
  void TakeLine(std::string text, int64_t now);
  std::string Tail() const;  // REQUIRES: mu_ held

  const std::string path_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;               // GUARDED_BY(mu_)
  std::vector<ConsoleLine> lines_;  // GUARDED_BY(mu_)
  std::vector<Beat> beats_;         // GUARDED_BY(mu_)
  std::thread thread_;
};

}  // namespace ferry::lab
