// ferry plan apply -f FILE [--wait] | validate -f FILE | status NAME [--watch] |
// start|cancel|deploy|delete NAME, and ferry plans: migration plans (docs/plans.md) over
// ferryd's /api/v1/plans. The plan file is sent as it is (ferryd parses and validates it);
// its Content-Type says YAML (.yaml, .yml, or standard input) or JSON (anything else).
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>

#include "api/http.h"
#include "cli/api_client.h"
#include "cli/api_format.h"
#include "cli/commands.h"
#include "cli/output.h"
#include "cli/watch.h"

namespace ferry::cli {
namespace {

constexpr char kYamlType[] = "application/yaml";
constexpr char kJsonType[] = "application/json";

struct PlanArgs {
  ServerArgs local;
  std::string file;
  std::string name;
  bool wait = false;
  bool watch = false;
};

struct PlanFile {
  std::string text;
  std::string content_type;
};

bool EndsWith(const std::string& s, const std::string& suffix) {
  if (s.size() < suffix.size()) return false;
  for (size_t i = 0; i < suffix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[s.size() - suffix.size() + i])) != suffix[i]) {
      return false;
    }
  }
  return true;
}

// The plan document as written ("-" = standard input), capped at what ferryd accepts.
Result<PlanFile> ReadPlanFile(const std::string& path) {
  PlanFile f;
  f.content_type =
      (path == "-" || EndsWith(path, ".yaml") || EndsWith(path, ".yml")) ? kYamlType : kJsonType;
  std::string text;
  if (path == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0)
      return Status::NotFound("plan file " + path + ": not found");
    if (!S_ISREG(st.st_mode)) return Status::InvalidArgument("plan file " + path + ": not a file");
    if (static_cast<uint64_t>(st.st_size) > api::kMaxBodyBytes) {
      return Status::TooLarge("plan file " + path + ": " + std::to_string(st.st_size) +
                              " bytes, more than ferryd accepts (" +
                              std::to_string(api::kMaxBodyBytes) + ")");
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) return Status::Io("plan file " + path + ": cannot be read");
    std::ostringstream buf;
    buf << in.rdbuf();
    if (in.bad()) return Status::Io("plan file " + path + ": read failed");
    text = buf.str();
  }
  if (text.size() > api::kMaxBodyBytes) {
    return Status::TooLarge("plan file " + path + ": more than " +
                            std::to_string(api::kMaxBodyBytes) + " bytes");
  }
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
    return Status::InvalidArgument("plan file " + path + " is empty");
  }
  f.text = std::move(text);
  return f;
}

// One plan: its page (text) or its record (json; one line when watch lines follow).
void PrintPlan(OutputMode mode, const PlanStatusRecord& plan, bool compact) {
  if (mode == OutputMode::kJson) {
    std::printf("%s\n", compact ? plan.json.c_str() : PrettyJson(plan.json).c_str());
  } else {
    std::printf("%s", FormatPlanStatus(plan, WallClockMs()).c_str());
  }
  std::fflush(stdout);
}

// A plan's id from its name (the actions take the id; GET takes either).
Result<PlanStatusRecord> GetPlan(const ApiClient& client, const std::string& name_or_id) {
  FERRY_ASSIGN_OR_RETURN(std::string body, client.Get(PlanPath(name_or_id)));
  return ParsePlanStatus(body);
}

int RunApply(const ServerArgs& global, const PlanArgs& a) {
  const std::string command = "plan apply";
  auto conn = ResolveConnection(global, a.local);
  if (!conn.ok()) return ReportError(OutputMode::kText, command, conn.status());
  const OutputMode mode = conn->mode;
  auto file = ReadPlanFile(a.file);
  if (!file.ok()) return ReportError(mode, command, file.status());
  ApiClient client(*conn);
  CallFailure failure;
  auto answer = client.Post("/api/v1/plans", file->text, &failure, file->content_type);
  if (!answer.ok()) {
    if (answer.status().code() == ErrorCode::kFailedPrecondition) {
      return ReportValidationFailure(mode, command, answer.status(), failure);
    }
    return ReportError(mode, command, answer.status());
  }
  auto plan = ParsePlanStatus(*answer);
  if (!plan.ok()) return ReportError(mode, command, plan.status());
  PrintPlan(mode, *plan, /*compact=*/a.wait);
  if (mode == OutputMode::kText && plan->state == "ready") {
    std::fprintf(stderr, "plan %s waits for its start time, or for `ferry plan start %s`\n",
                 Printable(plan->name).c_str(), Printable(plan->name).c_str());
  }
  if (!a.wait) return 0;
  auto final_plan = WatchPlan(client, mode, plan->id);
  if (!final_plan.ok()) return ReportError(mode, command, final_plan.status());
  return ExitCodeForPlan(*final_plan);
}

int RunValidate(const ServerArgs& global, const PlanArgs& a) {
  const std::string command = "plan validate";
  auto conn = ResolveConnection(global, a.local);
  if (!conn.ok()) return ReportError(OutputMode::kText, command, conn.status());
  const OutputMode mode = conn->mode;
  auto file = ReadPlanFile(a.file);
  if (!file.ok()) return ReportError(mode, command, file.status());
  ApiClient client(*conn);
  CallFailure failure;
  auto answer =
      client.Post("/api/v1/plans?validate_only=1", file->text, &failure, file->content_type);
  if (!answer.ok()) {
    if (answer.status().code() == ErrorCode::kFailedPrecondition) {
      return ReportValidationFailure(mode, command, answer.status(), failure);
    }
    return ReportError(mode, command, answer.status());
  }
  auto v = ParsePlanValidation(*answer);
  if (!v.ok()) return ReportError(mode, command, v.status());
  return ReportValidation(mode, *v);
}

int RunStatus(const ServerArgs& global, const PlanArgs& a) {
  const std::string command = "plan status";
  auto conn = ResolveConnection(global, a.local);
  if (!conn.ok()) return ReportError(OutputMode::kText, command, conn.status());
  ApiClient client(*conn);
  if (a.watch) {
    auto final_plan = WatchPlan(client, conn->mode, a.name);
    if (!final_plan.ok()) return ReportError(conn->mode, command, final_plan.status());
    return ExitCodeForPlan(*final_plan);
  }
  auto plan = GetPlan(client, a.name);
  if (!plan.ok()) return ReportError(conn->mode, command, plan.status());
  PrintPlan(conn->mode, *plan, /*compact=*/false);
  return 0;
}

// start, cancel, deploy: POST /api/v1/plans/{id}/ACTION -> the Plan.
int RunAction(const ServerArgs& global, const PlanArgs& a, const std::string& action) {
  const std::string command = "plan " + action;
  auto conn = ResolveConnection(global, a.local);
  if (!conn.ok()) return ReportError(OutputMode::kText, command, conn.status());
  ApiClient client(*conn);
  auto plan = GetPlan(client, a.name);
  if (!plan.ok()) return ReportError(conn->mode, command, plan.status());
  CallFailure failure;
  auto answer = client.Post(PlanPath(plan->id) + "/" + action, "{}", &failure);
  if (!answer.ok()) {
    if (answer.status().code() == ErrorCode::kFailedPrecondition && !failure.checks.empty()) {
      return ReportValidationFailure(conn->mode, command, answer.status(), failure);
    }
    return ReportError(conn->mode, command, answer.status());
  }
  auto after = ParsePlanStatus(*answer);
  if (!after.ok()) return ReportError(conn->mode, command, after.status());
  PrintPlan(conn->mode, *after, /*compact=*/false);
  return 0;
}

int RunDelete(const ServerArgs& global, const PlanArgs& a) {
  const std::string command = "plan delete";
  auto conn = ResolveConnection(global, a.local);
  if (!conn.ok()) return ReportError(OutputMode::kText, command, conn.status());
  ApiClient client(*conn);
  auto plan = GetPlan(client, a.name);
  if (!plan.ok()) return ReportError(conn->mode, command, plan.status());
  auto answer = client.Delete(PlanPath(plan->id));
  if (!answer.ok()) return ReportError(conn->mode, command, answer.status());
  if (conn->mode == OutputMode::kJson) {
    std::printf(
        "%s\n",
        JsonObject({{"deleted", JsonString(plan->name)}, {"id", JsonString(plan->id)}}).c_str());
  } else {
    std::printf("plan %s (%s) deleted\n", Printable(plan->name).c_str(),
                Printable(plan->id).c_str());
  }
  return 0;
}

int RunPlans(const ServerArgs& global, const PlanArgs& a) {
  auto conn = ResolveConnection(global, a.local);
  if (!conn.ok()) return ReportError(OutputMode::kText, "plans", conn.status());
  ApiClient client(*conn);
  auto body = client.Get("/api/v1/plans");
  if (!body.ok()) return ReportError(conn->mode, "plans", body.status());
  auto plans = ParsePlanList(*body);
  if (!plans.ok()) return ReportError(conn->mode, "plans", plans.status());
  if (conn->mode == OutputMode::kJson) {
    std::vector<std::string> items;
    for (const PlanStatusRecord& p : *plans) items.push_back(p.json);
    std::printf("%s\n", PrettyJson(JsonObject({{"plans", JsonArray(items)}})).c_str());
  } else {
    std::printf("%s", FormatPlansTable(*plans, WallClockMs()).c_str());
  }
  return 0;
}

}  // namespace

void AddPlanCommands(CLI::App& app, const ServerArgs* global, int* exit_code) {
  auto args = std::make_shared<PlanArgs>();
  CLI::App* plans = app.add_subcommand("plans", "List the migration plans");
  AddServerOptions(plans, &args->local);
  plans->callback([global, args, exit_code] { *exit_code = RunPlans(*global, *args); });

  CLI::App* plan = app.add_subcommand("plan", "Create, validate, follow and steer migration plans");
  plan->require_subcommand(1);
  AddServerOptions(plan, &args->local);

  CLI::App* apply = plan->add_subcommand("apply", "Create a plan from a YAML or JSON file");
  apply->add_option("-f,--file", args->file, "The plan document (- = standard input)")->required();
  apply->add_flag("--wait", args->wait, "Follow the plan until it ends");
  AddServerOptions(apply, &args->local);
  apply->callback([global, args, exit_code] { *exit_code = RunApply(*global, *args); });

  CLI::App* validate =
      plan->add_subcommand("validate", "Run a plan's checks without creating anything");
  validate->add_option("-f,--file", args->file, "The plan document (- = standard input)")
      ->required();
  AddServerOptions(validate, &args->local);
  validate->callback([global, args, exit_code] { *exit_code = RunValidate(*global, *args); });

  CLI::App* status = plan->add_subcommand("status", "A plan and its VMs");
  status->add_option("NAME", args->name, "Plan name or id")->required();
  status->add_flag("--watch", args->watch, "Refresh until the plan ends");
  AddServerOptions(status, &args->local);
  status->callback([global, args, exit_code] { *exit_code = RunStatus(*global, *args); });

  const std::pair<const char*, const char*> actions[] = {
      {"start", "Start a plan created with start: later (re-validates it)"},
      {"cancel", "Cancel a plan's migrations (their sources are kept as they were)"},
      {"deploy", "Let VMs waiting in awaiting-deploy (deploy: manual) go on"}};
  for (const auto& [action, help] : actions) {
    CLI::App* cmd = plan->add_subcommand(action, help);
    cmd->add_option("NAME", args->name, "Plan name or id")->required();
    AddServerOptions(cmd, &args->local);
    const std::string name = action;
    cmd->callback(
        [global, args, exit_code, name] { *exit_code = RunAction(*global, *args, name); });
  }

  CLI::App* remove = plan->add_subcommand("delete", "Delete a plan that has no active migrations");
  remove->add_option("NAME", args->name, "Plan name or id")->required();
  AddServerOptions(remove, &args->local);
  remove->callback([global, args, exit_code] { *exit_code = RunDelete(*global, *args); });
}

}  // namespace ferry::cli
