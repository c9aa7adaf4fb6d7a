// A migration plan's state (docs/plans.md): persisted by name, so names never change. A plan
// has no transition table of its own: once started, its state is derived from its
// migrations' states (DerivePlanState) and stored whenever that changes.
//
//   ready ──start──► running ──► completed | failed | cancelled | partial
//     └──cancel (before start)──► cancelled
//     └──a scheduled start whose validation failed──► failed
//
// Thread-safety: pure functions.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

#include "store/migration_state.h"

namespace ferry {

enum class PlanState {
  kReady,      // stored, its migrations not created yet (start: later, or a time to come)
  kRunning,    // some migration not final
  kCompleted,  // every migration completed
  kFailed,     // none completed, at least one failed
  kCancelled,  // none completed or failed: cancelled
  kPartial,    // some completed, the others failed or were cancelled
};

std::string_view PlanStateName(PlanState s);
std::optional<PlanState> ParsePlanState(std::string_view name);
bool IsFinal(PlanState s);

// The state of a started plan whose migrations are in `states` (at least one).
PlanState DerivePlanState(const std::vector<MigrationState>& states);

}  // namespace ferry
