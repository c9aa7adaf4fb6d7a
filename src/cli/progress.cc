#include "cli/progress.h"

#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "common/units.h"

namespace ferry::cli {

ProgressReporter::ProgressReporter(OutputMode mode, std::string label, Clock* clock)
    : mode_(mode), label_(std::move(label)), clock_(clock), tty_(::isatty(STDERR_FILENO) == 1) {}

std::string FormatDuration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "--:--";
  auto s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
  }
  return buf;
}

void ProgressReporter::Update(const CopyProgress& p) {
  int64_t now = clock_->NowNanos();
  const bool last = p.done_bytes >= p.virtual_size;
  const int64_t min_gap = mode_ == OutputMode::kJson ? 1'000'000'000 : 100'000'000;
  if (!last && now - last_ns_ < min_gap) return;
  last_ns_ = now;
  const double copied = static_cast<double>(p.done_bytes - p.start_bytes);
  const double rate = p.elapsed_seconds > 0 ? copied / p.elapsed_seconds : 0;
  const double eta = rate > 0 ? static_cast<double>(p.virtual_size - p.done_bytes) / rate : -1;
  const double pct = p.virtual_size ? 100.0 * static_cast<double>(p.done_bytes) /
                                          static_cast<double>(p.virtual_size)
                                    : 100.0;
  if (mode_ == OutputMode::kJson) {
    nlohmann::json j = {{"event", "progress"},       {"done_bytes", p.done_bytes},
                        {"total_bytes", p.virtual_size}, {"percent", pct},
                        {"read_bytes", p.read_bytes},    {"written_bytes", p.written_bytes},
                        {"rate_bytes_per_second", rate}, {"eta_seconds", eta}};
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
    return;
  }
  if (!tty_) return;
  constexpr int kWidth = 30;
  int filled = static_cast<int>(pct / 100.0 * kWidth);
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr, "\r%s [%s] %5.1f%%  %s / %s  %s/s  ETA %s   ", label_.c_str(), bar.c_str(),
               pct, FormatBytes(p.done_bytes).c_str(), FormatBytes(p.virtual_size).c_str(),
               FormatBytes(static_cast<uint64_t>(rate)).c_str(), FormatDuration(eta).c_str());
  drew_ = true;
}

void ProgressReporter::Finish() {
  if (drew_) std::fprintf(stderr, "\n");
  drew_ = false;
}

}  // namespace ferry::cli
