// Following migrations until they end: `ferry watch`, `ferry migrate --wait`,
// `ferry cancel --wait` (and plans: `ferry plan status --watch`, `ferry plan apply --wait`). Polls
// ferryd (the migration, then its events after the last seen seq) every 200 ms, sooner around
// changes (PollPacer, common/poll_pacer.h), and shows what changed:
//   text: new events on stdout as they arrive (prefixed "[vm] " when several are watched),
//         a progress line on stderr when stderr is a terminal, and one outcome line per
//         migration at the end;
//   json: per poll and migration one line {"type":"poll","migration":M,"events":[new]}, and at
//         the end per migration {"type":"final","migration":M} (M = ferryd's record as sent).
// A poll that cannot reach ferryd is retried for up to 15 s before the watch gives up (kIo).
//
// Thread-safety: blocks the calling thread; one watch per thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli/api_client.h"
#include "cli/api_model.h"
#include "common/clock.h"
#include "common/poll_pacer.h"

namespace ferry::cli {

struct WatchOptions {
  // 200 ms: a finished migration is seen (and `--wait` returns) soon after ferryd knows; a GET
  // of one record is cheap for ferryd.
  int64_t poll_ms = 200;
  int64_t retry_ms = 15'000;  // how long an unreachable ferryd is tolerated mid-watch
  Clock* clock = SystemClock();
};

// Returns the final records, in the order of `ids`.
Result<std::vector<MigrationRecord>> WatchMigrations(const ApiClient& client, OutputMode mode,
                                                     const std::vector<std::string>& ids,
                                                     const WatchOptions& options = {});

// Follows a migration plan until it is final (completed, failed, cancelled, partial), polling
// GET /api/v1/plans/{id} every poll_ms:
//   text: one line per VM whenever its state or phase changes ("web1: running (copying)"),
//         the progress line on stderr when stderr is a terminal, and at the end the plan's
//         page (FormatPlanStatus) and its outcome line;
//   json: per poll one line {"type":"poll","plan":P}, at the end {"type":"final","plan":P}.
// An unreachable ferryd is tolerated for retry_ms as above. Returns the final record.
Result<PlanStatusRecord> WatchPlan(const ApiClient& client, OutputMode mode, const std::string& id,
                                   const WatchOptions& options = {});

// "/api/v1/plans/ID" with ID (or the plan's name) escaped.
std::string PlanPath(const std::string& id);

// The exit status for a finished watch: 0 if every migration completed, else the status of the
// first one that did not (ExitCodeForOutcome).
int ExitCodeForAll(const std::vector<MigrationRecord>& finals);

// Wall-clock milliseconds since the Unix epoch (ages in tables).
int64_t WallClockMs();

// "/api/v1/migrations/ID" with ID escaped.
std::string MigrationPath(const std::string& id);

}  // namespace ferry::cli
