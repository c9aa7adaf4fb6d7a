#include "cli/output.h"

#include <cstdio>
#include <nlohmann/json.hpp>

#include "api/errors.h"
#include "cli/api_format.h"

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

int ReportValidationFailure(OutputMode mode, const std::string& command, const Status& status,
                            const CallFailure& failure) {
  if (mode == OutputMode::kJson) {
    std::printf(
        "%s\n",
        JsonObject(
            {{"error",
              JsonObject({{"code", JsonString(std::string(api::ErrorCodeWireName(status.code())))},
                          {"message", JsonString(status.message())},
                          {"details", failure.details_json}})}})
            .c_str());
  } else {
    std::printf("%s", FormatChecks(failure.checks, /*all=*/false).c_str());
    std::fprintf(stderr, "ferry %s: validation failed, nothing was created or started: %s\n",
                 command.c_str(), status.message().c_str());
  }
  return ExitCodeFor(ErrorCode::kFailedPrecondition);
}

int ReportValidation(OutputMode mode, const ValidationRecord& validation) {
  if (mode == OutputMode::kJson) {
    std::printf("%s\n", PrettyJson(validation.json).c_str());
  } else {
    for (const PlanRecord& p : validation.plans) {
      std::printf("%s%s:\n", Printable(p.vm).c_str(),
                  p.type.empty() ? "" : (" (" + Printable(p.type) + ")").c_str());
      std::vector<CheckRecord> checks = p.checks;
      for (CheckRecord& c : checks) c.vm.clear();  // the heading names the VM
      std::string text = FormatChecks(checks, /*all=*/true);
      size_t start = 0;
      while (start < text.size()) {
        size_t end = text.find('\n', start);
        std::printf("  %s\n", text.substr(start, end - start).c_str());
        start = end + 1;
      }
    }
    std::printf("validation %s\n", validation.ok ? "passed" : "failed");
  }
  return validation.ok ? 0 : ExitCodeFor(ErrorCode::kFailedPrecondition);
}

Result<OutputMode> ParseOutputMode(const std::string& text) {
  if (text == "text" || text == "table") return OutputMode::kText;
  if (text == "json") return OutputMode::kJson;
  return Status::InvalidArgument("--output must be table (or text) or json, not '" + text + "'");
}

}  // namespace ferry::cli
