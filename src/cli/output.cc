#include "cli/output.h"

#include <cstdio>
#include <nlohmann/json.hpp>

#include "api/errors.h"

namespace ferry::cli {

int ReportError(OutputMode mode, const std::string& command, const Status& status) {
  if (mode == OutputMode::kJson) {
    nlohmann::json j = {{"error",
                         {{"code", std::string(api::ErrorCodeWireName(status.code()))},
                          {"message", status.message()}}}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::fprintf(stderr, "ferry %s: %s\n", command.c_str(), status.ToString().c_str());
  }
  return ExitCodeFor(status.code());
}

Result<OutputMode> ParseOutputMode(const std::string& text) {
  if (text == "text" || text == "table") return OutputMode::kText;
  if (text == "json") return OutputMode::kJson;
  return Status::InvalidArgument("--output must be table (or text) or json, not '" + text + "'");
}

}  // namespace ferry::cli
