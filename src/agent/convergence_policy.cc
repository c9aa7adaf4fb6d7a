// Implementation of convergence_policy.h. The model and the constants are explained in
// docs/migration.md ("The live convergence policy").
#include "agent/convergence_policy.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>

namespace ferry::agent {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;
// The first downtime limit is this fraction of the budget; each escalation step adds
// kDowntimeStepFraction of the budget until the limit reaches the budget.
constexpr double kInitialDowntimeFraction = 0.5;
constexpr double kDowntimeStepFraction = 0.25;
constexpr int64_t kMinDowntimeMs = 10;
// A pass "makes progress" when the memory left at its start is below this fraction of the
// smallest amount seen at an earlier pass.
constexpr double kProgressFactor = 0.9;
// Consecutive pass points without progress before escalating, and (with nothing left to
// escalate) before aborting.
constexpr int kStallsToEscalate = 2;
constexpr int kStallsToAbort = 3;
// QEMU's max-cpu-throttle default: auto-converge cannot slow the guest more than this.
constexpr int kMaxThrottlePercent = 99;
// Dirty rate over link rate: below kConvergesRatio pre-copy converges comfortably; up to 1 it
// converges slowly (each pass is only a little shorter than the one before).
constexpr double kConvergesRatio = 0.8;
// With the dirty rate at or above the link, the memory left at each pass is about what the
// guest dirties in a second (MeasureDirtyRate counts distinct pages over a 1 s window).
constexpr double kHotSetSeconds = 1.0;
// Default time limit of the memory phase: at least this, or this many full memory copies.
constexpr int64_t kMinDefaultTimeLimitMs = 120000;
constexpr int64_t kDefaultTimeLimitCopies = 3;

std::string Rate(uint64_t bytes_per_s) {
  char buf[64];
  const double mib = static_cast<double>(bytes_per_s) / kMiB;
  std::snprintf(buf, sizeof buf, mib < 10 ? "%.1f MiB/s" : "%.0f MiB/s", mib);
  return buf;
}

std::string Mib(uint64_t bytes) {
  char buf[64];
  const double mib = static_cast<double>(bytes) / kMiB;
  std::snprintf(buf, sizeof buf, mib < 10 ? "%.1f MiB" : "%.0f MiB", mib);
  return buf;
}

std::string Ms(int64_t ms) { return std::to_string(ms) + " ms"; }

int64_t TransferMs(uint64_t bytes, uint64_t rate) {
  if (rate == 0) return -1;
  return static_cast<int64_t>(static_cast<double>(bytes) * 1000.0 / static_cast<double>(rate) +
                              0.5);
}

}  // namespace

std::string_view ConvergenceVerdictName(ConvergenceVerdict verdict) {
  switch (verdict) {
    case ConvergenceVerdict::kUnknown: return "unknown";
    case ConvergenceVerdict::kConverges: return "converges";
    case ConvergenceVerdict::kMarginal: return "marginal";
    case ConvergenceVerdict::kNeedsEscalation: return "needs-escalation";
    case ConvergenceVerdict::kImpossible: return "impossible";
  }
  return "?";
}

ConvergencePrediction PredictConvergence(std::optional<uint64_t> measured_rate, uint64_t link_rate,
                                         const ConvergenceBudget& budget) {
  ConvergencePrediction p;
  const uint64_t dirty_rate = measured_rate.value_or(0);
  p.dirty_rate = dirty_rate;
  p.link_rate = link_rate;
  const std::string b = Ms(budget.max_downtime_ms);
  if (link_rate == 0 || !measured_rate) {
    p.verdict = ConvergenceVerdict::kUnknown;
    p.message = "prediction deferred: ";
    if (!measured_rate) {
      p.message += "dirty rate not measured yet";
    } else {
      p.message += "dirty rate " + Rate(dirty_rate);
    }
    p.message += link_rate == 0 ? ", link speed known after the first pass (no cap set)"
                                : ", link capped at " + Rate(link_rate);
    return p;
  }
  const double ratio = static_cast<double>(dirty_rate) / static_cast<double>(link_rate);
  if (ratio < kConvergesRatio) {
    p.verdict = ConvergenceVerdict::kConverges;
    p.message = "dirty rate " + Rate(dirty_rate) + " is well below the link's " + Rate(link_rate) +
                ": pre-copy should converge within the " + b + " budget";
    return p;
  }
  if (ratio < 1.0) {
    p.verdict = ConvergenceVerdict::kMarginal;
    p.message = "dirty rate " + Rate(dirty_rate) + " is close to the link's " + Rate(link_rate) +
                ": passes will shrink slowly; the downtime limit may have to rise toward " + b;
    return p;
  }
  p.needed_downtime_ms = TransferMs(
      static_cast<uint64_t>(static_cast<double>(dirty_rate) * kHotSetSeconds), link_rate);
  const std::string head = "dirty rate " + Rate(dirty_rate) + " exceeds the link's " +
                           Rate(link_rate) + "; would need " + Ms(p.needed_downtime_ms) +
                           " downtime, budget " + b;
  if (p.needed_downtime_ms <= budget.max_downtime_ms) {
    p.verdict = ConvergenceVerdict::kMarginal;
    p.needed_downtime_ms = -1;
    p.message = "dirty rate " + Rate(dirty_rate) + " exceeds the link's " + Rate(link_rate) +
                " but a second's worth of dirtied memory fits the " + b + " budget";
    return p;
  }
  if (budget.allow_auto_converge || budget.allow_postcopy) {
    p.verdict = ConvergenceVerdict::kNeedsEscalation;
    p.message = head + ": pre-copy alone cannot converge; will escalate (" +
                (budget.allow_auto_converge ? "auto-converge" : "") +
                (budget.allow_auto_converge && budget.allow_postcopy ? ", " : "") +
                (budget.allow_postcopy ? "post-copy" : "") + ")";
    return p;
  }
  p.verdict = ConvergenceVerdict::kImpossible;
  p.message = head + ", and neither auto-converge nor post-copy is allowed";
  return p;
}

ConvergencePolicy::ConvergencePolicy(const ConvergenceBudget& budget, uint64_t memory_bytes)
    : budget_(budget), memory_bytes_(memory_bytes) {}

ConvergenceStart ConvergencePolicy::Start(std::optional<uint64_t> measured_dirty_rate) {
  measured_dirty_rate_ = measured_dirty_rate;
  ConvergenceStart s;
  const int64_t budget = std::max<int64_t>(budget_.max_downtime_ms, 1);
  downtime_ms_ = std::clamp<int64_t>(
      static_cast<int64_t>(static_cast<double>(budget) * kInitialDowntimeFraction),
      std::min(kMinDowntimeMs, budget), budget);
  s.initial_downtime_ms = downtime_ms_;
  s.notes.push_back("initial downtime limit " + Ms(downtime_ms_) + " (budget " + Ms(budget) +
                    "); raised toward the budget only when passes stop shrinking");

  s.bandwidth = budget_.bandwidth_cap;
  link_rate_ = budget_.bandwidth_cap;
  s.notes.push_back(budget_.bandwidth_cap == 0
                        ? std::string("bandwidth: QEMU's default 128 MiB/s cap lifted (no cap set)")
                        : "bandwidth capped at " + Rate(budget_.bandwidth_cap) + " as asked");

  auto_converge_ = budget_.allow_auto_converge;
  s.auto_converge = auto_converge_;
  s.notes.push_back(auto_converge_
                        ? std::string("auto-converge on: QEMU throttles the guest's vCPUs only "
                                      "if it dirties memory faster than the link sends it")
                        : std::string("auto-converge not allowed"));
  postcopy_allowed_ = budget_.allow_postcopy;
  s.postcopy = postcopy_allowed_;
  if (postcopy_allowed_) {
    s.notes.push_back("post-copy allowed: used if pre-copy stalls with the limit at the budget");
  }

  if (measured_dirty_rate_) {
    s.notes.push_back("measured dirty rate " + Rate(*measured_dirty_rate_) + " before start");
  } else {
    s.notes.push_back("dirty rate not measurable before start; using QEMU's per-pass figure");
  }
  s.prediction = PredictConvergence(measured_dirty_rate_, budget_.bandwidth_cap, budget_);
  if (s.prediction.verdict != ConvergenceVerdict::kUnknown) predicted_at_run_ = true;
  s.notes.push_back("prediction (" + std::string(ConvergenceVerdictName(s.prediction.verdict)) +
                    "): " + s.prediction.message);
  if (s.prediction.verdict == ConvergenceVerdict::kImpossible) {
    s.refuse = s.prediction.message;
    aborted_ = true;
    abort_reason_ = s.refuse;
  }
  return s;
}

int64_t ConvergencePolicy::time_limit_ms() const {
  if (budget_.time_limit_ms > 0) return budget_.time_limit_ms;
  const int64_t copy_ms = TransferMs(memory_bytes_, link_rate_);
  if (copy_ms < 0) return kMinDefaultTimeLimitMs;
  return std::max(kMinDefaultTimeLimitMs, kDefaultTimeLimitCopies * copy_ms);
}

uint64_t ConvergencePolicy::dirty_rate() const {
  if (qemu_dirty_rate_ > 0) return qemu_dirty_rate_;
  return measured_dirty_rate_.value_or(0);
}

PolicyAction ConvergencePolicy::Abort(std::string why) {
  aborted_ = true;
  abort_reason_ = why;
  PolicyAction a;
  a.type = PolicyActionType::kAbort;
  a.message = std::move(why);
  return a;
}

std::string ConvergencePolicy::ShortfallText() const {
  const uint64_t r = dirty_rate();
  const uint64_t l = link_rate_;
  std::string t;
  const int64_t needed = best_remaining_ > 0 ? TransferMs(best_remaining_, l) : -1;
  if (r > 0 && l > 0 && r >= l) {
    t = "dirty rate " + Rate(r) + " exceeds the link's " + Rate(l);
  } else if (best_remaining_ > 0) {
    t = "remaining memory stopped shrinking at " + Mib(best_remaining_) + " (dirty rate " +
        (r > 0 ? Rate(r) : std::string("unknown")) + ", link " +
        (l > 0 ? Rate(l) : std::string("unknown")) + ")";
  } else {
    t = "the first pass did not finish (dirty rate " + (r > 0 ? Rate(r) : std::string("unknown")) +
        ", link " + (l > 0 ? Rate(l) : std::string("unknown")) + ")";
  }
  if (needed >= 0) t += "; would need " + Ms(needed) + " downtime";
  t += ", budget " + Ms(budget_.max_downtime_ms);
  if (!auto_converge_) {
    t += "; auto-converge not allowed";
  } else {
    t += "; auto-converge throttle at " + std::to_string(last_throttle_) + "%";
  }
  if (!postcopy_allowed_) t += "; post-copy not allowed";
  return t;
}

std::vector<PolicyAction> ConvergencePolicy::OnSample(const hypervisor::JobStats& stats,
                                                      int64_t now_ms) {
  std::vector<PolicyAction> actions;
  if (aborted_ || postcopy_started_) return actions;
  if (stats.postcopy) {
    postcopy_started_ = true;
    return actions;
  }
  if (!memory_phase_start_ms_ && (stats.memory_iteration >= 1 || stats.memory_processed > 0)) {
    memory_phase_start_ms_ = now_ms;
  }
  if (stats.memory_bps > 0) link_rate_ = stats.memory_bps;
  if (stats.memory_dirty_rate > 0) qemu_dirty_rate_ = stats.memory_dirty_rate;

  if (memory_phase_start_ms_ && now_ms - *memory_phase_start_ms_ > time_limit_ms()) {
    actions.push_back(Abort("time limit " + Ms(time_limit_ms()) + " reached at pass " +
                            std::to_string(stats.memory_iteration) + ": " + ShortfallText()));
    return actions;
  }

  if (!predicted_at_run_ && link_rate_ > 0 && (measured_dirty_rate_ || qemu_dirty_rate_ > 0)) {
    predicted_at_run_ = true;
    ConvergencePrediction p = PredictConvergence(dirty_rate(), link_rate_, budget_);
    actions.push_back({PolicyActionType::kNote, 0, 0,
                       "prediction at pass " + std::to_string(stats.memory_iteration) + " (" +
                           std::string(ConvergenceVerdictName(p.verdict)) + "): " + p.message});
  }

  if (stats.memory_iteration > last_iteration_) {
    if (last_iteration_ >= 1 || stats.memory_iteration >= 2) OnPassPoint(stats, actions);
    last_iteration_ = stats.memory_iteration;
  }
  return actions;
}

void ConvergencePolicy::OnPassPoint(const hypervisor::JobStats& stats,
                                    std::vector<PolicyAction>& actions) {
  const uint64_t r = stats.memory_remaining;
  const int throttle = stats.auto_converge_throttle;
  if (throttle != last_throttle_) {
    actions.push_back({PolicyActionType::kNote, 0, 0,
                       "auto-converge throttle " + std::to_string(last_throttle_) + "% -> " +
                           std::to_string(throttle) + "% (QEMU)"});
    last_throttle_ = throttle;
  }

  if (best_remaining_ == 0 ||
      static_cast<double>(r) < kProgressFactor * static_cast<double>(best_remaining_)) {
    best_remaining_ = r == 0 ? 1 : r;
    stalls_ = 0;
    return;
  }
  ++stalls_;
  if (stalls_ < kStallsToEscalate) return;

  const std::string where = "remaining memory stopped shrinking at " + Mib(best_remaining_) +
                            " (pass " + std::to_string(stats.memory_iteration) + ", now " + Mib(r) +
                            ")";
  if (downtime_ms_ < budget_.max_downtime_ms) {
    const int64_t step = std::max<int64_t>(
        1,
        static_cast<int64_t>(static_cast<double>(budget_.max_downtime_ms) * kDowntimeStepFraction));
    const int64_t next = std::min(budget_.max_downtime_ms, downtime_ms_ + step);
    PolicyAction a;
    a.type = PolicyActionType::kSetDowntime;
    a.downtime_ms = next;
    a.message = "downtime limit " + Ms(downtime_ms_) + " -> " + Ms(next) + ": " + where;
    downtime_ms_ = next;
    stalls_ = 0;
    actions.push_back(std::move(a));
    return;
  }
  if (postcopy_allowed_) {
    PolicyAction a;
    a.type = PolicyActionType::kStartPostCopy;
    a.message = "switching to post-copy: " + where + " with the downtime limit at the budget " +
                Ms(budget_.max_downtime_ms);
    postcopy_started_ = true;
    actions.push_back(std::move(a));
    return;
  }
  if (stalls_ < kStallsToAbort) return;
  // Stalled passes alone do not prove the budget unreachable: the memory left at a pass
  // varies, and a guest that dirties about as fast as the link sends still ends with a pass
  // that fits (measured: 64 MiB/s dirtied over a 64 MiB/s cap, plain pre-copy finished in 22 s
  // where this policy had given up after 14 s). So only give up early when nothing can change
  // any more: auto-converge
  // at QEMU's maximum throttle, or, without auto-converge, a dirty rate at or above the link.
  // Otherwise wait; the time limit bounds the wait.
  if (auto_converge_ && last_throttle_ < kMaxThrottlePercent) return;
  if (!auto_converge_ && !(link_rate_ > 0 && dirty_rate() >= link_rate_)) return;
  actions.push_back(Abort("cannot converge: " + ShortfallText()));
}

std::vector<PolicyAction> ConvergencePolicy::OnCancel() {
  if (aborted_) return {};
  if (postcopy_started_) {
    return {{PolicyActionType::kNote, 0, 0,
             "cancel ignored: post-copy already started and the guest runs on the target; "
             "finishing the migration"}};
  }
  return {Abort("cancelled by the user")};
}

}  // namespace ferry::agent
