#include "cli/output.h"

#include <cstdio>
#include <nlohmann/json.hpp>

namespace ferry::cli {

int ReportError(OutputMode mode, const std::string& command, const Status& status) {
  if (mode == OutputMode::kJson) {
    nlohmann::json j = {{"error",
                         {{"code", std::string(ErrorCodeName(status.code()))},
                          {"message", status.message()}}}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::fprintf(stderr, "ferry %s: %s\n", command.c_str(), status.ToString().c_str());
  }
  return ExitCodeFor(status.code());
}

Result<OutputMode> ParseOutputMode(const std::string& text) {
  if (text == "text") return OutputMode::kText;
  if (text == "json") return OutputMode::kJson;
  return Status::InvalidArgument("--output must be text or json, not '" + text + "'");
}

}  // namespace ferry::cli
