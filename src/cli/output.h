// Error and result printing shared by every subcommand: one place that turns a Status into
// stderr text or a JSON error object and an exit code, and that prints validation results.
#pragma once

#include <string>

#include "cli/api_client.h"
#include "cli/api_model.h"
#include "cli/progress.h"
#include "common/status.h"

namespace ferry::cli {

// Prints the error (text: "ferry COMMAND: CODE: message"; json: {"error":{"code","message"}}
// with the code's wire name, as ferryd sends it: "not_found") and returns its exit code.
int ReportError(OutputMode mode, const std::string& command, const Status& status);

// A refused validation (a kFailedPrecondition answer whose checks are in `failure`): text,
// every failed check on stdout ("✗ g1: cpu_compatible: ...") and "ferry COMMAND: validation
// failed, nothing was created or started: ..." on stderr; json, the error object with its
// details as the server sent them. Returns ExitCodeFor(kFailedPrecondition).
int ReportValidationFailure(OutputMode mode, const std::string& command, const Status& status,
                            const CallFailure& failure);

// A validation's answer (migrate --validate-only, plan validate): text, every check per VM
// with ✓/✗ under a "VM (type):" heading and "validation passed|failed"; json, the answer.
// Returns 0 if it passed, else ExitCodeFor(kFailedPrecondition).
int ReportValidation(OutputMode mode, const ValidationRecord& validation);

Result<OutputMode> ParseOutputMode(const std::string& text);

}  // namespace ferry::cli
