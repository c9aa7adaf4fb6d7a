#include "store/plan_state.h"

#include <array>

namespace ferry {
namespace {

struct Named {
  PlanState state;
  std::string_view name;
};

constexpr std::array<Named, 6> kNames = {{
    {PlanState::kReady, "ready"},
    {PlanState::kRunning, "running"},
    {PlanState::kCompleted, "completed"},
    {PlanState::kFailed, "failed"},
    {PlanState::kCancelled, "cancelled"},
    {PlanState::kPartial, "partial"},
}};

}  // namespace

std::string_view PlanStateName(PlanState s) {
  for (const auto& n : kNames) {
    if (n.state == s) return n.name;
  }
  return "unknown";
}

std::optional<PlanState> ParsePlanState(std::string_view name) {
  for (const auto& n : kNames) {
    if (n.name == name) return n.state;
  }
  return std::nullopt;
}

bool IsFinal(PlanState s) { return s != PlanState::kReady && s != PlanState::kRunning; }

PlanState DerivePlanState(const std::vector<MigrationState>& states) {
  int completed = 0, failed = 0, cancelled = 0;
  for (MigrationState s : states) {
    if (!IsFinal(s)) return PlanState::kRunning;
    completed += s == MigrationState::kCompleted ? 1 : 0;
    failed += s == MigrationState::kFailed ? 1 : 0;
    cancelled += s == MigrationState::kCancelled ? 1 : 0;
  }
  if (failed + cancelled == 0) return PlanState::kCompleted;
  if (completed > 0) return PlanState::kPartial;
  return failed > 0 ? PlanState::kFailed : PlanState::kCancelled;
}

}  // namespace ferry
