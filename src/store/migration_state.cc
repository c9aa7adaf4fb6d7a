#include "store/migration_state.h"

#include <array>
#include <string>

namespace ferry {
namespace {

struct Named {
  MigrationState state;
  std::string_view name;
};

constexpr std::array<Named, 8> kNames = {{
    {MigrationState::kPending, "pending"},
    {MigrationState::kValidating, "validating"},
    {MigrationState::kQueued, "queued"},
    {MigrationState::kRunning, "running"},
    {MigrationState::kCancelling, "cancelling"},
    {MigrationState::kCompleted, "completed"},
    {MigrationState::kFailed, "failed"},
    {MigrationState::kCancelled, "cancelled"},
}};

struct Edge {
  MigrationState from;
  MigrationState to;
};

using S = MigrationState;
constexpr std::array<Edge, 16> kEdges = {{
    {S::kPending, S::kValidating},
    {S::kPending, S::kCancelled},
    {S::kPending, S::kFailed},     // ferryd restarted before validating it
    {S::kValidating, S::kQueued},
    {S::kValidating, S::kFailed},
    {S::kValidating, S::kCancelled},
    {S::kQueued, S::kRunning},
    {S::kQueued, S::kCancelled},
    {S::kQueued, S::kFailed},
    {S::kRunning, S::kCompleted},
    {S::kRunning, S::kFailed},
    {S::kRunning, S::kCancelling},
    {S::kRunning, S::kCancelled},  // the agent ended the job as cancelled on its own
    {S::kCancelling, S::kCancelled},
    {S::kCancelling, S::kFailed},
    {S::kCancelling, S::kCompleted},  // the switch-over had already happened
}};

}  // namespace

std::string_view MigrationStateName(MigrationState s) {
  for (const auto& n : kNames) {
    if (n.state == s) return n.name;
  }
  return "unknown";
}

std::optional<MigrationState> ParseMigrationState(std::string_view name) {
  for (const auto& n : kNames) {
    if (n.name == name) return n.state;
  }
  return std::nullopt;
}

bool IsFinal(MigrationState s) {
  return s == S::kCompleted || s == S::kFailed || s == S::kCancelled;
}

Status CheckTransition(MigrationState from, MigrationState to) {
  for (const auto& e : kEdges) {
    if (e.from == from && e.to == to) return Status::Ok();
  }
  return Status::InvalidArgument("migration cannot go from " +
                                 std::string(MigrationStateName(from)) + " to " +
                                 std::string(MigrationStateName(to)));
}

}  // namespace ferry
