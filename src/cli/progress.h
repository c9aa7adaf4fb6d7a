// Progress and result output for the CLI: a progress bar on a terminal, JSON lines for
// scripts (--output json), nothing otherwise.
#pragma once

#include <cstdint>
#include <string>

#include "common/clock.h"
#include "disk/engine/copy_engine.h"

namespace ferry::cli {

enum class OutputMode { kText, kJson };

class ProgressReporter {
 public:
  ProgressReporter(OutputMode mode, std::string label, Clock* clock = SystemClock());
  // Called from the engine's committer thread; throttles itself.
  void Update(const CopyProgress& p);
  // Ends the bar line (text) before the result is printed.
  void Finish();

 private:
  OutputMode mode_;
  std::string label_;
  Clock* clock_;
  bool tty_;
  int64_t last_ns_ = 0;
  bool drew_ = false;
};

std::string FormatDuration(double seconds);

}  // namespace ferry::cli
