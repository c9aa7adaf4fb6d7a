// ConvergencePolicy: the decisions that make a live migration (pre-copy of guest memory)
// finish within the user's downtime budget, or give up cleanly when it cannot. It is pure
// logic: it is fed the guest's measured dirty rate before the start and then job statistics
// samples (hypervisor::JobStats) with their time, and answers with actions (set the downtime
// limit, set the speed, start post-copy, abort, or just a note to report). The migration job
// (migration_job.cc) performs the actions through LibvirtHost; unit tests feed fake sample
// sequences. The model and every constant are explained in docs/migration.md.
//
// Ownership: plain value state. Thread-safety: not thread-safe; one job thread drives it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "hypervisor/operations.h"

namespace ferry::agent {

struct ConvergenceBudget {
  int64_t max_downtime_ms = 300;  // the user's downtime budget (> 0)
  uint64_t bandwidth_cap = 0;     // bytes/s the user allows; 0 = no cap (QEMU's own is lifted)
  bool allow_postcopy = false;
  bool allow_auto_converge = true;
  int64_t time_limit_ms = 0;  // memory phase give-up time; 0 = the policy's default
};

enum class ConvergenceVerdict {
  kUnknown,          // the link speed or the dirty rate is not known yet
  kConverges,        // dirty rate well below the link: pre-copy alone converges
  kMarginal,         // below the link but close: passes shrink slowly, escalation may be needed
  kNeedsEscalation,  // dirty rate at or above the link: only auto-converge/post-copy help
  kImpossible,       // like kNeedsEscalation with no escalation allowed: the budget cannot be met
};
std::string_view ConvergenceVerdictName(ConvergenceVerdict verdict);

struct ConvergencePrediction {
  ConvergenceVerdict verdict = ConvergenceVerdict::kUnknown;
  uint64_t dirty_rate = 0;          // bytes/s used for the prediction
  uint64_t link_rate = 0;           // bytes/s used for the prediction
  int64_t needed_downtime_ms = -1;  // what pre-copy alone would need; -1 = fits the budget
  std::string message;              // one sentence for the event log
};

// The prediction for dirty rate `dirty_rate` (unset = unknown; 0 = an idle guest) over a link
// of `link_rate` (0 = unknown), both bytes/s, with `budget`. Pure.
ConvergencePrediction PredictConvergence(std::optional<uint64_t> dirty_rate, uint64_t link_rate,
                                         const ConvergenceBudget& budget);

// What the migration is started with.
struct ConvergenceStart {
  int64_t initial_downtime_ms = 0;  // below the budget; stepped up toward it later
  uint64_t bandwidth = 0;           // the user's cap, or 0 = QEMU's 128 MiB/s default lifted
  bool auto_converge = false;       // VIR_MIGRATE_AUTO_CONVERGE
  bool postcopy = false;            // VIR_MIGRATE_POSTCOPY (allows StartPostCopy later)
  ConvergencePrediction prediction;
  // Set when the prediction says the budget cannot be met and nothing may be escalated: the
  // migration must not start; the message says why.
  std::optional<std::string> refuse;
  std::vector<std::string> notes;  // decisions to report as events
};

enum class PolicyActionType {
  kNote,           // report `message` only
  kSetDowntime,    // SetMaxDowntime(downtime_ms)
  kSetSpeed,       // SetMaxSpeed(speed); 0 = no cap
  kStartPostCopy,  // StartPostCopy
  kAbort,          // AbortJob; the job fails with `message`
};

struct PolicyAction {
  PolicyActionType type = PolicyActionType::kNote;
  int64_t downtime_ms = 0;
  uint64_t speed = 0;
  std::string message;  // why, in words, for the event log and JobResult.notes
};

class ConvergencePolicy {
 public:
  // `memory_bytes`: the guest's memory (for the default time limit and ETA).
  ConvergencePolicy(const ConvergenceBudget& budget, uint64_t memory_bytes);

  // Decides how to start. `measured_dirty_rate`: bytes/s from MeasureDirtyRate, unset if the
  // host cannot measure it (the first passes' job statistics are used instead).
  ConvergenceStart Start(std::optional<uint64_t> measured_dirty_rate);

  // One job statistics sample taken `now_ms` after the migration started. Returns the actions
  // to perform now, in order. After a kAbort or once post-copy started, returns nothing more
  // (post-copy cannot be aborted: the guest already runs on the target).
  std::vector<PolicyAction> OnSample(const hypervisor::JobStats& stats, int64_t now_ms);

  // The user cancelled: the abort action (or a note that post-copy cannot be cancelled).
  std::vector<PolicyAction> OnCancel();

  int64_t downtime_limit_ms() const { return downtime_ms_; }
  bool postcopy_started() const { return postcopy_started_; }
  bool aborted() const { return aborted_; }
  const std::optional<std::string>& abort_reason() const { return abort_reason_; }
  // Time limit in force (the default grows once the link speed is known).
  int64_t time_limit_ms() const;
  // Dirty rate the policy currently believes (measured, else QEMU's), bytes/s.
  uint64_t dirty_rate() const;

 private:
  PolicyAction Abort(std::string why);
  std::string ShortfallText() const;  // "dirty rate X exceeds the link's Y; would need ..."
  void OnPassPoint(const hypervisor::JobStats& stats, std::vector<PolicyAction>& actions);

  const ConvergenceBudget budget_;
  const uint64_t memory_bytes_;
  std::optional<uint64_t> measured_dirty_rate_;
  bool auto_converge_ = false;
  bool postcopy_allowed_ = false;
  int64_t downtime_ms_ = 0;

  // What the samples told so far.
  std::optional<int64_t> memory_phase_start_ms_;  // first sample with memory being copied
  uint64_t last_iteration_ = 0;
  uint64_t qemu_dirty_rate_ = 0;  // latest memory_dirty_rate
  uint64_t link_rate_ = 0;        // latest non-zero memory_bps (or the cap)
  uint64_t best_remaining_ = 0;   // smallest memory_remaining at a pass point (0 = none yet)
  int stalls_ = 0;                // consecutive pass points without progress
  int last_throttle_ = 0;
  bool predicted_at_run_ = false;  // the first-pass prediction was reported

  bool postcopy_started_ = false;
  bool aborted_ = false;
  std::optional<std::string> abort_reason_;
};

}  // namespace ferry::agent
