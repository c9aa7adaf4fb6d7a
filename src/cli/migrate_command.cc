// ferry migrate VM... | --evacuate HOST [--to HOST] [--storage POOL] [--type T]
// [--max-downtime MS] [--bandwidth RATE] [--allow-postcopy] [--priority N] [--validate-only]
// [--wait]: asks ferryd for migrations (POST /api/v1/migrations, or .../validate).
// A failed validation prints every failed check and exits ExitCodeFor(kFailedPrecondition).
#include <cstdio>

#include "api/errors.h"
#include "cli/api_client.h"
#include "cli/api_format.h"
#include "cli/commands.h"
#include "cli/output.h"
#include "cli/watch.h"

namespace ferry::cli {
namespace {

constexpr char kCommand[] = "migrate";

struct MigrateArgs {
  ServerArgs local;
  std::vector<std::string> vms;
  std::string evacuate, to, storage, type, bandwidth, source;
  int64_t max_downtime_ms = 0;
  int64_t priority = 0;
  bool allow_postcopy = false, validate_only = false, wait = false;
  CLI::Option* max_downtime_option = nullptr;
  CLI::Option* priority_option = nullptr;
};

Result<MigrationRequest> BuildRequest(const MigrateArgs& a) {
  MigrationRequest r;
  if (a.vms.empty() == a.evacuate.empty()) {
    return Status::InvalidArgument("give the VMs to move or --evacuate HOST (not both)");
  }
  r.vms = a.vms;
  r.evacuate = a.evacuate;
  r.to = a.to;
  r.storage = a.storage;
  r.source = a.source;
  if (!a.type.empty()) {
    FERRY_TRY(CheckMigrationType(a.type));
    r.type = a.type;
  }
  if (a.max_downtime_option->count() > 0) {
    if (a.max_downtime_ms <= 0) return Status::InvalidArgument("--max-downtime must be > 0 ms");
    r.max_downtime_ms = a.max_downtime_ms;
  }
  if (!a.bandwidth.empty()) {
    FERRY_ASSIGN_OR_RETURN(uint64_t bw, ParseBandwidth(a.bandwidth));
    r.bandwidth = bw;
  }
  r.allow_postcopy = a.allow_postcopy;
  if (a.priority_option->count() > 0) r.priority = a.priority;
  return r;
}

int RunValidateOnly(const ApiClient& client, OutputMode mode, const std::string& body) {
  CallFailure failure;
  auto answer = client.Post("/api/v1/migrations/validate", body, &failure);
  if (!answer.ok()) {
    if (answer.status().code() == ErrorCode::kFailedPrecondition) {
      return ReportValidationFailure(mode, kCommand, answer.status(), failure);
    }
    return ReportError(mode, kCommand, answer.status());
  }
  auto v = ParseValidation(*answer);
  if (!v.ok()) return ReportError(mode, kCommand, v.status());
  return ReportValidation(mode, *v);
}

int RunMigrate(const ServerArgs& global, const MigrateArgs& a) {
  auto conn = ResolveConnection(global, a.local);
  if (!conn.ok()) return ReportError(OutputMode::kText, kCommand, conn.status());
  const OutputMode mode = conn->mode;
  auto request = BuildRequest(a);
  if (!request.ok()) return ReportError(mode, kCommand, request.status());
  const std::string body = MigrationRequestJson(*request);
  ApiClient client(*conn);
  if (a.validate_only) return RunValidateOnly(client, mode, body);

  CallFailure failure;
  auto answer = client.Post("/api/v1/migrations", body, &failure);
  if (!answer.ok()) {
    if (answer.status().code() == ErrorCode::kFailedPrecondition) {
      return ReportValidationFailure(mode, kCommand, answer.status(), failure);
    }
    return ReportError(mode, kCommand, answer.status());
  }
  auto created = ParseMigrationList(*answer);
  if (!created.ok()) return ReportError(mode, kCommand, created.status());
  std::vector<std::string> ids;
  std::vector<std::string> items;
  std::vector<std::vector<std::string>> rows;
  for (const MigrationRecord& m : *created) {
    ids.push_back(m.id);
    items.push_back(m.json);
    rows.push_back(
        {Printable(m.id), Printable(m.vm), Printable(m.type), FormatRoute(m), Printable(m.state)});
  }
  if (mode == OutputMode::kJson) {
    std::printf("%s\n", JsonObject({{"migrations", JsonArray(items)}}).c_str());
  } else {
    std::printf("%s", FormatTable({"ID", "VM", "TYPE", "ROUTE", "STATE"}, rows).c_str());
  }
  std::fflush(stdout);
  if (!a.wait || ids.empty()) return 0;
  auto finals = WatchMigrations(client, mode, ids);
  if (!finals.ok()) return ReportError(mode, kCommand, finals.status());
  return ExitCodeForAll(*finals);
}

}  // namespace

void AddMigrateCommand(CLI::App& app, const ServerArgs* global, int* exit_code) {
  auto args = std::make_shared<MigrateArgs>();
  CLI::App* cmd = app.add_subcommand("migrate", "Move VMs to another host and/or storage pool");
  cmd->add_option("VM", args->vms, "VMs to move (names)");
  cmd->add_option("--evacuate", args->evacuate, "Move every VM off this host");
  cmd->add_option("--to", args->to, "Target host (omit for live-storage on the same host)");
  cmd->add_option("--storage", args->storage, "Target storage pool for the disks");
  cmd->add_option("--source", args->source, "Source host (default: from the inventory)");
  cmd->add_option("--type", args->type, "auto|live|live-storage|live-vsm|quick|reregister");
  args->max_downtime_option =
      cmd->add_option("--max-downtime", args->max_downtime_ms, "Downtime budget in ms");
  cmd->add_option("--bandwidth", args->bandwidth, "Bandwidth cap, e.g. 100M (bytes/s)");
  cmd->add_flag("--allow-postcopy", args->allow_postcopy, "Let a live migration use post-copy");
  args->priority_option =
      cmd->add_option("--priority", args->priority, "Queue priority (higher runs first)");
  cmd->add_flag("--validate-only", args->validate_only, "Run the checks only, start nothing");
  cmd->add_flag("--wait", args->wait, "Follow the migrations until they end");
  AddServerOptions(cmd, &args->local);
  cmd->callback([global, args, exit_code] { *exit_code = RunMigrate(*global, *args); });
}

}  // namespace ferry::cli
