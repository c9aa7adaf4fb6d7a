// Error and result printing shared by every subcommand: one place that turns a Status into
// stderr text or a JSON error object and an exit code.
#pragma once

#include <string>

#include "cli/progress.h"
#include "common/status.h"

namespace ferry::cli {

// Prints the error (text: "ferry COMMAND: CODE: message"; json: {"error":{"code","message"}}
// with the code's wire name, as ferryd sends it: "not_found") and returns its exit code.
int ReportError(OutputMode mode, const std::string& command, const Status& status);

Result<OutputMode> ParseOutputMode(const std::string& text);

}  // namespace ferry::cli
