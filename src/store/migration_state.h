// The migration state machine: states, the transitions allowed between them, and which
// states are final. Persisted as the state's name, so names never change.
//
//   pending ─► validating ─► queued ─► running ─► completed
//      │           │           │         │  ▲
//      │           ▼           │         ▼  │(the switch-over had already happened)
//      ├───────► failed ◄──────┴──── cancelling ─► cancelled
//      └──────────────────────────────────────────► cancelled
//   (also running ─► failed, and running ─► cancelled when the agent ends a job as cancelled)
//
// `running` carries a phase (preparing, copying, converging, switchover, verifying,
// finalizing) that changes freely; only states go through the table.
#pragma once

#include <optional>
#include <string_view>

#include "common/status.h"

namespace ferry {

enum class MigrationState {
  kPending,
  kValidating,
  kQueued,
  kRunning,
  kCancelling,
  kCompleted,
  kFailed,
  kCancelled,
};

std::string_view MigrationStateName(MigrationState s);
std::optional<MigrationState> ParseMigrationState(std::string_view name);

bool IsFinal(MigrationState s);

// OK if `from` may move to `to`; kInvalidArgument naming both otherwise.
Status CheckTransition(MigrationState from, MigrationState to);

}  // namespace ferry
